"""Decompression of module and symvers files (.xz, .zst, .gz) with a hard output cap.

The format is chosen by magic bytes, not by file name, and output beyond the cap is an
error: a small hostile file must not be able to expand into gigabytes of memory.

Memory: the output is appended, a step at a time, to one buffer that grows in place (realloc),
so a module of N bytes peaks near N, not 2N (decompress-then-join). The size a file declares (the
xz index, gzip's ISIZE, zstd's frame content size) is not trusted for an allocation, only to refuse
a file declaring more than the cap before anything is decompressed, and to stop at once when the
output exceeds it.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from collections.abc import Iterator

import zstandard

from kabigate.errors import InputError
from kabigate.formats.stream import compression_name, xz_blocks

# The largest in-tree module of a distribution kernel is ~30 MiB (amdgpu with debug info stripped);
# 512 MiB leaves room for unstripped modules and full symvers files while stopping bombs.
MAX_DECOMPRESSED = 512 * 1024 * 1024
# Text inputs (symvers, stablelists, configs, headers): Debian's Module.symvers is 1.9 MiB, a
# kernel .config 0.3 MiB; 32 MiB and a million lines leave room without letting short lines
# turn a small file into gigabytes of Python strings.
MAX_TEXT = 32 * 1024 * 1024
MAX_LINES = 1_000_000

# The kinds kabigate decompresses outside package payloads: those of modules (kmod, and the
# kernel's module_decompress() with CONFIG_MODULE_COMPRESS_{GZIP,XZ,ZSTD}) and of kernel text
# files. Package payloads may also be bzip2 or lzma (formats/stream.py sniffs all five).
FILE_KINDS = ("xz", "zstd", "gzip")
_STEP = 1 << 20  # input fed, and output taken, per decompressor call
_ZSTD_STEP = 1024  # zstd's decompressobj has no output limit: 1 KiB of input expands to <= ~32 MiB


def compression_of(data) -> str | None:
    """'xz', 'zstd', 'gzip' or None for uncompressed data (or a kind files do not use)."""
    kind = compression_name(data[:6])
    return kind if kind in FILE_KINDS else None


def refuse_other_compression(data, what: str) -> None:
    """A module compressed with a kind kmod and the kernel do not take is refused as such, not
    read as a malformed ELF file."""
    kind = compression_name(data[:6])
    if kind is not None and kind not in FILE_KINDS:
        raise InputError(f"{what}: {kind}-compressed; modules are xz, zstd or gzip compressed "
                         "(kmod and the kernel's module_decompress() read no other)")


def decompress(data, what: str, limit: int = MAX_DECOMPRESSED):
    """`data` decompressed (a bytearray), or `data` itself if not compressed; more than `limit`
    bytes is an InputError."""
    kind = compression_of(data)
    if kind is None:
        return data
    return _decompress(data, kind, what, limit, None)


def decompress_into(data, file, what: str, limit: int = MAX_DECOMPRESSED) -> None:
    """decompress() of compressed `data`, written to the binary `file` a step at a time instead
    of gathered in memory: a module being signed may decompress to hundreds of MiB."""
    kind = compression_of(data)
    if kind is None:
        raise InputError(f"{what}: not xz, gzip or zstd data")
    _decompress(data, kind, what, limit, file)


def _decompress(data, kind: str, what: str, limit: int, file) -> bytearray:
    try:
        declared = _declared_size(data, kind)
        if declared is not None and declared > limit:
            raise InputError(f"{what}: decompresses to more than the {limit >> 20} MiB limit ({kind} data "
                             f"declaring {declared} bytes: a decompression bomb, or not one {kind} stream)")
        output = _Output(what, limit, declared, file)
        if kind == "zstd":
            return _zstd(data, output)
        factory = (lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)) if kind == "xz" else \
            (lambda: zlib.decompressobj(16 + zlib.MAX_WBITS))  # gzip header and trailer, as gzip.decompress
        return _inflate(factory(), kind, data, output)
    except (lzma.LZMAError, zlib.error, zstandard.ZstdError, EOFError) as error:
        raise InputError(f"{what}: corrupt {kind} data ({error})") from None


def _declared_size(data, kind: str) -> int | None:
    if kind == "gzip":
        # ISIZE, the last four bytes: the size modulo 2**32 of the (single) member; zlib checks it.
        return struct.unpack("<I", bytes(data[-4:]))[0] if len(data) >= 18 else None
    if kind == "zstd":
        try:
            size = zstandard.frame_content_size(bytes(data[:18]))
        except zstandard.ZstdError:
            return None
        return size if size >= 0 else None
    with memoryview(data) as view:
        blocks = xz_blocks(view)  # the index, as the package decoder reads it
    return None if blocks is None else sum(block[2] for block in blocks)


class _Output:
    """The output buffer, grown as data comes (never allocated at an untrusted declared size), or
    the file it goes to."""

    def __init__(self, what: str, limit: int, declared: int | None, file=None):
        self.what, self.limit, self.declared, self.file = what, limit, declared, file
        self.buffer = bytearray()
        self.size = 0

    def add(self, chunk: bytes) -> None:
        end = self.size + len(chunk)
        if end > self.limit:
            raise InputError(f"{self.what}: decompresses to more than the {self.limit >> 20} MiB limit")
        if self.declared is not None and end > self.declared:
            raise EOFError(f"more data than the {self.declared} bytes the file declares")
        if self.file is None:
            self.buffer += chunk
        else:
            self.file.write(chunk)
        self.size = end

    def result(self) -> bytearray:
        if self.declared is not None and self.size != self.declared:
            raise EOFError(f"{self.size} bytes where the file declares {self.declared}")
        return self.buffer


def _inflate(decompressor, kind: str, data, output: _Output) -> bytearray:
    """lzma and zlib decompressors, fed and drained a step at a time; data after the first
    stream is ignored, as the kernel's module decompressor ignores it."""
    position = 0
    while not decompressor.eof:
        if kind == "gzip" and decompressor.unconsumed_tail:
            piece = decompressor.unconsumed_tail
        elif kind == "xz" and not decompressor.needs_input:
            piece = b""
        else:
            piece = bytes(data[position:position + _STEP])
            position += len(piece)
        chunk = decompressor.decompress(piece, _STEP)
        if not piece and not chunk and not decompressor.eof:
            raise EOFError("compressed stream is truncated")
        output.add(chunk)
    return output.result()


