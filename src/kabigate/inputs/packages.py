"""What RPM and deb packages (files, URLs, folders, yum repositories) contribute: modules for
MODULE inputs, a file tree for KERNEL inputs, stablelists, and RPM kABI dependencies.

Packages are read in one streaming pass (formats/rpm.py, formats/deb.py); only the members
needed are held in memory (modules one at a time, symvers, configs, a greylist), each capped.
Member paths are hostile: absolute names and `..` components are refused, never resolved.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from kabigate.errors import InputError, open_regular, read_capped
from kabigate.formats import deb as debfmt
from kabigate.formats import rpm as rpmfmt
from kabigate.formats.compression import MAX_DECOMPRESSED, text_lines
from kabigate.formats.module import parse_module
from kabigate.formats.rpm import Dependency
from kabigate.model import MODULE_SUFFIXES, Export, Module, PackageOrigin, ReasonCode

if TYPE_CHECKING:
    from kabigate.formats.repomd import RepoPackage

PACKAGE_SUFFIXES = (".rpm", ".deb")
MAX_METADATA = 512 * 1024**2
MAX_SMALL_MEMBER = 64 * 1024**2  # symvers (~1.5 MiB), configs, greylists, headers
# Members of one package: linux-headers has ~20,000 files, kernel-devel ~25,000; modules of one
# package: Debian's linux-image ~4,000. Tiny members compress to almost nothing: without a cap a
# small package could make millions of entries (each kept in a PackageTree, or parsed).
MAX_MEMBERS = 500_000
# A PackageTree's paths, the folders made for them included: a deep path makes a folder for each of
# its parents, each named in full. PATH_MAX bounds one path (dpkg and rpm install none longer), these
# the whole tree (kernel packages together: ~50,000 paths, ~4 MB of them).
PATH_MAX = 4096
MAX_TREE_PATHS = 1_000_000
MAX_TREE_BYTES = 64 * 1024**2
MAX_MODULES = 50_000


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def is_package_file(path: str) -> bool:
    """An RPM or deb by magic (a file that merely ends in .rpm is judged by its content later)."""
    if is_url(path):
        return path.endswith(PACKAGE_SUFFIXES)
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as file:
            head = file.read(21)
    except OSError:
        return False
    return rpmfmt.is_rpm(head) or debfmt.is_deb(head) or path.endswith(PACKAGE_SUFFIXES)


def is_repository(path: str) -> bool:
    if is_url(path):
        return not path.endswith(PACKAGE_SUFFIXES)
    return os.path.isfile(os.path.join(path, "repodata", "repomd.xml"))


# -- fetching -------------------------------------------------------------------------------

def fetch(location: str, what: str, limit: int):
    """The bytes at a path or an http(s) URL, at most `limit` of them (a URL's are mapped from the
    temporary file they were downloaded to: it is gone once the mapping is)."""
    if not is_url(location):
        return read_capped(location, limit, f"larger than the {limit >> 20} MiB limit")
    return _map_url(location, what, limit)


def _map_url(location: str, what: str, limit: int | None = None):
    """A download mapped read-only (b"" when empty: an empty file cannot be mapped)."""
    from kabigate.inputs import httpclient  # HTTP and TLS (~30 ms) only for a URL, not every `check`

    with httpclient.download(location, what, limit) as file:
        if os.fstat(file.fileno()).st_size == 0:
            return b""
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)


def _map_file(path: str):
    with open_regular(path) as file:  # a FIFO named *.rpm is refused, not waited on
        try:
            if os.fstat(file.fileno()).st_size == 0:
                raise InputError(f"{path}: empty file, not a package")
            return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as error:
            raise InputError(f"{path}: {error.strerror}") from None


# -- one package ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    path: str  # normalized, absolute: "/lib/modules/6.1.0-47-amd64/kernel/fs/foo.ko"
    kind: str  # "file", "dir", "symlink", "hardlink", "other"
    size: int
    link: str = ""


def safe_member_path(name: str, what: str) -> str:
    """'./usr/lib/x' -> '/usr/lib/x'; absolute names and '..' components are refused."""
    if name.startswith("/"):
        raise InputError(f"{what}: archive member {name[:200]!r} has an absolute path: refusing the package")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{what}: archive member {name[:200]!r} climbs out with '..': refusing the package")
    if "\0" in name:
        raise InputError(f"{what}: archive member name contains NUL")
    return "/" + "/".join(parts)


class Package:
    """An RPM or deb, mapped from its file or its download (httpclient: capped by $KABIGATE_FETCH_MAX);
    read in one forward pass."""

    def __init__(self, source: str, data=None):
        self.source = source
        self.data = data if data is not None else (_map_url(source, source) if is_url(source) else _map_file(source))
        head = bytes(self.data[:21])
        self.provides: list[Dependency] = []
        self.requires: list[Dependency] = []
        self.depends = ""  # a deb's Depends field
        if rpmfmt.is_rpm(head):
            self.format = "rpm"
            self._rpm = rpmfmt.read_header(self.data, source)
            self.name = self._rpm.string(rpmfmt.NAME) or ""
            self.version = f"{self._rpm.string(rpmfmt.VERSION)}-{self._rpm.string(rpmfmt.RELEASE)}"
            self.arch = self._rpm.string(rpmfmt.ARCH) or ""
            self.provides, self.requires = self._rpm.provides, self._rpm.requires
        elif debfmt.is_deb(head):
            self.format = "deb"
            self._deb = debfmt.read_deb(self.data, source)
            fields = self._deb.fields
            self.name, self.version, self.arch = fields.get("Package", ""), fields.get("Version", ""), \
                fields.get("Architecture", "")
            self.provides = [Dependency(p.strip().split(" ", 1)[0]) for p in fields.get("Provides", "").split(",")
                             if p.strip()]
            self.depends = fields.get("Depends", "")  # as written: "name (>= version) | other, ..."
        else:  # a downloaded answer's bytes are not shown: the URL may name any file of a host the server reaches
            raise InputError(f"{source}: not an RPM or deb package" + ("" if is_url(source) else
                                                                       f" (magic {head[:8].hex()})"))

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}.{self.arch}" if self.format == "rpm" else \
            f"{self.name}_{self.version}_{self.arch}"

    def members(self) -> Iterator[tuple[Member, Callable[[], bytes]]]:
        """(member, read) in archive order; read() gives a file's bytes (capped) only while the
        iteration is at that member."""
        for count, item in enumerate(self._members(), 1):
            if count > MAX_MEMBERS:
                raise InputError(f"{self.source}: more than {MAX_MEMBERS} members, not a plausible kernel package")
            yield item

    def _members(self) -> Iterator[tuple[Member, Callable[[], bytes]]]:
        what = self.source
        if self.format == "rpm":
            for entry, reader in rpmfmt.iter_payload(self.data, self._rpm, what):
                kind = rpmfmt.entry_kind(entry.mode)
                path = safe_member_path(entry.name, what)
                link = ""
                if kind == "symlink":
                    if entry.size > 4096:
                        raise InputError(f"{what}: symlink {path} target too long")
                    link = reader.read(entry.size).decode("utf-8", "replace")
                elif kind == "file" and entry.size == 0 and entry.nlink > 1:
                    kind = "hardlink"  # newc stores a hard-linked file's data with its last link
                yield Member(path, kind, entry.size, link), partial(_read_capped, reader, entry.size, f"{what}:{path}")
        else:
            for tar_entry, read in debfmt.iter_data(self.data, self._deb, what):
                path = safe_member_path(tar_entry.name, what)
                link = tar_entry.link
                if tar_entry.kind == "hardlink":
                    link = safe_member_path(tar_entry.link, what)
                yield Member(path, tar_entry.kind, tar_entry.size, link), \
                    partial(_sized_read, read, tar_entry.size, f"{what}:{path}")

    def origin(self, greylist: tuple[str, ...] | None = None) -> PackageOrigin:
        return PackageOrigin(self.source, self.name, self.version, self.arch, self.format, greylist)

    def close(self) -> None:
        if isinstance(self.data, mmap.mmap):
            # BufferError: a view of it is still referenced by a finished generator: unmapped when collected
            with contextlib.suppress(BufferError):
                self.data.close()


def _check_size(size: int, what: str) -> None:
    if size > MAX_DECOMPRESSED:
        raise InputError(f"{what}: member larger than the {MAX_DECOMPRESSED >> 20} MiB limit")


def _sized_read(read: Callable[[], bytes], size: int, what: str) -> bytes:
    _check_size(size, what)
    return read()


def _read_capped(reader, size: int, what: str) -> bytes:
    _check_size(size, what)
    data = reader.read(size)
    if len(data) != size:
        raise InputError(f"{what}: member is truncated")
    return data


def is_module_path(path: str) -> bool:
    return path.endswith(MODULE_SUFFIXES)


_GREYLIST = re.compile(r"^/usr/share/doc/[^/]+/greylist(\.txt)?$")
_SYMBOL = re.compile(r"^[A-Za-z_.$][A-Za-z0-9_.$]*$")


def parse_greylist(data: bytes, what: str) -> tuple[str, ...]:
    """ELRepo's greylist.txt: a sentence or two, then one symbol a line (indented or not)."""
    return tuple(sorted({line.strip() for line in text_lines(data, what) if _SYMBOL.match(line.strip())}))


