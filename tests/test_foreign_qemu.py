"""The qemu harness on other architectures (issue 22 item 5): Debian's 6.1.0-56 arm64 kernel booted
with `qemu-system-aarch64 -M virt -cpu cortex-a57` (TCG, console ttyAMA0) and 6.1.0-47 ppc64el's with
`qemu-system-ppc64 -M pseries` (hvc0) and 6.1.0-47 s390x's with `qemu-system-s390x -M s390-ccw-virtio`
(ttysclp0), busybox-static of each in the initramfs; kabigate's verdict and first reason, from the
image alone, equal the kernel's.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.elfedit import with_crc
from support.fetch_testdata import FOREIGN_KERNELS

from kabigate.boot.qemu import GUESTS, insmod_in_qemu, kernel_image, kernel_reason, qemu_available
from kabigate.formats.modsig import split_signature
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import read_modules
from kabigate.rules import LoadOptions, check_modules
from kabigate.signing.verify import load_trust, verify_file

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]

KERNEL, OLDER, PPC64LE, S390X = "6.1.0-56-arm64", "6.1.0-47-arm64", "6.1.0-47-powerpc64le", "6.1.0-47-s390x"
FAT = "kernel/fs/fat/fat.ko"


def foreign_entry(testdata, kver: str) -> dict:
    entry = testdata.manifest.get("foreign_kernels", {}).get(kver)
    if entry is None:
        pytest.skip(f"foreign kernel {kver} not in {testdata.root} (run scripts/fetch-testdata)")
    return entry


def module_of(testdata, kver: str, relative: str) -> Path:
    path = testdata.root / foreign_entry(testdata, kver)["modules_dir"] / relative
    return next(path.parent.glob(path.name + "*"))


def booted(testdata, folder: Path, kver: str, machine: str):
    """The image of foreign kernel `kver`, with the cached busybox-static of its architecture named
    for the harness while the caller's fixture lives."""
    arch, package = FOREIGN_KERNELS[kver]
    guest = GUESTS[machine]
    with pytest.MonkeyPatch.context() as patch:
        busybox = testdata.manifest.get("foreign_busybox", {}).get(arch)
        if busybox is not None:
            subprocess.run(["dpkg-deb", "-x", str(testdata.root / busybox), str(folder / "busybox")], check=True)
            patch.setenv(guest.busybox_env, str(folder / "busybox" / "bin" / "busybox"))
        reason = qemu_available(machine)
        if reason is not None:
            pytest.skip(reason)
        version = foreign_entry(testdata, kver)["package_version"]
        deb = testdata.root / "debs" / f"{package}_{version}_{arch}.deb"
        yield kernel_image(str(deb), folder)


@pytest.fixture(scope="module")
def arm64(testdata, tmp_path_factory) -> Iterator[Path]:
    yield from booted(testdata, tmp_path_factory.mktemp("arm64"), KERNEL, "aarch64")


@pytest.fixture(scope="module")
def ppc64le(testdata, tmp_path_factory) -> Iterator[Path]:
    yield from booted(testdata, tmp_path_factory.mktemp("ppc64le"), PPC64LE, "ppc64le")


@pytest.fixture(scope="module")
def s390x(testdata, tmp_path_factory) -> Iterator[Path]:
    yield from booted(testdata, tmp_path_factory.mktemp("s390x"), S390X, "s390x")


def verdicts_and_results(image: Path, cases: list[Path]) -> tuple[list, list, list]:
    """kabigate's first reason for each module alone, from the image alone (its own keys verifying
    signatures), and the kernel's, from one boot."""
    kernel = load_kernel([str(image)])
    trust = load_trust([str(image)])
    verdicts = []
    for path in cases:
        modules = read_modules([str(path)])
        checks = {m.path: verify_file(m.path, trust) for m in modules}
        verdicts += check_modules(modules, kernel, LoadOptions(signature_checks=checks))
    results = insmod_in_qemu(image, cases, timeout=600)
    theirs = [(t.code, t.symbol) if (t := kernel_reason(r)) else None for r in results]
    ours = [(v.reasons[0].code, v.reasons[0].symbol) if v.reasons else None for v in verdicts]
    return ours, theirs, results


