"""yum/dnf repository metadata: repodata/repomd.xml and the primary.xml.{gz,xz,zst,bz2} it names.

Parsed as a stream with expat (the metadata is hostile input like a package): DTDs, and so
entity declarations and external references, are refused (as defusedxml refuses them); the
decompressed data is fed as it comes and only what kabigate reads is kept (no element tree:
a primary.xml of millions of empty elements would cost gigabytes); elements are counted and
capped; <metadata> may hold only <package> elements. primary.xml carries each package's
location, size, checksum, and its rpm:provides / rpm:requires, so kABI dependencies can be read
without any package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.parsers import expat

from kabigate.errors import InputError
from kabigate.formats.rpm import SENSE_EQUAL, SENSE_GREATER, SENSE_LESS, Dependency
from kabigate.formats.stream import decompressed_chunks

REPO_NS = "http://linux.duke.edu/metadata/repo}"
COMMON_NS = "http://linux.duke.edu/metadata/common}"
RPM_NS = "http://linux.duke.edu/metadata/rpm}"
XML_BASE = "http://www.w3.org/XML/1998/namespace}base"
_FLAGS = {"EQ": SENSE_EQUAL, "LT": SENSE_LESS, "GT": SENSE_GREATER, "LE": SENSE_LESS | SENSE_EQUAL,
          "GE": SENSE_GREATER | SENSE_EQUAL}
MAX_PRIMARY = 2 * 1024**3  # decompressed bytes
# EPEL 9's primary.xml has ~1.5 million elements; kernel-core's ~10,000 Provides are one package's.
MAX_PRIMARY_ELEMENTS = 10_000_000
MAX_PACKAGE_ELEMENTS = 1_000_000
MAX_REPOMD = 1024 * 1024  # repomd.xml: a dozen <data> entries, ~4 KiB
MAX_REPOMD_ELEMENTS = 100_000
MAX_TEXT = 4096  # text kept from one element (names, checksums)


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


class _Refused(Exception):
    pass


class _Parser:
    """expat with DTDs refused, names as "<namespace uri>}<local name>", counting elements."""

    def __init__(self, what: str, max_elements: int):
        self.what, self.max_elements = what, max_elements
        self.elements = 0
        self.depth = 0
        self.text: list[str] | None = None  # collecting the current element's text
        self.text_size = 0
        self.expat = expat.ParserCreate(namespace_separator="}")
        self.expat.StartDoctypeDeclHandler = self._refuse_dtd
        self.expat.EntityDeclHandler = self._refuse_dtd
        self.expat.ExternalEntityRefHandler = self._refuse_dtd
        self.expat.StartElementHandler = self._start
        self.expat.EndElementHandler = self._end
        self.expat.CharacterDataHandler = self._data
        self.expat.buffer_text = True

    def _refuse_dtd(self, *_args):
        raise _Refused("DTDs and entity declarations are not allowed in repository metadata")

    def _start(self, name: str, attributes: dict) -> None:
        self.elements += 1
        if self.elements > self.max_elements:
            raise _Refused(f"more than {self.max_elements} XML elements")
        self.depth += 1
        self.start(name, attributes)

    def _end(self, name: str) -> None:
        self.end(name)
        self.depth -= 1

    def _data(self, text: str) -> None:
        if self.text is not None:
            self.text_size += len(text)
            if self.text_size > MAX_TEXT:
                raise _Refused(f"an element's text is longer than {MAX_TEXT} characters")
            self.text.append(text)

    def collect_text(self) -> None:
        self.text, self.text_size = [], 0

    def take_text(self) -> str:
        text, self.text = "".join(self.text or ()), None
        return text.strip()

    def start(self, name: str, attributes: dict) -> None:
        raise NotImplementedError

    def end(self, name: str) -> None:
        raise NotImplementedError

    def feed(self, chunks) -> None:
        try:
            for chunk in chunks:
                self.expat.Parse(chunk, False)
            self.expat.Parse(b"", True)
        except expat.ExpatError as error:
            raise InputError(f"{self.what}: bad XML ({expat.ErrorString(error.code)} at line {error.lineno})") \
                from None
        except _Refused as refused:
            raise InputError(f"{self.what}: refused XML: {refused}") from None
        except (LookupError, ValueError, UnicodeError) as error:  # e.g. encoding="x-unknown"
            raise InputError(f"{self.what}: bad XML ({str(error).splitlines()[0] if str(error) else error!r})") \
                from None


class _Repomd(_Parser):
    def __init__(self, what: str):
        super().__init__(what, MAX_REPOMD_ELEMENTS)
        self.files: dict[str, DataFile] = {}
        self.entry: dict | None = None

    def start(self, name: str, attributes: dict) -> None:
        if self.depth == 1:
            if name != REPO_NS + "repomd":
                raise _Refused(f"not a repomd.xml (root element {name!r})")
        elif self.depth == 2 and name == REPO_NS + "data":
            self.entry = {"type": attributes.get("type", ""), "href": None, "checksum_type": "", "checksum": ""}
        elif self.depth == 3 and self.entry is not None:
            if name == REPO_NS + "location":
                self.entry["href"] = attributes.get("href")
            elif name == REPO_NS + "checksum":
                self.entry["checksum_type"] = attributes.get("type", "")
                self.collect_text()

    def end(self, name: str) -> None:
        if self.depth == 3 and self.entry is not None and name == REPO_NS + "checksum":
            self.entry["checksum"] = self.take_text()
        elif self.depth == 2 and self.entry is not None:
            entry, self.entry = self.entry, None
            if not entry["href"]:
                raise _Refused(f"data entry {entry['type']!r} has no location")
            self.files[entry["type"]] = DataFile(entry["type"], entry["href"], entry["checksum_type"],
                                                 entry["checksum"])


def parse_repomd(data: bytes, what: str) -> dict[str, DataFile]:
    if len(data) > MAX_REPOMD:
        raise InputError(f"{what}: larger than {MAX_REPOMD >> 10} KiB, not a repomd.xml")
    parser = _Repomd(what)
    parser.feed([bytes(data)])
    if "primary" not in parser.files:
        raise InputError(f"{what}: repomd.xml names no primary metadata")
    return parser.files


_PACKAGE_TEXT = {COMMON_NS + "name", COMMON_NS + "arch", COMMON_NS + "checksum"}


class _Primary(_Parser):
    def __init__(self, what: str):
        super().__init__(what, MAX_PRIMARY_ELEMENTS)
        self.packages: list[RepoPackage] = []
        self.package: dict | None = None
        self.package_start = 0
        self.dependencies: list[Dependency] | None = None

    def start(self, name: str, attributes: dict) -> None:
        depth = self.depth
        if depth == 1:
            if name != COMMON_NS + "metadata":
                raise _Refused(f"not primary metadata (root element {name!r})")
        elif depth == 2:
            if name != COMMON_NS + "package":
                raise _Refused(f"unexpected element {name!r} in <metadata> (only <package>)")
            self.package = {"type": attributes.get("type"), "name": "", "arch": "", "version": None,
                            "location": None, "size": "0", "checksum_type": "", "checksum": "",
                            "provides": [], "requires": []}
            self.package_start = self.elements
        elif self.package is not None:
            if self.elements - self.package_start > MAX_PACKAGE_ELEMENTS:
                raise _Refused(f"a package entry of more than {MAX_PACKAGE_ELEMENTS} elements")
            if depth == 3:
                if name in _PACKAGE_TEXT:
                    if name == COMMON_NS + "checksum":
                        self.package["checksum_type"] = attributes.get("type", "")
                    self.collect_text()
                elif name == COMMON_NS + "version":
                    self.package["version"] = attributes
                elif name == COMMON_NS + "location":
                    self.package["location"] = attributes
                elif name == COMMON_NS + "size":
                    self.package["size"] = attributes.get("package", "0")
            elif depth == 4 and name in (RPM_NS + "provides", RPM_NS + "requires"):
                self.dependencies = self.package["provides" if name == RPM_NS + "provides" else "requires"]
            elif depth == 5 and name == RPM_NS + "entry" and self.dependencies is not None:
                version = attributes.get("ver", "")
                if attributes.get("rel"):
                    version += "-" + attributes["rel"]
                self.dependencies.append(Dependency(attributes.get("name", ""),
                                                    _FLAGS.get(attributes.get("flags", ""), 0), version))

    def end(self, name: str) -> None:
        depth = self.depth
        if self.package is None:
            return
        if depth == 3 and name in _PACKAGE_TEXT:
            self.package[name[len(COMMON_NS):]] = self.take_text()
        elif depth == 4:
            self.dependencies = None
        elif depth == 2:
            package, self.package = self.package, None
            if package["type"] == "rpm":
                self.packages.append(_repo_package(package, self.what))


def _repo_package(package: dict, what: str) -> RepoPackage:
    version, location = package["version"], package["location"]
    if version is None or location is None or not location.get("href"):
        raise _Refused("package entry without version or location")
    if location.get(XML_BASE) or location.get("xml:base"):
        raise _Refused("package locations outside the repository (xml:base) are not followed")
    size = package["size"]
    if not size.isdigit():
        raise _Refused(f"bad package size {size[:40]!r}")
    return RepoPackage(name=package["name"], arch=package["arch"], epoch=version.get("epoch", "0"),
                       version=version.get("ver", ""), release=version.get("rel", ""), href=location["href"],
                       size=int(size), checksum_type=package["checksum_type"], checksum=package["checksum"],
                       provides=package["provides"], requires=package["requires"])


def parse_primary(compressed: bytes, what: str) -> list[RepoPackage]:
    parser = _Primary(what)
    parser.feed(_capped(decompressed_chunks(compressed, what), what))
    return parser.packages


def _capped(chunks, what: str):
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_PRIMARY:
            raise InputError(f"{what}: primary metadata larger than {MAX_PRIMARY >> 20} MiB")
        yield chunk
