"""The real kernel judges the synthetic modules: boot Debian's 6.1.0-47-amd64 in qemu, insmod
each of tests/synthetic's modules and check kabigate's verdicts, errnos and messages."""

from __future__ import annotations

import errno

import pytest
from synthetic.build import TEST_KERNEL

from kabigate.boot.qemu import insmod_in_qemu, qemu_available
from kabigate.formats.module import read_module
from kabigate.rules import check_modules

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]
# One boot, insmod in this order; provider before consumer as modprobe would. The kernel
# prints each taint once per boot, for the first module that causes it.
BOOT = ("plain", "proprietary_ok", "proprietary_gpl", "ns_ok", "ns_missing", "weak_missing",
        "unknown_symbol", "dup_export", "no_versions", "provider", "consumer", "prop_provider", "gpl_user")
# The errno insmod fails with, for the first reason kabigate gives.
ERRNO = {"missing-symbol": errno.ENOENT, "gpl-only": errno.ENOENT, "namespace-not-imported": errno.EINVAL,
         "crc-mismatch": errno.EINVAL, "duplicate-export": errno.ENOEXEC, "no-versions": errno.ENOEXEC}


@pytest.fixture(scope="module")
def vmlinuz(testdata):
    reason = qemu_available()
    if reason is not None:
        pytest.skip(reason)
    return testdata.root / testdata.manifest["kernels"][TEST_KERNEL]["vmlinuz"]


@pytest.fixture(scope="module")
def booted(vmlinuz, synthetic_modules, vmlinux_only):
    """name -> (kabigate's verdict for the boot's module set, the kernel's InsmodResult)."""
    results = insmod_in_qemu(vmlinuz, [synthetic_modules[name] for name in BOOT])
    verdicts = check_modules([read_module(str(synthetic_modules[name])) for name in BOOT], vmlinux_only)
    return {name: (verdict, result) for name, verdict, result in zip(BOOT, verdicts, results)}


def own_messages(result, name: str) -> list[str]:
    return [m for m in result.kernel_messages if m.startswith(f"{name}: ")]


@pytest.mark.parametrize("name", BOOT)
def test_kernel_loads_what_kabigate_says_loads(booted, name):
    verdict, result = booted[name]
    if verdict.loads:
        assert result.exit_status == 0, result
    else:
        assert result.exit_status == ERRNO[verdict.reasons[0].code], (verdict.reasons, result)


@pytest.mark.parametrize("name", ["proprietary_gpl", "ns_missing", "unknown_symbol"])
def test_kernels_first_complaint_is_kabigates_first_reason(booted, name):
    verdict, result = booted[name]
    # kabigate may add why (e.g. "it is exported GPL-only") after the kernel's words.
    assert f"{name}: {verdict.reasons[0].message}".startswith(own_messages(result, name)[0])


def test_proprietary_taint_message_is_the_kernels(booted):
    verdict, result = booted["proprietary_ok"]
    [taint] = [w for w in verdict.warnings if w.code == "taint-proprietary"]
    assert f"proprietary_ok: {taint.message}" in own_messages(result, "proprietary_ok")


def test_duplicate_export_message_is_the_kernels(booted):
    verdict, result = booted["dup_export"]
    assert own_messages(result, "dup_export")[0] == \
        "dup_export: exports duplicate symbol cpu_mitigations_auto_nosmt (owned by kernel)"
    assert own_messages(result, "dup_export")[0] == f"dup_export: {verdict.reasons[0].message}"


def test_forced_load_message_is_the_kernels(booted):
    verdict, result = booted["no_versions"]
    assert own_messages(result, "no_versions") == ["no_versions: module_layout: kernel tainted."]
    [taint] = [w for w in verdict.warnings if w.code == "taint-forced"]
    assert f"no_versions: {taint.message}" in own_messages(result, "no_versions")


def test_consumer_of_incompatible_provider_is_refused_like_kabigate_says(vmlinuz, synthetic_modules, vmlinux_only):
    """consumer alone, then provider_v2, then consumer again: missing symbol, then CRC mismatch."""
    consumer, provider_v2 = synthetic_modules["consumer"], synthetic_modules["provider_v2"]
    alone, provider_loaded, mismatched = insmod_in_qemu(vmlinuz, [consumer, provider_v2, consumer])
    [verdict_alone] = check_modules([read_module(str(consumer))], vmlinux_only)
    provider_verdict, verdict = check_modules([read_module(str(provider_v2)), read_module(str(consumer))],
                                              vmlinux_only)
    assert alone.exit_status == ERRNO[verdict_alone.reasons[0].code] == errno.ENOENT
    assert f"consumer: {verdict_alone.reasons[0].message}" in own_messages(alone, "consumer")
    assert provider_verdict.loads and provider_loaded.exit_status == 0
    assert mismatched.exit_status == ERRNO[verdict.reasons[0].code] == errno.EINVAL
    assert own_messages(mismatched, "consumer")[0] == "consumer: disagrees about version of symbol kabigate_provided"
    assert verdict.reasons[0].message.startswith("disagrees about version of symbol kabigate_provided")