def unsigned_with_crc(module: Path, symbol: str, folder: Path) -> Path:
    """`module` without its signature (module_sig_check() refuses a signature that no longer verifies
    with EKEYREJECTED even when signatures are not required, before any CRC is looked at), one CRC edited."""
    size, _signature = split_signature(module.read_bytes())
    edited = folder / module.name
    edited.write_bytes(with_crc(module.read_bytes()[:size], symbol, 0x1))
    return edited


def test_arm64_insmod_verdicts_equal_kabigates(testdata, arm64, tmp_path):
    """One boot: its own fat.ko loads; the same unsigned with kfree's CRC edited is refused for kfree,
    and still signed with EKEYREJECTED (its signature no longer verifies: fatal though not enforced);
    6.1.0-47's fat.ko is refused for module_layout, the first CRC the loader checks
    (check_modstruct_version())."""
    own = module_of(testdata, KERNEL, FAT)
    still_signed = tmp_path / "signed" / "fat.ko"
    still_signed.parent.mkdir()
    still_signed.write_bytes(with_crc(own.read_bytes(), "kfree", 0x1))
    # each alone: the edited ones are refused before their twin loads
    cases = [unsigned_with_crc(own, "kfree", tmp_path), still_signed, own, module_of(testdata, OLDER, FAT)]
    assert load_kernel([str(arm64)]).machine == "aarch64"
    ours, theirs, results = verdicts_and_results(arm64, cases)
    assert theirs == ours == [
        ("crc-mismatch", "kfree"), ("bad-signature", None), None, ("module-layout-mismatch", "module_layout")]
    assert "fat: disagrees about version of symbol kfree" in results[0].kernel_messages
    assert results[1].exit_status == errno.EKEYREJECTED and results[1].kernel_messages == []


def test_ppc64le_insmod_verdicts_equal_kabigates(testdata, ppc64le, tmp_path):
    """`qemu-system-ppc64 -M pseries` (TCG, console hvc0) booting Debian's ppc64el ELF vmlinux: an arm64
    module is refused for its ELF machine (elf_check_arch()), its own fat.ko loads, unsigned with
    kfree's CRC edited it is refused for kfree."""
    own = module_of(testdata, PPC64LE, FAT)
    cases = [module_of(testdata, OLDER, FAT), unsigned_with_crc(own, "kfree", tmp_path), own]
    assert load_kernel([str(ppc64le)]).machine == "ppc64le"
    ours, theirs, results = verdicts_and_results(ppc64le, cases)
    assert theirs == ours == [("arch-mismatch", None), ("crc-mismatch", "kfree"), None]
    assert "Invalid architecture in ELF header: 183" in results[0].kernel_messages


def test_s390x_insmod_verdicts_equal_kabigates(testdata, s390x, tmp_path):
    """`qemu-system-s390x -M s390-ccw-virtio` (TCG, console ttysclp0) booting Debian's s390x image: an
    arm64 module, little-endian, is refused for its e_type read big-endian (elf_validity_check() checks
    it before the machine), its own fat.ko unsigned with kfree's CRC edited (big-endian) for kfree,
    and the unedited one loads."""
    own = module_of(testdata, S390X, FAT)
    cases = [module_of(testdata, OLDER, FAT), unsigned_with_crc(own, "kfree", tmp_path), own]
    assert load_kernel([str(s390x)]).machine == "s390x"
    ours, theirs, results = verdicts_and_results(s390x, cases)
    assert theirs == ours == [("invalid-elf", None), ("crc-mismatch", "kfree"), None]
    assert "Invalid ELF header type: 256 != 1" in results[0].kernel_messages
