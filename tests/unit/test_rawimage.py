"""Raw kernels (formats/rawimage.py) built as vmlinux.lds.h lays their export tables out: arm64's
PREL32 entries and s390's big-endian pointers, each inside the container Debian or the kernel's
build makes (Image, Image.gz, EFI zboot, s390 image). tests/test_foreign_images.py reads the real ones."""

from __future__ import annotations

import gzip
import lzma
import struct

import pytest
from support.rawkernel import ARM64_HEADER, EXPORTS, GPL_EXPORTS, raw_kernel

from kabigate.errors import InputError
from kabigate.formats.bzimage import kernel_image, looks_like_kernel_image
from kabigate.formats.rawimage import raw_image_exports
from kabigate.formats.vmlinux import image_abi, image_release, image_vermagic

ARM64 = raw_kernel(ARM64_HEADER, "<", prel32=True, base=0)
S390 = raw_kernel(bytes(64), ">", prel32=False, base=0x100000)


def zboot(payload: bytes, kind: bytes) -> bytes:
    """drivers/firmware/efi/libstub/zboot-header.S: "zimg", payload offset and size, compression."""
    header = bytearray(0x40)
    header[0:8] = b"MZ\0\0zimg"
    struct.pack_into("<II", header, 8, 0x40, len(payload))
    header[0x18:0x18 + len(kind)] = kind
    return bytes(header) + payload


def s390_image(raw: bytes) -> bytes:
    """The decompressor with "S390EP" at 0x10008 (arch/s390/boot/head.S), then the payload."""
    return bytes(0x10008) + b"S390EP" + bytes(2) + lzma.compress(raw)


def expected(crcs: bool = True) -> dict:
    names = [*EXPORTS.items(), *GPL_EXPORTS.items()]
    return {name.decode(): (0x1000 + i if crcs else None, "EXPORT_SYMBOL" if name in EXPORTS else "EXPORT_SYMBOL_GPL",
                            namespace.decode()) for i, (name, namespace) in enumerate(names)}


def table(exports) -> dict:
    return {e.name: (e.crc, e.export_type, e.namespace) for e in exports.values()}


@pytest.mark.parametrize("raw,machine", [(ARM64, "aarch64"), (S390, "s390x")])
def test_exports_crcs_types_and_namespaces(raw, machine):
    assert table(raw_image_exports(raw, machine, "image")) == expected()


def test_without_modversions_no_crcs():
    raw = raw_kernel(ARM64_HEADER, "<", prel32=True, base=0, modversions=False)
    assert table(raw_image_exports(raw, "aarch64", "image")) == expected(crcs=False)


@pytest.mark.parametrize("container,machine", [
    (ARM64, "aarch64"),
    (gzip.compress(ARM64, mtime=0), "aarch64"),
    (zboot(gzip.compress(ARM64, mtime=0), b"gzip"), "aarch64"),
    (s390_image(S390), "s390x"),
])
def test_containers(container, machine):
    assert looks_like_kernel_image(container[:0x10010])
    image = kernel_image(container, "vmlinuz")
    found, exports, btf = image_abi(container, image, "vmlinuz")
    assert (found, table(exports), btf) == (machine, expected(), None)
    assert image_vermagic(image, image_release(image)) == "6.1.0-fuzz SMP mod_unload modversions "


@pytest.mark.parametrize("container,message", [
    (ARM64[:len(ARM64) // 3], "no export table"),
    (zboot(b"\x5d\0\0\0" * 4, b"lzma"), "lzma-compressed"),
    (zboot(gzip.compress(ARM64, mtime=0), b"gzip")[:0x50], "lies outside the file"),
    (s390_image(S390)[:0x10010 + 32], "s390 image without"),
    (gzip.compress(b"\0" * 4096, mtime=0), "decompresses to neither"),
])
def test_damaged_images_are_one_line_errors(container, message):
    with pytest.raises(InputError, match=message) as error:
        image_abi(container, kernel_image(container, "vmlinuz"), "vmlinuz")
    assert "\n" not in str(error.value) and str(error.value).startswith("vmlinuz")