def modules_of_package(package: Package, advance: Callable[[], None] = lambda: None) -> list[Module]:
    """Every kernel module in the package, each tagged with the package it came from."""
    modules: list[Module] = []
    greylist = None
    for member, read in package.members():
        if member.kind != "file":
            continue
        if is_module_path(member.path):
            if len(modules) == MAX_MODULES:
                raise InputError(f"{package.source}: more than {MAX_MODULES} modules in one package")
            modules.append(parse_module(read(), f"{package.source}:{member.path}"))
            advance()
        elif _GREYLIST.match(member.path) and member.size <= MAX_SMALL_MEMBER:
            greylist = parse_greylist(read(), f"{package.source}:{member.path}")
    origin = package.origin(greylist)
    return [_with_origin(m, origin) for m in modules]


def module_files(modules: list[Module]) -> dict[Module, bytes]:
    """Each module's file as stored (compressed or not), read again: from disk, or from the
    package it came from (one pass per package)."""
    files = {}
    by_package: dict[str, dict[str, Module]] = {}
    for module in modules:
        if module.origin is None:
            files[module] = read_capped(module.path, MAX_DECOMPRESSED, "larger than a module can be")
        else:  # modules_of_package() names it "<package>:<member path>"
            by_package.setdefault(module.origin.package, {})[module.path[len(module.origin.package) + 1:]] = module
    for location, members in by_package.items():
        package = Package(location)
        try:
            for member, read in package.members():
                if member.kind == "file" and member.path in members:
                    files[members[member.path]] = read()
        finally:
            package.close()
    missing = [m.path for m in modules if m not in files]
    if missing:
        raise InputError(f"{missing[0]}: no longer in its package")
    return files


