"""RPM v3/v4 packages: lead, signature header, header (tags), payload as cpio (newc/crc).

Layout (rpm's lib/rpmlead.c, lib/header.c, lib/fsm.c):
    lead       96 bytes, magic ed ab ee db
    signature  header structure, padded to 8 bytes
    header     8e ad e8 01, reserved, index count, data size, index entries, data store
    payload    cpio "070701"/"070702" archive, compressed as PAYLOADCOMPRESSOR says

Written here rather than with rpmfile: rpmfile reads a zstd payload whole into memory without a cap,
seeks backwards in the decompressed stream for each member (re-decompressing), and lets malformed
names escape as UnicodeDecodeError; kabigate needs one capped forward pass and header bounds checks.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from kabigate.errors import InputError
from kabigate.formats.stream import ChunkReader, compression_name, decompressed_chunks

LEAD_MAGIC = b"\xed\xab\xee\xdb"
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
LEAD_SIZE = 96
MAX_HEADER_ENTRIES = 1 << 20  # rpm's own limit (HEADER_TAGS_MAX is 0xffff, index data 256 MiB)
MAX_HEADER_DATA = 256 * 1024 * 1024

# Tags (rpm's include/rpm/rpmtag.h)
NAME, VERSION, RELEASE, EPOCH, ARCH = 1000, 1001, 1002, 1003, 1022
PROVIDENAME, REQUIREFLAGS, REQUIRENAME, REQUIREVERSION = 1047, 1048, 1049, 1050
PROVIDEFLAGS, PROVIDEVERSION = 1112, 1113
PAYLOADFORMAT, PAYLOADCOMPRESSOR = 1124, 1125
SOURCERPM = 1044

# Types
_NULL, _CHAR, _INT8, _INT16, _INT32, _INT64, _STRING, _BIN, _STRING_ARRAY, _I18NSTRING = range(10)
_INT_FORMATS = {_CHAR: ("B", 1), _INT8: ("B", 1), _INT16: ("H", 2), _INT32: ("I", 4), _INT64: ("Q", 8)}
_CLASSES = {**{kind: "integer" for kind in _INT_FORMATS}, _STRING: "string", _STRING_ARRAY: "string",
            _I18NSTRING: "string", _BIN: "binary", _NULL: "null"}
DIRINDEXES, BASENAMES, DIRNAMES, OLDFILENAMES = 1116, 1117, 1118, 1027
# The tags kabigate reads, with their type class (rpm's tag table): rpm's header verification
# refuses a known tag of another class (hdrchkTagType); so does this, rather than let a number
# stand where a name is expected further on.
_TAG_CLASSES = {NAME: "string", VERSION: "string", RELEASE: "string", ARCH: "string", EPOCH: "integer",
                SOURCERPM: "string", PAYLOADFORMAT: "string", PAYLOADCOMPRESSOR: "string",
                PROVIDENAME: "string", PROVIDEFLAGS: "integer", PROVIDEVERSION: "string",
                REQUIRENAME: "string", REQUIREFLAGS: "integer", REQUIREVERSION: "string",
                DIRINDEXES: "integer", BASENAMES: "string", DIRNAMES: "string", OLDFILENAMES: "string"}
# Values in one tag: kernel-core has ~10,000 Provides, a large package ~100,000 files. Each tag
# is decoded only when read, once: many entries pointing at the same data cost nothing.
MAX_TAG_COUNT = 1 << 20

# Dependency sense flags
SENSE_LESS, SENSE_GREATER, SENSE_EQUAL = 0x02, 0x04, 0x08


@dataclass(frozen=True)
class Dependency:
    name: str
    flags: int = 0
    version: str = ""

    @property
    def relation(self) -> str:
        ops = {SENSE_EQUAL: "=", SENSE_LESS: "<", SENSE_GREATER: ">", SENSE_LESS | SENSE_EQUAL: "<=",
               SENSE_GREATER | SENSE_EQUAL: ">="}
        return ops.get(self.flags & (SENSE_LESS | SENSE_GREATER | SENSE_EQUAL), "")

    def __str__(self) -> str:
        return f"{self.name} {self.relation} {self.version}" if self.version else self.name


class RpmHeader:
    """The main header's index (for the tags kabigate reads) over its data store; a tag's values
    are decoded on first use: strings(), ints(), string()."""

    def __init__(self, blob: bytes, index: dict[int, tuple[int, int, int]], payload_offset: int, what: str):
        self._blob, self._index, self._what = blob, index, what
        self._decoded: dict[int, list] = {}
        self.payload_offset = payload_offset
        self.provides: list[Dependency] = []
        self.requires: list[Dependency] = []

    def has(self, tag: int) -> bool:
        return tag in self._index

    def strings(self, tag: int) -> list[str] | None:
        """A string-class tag's values (a STRING tag gives one), or None if absent."""
        return self._values(tag, "string")

    def ints(self, tag: int) -> list[int] | None:
        return self._values(tag, "integer")

    def string(self, tag: int) -> str | None:
        values = self.strings(tag)
        return values[0] if values else None

    def _values(self, tag: int, wanted: str) -> list | None:
        if tag not in self._index:
            return None
        kind, position, count = self._index[tag]
        if _CLASSES.get(kind) != wanted:
            raise InputError(f"{self._what}: RPM header tag {tag} is of type {kind}, not {wanted}")
        if tag not in self._decoded:
            self._decoded[tag] = _decode(self._blob, kind, position, count, self._what, tag)
        return self._decoded[tag]

    @property
    def nevra(self) -> str:
        epoch = self.ints(EPOCH)
        epoch_text = f"{epoch[0]}:" if epoch else ""
        return f"{self.string(NAME)}-{epoch_text}{self.string(VERSION)}-{self.string(RELEASE)}.{self.string(ARCH)}"


