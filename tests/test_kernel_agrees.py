"""The real kernel is the final judge: boot Debian's 6.1.0-47-amd64 in qemu, insmod real
modules, and check that kabigate's verdicts and reasons are the kernel's."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from support.elfedit import with_crc

from kabigate.boot.qemu import insmod_in_qemu, qemu_available
from kabigate.formats.elf import ElfFile
from kabigate.formats.module import read_module
from kabigate.inputs.kernels import load_kernel
from kabigate.rules import check_modules

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]
KERNEL, NEWER = "6.1.0-47-amd64", "6.1.0-56-amd64"


def without_version_record(module: Path, symbol: str, target: Path) -> Path:
    """A copy of `module` whose __versions record for `symbol` names another symbol: the
    "broken toolchain" case of check_version()."""
    data = bytearray(module.read_bytes())
    versions = ElfFile(bytes(data), str(module)).section("__versions")
    at = data.index(symbol.encode() + b"\0", versions.offset, versions.offset + versions.size)
    data[at] = ord("X")
    target.write_bytes(bytes(data))
    return target


@pytest.fixture(scope="module")
def booted(testdata, tmp_path_factory):
    reason = qemu_available()
    if reason is not None:
        pytest.skip(reason)
    cases = {
        "videodev-alone": testdata.in_tree(KERNEL, "drivers/media/v4l2-core/videodev.ko"),
        "mc": testdata.in_tree(KERNEL, "drivers/media/mc/mc.ko"),
        "videodev": testdata.in_tree(KERNEL, "drivers/media/v4l2-core/videodev.ko"),
        "v4l2loopback": testdata.driver_dir("v4l2loopback", KERNEL) / "v4l2loopback.ko",
        "acpi_call-from-56": testdata.driver_dir("acpi-call", NEWER) / "acpi_call.ko",
        "acpi_call-no-version": without_version_record(testdata.driver_dir("acpi-call", KERNEL) / "acpi_call.ko",
                                                       "proc_create",
                                                       tmp_path_factory.mktemp("edited") / "acpi_call.ko"),
        "oslec-kfree-crc": tmp_path_factory.mktemp("kfree") / "dahdi_echocan_oslec.ko",
    }
    oslec = testdata.driver_dir("dahdi", KERNEL) / "dahdi_echocan_oslec.ko"
    cases["oslec-kfree-crc"].write_bytes(with_crc(oslec.read_bytes(), "kfree", 0x1))
    results = insmod_in_qemu(testdata.root / testdata.manifest["kernels"][KERNEL]["vmlinuz"], list(cases.values()))
    return {name: (path, result) for (name, path), result in zip(cases.items(), results)}


def own_messages(result, name: str) -> list[str]:
    return [m for m in result.kernel_messages if m.startswith(f"{name}: ")]


def test_unknown_symbols_are_exactly_the_kernels(booted, vmlinux_only):
    path, result = booted["videodev-alone"]
    assert result.exit_status == errno.ENOENT
    kernel_unknown = {m.split("Unknown symbol ", 1)[1].split(" ", 1)[0]
                      for m in own_messages(result, "videodev") if "Unknown symbol" in m}
    verdict = check_modules([read_module(str(path))], vmlinux_only)[0]
    assert not verdict.loads
    assert {r.code for r in verdict.reasons} == {"missing-symbol"}
    assert {r.symbol for r in verdict.reasons} == kernel_unknown
    assert all(f"videodev: {r.message}" in own_messages(result, "videodev") for r in verdict.reasons)


def test_module_set_loads_like_the_kernel_loads_it(booted, vmlinux_only):
    modules = [read_module(str(booted[name][0])) for name in ("mc", "videodev", "v4l2loopback")]
    verdicts = check_modules(modules, vmlinux_only)
    for name, verdict in zip(("mc", "videodev", "v4l2loopback"), verdicts):
        assert booted[name][1].exit_status == 0, booted[name][1]
        assert verdict.loads, verdict.reasons


def test_out_of_tree_unsigned_taints_match_the_kernels_messages(booted, vmlinux_only):
    path, result = booted["v4l2loopback"]
    modules = [read_module(str(booted[name][0])) for name in ("mc", "videodev", "v4l2loopback")]
    warnings = {w.code: w.message for w in check_modules(modules, vmlinux_only)[2].warnings}
    assert set(warnings) == {"taint-out-of-tree", "unsigned"}
    # The kernel prints each taint once per boot, for the first module that causes it.
    kernel_says = own_messages(result, "v4l2loopback")
    assert f"v4l2loopback: {warnings['taint-out-of-tree']}" in kernel_says
    assert f"v4l2loopback: {warnings['unsigned']}" in kernel_says


def test_crc_mismatch_is_the_kernels_first_complaint(booted, testdata):
    path, result = booted["acpi_call-from-56"]
    assert result.exit_status == errno.ENOEXEC
    verdict = check_modules([read_module(str(path))], load_kernel([str(testdata.kernel_root(KERNEL))]))[0]
    first = verdict.reasons[0]
    assert (first.code, first.symbol) == ("module-layout-mismatch", "module_layout")
    assert own_messages(result, "acpi_call")[0] == f"acpi_call: {first.message}"


def test_missing_version_record_is_refused_like_the_kernel(booted, testdata):
    path, result = booted["acpi_call-no-version"]
    assert result.exit_status == errno.EINVAL
    verdict = check_modules([read_module(str(path))], load_kernel([str(testdata.kernel_root(KERNEL))]))[0]
    assert [(r.code, r.symbol) for r in verdict.reasons] == [("no-symbol-version", "proc_create")]
    messages = own_messages(result, "acpi_call")
    assert f"acpi_call: {verdict.reasons[0].message}" in messages
    assert "acpi_call: Unknown symbol proc_create (err -22)" in messages


def test_symbol_failures_come_in_the_symbol_table_order_whatever_their_kind(booted, testdata):
    """simplify_symbols() walks the symbol table and goes on after a failure: kfree (symbol 32, its
    CRC edited) before oslec_create (33, which no Debian kernel exports) and dahdi's symbols (dahdi
    not loaded). insmod's errno is the last failure's (dahdi_unregister_echocan_factory: ENOENT)."""
    path, result = booted["oslec-kfree-crc"]
    assert result.exit_status == errno.ENOENT
    verdict = check_modules([read_module(str(path))], load_kernel([str(testdata.kernel_root(KERNEL))]))[0]
    assert (verdict.reasons[0].code, verdict.reasons[0].symbol) == ("crc-mismatch", "kfree")
    ours = [f"dahdi_echocan_oslec: {r.message}" for r in verdict.reasons]
    # The whole walk is printed twice here (each attempt the same); every message is the kernel's, in its order.
    assert [m for m in own_messages(result, "dahdi_echocan_oslec") if m in ours][:len(ours)] == ours
    assert own_messages(result, "dahdi_echocan_oslec")[0] == ours[0]