def _with_origin(module: Module, origin: PackageOrigin) -> Module:
    import dataclasses
    return dataclasses.replace(module, origin=origin)


def module_count(package: Package) -> int | None:
    """How many modules the package lists (RPM header file list, deb md5sums); None if unknown."""
    names = package_file_names(package)
    return None if names is None else sum(1 for n in names if is_module_path(n))


def package_file_names(package: Package) -> list[str] | None:
    if package.format == "rpm":
        header = package._rpm
        basenames, dirnames = header.strings(rpmfmt.BASENAMES), header.strings(rpmfmt.DIRNAMES)
        indexes = header.ints(rpmfmt.DIRINDEXES)
        if basenames is not None and dirnames is not None and indexes is not None and len(basenames) == len(indexes):
            return [(dirnames[i] if 0 <= i < len(dirnames) else "") + b for b, i in zip(basenames, indexes)]
        return header.strings(rpmfmt.OLDFILENAMES)
    return package._deb.file_names


# -- repositories ---------------------------------------------------------------------------

class Repository:
    """A yum/dnf repository at a path or an http(s) URL (the folder holding repodata/)."""

    def __init__(self, location: str):
        # Repositories' readers (an XML parser, hashlib, urllib: ~10 ms) only for a repository, not
        # for every check that reads a module tree.
        from kabigate.formats.repomd import MAX_REPOMD, parse_primary, parse_repomd

        self.location = location.rstrip("/") if not is_url(location) else location
        repomd_location = self._join("repodata/repomd.xml")
        files = parse_repomd(fetch(repomd_location, location, MAX_REPOMD), repomd_location)
        primary = files["primary"]
        primary_location = self._join(primary.href)
        data = fetch(primary_location, location, MAX_METADATA)
        _verify_checksum(data, primary.checksum_type, primary.checksum, primary_location)
        self.packages: list[RepoPackage] = parse_primary(data, primary_location)

    def _join(self, href: str) -> str:
        if "://" in href or href.startswith("/") or ".." in href.split("/"):
            raise InputError(f"{self.location}: repository location {href[:200]!r} leaves the repository")
        if is_url(self.location):
            import urllib.parse

            return urllib.parse.urljoin(self.location.rstrip("/") + "/", href)
        return os.path.join(self.location, *href.split("/"))

    def kmod_packages(self) -> list[RepoPackage]:
        """Packages that carry out-of-tree modules: kmod-* names, or kernel(sym)/ksym(sym) Requires.
        Kernel packages themselves (their thousands of in-tree modules) are not MODULE input."""
        return [p for p in self.packages
                if p.arch != "src" and (p.name.startswith("kmod-") or any(kabi_symbol(d) for d in p.requires))]

    def open(self, entry: RepoPackage) -> Package:
        location = self._join(entry.href)
        data = _map_url(location, self.location) if is_url(location) else _map_file(location)
        _verify_checksum(data, entry.checksum_type, entry.checksum, location)
        return Package(location, data)


