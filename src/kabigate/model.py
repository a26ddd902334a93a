"""Plain data: what a kernel exports and what a module needs and provides, and why a module
fails to load (ReasonCode: kabigate/vocabulary.py has the gate's and the workers' words).

Parsers in `formats/` produce these; the loader rules and analyses consume them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def module_name(path: str) -> str:
    """A module's name from its file name or path, as kbuild's KBUILD_MODNAME makes it: the
    directory and suffix dropped, `-` written `_` (drivers/net/foo-bar.ko.xz -> foo_bar)."""
    return path.rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_")


# The packaging conventions that wrap a driver's name: RHEL, ELRepo and the Kmods SIG's kmod-NAME,
# Fedora's akmod-NAME, SUSE's NAME-kmp-FLAVOR, Debian's NAME-dkms (and its NAME-modules-KVER builds).
_DRIVER_PACKAGE = re.compile(r"^(?:kmod-|akmod-)?(?P<name>.+?)(?:-kmp-[a-z0-9_]+|-dkms|-modules-\d[^/]*)?$")


def driver_name(package: str) -> str:
    """The driver a package carries, one name whatever it was packaged as: kmod-jool,
    jool-kmp-default, jool-dkms -> jool."""
    match = _DRIVER_PACKAGE.match(package)
    return match.group("name") if match and match.group("name") else package


def version_key(version: str) -> tuple:
    """Natural order of versions, package versions and kernel releases alike, as rpmsort() and
    rpmvercmp() order them: digit runs compare as numbers (6.1.0-9 < 6.1.0-47, 427.31 < 427.40)
    and a number is newer than letters (427.31.1.el9_4 > 427.el9)."""
    return tuple((1, int(part), "") if part.isdigit() else (0, 0, part)
                 for part in re.findall(r"\d+|[^\d.+~_-]+", version))


# How a kernel release names its architecture: RHEL's ends in `uname -m` (5.14.0-362.8.1.el9_3.x86_64,
# .aarch64, then +rt or +debug), Debian's flavor holds its own name for it (6.1.0-56-amd64, -cloud-arm64,
# -powerpc64le, -s390x).
_RELEASE_ARCH_NAMES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64"),
                       "ppc64le": ("ppc64le", "powerpc64le"), "s390x": ("s390x",), "i686": ("i686", "686")}


def release_across_architectures(release: str, machine: str | None) -> str:
    """The release with its architecture's name made `*`: the same for one build of a kernel on
    every architecture (6.1.0-56-amd64 and 6.1.0-56-arm64: 6.1.0-56-*), which a gate covers together."""
    names = _RELEASE_ARCH_NAMES.get(machine or "", (machine,) if machine else ())
    found = [m for name in names for m in re.finditer(rf"(?<=[-.]){re.escape(name)}(?=$|[-.+])", release)]
    if not found:
        return release
    last = max(found, key=lambda m: m.start())
    return release[:last.start()] + "*" + release[last.end():]


# EXPORT_SYMBOL_GPL_FUTURE (pre-4.x) was still usable by non-GPL modules.
GPL_ONLY_EXPORT_TYPES = frozenset({"EXPORT_SYMBOL_GPL", "EXPORT_UNUSED_SYMBOL_GPL"})


@dataclass(frozen=True, slots=True)
class Export:
    """One exported symbol: a line of Module.symvers, or a `__ksymtab_*` entry of a module."""

    name: str
    crc: int | None
    owner: str  # "vmlinux", or the exporting module's path as Module.symvers names it
    export_type: str = "EXPORT_SYMBOL"
    namespace: str = ""

    @property
    def gpl_only(self) -> bool:
        return self.export_type in GPL_ONLY_EXPORT_TYPES


@dataclass(frozen=True, slots=True)
class Import:
    """An undefined symbol the module needs resolved at load time."""

    name: str
    weak: bool = False


@dataclass(frozen=True, slots=True)
class SymbolVersion:
    """One `__versions` record: the CRC the module was built against."""

    name: str
    crc: int


@dataclass(frozen=True, slots=True)
class ModuleSignature:
    """The appended `~Module signature appended~` trailer and what its CMS says."""

    id_type: str  # "PKCS#7", "X509" or "PGP"
    hash_algorithm: str
    signer: str
    key_id: str  # hex, colon separated as modinfo prints it
    signature_size: int
    signed_size: int  # bytes of the module covered by the signature
    # Why the kernel's mod_check_sig()/pkcs7 parser rejects it: "EBADMSG: ..." is fatal even on
    # kernels that do not enforce signatures, "ENOPKG: ..." is treated like an unsigned module.
    defect: str | None = None


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """A module's signature verified against a set of trusted keys (mod_verify_sig())."""

    # "ok", or the kernel's error: ENODATA (unsigned), ENOPKG (unsupported crypto), ENOKEY (no
    # trusted key matches) are fatal only when signatures are enforced; EBADMSG, EKEYREJECTED
    # (does not verify), EINVAL always are.
    result: str
    message: str
    signer: str = ""
    key_id: str = ""
    hash_algorithm: str = ""
    trusted_by: str | None = None  # subject of the trusted certificate that verified it


