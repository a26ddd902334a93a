"""The kernel image inside a vmlinuz: an x86 bzImage's compressed payload, decompressed with a cap.

Boot protocol (Documentation/x86/boot.rst): "HdrS" at 0x202, setup_sects at 0x1f1, and from
protocol 2.08 payload_offset/payload_length at 0x248/0x24c, relative to the protected-mode code
that starts after the (setup_sects + 1) * 512 bytes of real-mode setup. The payload is the
stripped vmlinux ELF, compressed (arch/x86/boot/compressed/Makefile) and followed by its
4-byte decompressed size, which the decompressors here ignore as trailing data.
"""

from __future__ import annotations

import struct

from kabigate.errors import InputError
from kabigate.formats.compression import compression_of, decompress

ELF_MAGIC = b"\x7fELF"
# A distribution vmlinux is 40-80 MiB; debug builds reach a few hundred.
MAX_KERNEL_IMAGE = 512 * 1024 * 1024
# Payload formats the kernel can build but kabigate does not decompress (CONFIG_KERNEL_*).
_UNSUPPORTED = {b"\x5d\x00\x00": "lzma", b"BZh": "bzip2", b"\x02\x21\x4c\x18": "lz4", b"\x89LZO": "lzo"}


def looks_like_kernel_image(head: bytes) -> bool:
    """An ELF file or a bzImage, from its first 0x210 bytes (a symvers or config file is text)."""
    return head[:4] == ELF_MAGIC or head[0x202:0x206] == b"HdrS"


def kernel_image(data: bytes, what: str) -> bytes:
    """The decompressed kernel (vmlinux ELF, or the raw image) from a vmlinuz, a vmlinux, or a
    whole-file compressed vmlinux."""
    if data[:4] == ELF_MAGIC:
        return data
    if len(data) >= 0x250 and data[0x202:0x206] == b"HdrS":
        return _bzimage_payload(data, what)
    if compression_of(data) is not None:
        return decompress(data, what, MAX_KERNEL_IMAGE)
    raise InputError(f"{what}: not a kernel image (no bzImage header, ELF or compressed data)")


def _bzimage_payload(data: bytes, what: str) -> bytes:
    (version,) = struct.unpack_from("<H", data, 0x206)
    if version < 0x208:
        raise InputError(f"{what}: bzImage boot protocol {version >> 8}.{version & 0xFF} predates payload fields")
    setup_sects = data[0x1F1] or 4  # 0 means 4 (boot.rst)
    payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    if payload_length == 0 or start + payload_length > len(data):
        raise InputError(f"{what}: bzImage payload ({payload_length} bytes at {start}) lies outside the file")
    payload = data[start:start + payload_length]
    if compression_of(payload) is None:
        kind = next((name for magic, name in _UNSUPPORTED.items() if payload.startswith(magic)), "unknown")
        raise InputError(f"{what}: bzImage payload is {kind}-compressed; kabigate reads gzip, xz and zstd")
    return decompress(payload, f"{what} (bzImage payload)", MAX_KERNEL_IMAGE)