def _verify_checksum(data: bytes, kind: str, expected: str, what: str) -> None:
    if not expected:
        return
    algorithm = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256", "sha384": "sha384",
                 "sha512": "sha512", "md5": "md5"}.get(kind.lower())
    if algorithm is None:
        raise InputError(f"{what}: unknown checksum type {kind!r} in repository metadata")
    import hashlib

    if hashlib.new(algorithm, data).hexdigest() != expected.lower():
        raise InputError(f"{what}: {kind} checksum does not match the repository metadata")


@lru_cache(maxsize=32)
def open_repository(location: str) -> Repository:
    return Repository(location)


# -- inputs for MODULE arguments --------------------------------------------------------------

@dataclass
class PackageSource:
    """One package to read modules from: a file/URL, or an entry of a repository."""

    location: str
    size: int
    repository: Repository | None = None
    entry: RepoPackage | None = None

    def open(self) -> Package:
        if self.repository is not None and self.entry is not None:  # set together
            return self.repository.open(self.entry)
        return Package(self.location)


def package_sources(path: str) -> list[PackageSource] | None:
    """The packages `path` names (a package file or URL, a repository), or None if it names none."""
    if is_url(path):
        if path.endswith(PACKAGE_SUFFIXES):
            return [PackageSource(path, 0)]
        repository = open_repository(path)
        return [PackageSource(repository._join(p.href), p.size, repository, p) for p in repository.kmod_packages()]
    if os.path.isdir(path) and is_repository(path):
        repository = open_repository(os.path.abspath(path))
        return [PackageSource(repository._join(p.href), p.size, repository, p) for p in repository.kmod_packages()]
    if os.path.isfile(path) and is_package_file(path):
        return [PackageSource(path, os.path.getsize(path))]
    return None


# -- RPM kABI dependencies ------------------------------------------------------------------

_KABI_DEP = re.compile(r"^(kernel|ksym)\((?:([A-Za-z0-9_.+-]+):)?([^()\s:]+)\)$")


@dataclass(frozen=True)
class KabiDependency:
    symbol: str
    crc: int | None
    kind: str  # "kernel" or "ksym"
    flavor: str = ""  # SUSE: ksym(default:printk)


def kabi_symbol(dependency: Dependency) -> KabiDependency | None:
    """kernel(sym) = 0x<crc> (RHEL), ksym(sym) = 0x<crc>, SUSE ksym(<flavor>:<sym>) = <crc>."""
    match = _KABI_DEP.match(dependency.name)
    if match is None:
        return None
    crc = None
    if dependency.version:
        text = dependency.version.split(":", 1)[-1]
        try:
            crc = int(text, 16)
        except ValueError:
            return None
        if crc > 0xFFFFFFFF:
            return None
    return KabiDependency(match.group(3), crc, match.group(1), match.group(2) or "")


