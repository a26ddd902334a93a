"""Streaming decompression of package payloads (xz, zstd, gzip, bzip2 or none), with caps.

Package payloads are hostile: the output is capped in total (MAX_PAYLOAD) and in ratio to the
compressed input (MAX_RATIO), so a small file cannot expand into gigabytes.

xz payloads made with several blocks (dpkg-deb and rpmbuild compress with threads, e.g. 17
blocks of 24 MiB in Debian's linux-image .deb) are decoded block by block on two threads:
liblzma releases the GIL, so decoding overlaps with the caller parsing what was already decoded.
Measured on the 70 MB linux-image-6.1.0-47-amd64-unsigned .deb (410 MB of tar), 2 cores:
Python's single-threaded lzma stream decoder takes 3.6-4.1 s, libarchive 3.4 s, python-debian
3.9 s, `dpkg-deb --fsys-tarfile` (multi-threaded liblzma) 2.2-2.9 s; the block-parallel decoder
here ~2.0 s. Python's lzma has no multi-threaded decoder, hence this one (each block is rewrapped
as a one-block xz stream, so liblzma still checks every header, size and CRC).
"""

from __future__ import annotations

import bz2
import functools
import io
import lzma
import mmap
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Protocol

import zstandard

from kabigate.errors import InputError

MAX_PAYLOAD = 16 * 1024**3  # no kernel package comes near; bounds a bomb's run time
MAX_RATIO = 200  # xz'd kernel modules ratio ~6, Debian's image data.tar 5.8; zeros reach ~7000
MIN_RATIO_ALLOWANCE = 64 * 1024**2  # tiny payloads may expand more than MAX_RATIO, up to this
CHUNK = 1 << 20

XZ_MAGIC = b"\xfd7zXZ\x00"
XZ_FOOTER_MAGIC = b"YZ"


def compression_name(head: bytes | memoryview) -> str | None:
    head = bytes(head[:6])
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh"):
        return "bzip2"
    if head.startswith(b"\x5d\x00\x00"):
        return "lzma"
    return None


# (start, end) of the input, in bytes, that decoding is done with.
Done = Callable[[int, int], None]


