"""A stream that enforces module signatures (`kabigate db enforce-signatures`): its kernels' verdicts
follow module_sig_check() with the kernel image's built-in keys and enrolled MOK certificates, in
the matrix, the package view and the gate; `check --sig-enforce` does the same for one kernel."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from kabigate.inputs.kernels import load_kernel
from kabigate.services.ingest import ingest_driver_build, ingest_kernel, read_driver_builds
from kabigate.store import Store

pytestmark = pytest.mark.realdata
KERNEL = "6.1.0-47-amd64"
NEXT = "6.1.0-56-amd64"
STREAM = "debian-6.1"


def kabigate(*args, expect=(0,)) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "kabigate", *map(str, args)], check=False, capture_output=True,
                            text=True)
    assert result.returncode in expect, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def signed(testdata, tmp_path_factory):
    """acpi_call unsigned, signed with a MOK key (enrolled) and with another key (not enrolled),
    and Debian's own mc.ko (signed with the key built into the kernel image)."""
    work = tmp_path_factory.mktemp("stream-signatures")
    unsigned = testdata.driver_dir("acpi-call", KERNEL)
    folders = {"unsigned": unsigned}
    for name in ("mok", "other"):
        kabigate("keygen", "--out", work / name, "--bits", "2048")
        folders[name] = work / f"signed-{name}"
        folders[name].mkdir()
        shutil.copy(unsigned / "acpi_call.ko", folders[name])
        kabigate("sign", "--key", work / f"{name}.key", "--cert", work / f"{name}.crt", folders[name] / "acpi_call.ko")
    folders["in-tree"] = work / "in-tree"
    folders["in-tree"].mkdir()
    shutil.copy(testdata.in_tree(KERNEL, "drivers/media/mc/mc.ko"), folders["in-tree"])
    vmlinuz = testdata.root / testdata.manifest["kernels"][KERNEL]["vmlinuz"]
    return work, folders, vmlinuz


@pytest.fixture(scope="module")
def store(testdata, signed, tmp_path_factory):
    work, folders, _ = signed
    path = str(tmp_path_factory.mktemp("store") / "store.db")
    # acpi-call as a driver repository ships it: signed with its MOK key for -47, rebuilt for -56 but not signed
    builds = [(f"case-{name}", "1", folder) for name, folder in folders.items()]
    builds += [("acpi-call", "1", folders["mok"]), ("acpi-call", "2", testdata.driver_dir("acpi-call", NEXT))]
    with Store.open(path) as opened:
        for release in (KERNEL, NEXT):
            ingest_kernel(opened, load_kernel([str(testdata.kernel_root(release))]), STREAM)
        for driver, version, folder in builds:
            for build in read_driver_builds([str(folder)], driver, version):
                ingest_driver_build(opened, build)
    return path


def first_reasons(store: str) -> dict[str, str | None]:
    matrix = json.loads(kabigate("matrix", "--db", store, "--format", "json").stdout)
    return {build["driver"].removeprefix("case-"): build["cells"][KERNEL]["first_reason"]
            for build in matrix["builds"] if build["driver"].startswith("case-")}


def test_an_enforcing_stream_fails_what_its_kernels_would_refuse(signed, store):
    work, _, vmlinuz = signed
    assert first_reasons(store) == dict.fromkeys(("unsigned", "mok", "other", "in-tree"))  # not enforced: all load
    marked = json.loads(kabigate("db", "enforce-signatures", STREAM, "--cert", vmlinuz, "--cert", work / "mok.crt",
                                 "--db", store, "--json").stdout)
    assert marked["enforced"] and marked["verdicts"] == 12  # 6 builds x 2 kernels
    assert {t["source"] for t in marked["trusted"]} == {str(vmlinuz), str(work / "mok.crt")}
    status = json.loads(kabigate("db", "status", "--db", store, "--json").stdout)
    stream = next(s for s in status["streams"] if s["name"] == STREAM)
    assert sorted(stream["trusted_certificates"]) == sorted([str(vmlinuz), str(work / "mok.crt")])
    assert f"stream {STREAM}: 2 kernels (x86_64); signatures enforced, trusting" in kabigate(
        "db", "status", "--db", store).stdout
    assert first_reasons(store) == {"unsigned": "unsigned", "mok": None, "other": "untrusted-signature",
                                    "in-tree": None}
    with Store.open(store) as opened:
        build = opened.driver_builds("case-unsigned")[0]
        detail = opened.verdict_detail(build.id, opened.kernels(STREAM)[0].id)
    assert detail[0]["reasons"][0]["message"] == "Loading of unsigned module is rejected"
    packages = json.loads(kabigate("matrix", "--db", store, "--packages", "--format", "json").stdout)
    states = {p["driver"].removeprefix("case-"): p["verdicts"][0]["state"] for p in packages["packages"]
              if p["driver"].startswith("case-")}
    # (each build is built for the kernel: a working one is what a rebuild gives)
    assert states == {"unsigned": "broken", "other": "broken", "mok": "loads-after-rebuild",
                      "in-tree": "loads-after-rebuild"}, states
    # The gate fails -56: acpi-call's signed build does not load there (CRCs), its rebuild is unsigned.
    gate = json.loads(kabigate("gate", "--candidate", NEXT, "--db", store, "--json", expect=(1,)).stdout)
    assert gate["outcome"] == "FAILED"
    acpi_call = next(p for p in gate["packages"] if p["driver"] == "acpi-call")
    assert acpi_call["breaks"] and acpi_call["first_reason"] == "unsigned", acpi_call

    kabigate("db", "enforce-signatures", STREAM, "--off", "--db", store)
    assert f"stream {STREAM}: 2 kernels (x86_64); signatures not enforced" in kabigate(
        "db", "status", "--db", store).stdout
    assert first_reasons(store) == dict.fromkeys(("unsigned", "mok", "other", "in-tree"))
    gate = json.loads(kabigate("gate", "--candidate", NEXT, "--db", store, "--json", expect=(0, 1)).stdout)
    assert not next(p for p in gate["packages"] if p["driver"] == "acpi-call")["breaks"]


def test_enforce_signatures_refuses_nonsense(store, signed, tmp_path):
    _, folders, _ = signed
    assert "no stream named 'nowhere'" in kabigate("db", "enforce-signatures", "nowhere", "--cert",
                                                   signed[0] / "mok.crt", "--db", store, expect=(2,)).stderr
    assert "or --off" in kabigate("db", "enforce-signatures", STREAM, "--db", store, expect=(2,)).stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    refused = kabigate("db", "enforce-signatures", STREAM, "--cert", junk, "--db", store, expect=(2,)).stderr
    assert refused.strip() == f"kabigate: error: neither a certificate nor a kernel image: {junk}"


@pytest.mark.parametrize("case,code", [("unsigned", "unsigned"), ("other", "untrusted-signature"), ("mok", None),
                                       ("in-tree", None)])
def test_check_sig_enforce(testdata, signed, case, code):
    """--sig-enforce: the kernel's built-in keys (from its image) are trusted, --trust adds MOK certificates."""
    work, folders, _ = signed
    result = kabigate("check", "--json", "-k", testdata.kernel_root(KERNEL), "--sig-enforce", "--trust",
                      work / "mok.crt", folders[case], expect=(0, 1))
    verdict = json.loads(result.stdout)["modules"][0]
    assert (verdict["reasons"][0]["code"] if verdict["reasons"] else None) == code