def kabi_dependencies(dependencies: list[Dependency]) -> list[KabiDependency]:
    return [k for d in dependencies if (k := kabi_symbol(d)) is not None]


@dataclass(frozen=True)
class MetadataFinding:
    code: ReasonCode  # MISSING_SYMBOL or CRC_MISMATCH
    symbol: str
    required_crc: int | None
    kernel_crc: int | None


def check_kabi_requires(requires: list[KabiDependency], exports: dict[str, Export]) -> list[MetadataFinding]:
    """What a package's kernel(sym)/ksym(sym) Requires say against a kernel's exports: the
    presence and CRC part of the loader's rules (what weak-modules' depmod decides), no more."""
    findings = []
    for requirement in requires:
        export = exports.get(requirement.symbol)
        if export is None:
            findings.append(MetadataFinding(ReasonCode.MISSING_SYMBOL, requirement.symbol, requirement.crc, None))
        elif requirement.crc is not None and export.crc is not None and export.crc != requirement.crc:
            findings.append(MetadataFinding(ReasonCode.CRC_MISMATCH, requirement.symbol, requirement.crc, export.crc))
    return findings


def exports_from_provides(provides: list[Dependency], owner: str) -> dict[str, Export]:
    """A kernel RPM's `kernel(sym) = 0x<crc>` Provides as exports (no GPL-only or namespace
    information: those only come from a symvers file)."""
    exports = {}
    for dependency in provides:
        kabi = kabi_symbol(dependency)
        if kabi is not None and kabi.kind == "kernel" and kabi.crc is not None:
            exports[kabi.symbol] = Export(kabi.symbol, kabi.crc, owner)
    return exports


# -- KERNEL inputs: packages as one file tree ------------------------------------------------

_KERNEL_SMALL = re.compile(
    r"^(/lib/modules/[^/]+/(symvers[^/]*|config)"
    r"|/boot/(symvers|config)-[^/]+"
    r"|/usr/src/(kernels/[^/]+|linux-headers-[^/]+)/(Module\.symvers|\.config|include/config/auto\.conf"
    r"|include/generated/(utsrelease\.h|randstruct_hash\.h)))$")
_IN_TREE_MODULE = re.compile(r"^/lib/modules/([^/]+)/kernel/.+\.ko(\.xz|\.zst|\.gz)?$")