@dataclass(frozen=True, slots=True)
class PackageOrigin:
    """The package (RPM or deb, a file or a repository's URL) a module was read from."""

    package: str  # path or URL of the package file
    name: str
    version: str  # version-release (RPM) or the deb's Version
    arch: str
    format: str  # "rpm" or "deb"
    # ELRepo kmods ship /usr/share/doc/kmod-*/greylist.txt: the symbols they use that are not
    # on the distribution's kABI stablelist. None when the package has none.
    greylist: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ElfLayout:
    """What load_module() checks in a module's ELF image before it resolves a symbol (see
    docs/loader-checks.md): the facts the ELF parser does not already refuse as malformed input."""

    # sh_size of .gnu.linkonce.this_module: the sizeof(struct module) the module was built with
    this_module_size: int
    this_module_sections: int  # how many sections have that name
    this_module_nobits: bool
    this_module_alloc: bool  # SHF_ALLOC
    modinfo_sections: int
    symbol_tables: int  # SHT_SYMTAB sections
    symbol_strings_ok: bool  # the symbol table's sh_link is a SHT_STRTAB section
    section_names_ok: bool  # the section name table (e_shstrndx) is a SHT_STRTAB section
    write_exec_sections: tuple[str, ...]  # "name (index N)" of sections both SHF_WRITE and SHF_EXECINSTR
    common_symbols: tuple[str, ...]  # SHN_COMMON symbols (built without -fno-common)
    ctors_and_init_array: bool  # both .ctors and .init_array sections
    # Which of the sections module_frob_arch_sections() needs are there (ARCH_SECTIONS in formats/module.py);
    # None: not read (a layout stored before they were).
    arch_sections: tuple[str, ...] | None = None
    e_flags: int | None = None  # the ELF header's, for powerpc's module_elf_check_arch(); None: not read


@dataclass(frozen=True, slots=True)
class Module:
    path: str
    machine: str  # e.g. "x86_64", "aarch64", "ppc64le", "s390x"
    modinfo: tuple[tuple[str, str], ...]
    versions: tuple[SymbolVersion, ...] | None  # None: no __versions section at all
    imports: tuple[Import, ...]
    exports: tuple[Export, ...]
    signature: ModuleSignature | None
    compression: str | None = None
    origin: PackageOrigin | None = None  # set when the module was read from a package
    layout: ElfLayout | None = None  # None: not known (a module stored by an older kabigate)

    def info(self, key: str) -> str | None:
        """First value of a .modinfo key, as the kernel's get_modinfo() returns it."""
        for k, value in self.modinfo:  # a loop, not next(genexpr): a tree's check asks ~64,000 times
            if k == key:
                return value
        return None

    def info_all(self, key: str) -> list[str]:
        return [value for k, value in self.modinfo if k == key]

    @property
    def name(self) -> str:
        name = self.info("name")
        if name:
            return name
        return module_name(self.path)

    @property
    def vermagic(self) -> str | None:
        return self.info("vermagic")

    @property
    def license(self) -> str | None:
        return self.info("license")

    @property
    def depends(self) -> list[str]:
        value = self.info("depends")
        return [d for d in value.split(",") if d] if value else []

    @property
    def imported_namespaces(self) -> list[str]:
        return self.info_all("import_ns")

    def version_of(self, symbol: str) -> SymbolVersion | None:
        if self.versions is None:
            return None
        return next((v for v in self.versions if v.name == symbol), None)