def is_rpm(head: bytes) -> bool:
    return bytes(head[:4]) == LEAD_MAGIC


def read_header(data, what: str) -> RpmHeader:
    """Parse lead, signature and header of the RPM in `data` (bytes or mmap)."""
    if len(data) < LEAD_SIZE or bytes(data[:4]) != LEAD_MAGIC:
        raise InputError(f"{what}: not an RPM package (bad lead magic)")
    if data[4] not in (3, 4):
        raise InputError(f"{what}: unsupported RPM format version {data[4]}")
    (signature_type,) = struct.unpack(">H", bytes(data[78:80]))
    if signature_type != 5:  # RPMSIGTYPE_HEADERSIG: the only kind since rpm 3
        raise InputError(f"{what}: unsupported RPM signature type {signature_type}")
    _, _, end = _parse_structure(data, LEAD_SIZE, what, "signature header", {})
    end += -end % 8
    blob, index, end = _parse_structure(data, end, what, "header", _TAG_CLASSES)
    header = RpmHeader(blob, index, end, what)
    header.provides = _dependencies(header, PROVIDENAME, PROVIDEFLAGS, PROVIDEVERSION, what)
    header.requires = _dependencies(header, REQUIRENAME, REQUIREFLAGS, REQUIREVERSION, what)
    for tag in (NAME, VERSION, RELEASE, ARCH, PAYLOADFORMAT, PAYLOADCOMPRESSOR, EPOCH):
        header._values(tag, _TAG_CLASSES[tag])  # decoded now: their errors belong to reading the header
    if header.string(NAME) is None:
        raise InputError(f"{what}: RPM header has no package name")
    return header


def _parse_structure(data, offset: int, what: str, part: str, known: dict[int, str]):
    """(data store, {tag: (type, offset, count)} for the `known` tags, end offset). Every entry's
    bounds are checked (rpm's hdrblobVerifyInfo), none is decoded here."""
    if offset + 16 > len(data) or bytes(data[offset:offset + 4]) != HEADER_MAGIC:
        raise InputError(f"{what}: bad RPM {part} magic at offset {offset} (truncated or not an RPM)")
    count, size = struct.unpack(">II", bytes(data[offset + 8:offset + 16]))
    if count > MAX_HEADER_ENTRIES or size > MAX_HEADER_DATA:
        raise InputError(f"{what}: RPM {part} too large ({count} entries, {size} bytes)")
    index_start = offset + 16
    store = index_start + 16 * count
    end = store + size
    if end > len(data):
        raise InputError(f"{what}: RPM {part} is truncated")
    index: dict[int, tuple[int, int, int]] = {}
    for tag, kind, position, number in struct.iter_unpack(">iIiI", bytes(data[index_start:store])):
        if position < 0 or position > size:
            raise InputError(f"{what}: RPM {part} tag {tag} points outside its data")
        if kind in _INT_FORMATS:
            room = (size - position) // _INT_FORMATS[kind][1]
        elif kind in (_STRING, _STRING_ARRAY, _I18NSTRING, _BIN):
            room = size - position
        else:
            continue  # NULL or unknown types: ignored, as rpm does for tags it does not use
        if number > room:
            raise InputError(f"{what}: RPM {part} tag {tag} runs past its data ({number} entries)")
        if number > MAX_TAG_COUNT:
            raise InputError(f"{what}: RPM {part} tag {tag} has {number} entries (more than {MAX_TAG_COUNT})")
        if tag in known:
            if _CLASSES[kind] != known[tag]:
                raise InputError(f"{what}: RPM {part} tag {tag} has type {kind}, not the {known[tag]} rpm "
                                 "defines for it")
            index[tag] = (kind, position, number)
    return bytes(data[store:end]), index, end


