"""The real kernel judges signatures: Debian's 6.1.0-47-amd64 booted in qemu with
module.sig_enforce=1 against kabigate's `check --require-signature --trust <vmlinuz>`."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys

import pytest

from kabigate.boot.qemu import insmod_in_qemu, qemu_available
from kabigate.formats.modsig import MAGIC, TRAILER
from kabigate.signing import verify

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]
KERNEL = "6.1.0-47-amd64"


@pytest.fixture(scope="module")
def booted(testdata, tmp_path_factory):
    reason = qemu_available()
    if reason is not None:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("signing")
    prefix = work / "mok"
    subprocess.run([sys.executable, "-m", "kabigate", "keygen", "--out", prefix, "--bits", "2048"], check=True,
                   capture_output=True)
    unsigned = testdata.driver_dir("acpi-call", KERNEL) / "acpi_call.ko"
    ours = work / "ours" / "acpi_call.ko"
    ours.parent.mkdir()
    shutil.copy(unsigned, ours)
    subprocess.run([sys.executable, "-m", "kabigate", "sign", "--key", f"{prefix}.key", "--cert", f"{prefix}.crt",
                    ours], check=True, capture_output=True)
    in_tree = testdata.in_tree(KERNEL, "drivers/media/mc/mc.ko")
    tampered = work / "tampered" / "mc.ko"
    tampered.parent.mkdir()
    data = bytearray(in_tree.read_bytes())
    data[len(data) - len(MAGIC) - TRAILER.size - 2000] ^= 0x01  # in the module, before its signature
    tampered.write_bytes(bytes(data))
    cases = {"unsigned": unsigned, "kabigate-key": ours, "tampered": tampered, "in-tree": in_tree}
    vmlinuz = testdata.root / testdata.manifest["kernels"][KERNEL]["vmlinuz"]
    results = insmod_in_qemu(vmlinuz, list(cases.values()), kernel_args="module.sig_enforce=1")
    return vmlinuz, {name: (path, result) for (name, path), result in zip(cases.items(), results)}


def kabigate_verdict(testdata, vmlinuz, module) -> dict:
    result = subprocess.run([sys.executable, "-m", "kabigate", "check", "--json", "-k", testdata.kernel_root(KERNEL),
                             "--require-signature", "--trust", vmlinuz, module], check=False, capture_output=True,
                            text=True)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)["modules"][0]


@pytest.mark.parametrize("case,code,errno_value", [
    ("unsigned", "unsigned", errno.EKEYREJECTED),
    ("kabigate-key", "untrusted-signature", errno.EKEYREJECTED),
    ("tampered", "bad-signature", errno.EKEYREJECTED),
])
def test_enforcing_kernel_rejects_what_kabigate_rejects(testdata, booted, case, code, errno_value):
    vmlinuz, results = booted
    path, result = results[case]
    assert result.exit_status == errno_value, result
    verdict = kabigate_verdict(testdata, vmlinuz, path)
    assert verdict["verdict"] == "fails"
    assert verdict["reasons"][0]["code"] == code
    if code != "bad-signature":  # module_sig_check() says why; a failed verification it does not
        assert any(verdict["reasons"][0]["message"] in message for message in result.kernel_messages), result
    else:
        assert not any("Loading of" in message for message in result.kernel_messages), result


def test_enforcing_kernel_loads_its_own_signed_module(testdata, booted):
    vmlinuz, results = booted
    path, result = results["in-tree"]
    assert result.exit_status == 0, result
    assert kabigate_verdict(testdata, vmlinuz, path)["verdict"] == "loads"
    assert verify.verify_module(path.read_bytes(), verify.load_trust([str(vmlinuz)])).result == "ok"


def test_an_enforcing_stream_in_the_store_agrees_with_the_booted_kernel(testdata, booted, tmp_path):
    """The same modules as builds in a store whose stream enforces signatures, trusting the kernel
    image's built-in keys (`db enforce-signatures --cert vmlinuz`): each stored verdict is what
    the booted kernel did, with the kernel's reason. (A tampered module needs its bytes: the store
    keeps its signer, so only check --sig-enforce refuses it.)"""
    from kabigate.boot.qemu import kernel_reason
    from kabigate.inputs.kernels import load_kernel
    from kabigate.services.ingest import ingest_driver_build, ingest_kernel, read_driver_builds
    from kabigate.store import Store

    vmlinuz, results = booted
    store = str(tmp_path / "store.db")
    cases = ("unsigned", "kabigate-key", "in-tree")
    with Store.open(store) as opened:
        ingest_kernel(opened, load_kernel([str(testdata.kernel_root(KERNEL))]), "secure-boot")
        for case in cases:
            path = results[case][0]
            for build in read_driver_builds([str(path)], f"case-{case}", "1"):
                ingest_driver_build(opened, build)
    subprocess.run([sys.executable, "-m", "kabigate", "db", "enforce-signatures", "secure-boot", "--cert", vmlinuz,
                    "--db", store], check=True, capture_output=True)
    matrix = json.loads(subprocess.run([sys.executable, "-m", "kabigate", "matrix", "--db", store, "--format", "json"],
                                       check=True, capture_output=True, text=True).stdout)
    stored = {b["driver"].removeprefix("case-"): b["cells"][KERNEL] for b in matrix["builds"]}
    for case in cases:
        booted_reason = kernel_reason(results[case][1])
        assert stored[case]["loads"] == (booted_reason is None), (case, stored[case], results[case][1])
        assert stored[case]["first_reason"] == (booted_reason and booted_reason.code), (case, booted_reason)
    assert [stored[c]["first_reason"] for c in cases] == ["unsigned", "untrusted-signature", None]
