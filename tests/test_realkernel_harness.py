"""Checks that the qemu harness reports what a real kernel does with in-tree modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import support.testdata

from kabigate.boot.qemu import InsmodResult, insmod_in_qemu, qemu_available

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]

TESTDATA = support.testdata.testdata_root()  # through the module: pytest collects a test* function imported by name
MC = "drivers/media/mc/mc.ko"
VIDEODEV = "drivers/media/v4l2-core/videodev.ko"
# errno values busybox insmod exits with.
ENOENT, ENOEXEC = 2, 8


class Kernel:
    """A kernel tree fetched by scripts/fetch-testdata."""

    def __init__(self, release: str) -> None:
        root = TESTDATA / "kernels" / release
        self.vmlinuz = root / "boot" / f"vmlinuz-{release}"
        self.modules = root / "lib" / "modules" / release / "kernel"
        if not self.vmlinuz.is_file() or not self.modules.is_dir():
            pytest.skip(f"kernel {release} not in {TESTDATA} (run scripts/fetch-testdata)")

    def module(self, relpath: str) -> Path:
        return self.modules / relpath


@pytest.fixture(scope="module")
def kernel47() -> Kernel:
    reason = qemu_available()
    if reason is not None:
        pytest.skip(reason)
    return Kernel("6.1.0-47-amd64")


@pytest.fixture(scope="module")
def videodev_before_and_after_mc(kernel47: Kernel) -> list[InsmodResult]:
    """One boot: videodev without its dependency, then mc, then videodev again."""
    videodev, mc = kernel47.module(VIDEODEV), kernel47.module(MC)
    return insmod_in_qemu(kernel47.vmlinuz, [videodev, mc, videodev])


def test_missing_dependency_is_unknown_symbol(videodev_before_and_after_mc):
    result = videodev_before_and_after_mc[0]
    assert result.module == "videodev.ko"
    assert result.exit_status == ENOENT
    assert "videodev: Unknown symbol media_devnode_create (err -2)" in result.kernel_messages
    # Only videodev's own lines: unrelated kernel messages (e.g. "random: crng init done") may interleave.
    own = [m for m in result.kernel_messages if m.startswith("videodev:")]
    assert own and all(m.startswith("videodev: Unknown symbol ") and m.endswith(" (err -2)") for m in own)


def test_loads_once_dependency_is_loaded(videodev_before_and_after_mc):
    mc, videodev = videodev_before_and_after_mc[1:]
    assert (mc.module, mc.exit_status) == ("mc.ko", 0)
    assert "mc: Linux media interface: v0.10" in mc.kernel_messages
    assert (videodev.module, videodev.exit_status) == ("videodev.ko", 0)
    assert "videodev: Linux video capture interface: v2.00" in videodev.kernel_messages


def test_module_from_other_abi_is_crc_mismatch(kernel47: Kernel):
    # With modversions the vermagic check ignores the release, so the 56 build
    # of mc.ko gets as far as the CRC checks; module_layout is checked first
    # and its CRC differs between every pair of Debian ABIs.
    kernel56 = Kernel("6.1.0-56-amd64")
    [result] = insmod_in_qemu(kernel47.vmlinuz, [kernel56.module(MC)])
    assert result.exit_status == ENOEXEC
    assert "mc: disagrees about version of symbol module_layout" in result.kernel_messages
