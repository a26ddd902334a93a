"""kabigate boot-check on a real Debian kernel package and real DKMS modules: the kernel booted in
qemu, in-tree dependencies inserted first, the kernel's verdict beside kabigate's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kabigate.boot.qemu import qemu_available

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]
KABIGATE = [sys.executable, "-m", "kabigate"]
KERNEL, NEWER, SERIES_612 = "6.1.0-47-amd64", "6.1.0-56-amd64", "6.12.107+deb12-amd64"


@pytest.fixture(autouse=True)
def _qemu():
    reason = qemu_available()
    if reason is not None:
        pytest.skip(reason)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KABIGATE, "boot-check", *args], capture_output=True, text=True, check=False,
                          timeout=900)


def driver(testdata, name: str, built_for: str, module: str) -> str:
    return str(testdata.root / testdata.manifest["drivers"][name][built_for]["dir"] / module)


def test_kernel_package_alone_boots_inserts_dependencies_first_and_agrees(testdata):
    """linux-image .deb only: the vmlinuz booted and, for the prediction, its exports read from
    the image, its sizeof(struct module) from an in-tree module; v4l2loopback's in-tree
    dependencies (mc, videodev) come out of the package and go in first."""
    image = str(testdata.root / testdata.manifest["stream_kernels"][KERNEL]["debs"][0])
    result = run("--json", "--image", image, driver(testdata, "v4l2loopback", KERNEL, "v4l2loopback.ko"),
                 driver(testdata, "acpi-call", SERIES_612, "acpi_call.ko"))
    assert result.returncode == 1, result.stderr  # the kernel refuses the 6.12 build
    report = json.loads(result.stdout)
    assert report["kernel"]["release"] == KERNEL and report["disagreements"] == 0
    modules = report["modules"]
    assert [(m["name"], m["in_tree"]) for m in modules] == [
        ("mc", True), ("videodev", True), ("v4l2loopback", False), ("acpi_call", False)]
    assert all(m["agrees"] for m in modules)
    assert [m["kernel"]["verdict"] for m in modules] == ["loads", "loads", "loads", "fails"]
    refused = modules[3]
    assert refused["kernel"]["reason"]["code"] == refused["kabigate"]["reasons"][0]["code"] == \
        "module-layout-mismatch"
    assert "acpi_call: disagrees about version of symbol module_layout" in refused["kernel"]["messages"]
    assert "v4l2loopback: loading out-of-tree module taints kernel." in modules[2]["kernel"]["messages"]


def test_a_wrong_prediction_is_flagged(testdata):
    """Booting 6.1.0-47 but predicting with 6.1.0-56's symbols: the kernel loads the module built
    for it, kabigate (wrongly, for this kernel) says module_layout: a disagreement, exit 1."""
    vmlinuz = str(testdata.root / testdata.manifest["kernels"][KERNEL]["vmlinuz"])
    result = run("--image", vmlinuz, "-k", str(testdata.kernel_root(NEWER)),
                 driver(testdata, "acpi-call", KERNEL, "acpi_call.ko"))
    assert result.returncode == 1
    assert "DISAGREE acpi_call" in result.stdout
    assert "kernel:   loads" in result.stdout
    assert "kabigate: fails: module-layout-mismatch" in result.stdout
    assert "0 agree, 1 disagree" in result.stdout


@pytest.mark.parametrize("image, message", [
    ("/nonexistent/vmlinuz", "no such kernel image"),
    ("{module}", "not a linked kernel image"),
])
def test_bad_images_are_one_line_errors(testdata, image, message):
    module = driver(testdata, "acpi-call", KERNEL, "acpi_call.ko")
    result = run("--image", image.format(module=module), module)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_gate_confirms_a_sample_of_its_verdicts_in_qemu(testdata, tmp_path):
    """A gate of 6.1.0-56 (read from its .debs) over two stored builds, confirmed in one boot:
    acpi-call built for 6.1.0-47 is refused for module_layout, jool built for 6.1.0-56 loads
    (its in-tree dependencies from the image package), as the stored verdicts say."""
    db = str(tmp_path / "store.db")
    debs = ",".join(str(testdata.root / deb) for deb in testdata.manifest["stream_kernels"][NEWER]["debs"])
    kabigate = [*KABIGATE[:3]]
    subprocess.run([*kabigate, "ingest", "kernel", "--db", db, "--stream", "debian-6.1", debs], check=True,
                   capture_output=True)
    for built_for, name in ((KERNEL, "acpi-call"), (NEWER, "jool")):
        subprocess.run([*kabigate, "ingest", "drivers", "--db", db,
                        str(testdata.root / testdata.manifest["drivers"][name][built_for]["dir"])],
                       check=True, capture_output=True)
    result = subprocess.run([*kabigate, "gate", "--db", db, "--candidate", NEWER, "--stream", "debian-6.1",
                             "--confirm-in-qemu", "2", "--json"], capture_output=True, text=True, check=False,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    confirmations = {c["build"].split(" ", 1)[0]: c for c in json.loads(result.stdout)["qemu_confirmation"]}
    assert set(confirmations) == {"acpi_call", "jool"}, confirmations
    assert all(c["agrees"] for c in confirmations.values()), confirmations
    assert confirmations["acpi_call"]["kernel"]["first_reason"] == "module-layout-mismatch"
    assert confirmations["jool"]["kernel"]["loads"]
    # kept with the gate run
    from kabigate.store import Store
    with Store.open(f"sqlite:///{db}") as store:
        (run,) = store.gate_runs()
        assert store.gate_report(run.uuid)["qemu_confirmation"] == json.loads(result.stdout)["qemu_confirmation"]
