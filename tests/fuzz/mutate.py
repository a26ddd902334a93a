"""A deterministic, structure-aware mutator: the same (seed, target, iteration) always gives the
same input, so a finding is reproduced by its numbers alone and the CI slice is repeatable.

Byte-level mutations (flips, interesting integers, deletions, insertions, long repetitions,
splices, tokens) are applied to whole files, and also inside the layers that would otherwise
stop them at the first check: compressed data is decompressed, mutated and recompressed; ar
members, tar headers (with their checksums fixed), cpio fields, RPM header index entries, ELF
section headers and XML or text lines are mutated as fields.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
import re
import struct
import zlib

import zstandard

INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 511, 512, 513, 4096, 65536,
               1 << 20, 1 << 24, 1 << 30]
TOKENS = [b"\0", b"\n", b"\r\n", b" ", b"\t", b"0x", b"-1", b"+1", b"../", b"/", b"//", b"[/x]", b"[bold]",
          b"\xff\xfe", b"\xc3\x28", b"9" * 40, b"1" * 300, b"<a/>", b"<!DOCTYPE x [<!ENTITY e 'x'>]>", b"&e;",
          b'<?xml version="1.0" encoding="x-unknown"?>', b"=", b"EXPORT_SYMBOL_GPL", b"CONFIG_X=y",
          b"30 path=./../../etc/passwd\n", b"\x30\x82\x00\x02\x30\x82", b"070701", b"ustar\x0000",
          b"\x7fELF", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"\x1f\x8b", b"~Module signature appended~\n"]
MAX_INNER = 8 << 20  # decompressed layers are mutated only when this small
MAX_INPUT = 4 << 20  # small inputs that cost much are what the harness looks for


class Mutator:
    def __init__(self, rng: random.Random, seeds: list[bytes]):
        self.rng = rng
        self.seeds = seeds

    # -- byte level ------------------------------------------------------------------------------

    def bytes(self, data: bytes, rounds: int | None = None) -> bytes:
        rng = self.rng
        data = bytearray(data)
        for _ in range(rounds if rounds is not None else rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
            operation = rng.randrange(11)
            if not data:
                data += rng.randbytes(rng.randint(1, 64))
            position = self._position(data)
            if operation == 0:
                data[position] ^= 1 << rng.randrange(8)
            elif operation == 1:
                data[position] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
            elif operation == 2:
                width = rng.choice((2, 4, 8))
                value = rng.choice(INTERESTING + [len(data), rng.randrange(1 << (8 * width))]) % (1 << (8 * width))
                value = (value + rng.choice((0, 0, -1, 1))) % (1 << (8 * width))
                packed = value.to_bytes(width, rng.choice(("little", "big")))
                data[position:position + width] = packed
            elif operation == 3:
                end = position + rng.choice((1, 2, 4, 16, rng.randint(1, max(1, len(data) // 4))))
                del data[position:end]
            elif operation == 4:
                data[position:position] = rng.randbytes(rng.choice((1, 2, 4, 16, 100)))
            elif operation == 5:  # repetition: what quadratic loops and memory caps are made of
                size = rng.choice((1, 2, 4, 6, 16, 64, 512))
                chunk = bytes(data[position:position + size]) or b"\0"
                data[position:position] = chunk * _times(rng.choice((2, 10, 100, 1000, 10000)), chunk, data)
            elif operation == 6:
                del data[position:]
            elif operation == 7 and self.seeds:
                other = rng.choice(self.seeds)
                start = rng.randrange(max(1, len(other)))
                data[position:position] = other[start:start + rng.randint(1, 4096)]
            elif operation == 8:
                data[position:position] = rng.choice(TOKENS)
            elif operation == 9:
                token = rng.choice(TOKENS)
                data[position:position + len(token)] = token
            else:  # ASCII number fields
                text = rng.choice((b"%d" % rng.choice(INTERESTING), b"%x" % rng.choice(INTERESTING),
                                   b"%o" % rng.choice(INTERESTING), b"-%d" % rng.randrange(10)))
                data[position:position + len(text)] = text
        return bytes(data)

    def _position(self, data) -> int:
        rng = self.rng
        if rng.random() < 0.3:
            return rng.randrange(min(len(data), 512))  # headers
        return rng.randrange(len(data))

    # -- layers ----------------------------------------------------------------------------------

    def any(self, data: bytes) -> bytes:
        """A mutation of `data`, through whatever layers it has, at most MAX_INPUT bytes."""
        try:
            mutated = self._layers(data)
        except (ValueError, IndexError, struct.error, OverflowError, UnicodeError):
            mutated = self.bytes(data)  # a layer this input no longer has: its bytes then
        return mutated[:MAX_INPUT]

    def _layers(self, data: bytes) -> bytes:
        rng = self.rng
        if rng.random() < 0.25:
            return self.bytes(data)
        kind = sniff(data)
        if kind in ("xz", "gzip", "zstd", "bzip2"):
            inner = decompress(kind, data)
            if inner is not None:
                return compress(kind, self.any(inner), rng)
        if kind == "ar":
            return self.ar(data)
        if kind == "rpm":
            return self.rpm(data)
        if kind == "tar":
            return self.tar(data)
        if kind == "elf":
            return self.elf(data)
        if kind == "xml":
            return self.xml(data)
        if kind == "text":
            return self.text(data)
        return self.bytes(data)

    def ar(self, data: bytes) -> bytes:
        members, offset = [], 8
        while offset + 60 <= len(data):
            header = data[offset:offset + 60]
            try:
                size = int(header[48:58].decode().strip())
            except ValueError:
                return self.bytes(data)
            members.append((header[:16].decode("latin-1").strip(), data[offset + 60:offset + 60 + size]))
            offset += 60 + size + (size & 1)
        if not members or self.rng.random() < 0.2:
            return self.bytes(data)
        index = self.rng.randrange(len(members))
        name, content = members[index]
        members[index] = (name, self.any(content))
        out = b"!<arch>\n"
        for name, content in members:
            out += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n".encode() + content
            out += b"\n" if len(content) % 2 else b""
        return out

    def tar(self, data: bytes) -> bytes:
        rng = self.rng
        headers = [o for o in range(0, len(data) - 511, 512) if data[o + 257:o + 262] == b"ustar"]
        if not headers or rng.random() < 0.2:
            return self.bytes(data)
        data = bytearray(data)
        at = rng.choice(headers)
        choice = rng.randrange(7)
        if choice == 0:  # size field
            data[at + 124:at + 136] = rng.choice((b"%011o\0" % rng.choice(INTERESTING[:20]),
                                                  b"\x80" + bytes(10) + b"\x01", b"\xff" * 12, b"-0000000001\0",
                                                  b" 1 2\0      ", b"%011o\0" % 0))
        elif choice == 1:  # type
            data[at + 156] = rng.choice(b"0125677xgLKSVM\0A")
        elif choice == 2:  # name
            data[at:at + 100] = rng.choice((b"../" * 33, b"/etc/passwd", b"./" + b"d/" * 48, b"\xff" * 100,
                                            b"./lib/modules/x/kernel/a.ko")).ljust(100, b"\0")[:100]
        elif choice == 3:  # an extension header before this member
            kind = rng.choice((b"x", b"g", b"L", b"K"))
            if kind in (b"x", b"g"):
                body = rng.choice((b"%d path=%s\n", b"%d size=%s\n", b"%d GNU.sparse.map=%s\n", b"%d linkpath=%s\n"))
                value = rng.choice((b"1,2", b"../x", b"-5", b"9" * 30, b"\xff", b""))
                record = body % (len(body) + len(value), value)
                payload = self.bytes(record) if rng.random() < 0.5 else record
            else:
                payload = rng.choice((b"a" * 200, b"../../x\0", b"x" * rng.choice((100, 5000))))
            extension = _tar_header(b"././@LongLink" if kind in (b"L", b"K") else b"pax", len(payload), kind)
            data[at:at] = extension + payload + bytes(-len(payload) % 512)
        elif choice == 4:  # prefix and magic
            data[at + 345:at + 355] = rng.choice((b"../../..\0\0", b"usr\0\0\0\0\0\0\0", b"\xff" * 10))
        elif choice == 5:
            data[at + 257:at + 265] = rng.choice((b"ustar  \0", b"ustar\x0000", b"\0" * 8))
        else:
            return self.bytes(bytes(data))
        if rng.random() < 0.9:  # mostly with a correct checksum, so that the header is read
            data[at + 148:at + 156] = b" " * 8
            data[at + 148:at + 156] = b"%06o\0 " % sum(data[at:at + 512])
        return bytes(data)

    def rpm(self, data: bytes) -> bytes:
        rng = self.rng
        try:
            signature_end = _rpm_structure_end(data, 96)
            header_at = signature_end + (-signature_end % 8)
            header_end = _rpm_structure_end(data, header_at)
        except ValueError:
            return self.bytes(data)
        choice = rng.randrange(4)
        if choice == 0:  # an index entry's type, offset or count
            count = struct.unpack(">I", data[header_at + 8:header_at + 12])[0]
            if not count:
                return self.bytes(data)
            entry = header_at + 16 + 16 * rng.randrange(count)
            field = rng.choice((4, 8, 12))
            value = rng.choice((rng.randrange(10), rng.choice(INTERESTING), rng.randrange(1 << 32))) % (1 << 32)
            return data[:entry + field] + struct.pack(">I", value) + data[entry + field + 4:]
        if choice == 1:  # duplicated index entries (pointing at the same data)
            count, size = struct.unpack(">II", data[header_at + 8:header_at + 16])
            if not count:
                return self.bytes(data)
            entry = header_at + 16 + 16 * rng.randrange(count)
            copies = rng.choice((2, 50, 500))
            raw = data[entry:entry + 16]
            tagged = b"".join(struct.pack(">i", 6000 + i) + raw[4:] for i in range(copies))
            return (data[:header_at + 8] + struct.pack(">II", count + copies, size) + data[header_at + 16:entry]
                    + tagged + data[entry:])
        if choice == 2:  # the payload, through its compression (cpio fields mutated as text)
            payload = data[header_end:]
            kind = sniff(payload)
            inner = decompress(kind, payload) if kind else None
            if inner is None:
                return self.bytes(data)
            return data[:header_end] + compress(kind, self.cpio(inner), rng)
        return self.bytes(data)

    def cpio(self, data: bytes) -> bytes:
        rng = self.rng
        headers = [m.start() for m in re.finditer(rb"07070[12]", data)]
        if not headers or rng.random() < 0.2:
            return self.bytes(data)
        at = rng.choice(headers)
        field = rng.randrange(13)
        value = rng.choice((b"%08x" % rng.choice(INTERESTING[:16]), b"-0000001", b"+0000010", b" 0000001",
                            b"0000_001", b"ffffffff", b"zzzzzzzz"))
        start = at + 6 + 8 * field
        return data[:start] + value + data[start + 8:]

    def elf(self, data: bytes) -> bytes:
        rng = self.rng
        if len(data) < 64 or data[4] != 2 or rng.random() < 0.3:
            return self.bytes(data)
        endian = "<" if data[5] == 1 else ">"
        shoff, = struct.unpack_from(endian + "Q", data, 0x28)
        shnum, = struct.unpack_from(endian + "H", data, 0x3C)
        data = bytearray(data)
        if rng.random() < 0.3 or not shnum or shoff + 64 * shnum > len(data):
            offset = rng.choice((0x28, 0x3A, 0x3C, 0x3E))
            width = 8 if offset == 0x28 else 2
            value = rng.choice(INTERESTING) % (1 << (8 * width))
            data[offset:offset + width] = value.to_bytes(width, "little" if endian == "<" else "big")
            return bytes(data)
        section = shoff + 64 * rng.randrange(shnum)
        field, width = rng.choice(((0, 4), (4, 4), (0x18, 8), (0x20, 8), (0x28, 4), (0x2C, 4), (0x38, 8)))
        value = rng.choice(INTERESTING + [rng.randrange(len(data) + 1)]) % (1 << (8 * width))
        data[section + field:section + field + width] = value.to_bytes(width, "little" if endian == "<" else "big")
        return bytes(data)

    def xml(self, data: bytes) -> bytes:
        rng = self.rng
        elements = [m.start() for m in re.finditer(rb"<[A-Za-z]", data)]
        if not elements or rng.random() < 0.3:
            return self.bytes(data)
        at = rng.choice(elements)
        end = data.find(b">", at)
        if end < 0:
            return self.bytes(data)
        tag = data[at:end + 1]
        choice = rng.randrange(4)
        if choice == 0:
            element = tag.replace(b">", b"/>", 1)
            return data[:at] + element * _times(rng.choice((2, 100, 10000)), element, data) + data[at:]
        if choice == 1:
            return data[:at] + b"<a/>" * _times(rng.choice((10, 1000, 100000)), b"<a/>", data) + data[at:]
        if choice == 2:
            return data.replace(b"?>", b'?><!DOCTYPE r [<!ENTITY e "x">]>', 1)
        return data[:at] + data[end + 1:]  # an unbalanced tag

    def text(self, data: bytes) -> bytes:
        rng = self.rng
        lines = data.split(b"\n")
        choice = rng.randrange(5)
        index = rng.randrange(len(lines))
        if choice == 0:
            lines[index:index] = [lines[index]] * _times(rng.choice((2, 100, 10000)), lines[index] + b"\n", data)
        elif choice == 1:
            lines[index] = self.bytes(lines[index])
        elif choice == 2:
            lines.insert(index, rng.choice((b"", b"\t", b"x" * 100000, b"0x1 a", b"0xZZ\ta\tb\tEXPORT_SYMBOL",
                                            b"[section]", b"#", b"CONFIG_=", b"\x00\xff")))
        elif choice == 3:
            del lines[index]
        else:
            return self.bytes(data)
        return b"\n".join(lines)


def _times(count: int, piece: bytes, data) -> int:
    """`count`, or fewer so that `count` copies of `piece` keep the input within MAX_INPUT."""
    return max(1, min(count, (MAX_INPUT - len(data)) // max(1, len(piece))))


def _tar_header(name: bytes, size: int, typeflag: bytes) -> bytes:
    header = bytearray(512)
    header[0:len(name)] = name
    header[100:108] = b"0000644\0"
    header[124:136] = b"%011o\0" % size
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _rpm_structure_end(data: bytes, at: int) -> int:
    if data[at:at + 4] != b"\x8e\xad\xe8\x01":
        raise ValueError("no header")
    count, size = struct.unpack(">II", data[at + 8:at + 16])
    return at + 16 + 16 * count + size


def sniff(data: bytes) -> str | None:
    head = data[:512]
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"!<arch>\n"):
        return "ar"
    if head.startswith(b"\xed\xab\xee\xdb"):
        return "rpm"
    if len(head) >= 512 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x7fELF"):
        return "elf"
    if head.lstrip().startswith(b"<"):
        return "xml"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return None


def decompress(kind: str, data: bytes) -> bytes | None:
    try:
        if kind == "xz":
            out = lzma.LZMADecompressor().decompress(data, MAX_INNER)
        elif kind == "gzip":
            out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, MAX_INNER)
        elif kind == "zstd":
            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_INNER)
        else:
            out = bz2.BZ2Decompressor().decompress(data, MAX_INNER)
    except Exception:  # noqa: BLE001 - the seed's own layer is already broken: mutate its bytes
        return None
    return out if len(out) < MAX_INNER else None


def compress(kind: str, data: bytes, rng: random.Random) -> bytes:
    if kind == "xz":
        return lzma.compress(data, preset=0, check=rng.choice((lzma.CHECK_CRC32, lzma.CHECK_CRC64)))
    if kind == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=1, write_content_size=rng.random() < 0.8).compress(data)
    return bz2.compress(data, 1)