def pages_done(mapped: mmap.mmap, base: int) -> Done:
    """For the input mapped[base:...]: the whole pages of a range decoding is done with are given
    back (MADV_DONTNEED; read again from the page cache if touched), so that a package's resident
    size does not grow by its whole payload (Debian's linux-image: 70 MB) while it is read."""
    def done(start: int, end: int) -> None:
        first = -(-(base + start) // mmap.PAGESIZE) * mmap.PAGESIZE
        stop = (base + end) // mmap.PAGESIZE * mmap.PAGESIZE
        if stop > first:
            mapped.madvise(mmap.MADV_DONTNEED, first, stop - first)
    return done


def decompressed_chunks(data, what: str, kind: str | None = None, done: Done | None = None) -> Iterator[bytes]:
    """The decompressed bytes of `data` (bytes, memoryview or mmap slice) in chunks, capped in
    total, and as they come against the compressed bytes consumed so far (so that data after
    the compressed stream, or a small bomb at the start of a large member, lifts no cap).
    `done` is told of input the block-parallel xz decoder has finished with (pages_done())."""
    kind = kind if kind is not None else compression_name(data)
    limit = min(MAX_PAYLOAD, max(MIN_RATIO_ALLOWANCE, MAX_RATIO * len(data)))
    consumed = [len(data)]  # the sequential decoders keep it up to date
    total = 0
    try:
        for chunk in _chunks(data, kind, what, limit, consumed, done):
            total += len(chunk)
            if total > limit or total > MIN_RATIO_ALLOWANCE + MAX_RATIO * consumed[0]:
                raise InputError(f"{what}: payload decompresses to more than {MAX_RATIO}x its compressed size "
                                 f"(over {min(limit, MIN_RATIO_ALLOWANCE + MAX_RATIO * consumed[0]) >> 20} MiB): "
                                 "refusing a likely decompression bomb")
            yield chunk
    except (lzma.LZMAError, zlib.error, zstandard.ZstdError, OSError, EOFError, ValueError) as error:
        raise InputError(f"{what}: corrupt {kind} payload ({error})") from None


def _chunks(data, kind: str | None, what: str, limit: int, consumed: list[int],
            done: Done | None) -> Iterator[bytes]:
    view = memoryview(data)
    if kind is None:
        for start in range(0, len(view), CHUNK):
            yield bytes(view[start:start + CHUNK])
        return
    if kind == "xz":
        blocks = xz_blocks(view)
        if blocks is not None and len(blocks) > 1:
            yield from _xz_parallel(view, blocks, limit, done)
            return
        decompressor_factory: Callable[[], _Decompressor] = functools.partial(lzma.LZMADecompressor, lzma.FORMAT_XZ)
    elif kind == "lzma":
        decompressor_factory = functools.partial(lzma.LZMADecompressor, lzma.FORMAT_ALONE)
    elif kind == "gzip":
        decompressor_factory = functools.partial(zlib.decompressobj, 16 + zlib.MAX_WBITS)
    elif kind == "bzip2":
        decompressor_factory = bz2.BZ2Decompressor
    elif kind == "zstd":
        yield from _zstd_chunks(view, consumed)
        return
    else:
        raise InputError(f"{what}: unsupported payload compression {kind!r}")
    yield from _sequential(view, decompressor_factory, kind, consumed)


FEED = 64 * 1024  # compressed bytes fed per call: the granularity of the consumed count


class _Decompressor(Protocol):
    """What lzma's, zlib's and bz2's decompressor objects have in common."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def _sequential(view: memoryview, factory: Callable[[], _Decompressor], kind: str,
                consumed: list[int]) -> Iterator[bytes]:
    """Concatenated streams are read on (the xz, gzip and bzip2 tools write and read them)."""
    position, end = 0, len(view)
    consumed[0] = 0
    while True:
        decompressor = factory()
        while not decompressor.eof:
            if position >= end:
                raise EOFError("compressed stream is truncated")
            piece = bytes(view[position:position + FEED])
            position += len(piece)
            consumed[0] = position
            out = decompressor.decompress(piece, CHUNK)
            if out:
                yield out
            while not decompressor.eof and _has_more(decompressor, kind):
                out = _more(decompressor, kind)
                if not out:
                    break
                yield out
        position -= len(decompressor.unused_data)
        while position < end and view[position] == 0:
            position += 1  # xz stream padding
        consumed[0] = position
        if position >= end:
            return
        if compression_name(view[position:position + 6]) != kind:
            # gzip and bzip2 warn about trailing garbage and go on; here it is refused.
            raise ValueError("trailing data after the compressed stream")


def _has_more(decompressor, kind: str) -> bool:
    if kind == "gzip":
        return bool(decompressor.unconsumed_tail)
    return not decompressor.needs_input


def _more(decompressor, kind: str) -> bytes:
    if kind == "gzip":
        return decompressor.decompress(decompressor.unconsumed_tail, CHUNK)
    return decompressor.decompress(b"", CHUNK)


def _zstd_chunks(view: memoryview, consumed: list[int]) -> Iterator[bytes]:
    # zstandard's decompressobj has no output limit: 4 KiB slices expand to at most ~128 MiB
    # (zstd's best ratio) before the caller's cap is checked again.
    position, end = 0, len(view)
    consumed[0] = 0
    while True:
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        while not decompressor.eof:
            if position >= end:
                raise EOFError("compressed stream is truncated")
            piece = bytes(view[position:position + 4096])
            position += len(piece)
            consumed[0] = position
            out = decompressor.decompress(piece)
            if out:
                yield out
        position -= len(decompressor.unused_data)
        consumed[0] = position
        if position >= end:
            return
        if compression_name(view[position:position + 6]) != "zstd":
            raise ValueError("trailing data after the compressed stream")


# -- xz, block by block ---------------------------------------------------------------------

def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 63, 7):
        if position >= len(data):
            raise ValueError("truncated xz index")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
    raise ValueError("xz varint too long")


def xz_blocks(view: memoryview) -> list[tuple[int, int, int]] | None:
    """(offset, unpadded size, uncompressed size) of each block of a single-stream xz file, from
    its index; None when the layout is anything else (then the sequential decoder judges it)."""
    try:
        end = len(view)
        while end > 12 and bytes(view[end - 4:end]) == b"\0\0\0\0":
            end -= 4  # stream padding
        if end < 24 or bytes(view[end - 2:end]) != XZ_FOOTER_MAGIC:
            return None
        footer = bytes(view[end - 12:end])
        if zlib.crc32(footer[4:10]) != struct.unpack("<I", footer[:4])[0]:
            return None
        backward = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
        stream_flags = bytes(view[6:8])
        if stream_flags != footer[8:10]:
            return None
        index_start = end - 12 - backward
        if index_start < 12:
            return None
        index = bytes(view[index_start:end - 12])
        if index[0] != 0 or zlib.crc32(index[:-4]) != struct.unpack("<I", index[-4:])[0]:
            return None
        count, position = _varint(index, 1)
        if count > len(index):
            return None
        blocks, offset = [], 12
        for _ in range(count):
            unpadded, position = _varint(index, position)
            uncompressed, position = _varint(index, position)
            blocks.append((offset, unpadded, uncompressed))
            offset += (unpadded + 3) & ~3
        if offset != index_start:
            return None  # several streams, or an index that does not describe this file
        return blocks
    except (ValueError, IndexError, struct.error):
        return None


def _one_block_stream(view: memoryview, stream_flags: bytes, block: tuple[int, int, int]) -> bytes:
    offset, unpadded, uncompressed = block
    padded = (unpadded + 3) & ~3
    header = XZ_MAGIC + stream_flags + struct.pack("<I", zlib.crc32(stream_flags))
    records = b"\0" + _encode_varint(1) + _encode_varint(unpadded) + _encode_varint(uncompressed)
    records += b"\0" * (-len(records) % 4)
    index = records + struct.pack("<I", zlib.crc32(records))
    backward = struct.pack("<I", len(index) // 4 - 1) + stream_flags
    footer = struct.pack("<I", zlib.crc32(backward)) + backward + XZ_FOOTER_MAGIC
    return header + bytes(view[offset:offset + padded]) + index + footer


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _decode_block(view: memoryview, stream_flags: bytes, block: tuple[int, int, int]) -> list[bytes]:
    """The block's bytes in pieces of CHUNK * 4: allocations of a whole block (24 MiB) raise glibc's
    mmap threshold, after which each is carved from the heap, which then grows by ~90 MiB."""
    return list(_block_pieces(view, stream_flags, block, CHUNK * 4))


def _block_pieces(view: memoryview, stream_flags: bytes, block: tuple[int, int, int], size: int) -> Iterator[bytes]:
    """The block's bytes, `size` at most at a time, as they are decoded."""
    decompressor = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    piece = decompressor.decompress(_one_block_stream(view, stream_flags, block), size)
    total = len(piece)
    while piece and total <= block[2]:
        yield piece
        if decompressor.eof or decompressor.needs_input:
            break
        piece = decompressor.decompress(b"", size)
        total += len(piece)
    if not decompressor.eof or total != block[2]:
        raise EOFError("xz block does not match its index entry")


def _xz_parallel(view: memoryview, blocks: list[tuple[int, int, int]], limit: int,
                 done: Done | None) -> Iterator[bytes]:
    if sum(b[2] for b in blocks) > limit:
        raise InputError(f"payload declares more than {limit >> 20} MiB of data "
                         f"({MAX_RATIO}x its compressed size): refusing a likely decompression bomb")
    from concurrent.futures import Future, ThreadPoolExecutor  # with logging, ~7 ms of every start otherwise

    stream_flags = bytes(view[6:8])
    # The first block is decoded here as it is read, the next ones on two threads, two blocks ahead
    # of the reader: both cores busy, no more than three blocks (Debian's are 24 MiB) held at once. A
    # caller that stops early (a kernel read from a package's first files) waits for no more of the
    # payload than it read: the second block starts once half of the first is read, and is dropped.
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kabigate-xz")
    pending: list[Future] = []

    def decode_ahead(number: int) -> None:
        if number < len(blocks):
            pending.append(pool.submit(_decode_block, view, stream_flags, blocks[number]))

    try:
        for number, (offset, unpadded, size) in enumerate(blocks):
            if number == 0:
                given = 0
                for piece in _block_pieces(view, stream_flags, blocks[0], CHUNK * 4):
                    yield piece
                    given += len(piece)
                    if not pending and given >= size // 2:
                        decode_ahead(1)
                if not pending:  # an empty first block
                    decode_ahead(1)
                data = []
            else:
                data = pending.pop(0).result()
            if done is not None:  # this block's input was copied out whole
                done(offset, offset + unpadded)
            decode_ahead(number + 2)
            yield from data
            del data  # not held while the next block is waited for
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class ChunkReader(io.RawIOBase):
    """A read-only file object over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = b""
        self._offset = 0
        self.position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buffer[self._offset:]]
            parts.extend(self._chunks)
            self._buffer, self._offset = b"", 0
            out = b"".join(parts)
            self.position += len(out)
            return out
        available = len(self._buffer) - self._offset
        if available >= size:
            out = self._buffer[self._offset:self._offset + size]
            self._offset += size
            self.position += size
            return out
        parts = [self._buffer[self._offset:]] if available else []
        need = size - available
        while need > 0:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._buffer, self._offset = b"", 0
                out = b"".join(parts)
                self.position += len(out)
                return out
            if len(chunk) <= need:
                parts.append(chunk)
                need -= len(chunk)
            else:
                parts.append(chunk[:need])
                self._buffer, self._offset = chunk, need
                need = 0
                out = b"".join(parts)
                self.position += len(out)
                return out
        self._buffer, self._offset = b"", 0
        out = b"".join(parts)
        self.position += len(out)
        return out

    def skip(self, size: int) -> int:
        """Discard `size` bytes without joining them; returns how many were available."""
        skipped = 0
        while skipped < size:
            available = len(self._buffer) - self._offset
            if available == 0:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buffer, self._offset = chunk, 0
                continue
            step = min(available, size - skipped)
            self._offset += step
            skipped += step
        self.position += skipped
        return skipped
