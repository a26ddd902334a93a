"""tar archives (POSIX ustar and pax, GNU), read in one forward pass from a stream: the
control.tar and data.tar of Debian packages.

Written here rather than with the standard library's tarfile, which on hostile input raises
errors outside tarfile.TarError (ValueError from GNU.sparse pax records), reads GNU long names
and pax headers of any declared size into memory, recurses once per chained extension header,
and on unpatched interpreters spends quadratic time on pax headers of digits (CVE-2024-6232).
Here every field is checked (octal digits only, checksum, no negative size), extension headers
are capped (MAX_LONG_NAME, MAX_PAX) and parsed in linear time, and names decode as UTF-8 with
replacement characters. What is read follows tarfile's reading (the tests compare the two).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from kabigate.errors import InputError
from kabigate.formats.stream import ChunkReader

BLOCK = 512
MAX_LONG_NAME = 64 * 1024  # GNU long names and link names (PATH_MAX is 4096)
MAX_PAX = 1024 * 1024  # one pax extended header (paths, link paths, times, a few xattrs)
POSIX_MAGIC = b"ustar\x0000"
_REGULAR = (b"0", b"\0", b"7")
_KINDS = {b"1": "hardlink", b"2": "symlink", b"3": "other", b"4": "other", b"5": "dir", b"6": "other"}
_OCTAL = re.compile(rb"[ \0]*([0-7]*)[ \0]*")
_PAX_LENGTH = re.compile(rb"[0-9]{1,20}")
_HIGH = bytes(range(128, 256))


@dataclass(frozen=True)
class TarEntry:
    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", "other"
    size: int
    link: str


def iter_tar(reader: ChunkReader, what: str) -> Iterator[tuple[TarEntry, ChunkReader]]:
    """(entry, reader) for each member; read entry.size bytes from `reader` before the next step
    for a file's data (or leave them: the iterator skips what was not read)."""
    global_pax: dict[bytes, bytes] = {}
    local_pax: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    extended = False  # an extension header is waiting for its member
    first = True
    while True:
        header = reader.read(BLOCK)
        if not header and not extended:
            if first:
                raise InputError(f"{what}: empty tar archive")
            return  # no end-of-archive blocks: tarfile, and so dpkg's readers, stop here too
        if len(header) < BLOCK:
            raise InputError(f"{what}: tar archive is truncated (a header of {len(header)} bytes)")
        if header.count(0) == BLOCK:
            if extended:
                raise InputError(f"{what}: tar extension header without a member after it")
            return
        first = False
        _check_checksum(header, what)
        typeflag = header[156:157]
        size = _number(header[124:136], "size", what)
        if typeflag in (b"L", b"K"):
            if size > MAX_LONG_NAME:
                raise InputError(f"{what}: GNU long {'name' if typeflag == b'L' else 'link'} of {size} bytes "
                                 f"(more than {MAX_LONG_NAME})")
            value = _nts(_read_data(reader, size, what))
            long_name, long_link = (value, long_link) if typeflag == b"L" else (long_name, value)
            extended = True
            continue
        if typeflag in (b"x", b"g", b"X"):
            if size > MAX_PAX:
                raise InputError(f"{what}: pax extended header of {size} bytes (more than {MAX_PAX})")
            records = _pax_records(_read_data(reader, size, what), what)
            if typeflag == b"g":
                global_pax.update(records)
            else:
                local_pax.update(records)
                extended = True
            continue
        if typeflag == b"S" or any(key.startswith(b"GNU.sparse.") for key in (*global_pax, *local_pax)):
            raise InputError(f"{what}: sparse tar members are not supported")
        name = _nts(header[0:100])
        if typeflag not in (b"L", b"K") and header[257:265] == POSIX_MAGIC:
            prefix = _nts(header[345:500])
            if prefix:
                name = prefix + b"/" + name
        link = _nts(header[157:257])
        if typeflag == b"\0" and name.endswith(b"/"):
            typeflag = b"5"
        if long_name is not None:
            name = long_name
        if long_link is not None:
            link = long_link
        pax = {**global_pax, **local_pax}
        if pax.get(b"path"):
            name = pax[b"path"]
        if pax.get(b"linkpath"):
            link = pax[b"linkpath"]
        if pax.get(b"size"):
            if not pax[b"size"].isdigit():
                raise InputError(f"{what}: pax size {pax[b'size'][:40]!r} is not a number")
            size = int(pax[b"size"])
        kind = "file" if typeflag in _REGULAR else _KINDS.get(typeflag, "other")
        if kind == "dir":
            name = name.rstrip(b"/")
        local_pax, long_name, long_link, extended = {}, None, None, False
        # As tarfile: data follows regular files and unknown types, nothing else.
        has_data = typeflag in _REGULAR or typeflag not in _KINDS
        entry = TarEntry(_text(name), kind, size, _text(link))
        before = reader.position
        yield entry, reader
        if has_data:
            consumed = reader.position - before
            if consumed > size:
                raise InputError(f"{what}: read past tar member {entry.name}")
            if reader.skip(size - consumed + (-size % BLOCK)) != size - consumed + (-size % BLOCK):
                raise InputError(f"{what}: tar member {entry.name} is truncated")


def _check_checksum(header: bytes, what: str) -> None:
    stored = _number(header[148:156], "checksum", what)
    rest = header[:148] + header[156:]
    unsigned = 256 + sum(rest)
    signed = unsigned - 256 * (len(rest) - len(rest.translate(None, _HIGH)))  # bytes >= 128 as negative
    if stored not in (unsigned, signed):
        raise InputError(f"{what}: bad tar header checksum (not a tar archive, or corrupt)")


def _number(field: bytes, name: str, what: str) -> int:
    """An octal field (digits, padded with spaces or NULs), or GNU's base-256 for large values."""
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")
    if field[:1] == b"\xff":
        raise InputError(f"{what}: negative tar {name} field")
    end = field.find(b"\0")
    text = field if end < 0 else field[:end]
    match = _OCTAL.fullmatch(text)
    if match is None:
        raise InputError(f"{what}: tar {name} field {field!r} is not octal")
    return int(match.group(1) or b"0", 8)


def _nts(data: bytes) -> bytes:
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _read_data(reader: ChunkReader, size: int, what: str) -> bytes:
    data = reader.read(size)
    padding = -size % BLOCK
    if len(data) < size or reader.skip(padding) != padding:
        raise InputError(f"{what}: tar archive is truncated")
    return data


def _pax_records(data: bytes, what: str) -> dict[bytes, bytes]:
    """'<length> <key>=<value>\\n' records, each length checked, in one pass."""
    records: dict[bytes, bytes] = {}
    position = 0
    while position < len(data):
        if data[position] == 0 and not data[position:].strip(b"\0"):
            break  # NUL padding
        space = data.find(b" ", position, position + 21)
        if space < 0 or not _PAX_LENGTH.fullmatch(data, position, space):
            raise InputError(f"{what}: malformed pax record at offset {position} (no length)")
        length = int(data[position:space])
        end = position + length
        if length < space - position + 4 or end > len(data) or data[end - 1] != 0x0A:
            raise InputError(f"{what}: malformed pax record at offset {position} (bad length {length})")
        key, equals, value = data[space + 1:end - 1].partition(b"=")
        if not equals or not key:
            raise InputError(f"{what}: malformed pax record at offset {position} (no key=value)")
        records[key] = value
        position = end
    return records