@dataclass(slots=True)
class Kernel:
    """What kabigate knows of one kernel build: its exports, its vermagic, its config."""

    release: str | None
    vermagic: str | None
    machine: str | None
    exports: dict[str, Export]
    config: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    package_version: str | None = None  # when read from packages: the kernel package's version
    # sizeof(struct module), read from an in-tree module's .gnu.linkonce.this_module; None: unknown
    module_struct_size: int | None = None
    image: str | None = None  # its vmlinuz/vmlinux when one was found (BTF for `kabigate explain`)

    def config_enabled(self, option: str) -> bool | None:
        """True/False from the kernel's .config, None when the config is unknown."""
        if not self.config:
            return None
        return self.config.get(option) in ("y", "m")

    @property
    def has_modversions(self) -> bool:
        enabled = self.config_enabled("CONFIG_MODVERSIONS")
        if enabled is not None:
            return enabled
        return any(export.crc is not None for export in self.exports.values())


class LoadVerdict(StrEnum):
    """A module's or a build's verdict on a kernel, as the JSON reports spell it (`verdict`)."""

    LOADS = "loads"
    FAILS = "fails"


class ReasonCode(StrEnum):
    """Why a module fails to load, or what loading it does: the `code` of a Reason, as JSON, the
    store and the README's "Reason codes" list spell it (a StrEnum: equal to and printed as that text)."""

    # Failures, in the order load_module() meets them (docs/loader-checks.md).
    UNSIGNED = "unsigned"  # also a warning, when signatures are not enforced
    UNTRUSTED_SIGNATURE = "untrusted-signature"  # also a warning
    UNSUPPORTED_SIGNATURE = "unsupported-signature"  # ENOPKG: also a warning
    BAD_SIGNATURE = "bad-signature"
    ARCH_MISMATCH = "arch-mismatch"
    INVALID_ELF = "invalid-elf"
    MODULE_STRUCT_SIZE = "module-struct-size"
    NO_VERSIONS = "no-versions"
    MODULE_LAYOUT_MISMATCH = "module-layout-mismatch"
    VERMAGIC_MISMATCH = "vermagic-mismatch"
    LIVEPATCH_UNSUPPORTED = "livepatch-unsupported"
    ALREADY_LOADED = "already-loaded"
    ARCH_SECTIONS_MISSING = "arch-sections-missing"  # arm64 .plt/.init.plt, ppc64 .stubs
    WRITE_EXEC_SECTION = "write-exec-section"
    COMMON_SYMBOL = "common-symbol"
    MISSING_SYMBOL = "missing-symbol"
    GPL_ONLY = "gpl-only"
    CRC_MISMATCH = "crc-mismatch"
    NO_SYMBOL_VERSION = "no-symbol-version"
    NAMESPACE_NOT_IMPORTED = "namespace-not-imported"  # a warning with CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS
    DUPLICATE_EXPORT = "duplicate-export"
    DEPENDENCY_FAILS = "dependency-fails"
    # Warnings: the module loads.
    TAINT_OUT_OF_TREE = "taint-out-of-tree"
    TAINT_PROPRIETARY = "taint-proprietary"
    TAINT_STAGING = "taint-staging"
    TAINT_LIVEPATCH = "taint-livepatch"
    TAINT_TEST = "taint-test"
    TAINT_FORCED = "taint-forced"
    NO_RETPOLINE = "no-retpoline"
    VERMAGIC_UNKNOWN = "vermagic-unknown"
    MODULE_STRUCT_UNKNOWN = "module-struct-unknown"
    # Not a loader rule: weak-modules cannot read the module a link would point at.
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a module fails to load (or, as a warning, what loading it does)."""

    code: ReasonCode
    message: str
    symbol: str | None = None
    module_crc: int | None = None
    kernel_crc: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    module: Module
    reasons: tuple[Reason, ...]
    warnings: tuple[Reason, ...]

    @property
    def loads(self) -> bool:
        return not self.reasons

