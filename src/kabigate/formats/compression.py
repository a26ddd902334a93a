"""Decompression of module and symvers files (.xz, .zst, .gz) with a hard output cap.

The format is chosen by magic bytes, not by file name, and output beyond the cap is an
error: a small hostile file must not be able to expand into gigabytes of memory.
"""

from __future__ import annotations

import lzma
import zlib

import zstandard

from kabigate.errors import InputError

# The largest in-tree module of a distribution kernel is ~30 MiB (amdgpu with debug info stripped);
# 512 MiB leaves room for unstripped modules and full symvers files while stopping bombs.
MAX_DECOMPRESSED = 512 * 1024 * 1024

XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def compression_of(data: bytes) -> str | None:
    """'xz', 'zstd', 'gzip' or None for uncompressed data."""
    head = bytes(data[:6])
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    return None


def decompress(data: bytes, what: str, limit: int = MAX_DECOMPRESSED) -> bytes:
    """Return `data` decompressed (or unchanged if not compressed), refusing more than `limit` bytes."""
    kind = compression_of(data)
    if kind is None:
        return data
    try:
        if kind == "xz":
            out = _drain(lzma.LZMADecompressor(), data, what, limit)
        elif kind == "gzip":
            # wbits 16+MAX_WBITS: gzip header and trailer, as gzip.decompress.
            out = _drain(zlib.decompressobj(16 + zlib.MAX_WBITS), data, what, limit)
        else:
            out = _zstd(data, what, limit)
    except (lzma.LZMAError, zlib.error, zstandard.ZstdError, EOFError) as error:
        raise InputError(f"{what}: corrupt {kind} data ({error})") from None
    return out


def _drain(decompressor, data: bytes, what: str, limit: int) -> bytes:
    out = decompressor.decompress(data, limit + 1)
    if len(out) > limit:
        raise InputError(f"{what}: decompresses to more than the {limit >> 20} MiB limit")
    if not decompressor.eof:
        raise EOFError("compressed stream is truncated")
    return out


def _zstd(data: bytes, what: str, limit: int) -> bytes:
    # zstandard's decompressobj has no output limit, so feed it small slices: one 4 KiB
    # slice expands to at most ~128 MiB (zstd's best ratio) before the cap is checked again.
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    parts, size = [], 0
    for start in range(0, len(data), 4096):
        part = decompressor.decompress(data[start:start + 4096])
        size += len(part)
        if size > limit:
            raise InputError(f"{what}: decompresses to more than the {limit >> 20} MiB limit")
        parts.append(part)
        if decompressor.eof:
            break
    if not decompressor.eof:
        raise EOFError("compressed stream is truncated")
    return b"".join(parts)
