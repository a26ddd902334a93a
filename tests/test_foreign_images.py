"""Kernel images of other architectures read alone (issue 22 item 4): Debian's arm64 `Image` (raw,
with its EFI stub), s390x's image (its decompressor and an xz payload) and ppc64el's ELF vmlinux,
from the image packages scripts/fetch-testdata caches for the foreign kernels.

The truth is the same build's Module.symvers (from its linux-headers package): the exports, CRCs,
export types and namespaces read from the image alone must equal its vmlinux lines, and the
vermagic and struct module size those the in-tree modules were built with.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
import zstandard
from support.fetch_testdata import FOREIGN_KERNELS

from kabigate.boot.qemu import kernel_image
from kabigate.errors import InputError
from kabigate.formats.module import read_module
from kabigate.formats.symvers import parse_symvers
from kabigate.inputs.kernels import load_kernel

pytestmark = pytest.mark.realdata

MACHINES = {"arm64": "aarch64", "s390x": "s390x", "ppc64el": "ppc64le"}
ARM64 = "6.1.0-47-arm64"


def foreign_entry(testdata, kver: str) -> dict:
    entry = testdata.manifest.get("foreign_kernels", {}).get(kver)
    if entry is None:
        pytest.skip(f"foreign kernel {kver} not in {testdata.root} (run scripts/fetch-testdata)")
    return entry


def image_deb(testdata, kver: str) -> Path:
    """The image package fetch-testdata downloaded for the foreign kernel (ForeignArchive.deb_path)."""
    arch, package = FOREIGN_KERNELS[kver]
    deb = testdata.root / "debs" / f"{package}_{foreign_entry(testdata, kver)['package_version']}_{arch}.deb"
    if not deb.is_file():
        pytest.skip(f"{deb} not cached (run scripts/fetch-testdata)")
    return deb


@pytest.fixture(scope="module")
def image_of(testdata, tmp_path_factory) -> Callable[[str], Path]:
    """kver -> its /boot/vmlinu[xz]-<kver>, taken out of the image package once (5-10 s each)."""
    @cache
    def image(kver: str) -> Path:
        return kernel_image(str(image_deb(testdata, kver)), tmp_path_factory.mktemp(kver))
    return image


def vmlinux_exports(testdata, kver: str) -> dict:
    symvers = testdata.root / foreign_entry(testdata, kver)["symvers"]
    return {n: e for n, e in parse_symvers(symvers.read_bytes(), str(symvers)).items() if e.owner == "vmlinux"}


def in_tree_module(testdata, kver: str):
    modules = testdata.root / foreign_entry(testdata, kver)["modules_dir"] / "kernel" / "fs" / "fat"
    return read_module(str(next(modules.glob("vfat.ko*"))))


@pytest.mark.parametrize("kver", sorted(FOREIGN_KERNELS))
def test_image_alone_gives_module_symvers(testdata, image_of, kver):
    arch, _package = FOREIGN_KERNELS[kver]
    kernel = load_kernel([str(image_of(kver))])
    expected = vmlinux_exports(testdata, kver)
    assert len(expected) > 8000
    assert kernel.exports == expected  # names, CRCs, EXPORT_SYMBOL(_GPL) and namespaces alike
    assert any(e.namespace for e in expected.values()) and any(e.crc for e in expected.values())
    assert (kernel.machine, kernel.release) == (MACHINES[arch], kver)
    module = in_tree_module(testdata, kver)
    assert kernel.vermagic == module.vermagic
    # CONFIG_DEBUG_INFO_BTF: Debian's 6.1 builds it on arm64 only (896 bytes), 6.12 on ppc64el too
    if "CONFIG_DEBUG_INFO_BTF=y\n" in (testdata.root / foreign_entry(testdata, kver)["config"]).read_text():
        assert kernel.module_struct_size == module.layout.this_module_size == (896 if arch == "arm64" else 1408)
    else:
        assert kernel.module_struct_size is None


def test_arm64_image_kinds(testdata, image_of, tmp_path):
    """Image.gz (a whole-file gzip) and an EFI zboot PE (drivers/firmware/efi/libstub/zboot-header.S)
    around a zstd payload read as the raw Image does."""
    raw = image_of(ARM64).read_bytes()
    expected = load_kernel([str(image_of(ARM64))]).exports
    gz = tmp_path / "Image.gz"
    gz.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
    payload = zstandard.ZstdCompressor(level=1).compress(raw)
    header = bytearray(0x40)
    header[0:4], header[4:8] = b"MZ\0\0", b"zimg"
    struct.pack_into("<II", header, 8, len(header), len(payload))
    header[0x18:0x1C] = b"zstd"
    zboot = tmp_path / "vmlinuz.efi"
    zboot.write_bytes(bytes(header) + payload + struct.pack("<I", len(raw)))
    for path in (gz, zboot):
        kernel = load_kernel([str(path)])
        assert (kernel.exports, kernel.machine, kernel.module_struct_size) == (expected, "aarch64", 896)


def test_s390x_image_package_alone(testdata):
    """The image package without its headers, refused as "not a kernel image" before: the whole
    Module.symvers, the in-tree modules' exports read beside the image's."""
    kver = "6.1.0-47-s390x"
    symvers = testdata.root / foreign_entry(testdata, kver)["symvers"]
    kernel = load_kernel([str(image_deb(testdata, kver))])
    assert kernel.exports == parse_symvers(symvers.read_bytes(), str(symvers))
    assert kernel.machine == "s390x"


def test_hostile_raw_images(image_of, tmp_path):
    """Cut or damaged images of each kind: one line naming the file, never a traceback."""
    raw = image_of(ARM64).read_bytes()
    s390 = image_of("6.1.0-47-s390x").read_bytes()
    cases = {
        "arm64-head": (raw[:1 << 20], "no export table"),
        "zboot-outside": (b"MZ\0\0zimg" + struct.pack("<II", 64, 1 << 30) + bytes(48), "lies outside the file"),
        "zboot-lzma": (b"MZ\0\0zimg" + struct.pack("<II", 64, 4) + bytes(8) + b"lzma" + bytes(36) + b"\x5d\0\0\0",
                       "lzma-compressed"),
        "s390-cut": (s390[:len(s390) // 2], "s390 image without"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError, match=message) as error:
            load_kernel([str(path)])
        assert "\n" not in str(error.value) and name in str(error.value)
