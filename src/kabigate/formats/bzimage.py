"""The kernel image inside a vmlinuz, decompressed with a cap: an x86 bzImage's payload, an arm64
Image (raw, gzip-compressed, or in an EFI zboot PE), or an s390 image's payload.

Boot protocol (Documentation/x86/boot.rst): "HdrS" at 0x202, setup_sects at 0x1f1, and from
protocol 2.08 payload_offset/payload_length at 0x248/0x24c, relative to the protected-mode code
that starts after the (setup_sects + 1) * 512 bytes of real-mode setup. The payload is the
stripped vmlinux ELF, compressed (arch/x86/boot/compressed/Makefile) and followed by its
4-byte decompressed size, which the decompressors here ignore as trailing data.

arm64's Image (Documentation/arm64/booting.rst) is the raw kernel, "ARM\x64" at 0x38, its EFI stub's
"MZ" at 0. With CONFIG_EFI_ZBOOT it is compressed inside a PE whose header
(drivers/firmware/efi/libstub/zboot-header.S) holds "zimg" at 4, the payload's offset and size at 8
and 12, and the compression's name at 0x18. An s390 image (arch/s390/boot) is its decompressor
("S390EP" at 0x10008) with the raw kernel compressed at _compressed_start, a symbol no header points
to: the payload is the first compressed stream that decompresses.
"""

from __future__ import annotations

import struct

from kabigate.errors import InputError
from kabigate.formats.compression import compression_of, decompress
from kabigate.formats.rawimage import ARM64_MAGIC, ARM64_MAGIC_OFFSET, S390_EP, S390_EP_OFFSET
from kabigate.formats.stream import decompressed_chunks

ELF_MAGIC = b"\x7fELF"
# A distribution vmlinux is 40-80 MiB; debug builds reach a few hundred.
MAX_KERNEL_IMAGE = 512 * 1024 * 1024
# Payload formats the kernel can build but kabigate does not decompress (CONFIG_KERNEL_*).
_UNSUPPORTED = {b"\x5d\x00\x00": "lzma", b"BZh": "bzip2", b"\x89LZO": "lzo"}
# CONFIG_KERNEL_LZ4 (Debian's cloud flavor): `lz4 -l`, the legacy frame lib/decompress_unlz4.c reads.
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_LZ4_LEGACY_BLOCK = 8 << 20  # LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE: the most one block holds
# The first bytes that tell an image's kind (s390's mark is the furthest in).
IMAGE_HEAD = S390_EP_OFFSET + len(S390_EP)
_S390_PAYLOAD_MAGICS = (b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"\x1f\x8b\x08")  # xz, zstd, gzip
_S390_MAX_TRIES = 16  # magic-like bytes in the decompressor's code and data before the payload


def looks_like_kernel_image(head: bytes) -> bool:
    """An ELF file, a bzImage, an arm64 Image or zboot, or an s390 image, from its first IMAGE_HEAD
    bytes (a symvers or config file is text); for a whole-file compressed one (Image.gz, vmlinux.xz),
    from what those bytes decompress to."""
    if compression_of(head) is not None:
        head = _decompressed_head(head)
    return (head[:4] == ELF_MAGIC or head[0x202:0x206] == b"HdrS" or _is_arm64(head) or _is_zboot(head)
            or _is_s390(head))


def _decompressed_head(head: bytes) -> bytes:
    out = b""
    try:
        for chunk in decompressed_chunks(head, "head"):
            out += chunk
            if len(out) >= IMAGE_HEAD:
                break
    except InputError:  # the stream goes on past the head
        pass
    return out


def _is_arm64(data: bytes) -> bool:
    return data[ARM64_MAGIC_OFFSET:ARM64_MAGIC_OFFSET + 4] == ARM64_MAGIC


def _is_zboot(data: bytes) -> bool:
    return data[:2] == b"MZ" and data[4:8] == b"zimg"


def _is_s390(data: bytes) -> bool:
    return data[S390_EP_OFFSET:S390_EP_OFFSET + len(S390_EP)] == S390_EP


def kernel_image(data: bytes, what: str) -> bytes:
    """The decompressed kernel (vmlinux ELF, or the raw image) from a vmlinuz, a vmlinux, or a
    whole-file compressed vmlinux or Image."""
    if data[:4] == ELF_MAGIC or _is_arm64(data):
        return data
    if len(data) >= 0x250 and data[0x202:0x206] == b"HdrS":
        return _bzimage_payload(data, what)
    if _is_zboot(data):
        return _zboot_payload(data, what)
    if _is_s390(data):
        return _s390_payload(data, what)
    if compression_of(data) is not None:
        return decompress(data, what, MAX_KERNEL_IMAGE)
    raise InputError(f"{what}: not a kernel image (no bzImage, arm64 or s390 header, ELF or compressed data)")


def _zboot_payload(data: bytes, what: str) -> bytes:
    if len(data) < 0x40:
        raise InputError(f"{what}: EFI zboot header cut short ({len(data)} bytes)")
    offset, size = struct.unpack_from("<II", data, 8)
    kind = data[0x18:0x20].split(b"\0", 1)[0].decode("ascii", "replace")
    if size == 0 or offset + size > len(data):
        raise InputError(f"{what}: EFI zboot payload ({size} bytes at {offset}) lies outside the file")
    payload = data[offset:offset + size]
    if compression_of(payload) is None:
        raise InputError(f"{what}: EFI zboot payload is {kind}-compressed; kabigate reads gzip, xz and zstd")
    return decompress(payload, f"{what} (zboot payload)", MAX_KERNEL_IMAGE)


def _s390_payload(data: bytes, what: str) -> bytes:
    starts = sorted(m for magic in _S390_PAYLOAD_MAGICS for m in _occurrences(data, magic, S390_EP_OFFSET))
    for start in starts[:_S390_MAX_TRIES]:
        try:
            image = decompress(data[start:], f"{what} (s390 payload)", MAX_KERNEL_IMAGE)
        except InputError as error:
            if "limit" in str(error):  # a bomb stops the search: another try could be one too
                raise
            continue
        if b"Linux version " in image:
            return image
    raise InputError(f"{what}: s390 image without a gzip, xz or zstd payload that decompresses to a kernel")


def _occurrences(data: bytes, needle: bytes, start: int) -> list[int]:
    found: list[int] = []
    position = data.find(needle, start)
    while position >= 0 and len(found) < _S390_MAX_TRIES:
        found.append(position)
        position = data.find(needle, position + 1)
    return found


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