def _zstd(data, output: _Output) -> bytearray:
    declared = output.declared
    if declared is not None:  # a step at a time, the first frame only (its size is known)
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False)
        while output.size < declared:
            chunk = reader.read(min(_STEP, declared - output.size))
            if not chunk:
                break
            output.add(chunk)
        return output.result()  # a following frame or data is ignored, as by the kernel's decompressor
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    for start in range(0, len(data), _ZSTD_STEP):
        output.add(decompressor.decompress(bytes(data[start:start + _ZSTD_STEP])))
        if decompressor.eof:
            break
    if not decompressor.eof:
        raise EOFError("compressed stream is truncated")
    return output.result()


# -- text -----------------------------------------------------------------------------------------

def text_lines(data, what: str, limit: int = MAX_TEXT, max_lines: int = MAX_LINES) -> list[str]:
    """The lines of a text file (decompressed if compressed, UTF-8 with replacement, '\\r' of
    CRLF ends removed), refusing more than `limit` bytes or `max_lines` lines."""
    return decoded_lines(text_bytes(data, what, limit, max_lines))


def decoded_lines(raw) -> list[str]:
    """text_lines() of text_bytes()' bytes."""
    return [line.removesuffix("\r") for line in bytes(raw).decode("utf-8", "replace").split("\n")]


def text_bytes(data, what: str, limit: int = MAX_TEXT, max_lines: int = MAX_LINES):
    """text_lines()'s bytes before they are decoded: decompressed, within the same caps."""
    raw = decompress(data, what, limit)
    if len(raw) > limit:
        raise InputError(f"{what}: larger than the {limit >> 20} MiB limit for a text file")
    count = raw.count(b"\n") + 1
    if count > max_lines:
        raise InputError(f"{what}: more than {max_lines} lines, not a plausible kernel text file")
    return raw


def lazy_lines(text: str) -> Iterator[str]:
    """The lines of a text one at a time ('\r' of CRLF ends removed): sniffing the first lines of a
    large text does not split all of it."""
    start = 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield text[start:end].removesuffix("\r")
        start = end + 1
