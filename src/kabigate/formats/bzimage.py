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
_UNSUPPORTED = {b"\x5d\x00\x00": "lzma", b"BZh": "bzip2", b"\x89LZO": "lzo"}
# CONFIG_KERNEL_LZ4 (Debian's cloud flavor): `lz4 -l`, the legacy frame lib/decompress_unlz4.c reads.
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_LZ4_LEGACY_BLOCK = 8 << 20  # LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE: the most one block holds


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
    if payload.startswith(_LZ4_LEGACY_MAGIC):
        return _unlz4_legacy(payload, f"{what} (bzImage payload)")
    if compression_of(payload) is None:
        kind = next((name for magic, name in _UNSUPPORTED.items() if payload.startswith(magic)), "unknown")
        raise InputError(f"{what}: bzImage payload is {kind}-compressed; kabigate reads gzip, xz, zstd and lz4")
    return decompress(payload, f"{what} (bzImage payload)", MAX_KERNEL_IMAGE)


def _unlz4_legacy(payload: bytes, what: str) -> bytes:
    """unlz4() of lib/decompress_unlz4.c: blocks of a little-endian 32-bit compressed size and
    that many bytes, each at most 8 MiB decompressed; the magic may recur between blocks (frames
    concatenated); the last 4 bytes are the bzImage's decompressed-size trailer."""
    import lz4.block  # the reference implementation's binding: only lz4 images need it

    out = bytearray()
    position = len(_LZ4_LEGACY_MAGIC)
    while len(payload) - position > 4:
        if payload.startswith(_LZ4_LEGACY_MAGIC, position):
            position += 4
            continue
        (size,) = struct.unpack_from("<I", payload, position)
        position += 4
        if size == 0 or size > len(payload) - position:
            raise InputError(f"{what}: lz4 block of {size} bytes at {position - 4} lies outside the payload")
        try:
            out += lz4.block.decompress(payload[position:position + size], uncompressed_size=_LZ4_LEGACY_BLOCK)
        except lz4.block.LZ4BlockError as error:
            raise InputError(f"{what}: corrupt lz4 block at {position - 4} ({error})") from None
        if len(out) > MAX_KERNEL_IMAGE:
            raise InputError(f"{what}: decompresses to more than {MAX_KERNEL_IMAGE >> 20} MiB")
        position += size
    if len(payload) - position not in (0, 4):
        raise InputError(f"{what}: lz4 payload ends inside a block header")
    return bytes(out)