@dataclass
class PackageTree:
    """The union of several packages' files, as a read-only tree (what installing them would lay
    down), holding in memory only the members a kernel is read from."""

    label: str
    members: dict[str, Member] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)
    packages: list[Package] = field(default_factory=list)
    paths_size: int = 0  # the length of all paths in `members` (MAX_TREE_BYTES)

    @classmethod
    def of(cls, sources: list[str], advance: Callable[[], None] = lambda: None) -> PackageTree:
        tree = cls(", ".join(sources))
        tree._add_dir("/")
        for source in sources:
            package = Package(source)
            tree.packages.append(package)
            listed = _listed_files(package)
            wanted = _Wanted(listed) if listed is not None else None
            for member, read in package.members():
                tree._add(member)
                if member.kind != "file":
                    continue
                module = _IN_TREE_MODULE.match(member.path)
                if _KERNEL_SMALL.match(member.path) and member.size <= MAX_SMALL_MEMBER:
                    tree.data[member.path] = read()
                elif module and not any(p.startswith(member.path.split("/kernel/", 1)[0] + "/kernel/")
                                        for p in tree.data):
                    tree.data[member.path] = read()  # one in-tree module per release: its vermagic
                if wanted is not None and wanted.seen(member.path, module):
                    break
            if listed is not None:  # the files not reached are known from the listing
                for path in listed:
                    if path not in tree.members:
                        tree._add(Member(path, "file", 0))  # size unknown: not read, as the file's data
            package.close()
            advance()
        return tree

    def _add_dir(self, path: str) -> None:
        """The folder and its missing parents, without recursion (a member may be nested
        thousands of folders deep)."""
        while path not in self.members or self.members[path].kind != "dir":
            if path in self.members:
                raise InputError(f"{self.label}: {path[:300]} is both a {self.members[path].kind} and a folder "
                                 "in these packages")
            self._count(path)
            self.members[path] = Member(path, "dir", 0)
            self.children.setdefault(path, set())
            if path == "/":
                return
            parent = posixpath.dirname(path)
            self.children.setdefault(parent, set()).add(posixpath.basename(path))
            path = parent

    def _count(self, path: str) -> None:
        self.paths_size += len(path)
        if len(self.members) >= MAX_TREE_PATHS or self.paths_size > MAX_TREE_BYTES:
            raise InputError(f"{self.label}: more than {MAX_TREE_PATHS} files and folders or "
                             f"{MAX_TREE_BYTES >> 20} MiB of their paths, not plausible kernel packages")

    def _add(self, member: Member) -> None:
        if len(member.path) > PATH_MAX:
            raise InputError(f"{self.label}: {member.path[:100]}... is a path of {len(member.path)} bytes "
                             f"(more than PATH_MAX, {PATH_MAX}): no system installs it")
        if member.kind == "dir":
            self._add_dir(member.path)
            return
        parent = posixpath.dirname(member.path)
        self._add_dir(parent)
        known = self.members.get(member.path)
        if known is not None and known.kind == "dir":
            raise InputError(f"{self.label}: {member.path[:300]} is both a folder and a {member.kind} "
                             "in these packages")
        if known is None:
            self._count(member.path)
        self.members[member.path] = member
        self.children[parent].add(posixpath.basename(member.path))

    def resolve(self, path: str, follow_last: bool = True) -> str | None:
        """The member path `path` names, following symlinks inside the tree (never outside it)."""
        parts = [p for p in path.split("/") if p]
        current = "/"
        for _hop in range(64):  # a bound on symlinks followed
            if not parts:
                return current
            part = parts.pop(0)
            if part == "..":
                current = posixpath.dirname(current) or "/"
                continue
            candidate = posixpath.join(current, part)
            member = self.members.get(candidate)
            if member is None:
                return None
            if member.kind == "symlink" and (parts or follow_last):
                target = member.link
                base = "/" if target.startswith("/") else current
                parts = [p for p in posixpath.join(base, target).split("/") if p] + parts
                current = "/"
                continue
            current = candidate
        return None  # a symlink loop

    def first_module_under(self, path: str) -> bytes | None:
        prefix = path.rstrip("/") + "/"
        return next((data for name, data in sorted(self.data.items())
                     if name.startswith(prefix) and is_module_path(name)), None)


def _listed_files(package: Package) -> list[str] | None:
    """A deb's regular files as its md5sums lists them (what dpkg installs), names checked as
    members' are; None for an RPM or a deb without md5sums: then the whole payload is read."""
    if package.format != "deb" or package._deb.file_names is None:
        return None
    if len(package._deb.file_names) > MAX_MEMBERS:
        raise InputError(f"{package.source}: md5sums lists more than {MAX_MEMBERS} files, "
                         "not a plausible kernel package")
    return [safe_member_path(name.lstrip("/"), f"{package.source}: md5sums") for name in package._deb.file_names]


class _Wanted:
    """What a kernel is read from in a deb whose files are listed: its small files and one in-tree
    module per release. Once all are passed the rest of the payload is not decompressed: of Debian's
    linux-image, its first xz block of 17 (`dpkg-deb --fsys-tarfile` decompresses all 410 MB). Symlinks
    (dpkg-deb puts them after every file) and empty folders past that point are not in the tree: a
    kernel's headers are found at their own path (kernels._headers_in), not only through lib/modules/<kver>/build."""

    def __init__(self, listed: list[str]):
        self.small = {path for path in listed if _KERNEL_SMALL.match(path)}
        self.releases = {module.group(1) for path in listed if (module := _IN_TREE_MODULE.match(path))}

    def seen(self, path: str, module: re.Match | None) -> bool:
        """Record a regular file passed; whether nothing wanted is left."""
        self.small.discard(path)
        if module is not None:
            self.releases.discard(module.group(1))
        return not self.small and not self.releases


