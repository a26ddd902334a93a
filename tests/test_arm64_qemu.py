"""The qemu harness on arm64 (issue 22 item 5): Debian's 6.1.0-56 arm64 kernel booted with
`qemu-system-aarch64 -M virt -cpu cortex-a57` (TCG, console ttyAMA0) and busybox-static:arm64 in its
initramfs; kabigate's verdict and first reason, from the image alone, equal the kernel's.
"""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest
from support.elfedit import with_crc
from support.fetch_testdata import FOREIGN_KERNELS

from kabigate.boot.qemu import BUSYBOX_AARCH64_ENV, insmod_in_qemu, kernel_image, kernel_reason, qemu_available
from kabigate.formats.modsig import split_signature
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import read_modules
from kabigate.rules import LoadOptions, check_modules
from kabigate.signing.verify import load_trust, verify_file

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]

KERNEL, OLDER = "6.1.0-56-arm64", "6.1.0-47-arm64"
FAT = "kernel/fs/fat/fat.ko"


def foreign_entry(testdata, kver: str) -> dict:
    entry = testdata.manifest.get("foreign_kernels", {}).get(kver)
    if entry is None:
        pytest.skip(f"foreign kernel {kver} not in {testdata.root} (run scripts/fetch-testdata)")
    return entry


def module_of(testdata, kver: str, relative: str) -> Path:
    path = testdata.root / foreign_entry(testdata, kver)["modules_dir"] / relative
    return next(path.parent.glob(path.name + "*"))


@pytest.fixture(scope="module")
def arm64(testdata, tmp_path_factory) -> Path:
    """The arm64 kernel image, with the cached busybox-static:arm64 named for the harness."""
    folder = tmp_path_factory.mktemp("arm64")
    with pytest.MonkeyPatch.context() as patch:
        busybox = testdata.manifest.get("foreign_busybox", {}).get("arm64")
        if busybox is not None:
            subprocess.run(["dpkg-deb", "-x", str(testdata.root / busybox), str(folder / "busybox")], check=True)
            patch.setenv(BUSYBOX_AARCH64_ENV, str(folder / "busybox" / "bin" / "busybox"))
        reason = qemu_available("aarch64")
        if reason is not None:
            pytest.skip(reason)
        arch, package = FOREIGN_KERNELS[KERNEL]
        version = foreign_entry(testdata, KERNEL)["package_version"]
        deb = testdata.root / "debs" / f"{package}_{version}_{arch}.deb"
        yield kernel_image(str(deb), folder)


def test_arm64_insmod_verdicts_equal_kabigates(testdata, arm64, tmp_path):
    """One boot: its own fat.ko loads; the same unsigned with kfree's CRC edited is refused for kfree,
    and still signed with EKEYREJECTED (its signature no longer verifies: fatal though not enforced);
    6.1.0-47's fat.ko is refused for module_layout, the first CRC the loader checks
    (check_modstruct_version())."""
    own = module_of(testdata, KERNEL, FAT)
    edited = tmp_path / "fat.ko"
    # Unsigned: a signature that no longer verifies is refused with EKEYREJECTED even when
    # signatures are not required (module_sig_check()), before any CRC is looked at.
    size, _signature = split_signature(own.read_bytes())
    edited.write_bytes(with_crc(own.read_bytes()[:size], "kfree", 0x1))
    older = module_of(testdata, OLDER, FAT)
    still_signed = tmp_path / "signed" / "fat.ko"
    still_signed.parent.mkdir()
    still_signed.write_bytes(with_crc(own.read_bytes(), "kfree", 0x1))
    # each alone: the edited ones are refused before their twin loads
    cases = [edited, still_signed, own, older]
    kernel = load_kernel([str(arm64)])
    assert kernel.machine == "aarch64"
    trust = load_trust([str(arm64)])  # the keys built into the Image
    verdicts = []
    for path in cases:
        modules = read_modules([str(path)])
        checks = {m.path: verify_file(m.path, trust) for m in modules}
        verdicts += check_modules(modules, kernel, LoadOptions(signature_checks=checks))
    results = insmod_in_qemu(arm64, cases, timeout=600)
    theirs = [kernel_reason(r) for r in results]
    ours = [(v.reasons[0].code, v.reasons[0].symbol) if v.reasons else None for v in verdicts]
    assert [(t.code, t.symbol) if t else None for t in theirs] == ours == [
        ("crc-mismatch", "kfree"), ("bad-signature", None), None, ("module-layout-mismatch", "module_layout")]
    assert "fat: disagrees about version of symbol kfree" in results[0].kernel_messages
    assert results[1].exit_status == errno.EKEYREJECTED and results[1].kernel_messages == []
