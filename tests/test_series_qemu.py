"""Across kernel series, the real kernel judges: boot Debian's 6.12.107 and 6.12.117 (backports),
6.1.0-57, and the rt and cloud flavors of 6.1 and 6.12 in qemu, insmod modules built for 6.1, for an older
6.12.x and for the booted kernel itself, plus real modules edited to fail one pre-resolution check
each (docs/loader-checks.md), and compare kabigate's verdict and first reason with the kernel's.
One boot per kernel, every module of it in that boot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from support.elfedit import EDITS

from kabigate.boot.qemu import INIT_FAILED, insmod_in_qemu, kernel_image, kernel_reason, qemu_available
from kabigate.formats.module import parse_module
from kabigate.inputs.kernels import load_kernel
from kabigate.rules import check_modules

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]
OLD_61, NEW_61, OLD_612 = "6.1.0-47-amd64", "6.1.0-56-amd64", "6.12.107+deb12-amd64"


# -- boots --------------------------------------------------------------------------------------

def kernel_paths(testdata, release: str) -> tuple[list[str], str]:
    """(what check -k takes, what qemu boots) for a corpus kernel: an extracted tree, its .debs,
    or its image .deb alone (empty paths: read with the vmlinuz booted, as boot-check does)."""
    if release in testdata.manifest["kernels"]:
        entry = testdata.manifest["kernels"][release]
        return [str(testdata.kernel_root(release))], str(testdata.root / entry["vmlinuz"])
    if release in testdata.manifest.get("flavor_images", {}):
        (image,) = testdata.manifest["flavor_images"][release]["debs"]
        return [], str(testdata.root / image)
    debs = [str(testdata.root / deb) for deb in testdata.manifest["stream_kernels"][release]["debs"]]
    return debs, debs[0]


def built(testdata, driver: str, built_for: str, module: str) -> Path:
    return testdata.root / testdata.manifest["drivers"][driver][built_for]["dir"] / module


def boot(testdata, tmp_path_factory, release: str, cases: dict[str, Path | tuple[Path, str]]):
    """Boot `release`, insmod every case in order; {case: (module, kernel's result)} and the
    kernel as insmod sees it after boot (vmlinux's exports only: nothing else is loaded)."""
    reason = qemu_available()
    if reason is not None:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp(release)
    files = []
    for name, case in cases.items():
        if isinstance(case, tuple):  # (module, edit)
            path, edit = case
            target = directory / name / path.name
            target.parent.mkdir()
            target.write_bytes(EDITS[edit](path.read_bytes()))
            files.append(target)
        else:
            files.append(case)
    paths, image = kernel_paths(testdata, release)
    vmlinuz = kernel_image(image, directory)
    results = insmod_in_qemu(vmlinuz, files)
    kernel = load_kernel(paths or [image, str(vmlinuz)])
    kernel = dataclasses.replace(kernel, exports={n: e for n, e in kernel.exports.items() if e.owner == "vmlinux"})
    modules = {name: parse_module(path.read_bytes(), str(path)) for name, path in zip(cases, files)}
    return kernel, {name: (modules[name], result) for name, result in zip(cases, results)}


def assert_agrees(kernel, booted: dict) -> dict[str, str | None]:
    """kabigate's verdict and first reason are the kernel's, for every module; returns the
    first reason of each (None: loads)."""
    firsts = {}
    for name, (module, result) in booted.items():
        verdict = check_modules([module], kernel)[0]
        said = kernel_reason(result)
        accepted = said is None or said.code == INIT_FAILED  # the loader took it
        assert verdict.loads == accepted, (name, verdict.reasons[:2], result)
        if accepted:
            firsts[name] = None if said is None else said.code
            continue
        first = verdict.reasons[0]
        assert first.code == said.code, (name, first, said, result.kernel_messages)
        if said.symbol:
            assert first.symbol == said.symbol, (name, first, said)
        # The kernel's words, after its "<module>: " or "module <module>: " prefix if any, begin kabigate's.
        words = said.message.removeprefix("module ").removeprefix(f"{module.name}: ").rstrip()
        assert first.message.startswith(words), (name, first.message, said)
        if said.code == "missing-symbol":
            unknown = {m.split("Unknown symbol ", 1)[1].split(" ", 1)[0] for m in result.kernel_messages
                       if "Unknown symbol" in m}
            assert unknown == {r.symbol for r in verdict.reasons if r.code in ("missing-symbol", "gpl-only")}
        firsts[name] = first.code
    return firsts


def test_612107_judges_61_builds_its_own_builds_and_each_pre_resolution_check(testdata, tmp_path_factory):
    own = built(testdata, "acpi-call", OLD_612, "acpi_call.ko")
    cases = {
        "acpi_call-for-6.1.0-47": built(testdata, "acpi-call", OLD_61, "acpi_call.ko"),
        "jool_common-for-6.1.0-56": built(testdata, "jool", NEW_61, "jool_common.ko"),
        **{f"acpi_call-{edit}": (own, edit) for edit in EDITS},
        "igb_uio": built(testdata, "dpdk-kmods", OLD_612, "igb_uio.ko"),  # needs in-tree uio: not loaded
        "lime": built(testdata, "lime-forensics", OLD_612, "lime.ko"),  # loaded, its init wants path=
        "acpi_call": own,
    }
    kernel, booted = boot(testdata, tmp_path_factory, OLD_612, cases)
    assert kernel.module_struct_size == 1280
    firsts = assert_agrees(kernel, booted)
    assert firsts == {
        "acpi_call-for-6.1.0-47": "module-struct-size",
        "jool_common-for-6.1.0-56": "module-struct-size",
        "acpi_call-write-exec": "write-exec-section",
        "acpi_call-two-modinfo": "invalid-elf",
        "acpi_call-two-this-module": "invalid-elf",  # "Only one ...", as v6.4
        "acpi_call-this-module-not-alloc": "invalid-elf",
        "acpi_call-stripped": "invalid-elf",
        "acpi_call-common": "common-symbol",
        "acpi_call-stripped-this-module-not-alloc": "invalid-elf",  # the symbol table first, as v6.4
        "igb_uio": "missing-symbol",
        "lime": INIT_FAILED,
        "acpi_call": None,
    }


def test_612117_judges_61_and_older_612_builds(testdata, tmp_path_factory):
    """6.12.117 has v6.13's split ELF checks (stable brought them): this section before the
    symbol table, where 6.12.107 looks at the symbol table first."""
    own = built(testdata, "acpi-call", OLD_612, "acpi_call.ko")
    cases = {
        "acpi_call-stripped-this-module-not-alloc": (own, "stripped-this-module-not-alloc"),
        "acpi_call-two-modinfo": (own, "two-modinfo"),
        "acpi_call-two-this-module": (own, "two-this-module"),  # "Exactly one ...", as v6.13
        "acpi_call-for-6.1.0-47": built(testdata, "acpi-call", OLD_61, "acpi_call.ko"),
        "v4l2loopback-for-6.1.0-56": built(testdata, "v4l2loopback", NEW_61, "v4l2loopback.ko"),
        "acpi_call-for-6.12.107": built(testdata, "acpi-call", OLD_612, "acpi_call.ko"),
        "bbswitch-for-6.12.107": built(testdata, "bbswitch", OLD_612, "bbswitch.ko"),
        "lime-for-6.12.107": built(testdata, "lime-forensics", OLD_612, "lime.ko"),
    }
    kernel, booted = boot(testdata, tmp_path_factory, "6.12.117+deb12-amd64", cases)
    firsts = assert_agrees(kernel, booted)
    assert firsts["acpi_call-for-6.1.0-47"] == firsts["v4l2loopback-for-6.1.0-56"] == "module-struct-size"
    assert firsts["acpi_call-for-6.12.107"] == "module-layout-mismatch"
    # the first line naming the module: the kernel's own asynchronous lines (the TSC's late calibration
    # under TCG) land in any step's capture
    messages = booted["acpi_call-stripped-this-module-not-alloc"][1].kernel_messages
    assert next(m for m in messages if "acpi_call" in m) == \
        "module acpi_call: .gnu.linkonce.this_module must occupy memory during process execution"


def test_610057_judges_612_and_61_builds_and_has_no_612_section_checks(testdata, tmp_path_factory):
    """6.1 has no sizeof(struct module) or duplicate-section check: a 6.12 build fails there on
    module_layout, a second .modinfo loads."""
    own = built(testdata, "acpi-call", NEW_61, "acpi_call.ko")
    cases = {
        "acpi_call-for-6.12.107": built(testdata, "acpi-call", OLD_612, "acpi_call.ko"),
        "acpi_call-for-6.1.0-47": built(testdata, "acpi-call", OLD_61, "acpi_call.ko"),
        "acpi_call-this-module-not-alloc": (own, "this-module-not-alloc"),
        "acpi_call-stripped": (own, "stripped"),
        "acpi_call-two-modinfo": (own, "two-modinfo"),
        "acpi_call-stripped-this-module-not-alloc": (own, "stripped-this-module-not-alloc"),
        "rapiddisk-for-6.1.0-56": built(testdata, "rapiddisk", NEW_61, "rapiddisk.ko"),
    }
    kernel, booted = boot(testdata, tmp_path_factory, "6.1.0-57-amd64", cases)
    firsts = assert_agrees(kernel, booted)
    assert firsts == {
        "acpi_call-for-6.12.107": "module-layout-mismatch",
        "acpi_call-for-6.1.0-47": "module-layout-mismatch",
        "acpi_call-this-module-not-alloc": "invalid-elf",
        "acpi_call-stripped": "invalid-elf",
        "acpi_call-two-modinfo": None,
        "acpi_call-stripped-this-module-not-alloc": "invalid-elf",
        "rapiddisk-for-6.1.0-56": None,
    }


@pytest.mark.parametrize("flavor", ["6.1.0-47-rt-amd64", "6.1.0-47-cloud-amd64"])
def test_rt_and_cloud_flavors_judge_builds_of_other_flavors_and_series(testdata, tmp_path_factory, flavor):
    cases = {
        "acpi_call-for-6.12.107": built(testdata, "acpi-call", OLD_612, "acpi_call.ko"),
        "acpi_call-for-6.1.0-47-amd64": built(testdata, "acpi-call", OLD_61, "acpi_call.ko"),
        "acpi_call-for-6.1.0-56-amd64": built(testdata, "acpi-call", NEW_61, "acpi_call.ko"),
    }
    kernel, booted = boot(testdata, tmp_path_factory, flavor, cases)
    firsts = assert_agrees(kernel, booted)
    assert all(first is not None for first in firsts.values())


@pytest.mark.parametrize("flavor", ["6.12.117+deb12-rt-amd64", "6.12.117+deb12-cloud-amd64"])
def test_612_rt_and_cloud_flavors_judge_amd64_builds_of_both_series(testdata, tmp_path_factory, flavor):
    """The 6.12 flavors read from their image package alone (exports from the vmlinuz, the
    struct module size from an in-tree module)."""
    if flavor not in testdata.manifest.get("flavor_images", {}):
        pytest.skip("run scripts/fetch-testdata: the 6.12 flavor images are missing")
    cases = {
        "acpi_call-for-6.12.107": built(testdata, "acpi-call", OLD_612, "acpi_call.ko"),
        "acpi_call-for-6.1.0-47-amd64": built(testdata, "acpi-call", OLD_61, "acpi_call.ko"),
        "v4l2loopback-for-6.1.0-56-amd64": built(testdata, "v4l2loopback", NEW_61, "v4l2loopback.ko"),
    }
    kernel, booted = boot(testdata, tmp_path_factory, flavor, cases)
    assert kernel.module_struct_size is not None
    firsts = assert_agrees(kernel, booted)
    assert firsts["acpi_call-for-6.1.0-47-amd64"] == "module-struct-size"
    assert all(first is not None for first in firsts.values())