class PackagePath:
    """A path inside a PackageTree with the pathlib methods inputs/kernels.py uses."""

    def __init__(self, tree: PackageTree, path: str = "/"):
        self.tree = tree
        self.path = posixpath.normpath("/" + path.lstrip("/")) if path != "/" else "/"

    def __truediv__(self, other) -> PackagePath:
        return PackagePath(self.tree, posixpath.join(self.path, str(other)))

    def __str__(self) -> str:
        return self.tree.label if self.path == "/" else f"{self.tree.label}:{self.path}"

    def __eq__(self, other) -> bool:
        return isinstance(other, PackagePath) and other.tree is self.tree and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> PackagePath:
        return PackagePath(self.tree, posixpath.dirname(self.path))

    def _member(self, follow: bool = True) -> Member | None:
        resolved = self.tree.resolve(self.path, follow)
        return None if resolved is None else self.tree.members.get(resolved)

    def exists(self) -> bool:
        return self._member() is not None

    def is_file(self) -> bool:
        member = self._member()
        return member is not None and member.kind in ("file", "hardlink")

    def is_dir(self) -> bool:
        member = self._member()
        return member is not None and member.kind == "dir"

    def is_symlink(self) -> bool:
        member = self._member(follow=False)
        return member is not None and member.kind == "symlink"

    def readlink(self) -> PurePosixPath:
        member = self._member(follow=False)
        if member is None or member.kind != "symlink":
            raise InputError(f"{self}: not a symlink")
        return PurePosixPath(member.link)

    def iterdir(self) -> Iterator[PackagePath]:
        resolved = self.tree.resolve(self.path)
        if resolved is None:
            return
        for name in sorted(self.tree.children.get(resolved, ())):
            yield PackagePath(self.tree, posixpath.join(resolved, name))

    def read_bytes(self) -> bytes:
        resolved = self.tree.resolve(self.path)
        if resolved is None or resolved not in self.tree.data:
            raise InputError(f"{self}: not in the package(s) or not read from them")
        return self.tree.data[resolved]

    def first_module(self) -> Module | None:
        data = self.tree.first_module_under(self.tree.resolve(self.path) or self.path)
        return None if data is None else parse_module(data, f"{self}")


# -- stablelists from packages ---------------------------------------------------------------

_STABLELIST = re.compile(r"^/lib/modules/(kabi-[^/]+)/kabi_(?:stablelist|whitelist)_([A-Za-z0-9_]+)$")


def stablelist_bytes_from_package(path: str, machine: str | None) -> tuple[bytes, str]:
    """kernel-abi-stablelists (/lib/modules/kabi-<rhelXY>/kabi_stablelist_<arch>): the list of
    the kernel's arch, from the kabi-current release when the package has several."""
    package = Package(path)
    found: dict[tuple[str, str], bytes] = {}
    current = None
    try:
        for member, read in package.members():
            if member.path == "/lib/modules/kabi-current" and member.kind == "symlink":
                current = posixpath.basename(member.link.rstrip("/"))
            match = _STABLELIST.match(member.path)
            if match and member.kind == "file" and member.size <= MAX_SMALL_MEMBER:
                found[(match.group(1), match.group(2))] = read()
    finally:
        package.close()
    if not found:
        raise InputError(f"{path}: package holds no /lib/modules/kabi-*/kabi_stablelist_<arch>")
    releases = sorted({release for release, _ in found})
    release = current if current in releases else (releases[0] if len(releases) == 1 else None)
    if release is None:
        raise InputError(f"{path}: several kABI releases ({', '.join(releases)}) and no kabi-current link")
    arches = sorted(arch for r, arch in found if r == release)
    arch = machine if machine in arches else (arches[0] if len(arches) == 1 and machine is None else None)
    if arch is None:
        raise InputError(f"{path}: stablelists for {', '.join(arches)}; "
                         f"the kernel's architecture {machine or '(unknown)'} is not among them")
    return found[(release, arch)], f"{path}:/lib/modules/{release}/kabi_stablelist_{arch}"