def _decode(blob: bytes, kind: int, position: int, number: int, what: str, tag: int) -> list:
    if kind in _INT_FORMATS:
        code, _ = _INT_FORMATS[kind]
        return list(struct.unpack_from(f">{number}{code}", blob, position))
    strings = []
    for _ in range(1 if kind == _STRING else number):
        end = blob.find(b"\0", position)
        if end < 0:
            raise InputError(f"{what}: RPM header tag {tag}: unterminated string")
        strings.append(blob[position:end].decode("utf-8", "replace"))
        position = end + 1
    return strings


def _dependencies(header: RpmHeader, name_tag: int, flags_tag: int, version_tag: int,
                  what: str) -> list[Dependency]:
    names = header.strings(name_tag) or []
    flags = header.ints(flags_tag) or [0] * len(names)
    versions = header.strings(version_tag) or [""] * len(names)
    if not (len(names) == len(flags) == len(versions)):
        raise InputError(f"{what}: RPM dependency tags {name_tag}/{flags_tag}/{version_tag} disagree in length")
    return [Dependency(n, f, v) for n, f, v in zip(names, flags, versions)]


# -- payload --------------------------------------------------------------------------------

@dataclass(frozen=True)
class CpioEntry:
    name: str  # as stored: "./usr/lib/..." (rpm >= 4.12) or "usr/lib/..."
    mode: int
    size: int
    nlink: int


CPIO_HEADER = 110
_HEX_FIELDS = re.compile(rb"[0-9A-Fa-f]{104}")
_S_IFMT, _S_IFREG, _S_IFDIR, _S_IFLNK = 0o170000, 0o100000, 0o040000, 0o120000


def payload_kind(header: RpmHeader, data, what: str) -> str | None:
    """The payload's compression, by its magic (the header's PAYLOADCOMPRESSOR must agree)."""
    declared = header.string(PAYLOADCOMPRESSOR) or "gzip"
    payload_format = header.string(PAYLOADFORMAT) or "cpio"
    if payload_format != "cpio":
        raise InputError(f"{what}: unsupported RPM payload format {payload_format!r}")
    head = bytes(data[header.payload_offset:header.payload_offset + 6])
    actual = compression_name(head)
    names = {"gzip": "gzip", "xz": "xz", "zstd": "zstd", "bzip2": "bzip2", "lzma": "lzma"}
    if actual is None and head.startswith(b"0707"):
        return None
    if actual is None or names.get(declared, declared) != actual:
        raise InputError(f"{what}: RPM payload is not {declared} data (magic {head[:4].hex()})")
    return actual


def iter_payload(data, header: RpmHeader, what: str) -> Iterator[tuple[CpioEntry, ChunkReader]]:
    """(entry, reader) for each cpio member; read entry.size bytes from `reader` before the next
    step (or leave them: the iterator skips what was not read)."""
    kind = payload_kind(header, data, what)
    payload = memoryview(data)[header.payload_offset:]
    reader = ChunkReader(decompressed_chunks(payload, what, kind))
    while True:
        raw = reader.read(CPIO_HEADER)
        if len(raw) < CPIO_HEADER:
            raise InputError(f"{what}: RPM payload ends before the cpio trailer (truncated)")
        magic = raw[:6]
        if magic == b"07070X":
            raise InputError(f"{what}: stripped cpio payload (rpm >= 4.12 large-file format) is not supported")
        if magic not in (b"070701", b"070702"):
            raise InputError(f"{what}: bad cpio header magic {magic!r} at payload offset {reader.position - 110}")
        if not _HEX_FIELDS.fullmatch(raw[6:]):  # int(x, 16) would take "-0000001", "+1", " 1" and "1_0"
            raise InputError(f"{what}: bad cpio header (a field is not 8 hex digits) at payload offset "
                             f"{reader.position - 110}")
        fields = [int(raw[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, nlink, size, name_size = fields[1], fields[4], fields[6], fields[11]
        if name_size == 0 or name_size > 4096:
            raise InputError(f"{what}: bad cpio name size {name_size}")
        name_raw = reader.read(name_size)
        if len(name_raw) < name_size or name_raw[-1:] != b"\0":
            raise InputError(f"{what}: cpio name is truncated or unterminated")
        reader.skip(-(CPIO_HEADER + name_size) % 4)
        name = name_raw[:-1].decode("utf-8", "replace")
        if name == "TRAILER!!!":
            while reader.skip(1 << 24) == 1 << 24:  # the padding: the whole stream is checked
                pass
            return
        before = reader.position
        yield CpioEntry(name, mode, size, nlink), reader
        consumed = reader.position - before
        if consumed > size:
            raise InputError(f"{what}: read past cpio member {name}")
        if reader.skip(size - consumed) != size - consumed:
            raise InputError(f"{what}: cpio member {name} is truncated")
        reader.skip(-size % 4)


def entry_kind(mode: int) -> str:
    kind = mode & _S_IFMT
    return {_S_IFREG: "file", _S_IFDIR: "dir", _S_IFLNK: "symlink"}.get(kind, "other")
