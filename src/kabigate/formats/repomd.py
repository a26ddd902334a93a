"""yum/dnf repository metadata: repodata/repomd.xml and the primary.xml.{gz,xz,zst,bz2} it names.

Parsed with defusedxml (DTDs, entities and external references refused: a repository is
hostile input like a package). primary.xml carries each package's location, size, checksum,
and its rpm:provides / rpm:requires, so kABI dependencies can be read without any package.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from kabigate.errors import InputError
from kabigate.formats.rpm import SENSE_EQUAL, SENSE_GREATER, SENSE_LESS, Dependency
from kabigate.formats.stream import decompressed_chunks

REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"
RPM_NS = "{http://linux.duke.edu/metadata/rpm}"
_FLAGS = {"EQ": SENSE_EQUAL, "LT": SENSE_LESS, "GT": SENSE_GREATER, "LE": SENSE_LESS | SENSE_EQUAL,
          "GE": SENSE_GREATER | SENSE_EQUAL}
MAX_PRIMARY = 2 * 1024**3


@dataclass(frozen=True)
class DataFile:
    kind: str
    href: str
    checksum_type: str
    checksum: str


@dataclass
class RepoPackage:
    name: str
    arch: str
    epoch: str
    version: str
    release: str
    href: str
    size: int
    checksum_type: str
    checksum: str
    provides: list[Dependency] = field(default_factory=list)
    requires: list[Dependency] = field(default_factory=list)

    @property
    def nevra(self) -> str:
        epoch = f"{self.epoch}:" if self.epoch not in ("", "0") else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"


def _parse(data: bytes, what: str):
    try:
        return SafeET.parse(io.BytesIO(data), forbid_dtd=True).getroot()
    except (SafeET.ParseError, DefusedXmlException) as error:
        raise InputError(f"{what}: bad or unsafe XML ({str(error).splitlines()[0]})") from None


def parse_repomd(data: bytes, what: str) -> dict[str, DataFile]:
    root = _parse(data, what)
    if root.tag != REPO_NS + "repomd":
        raise InputError(f"{what}: not a repomd.xml (root element {root.tag!r})")
    files = {}
    for node in root.findall(REPO_NS + "data"):
        location = node.find(REPO_NS + "location")
        checksum = node.find(REPO_NS + "checksum")
        if location is None or not location.get("href"):
            raise InputError(f"{what}: data entry {node.get('type')!r} has no location")
        files[node.get("type", "")] = DataFile(node.get("type", ""), location.get("href"),
                                               checksum.get("type", "") if checksum is not None else "",
                                               (checksum.text or "").strip() if checksum is not None else "")
    if "primary" not in files:
        raise InputError(f"{what}: repomd.xml names no primary metadata")
    return files


def parse_primary(compressed: bytes, what: str) -> list[RepoPackage]:
    data = b"".join(decompressed_chunks(compressed, what))
    if len(data) > MAX_PRIMARY:
        raise InputError(f"{what}: primary metadata larger than {MAX_PRIMARY >> 20} MiB")
    root = _parse(data, what)
    if root.tag != COMMON_NS + "metadata":
        raise InputError(f"{what}: not primary metadata (root element {root.tag!r})")
    packages = []
    for node in root.findall(COMMON_NS + "package"):
        if node.get("type") != "rpm":
            continue
        version = node.find(COMMON_NS + "version")
        location = node.find(COMMON_NS + "location")
        size = node.find(COMMON_NS + "size")
        checksum = node.find(COMMON_NS + "checksum")
        if version is None or location is None or not location.get("href"):
            raise InputError(f"{what}: package entry without version or location")
        if location.get("{http://www.w3.org/XML/1998/namespace}base") or node.find(COMMON_NS + "location").get(
                "xml:base"):
            raise InputError(f"{what}: package locations outside the repository (xml:base) are not followed")
        try:
            package_size = int(size.get("package", "0")) if size is not None else 0
        except ValueError:
            raise InputError(f"{what}: bad package size") from None
        form = node.find(COMMON_NS + "format")
        packages.append(RepoPackage(
            name=(node.findtext(COMMON_NS + "name") or "").strip(),
            arch=(node.findtext(COMMON_NS + "arch") or "").strip(),
            epoch=version.get("epoch", "0"), version=version.get("ver", ""), release=version.get("rel", ""),
            href=location.get("href"), size=package_size,
            checksum_type=checksum.get("type", "") if checksum is not None else "",
            checksum=(checksum.text or "").strip() if checksum is not None else "",
            provides=_entries(form, "provides"), requires=_entries(form, "requires")))
    return packages


def _entries(form, kind: str) -> list[Dependency]:
    if form is None:
        return []
    node = form.find(RPM_NS + kind)
    if node is None:
        return []
    entries = []
    for entry in node.findall(RPM_NS + "entry"):
        version = entry.get("ver", "")
        if entry.get("rel"):
            version += "-" + entry.get("rel")
        entries.append(Dependency(entry.get("name", ""), _FLAGS.get(entry.get("flags", ""), 0), version))
    return entries
