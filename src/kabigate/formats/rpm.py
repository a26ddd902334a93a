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

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

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
_CHAR, _INT8, _INT16, _INT32, _INT64, _STRING, _BIN, _STRING_ARRAY, _I18NSTRING = 1, 2, 3, 4, 5, 6, 7, 8, 9
_INT_FORMATS = {_CHAR: ("B", 1), _INT8: ("B", 1), _INT16: ("H", 2), _INT32: ("I", 4), _INT64: ("Q", 8)}

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


@dataclass
class RpmHeader:
    tags: dict[int, object]
    payload_offset: int
    provides: list[Dependency] = field(default_factory=list)
    requires: list[Dependency] = field(default_factory=list)

    def string(self, tag: int) -> str | None:
        value = self.tags.get(tag)
        if isinstance(value, list):
            value = value[0] if value else None
        return value if isinstance(value, str) else None

    @property
    def nevra(self) -> str:
        epoch = self.tags.get(EPOCH)
        epoch_text = f"{epoch[0]}:" if isinstance(epoch, list) and epoch else ""
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
    _, end = _parse_structure(data, LEAD_SIZE, what, "signature header")
    end += -end % 8
    tags, end = _parse_structure(data, end, what, "header")
    header = RpmHeader(tags, end)
    header.provides = _dependencies(tags, PROVIDENAME, PROVIDEFLAGS, PROVIDEVERSION, what)
    header.requires = _dependencies(tags, REQUIRENAME, REQUIREFLAGS, REQUIREVERSION, what)
    if header.string(NAME) is None:
        raise InputError(f"{what}: RPM header has no package name")
    return header


def _parse_structure(data, offset: int, what: str, part: str) -> tuple[dict[int, object], int]:
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
    blob = bytes(data[store:end])
    tags: dict[int, object] = {}
    for tag, kind, position, number in struct.iter_unpack(">iIiI", bytes(data[index_start:store])):
        if position < 0 or position > size:
            raise InputError(f"{what}: RPM {part} tag {tag} points outside its data")
        tags[tag] = _tag_value(blob, kind, position, number, what, part, tag)
    return tags, end


def _tag_value(blob: bytes, kind: int, position: int, number: int, what: str, part: str, tag: int):
    if kind in _INT_FORMATS:
        code, width = _INT_FORMATS[kind]
        if number > len(blob) or position + width * number > len(blob):
            raise InputError(f"{what}: RPM {part} tag {tag} runs past its data")
        return list(struct.unpack_from(f">{number}{code}", blob, position))
    if kind == _BIN:
        if position + number > len(blob):
            raise InputError(f"{what}: RPM {part} tag {tag} runs past its data")
        return blob[position:position + number]
    if kind in (_STRING, _STRING_ARRAY, _I18NSTRING):
        if number > len(blob) - position + 1:
            raise InputError(f"{what}: RPM {part} tag {tag} runs past its data")
        strings = []
        for _ in range(1 if kind == _STRING else number):
            end = blob.find(b"\0", position)
            if end < 0:
                raise InputError(f"{what}: RPM {part} tag {tag}: unterminated string")
            strings.append(blob[position:end].decode("utf-8", "replace"))
            position = end + 1
        return strings[0] if kind == _STRING else strings
    return None  # NULL or unknown types: ignored, as rpm does for tags it does not use


def _dependencies(tags: dict, name_tag: int, flags_tag: int, version_tag: int, what: str) -> list[Dependency]:
    names = tags.get(name_tag) or []
    flags = tags.get(flags_tag) or [0] * len(names)
    versions = tags.get(version_tag) or [""] * len(names)
    if not isinstance(names, list) or not isinstance(flags, list) or not isinstance(versions, list) \
            or not (len(names) == len(flags) == len(versions)):
        raise InputError(f"{what}: RPM dependency tags {name_tag}/{flags_tag}/{version_tag} disagree in length")
    return [Dependency(n, int(f), v) for n, f, v in zip(names, flags, versions)]


# -- payload --------------------------------------------------------------------------------

@dataclass(frozen=True)
class CpioEntry:
    name: str  # as stored: "./usr/lib/..." (rpm >= 4.12) or "usr/lib/..."
    mode: int
    size: int
    nlink: int


CPIO_HEADER = 110
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
        try:
            fields = [int(raw[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise InputError(f"{what}: bad cpio header (non-hex field) at payload offset "
                             f"{reader.position - 110}") from None
        mode, nlink, size, name_size = fields[1], fields[4], fields[6], fields[11]
        if name_size == 0 or name_size > 4096:
            raise InputError(f"{what}: bad cpio name size {name_size}")
        name_raw = reader.read(name_size)
        if len(name_raw) < name_size or name_raw[-1:] != b"\0":
            raise InputError(f"{what}: cpio name is truncated or unterminated")
        reader.skip(-(CPIO_HEADER + name_size) % 4)
        name = name_raw[:-1].decode("utf-8", "surrogateescape")
        if name == "TRAILER!!!":
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
