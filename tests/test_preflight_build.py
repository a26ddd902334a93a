"""`kabigate preflight --build`: the DKMS packages registered on a system (a --root holding real
Debian *-dkms packages, unpacked and `dkms add`ed) built by the real dkms against the new kernel's
real headers in the sandbox, signed with the system's MOK key, their modules judged there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not (shutil.which("bwrap") and shutil.which("dkms")), reason="needs dkms, bubblewrap")]
NEW = "6.12.107+deb12-amd64"
INSTALLED = "6.1.0-47-amd64"


def kabigate(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KABIGATE_DB"}
    return subprocess.run([sys.executable, "-m", "kabigate", *map(str, args)], capture_output=True, text=True,
                          check=False, env=env)


def dkms_add(root: Path, deb: Path) -> None:
    """What installing a *-dkms .deb leaves: its /usr/src/NAME-VERSION, and dkms add's registration."""
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    for conf in (root / "usr/src").glob("*/dkms.conf"):
        name, version = conf.parent.name.rsplit("-", 1)
        registration = root / "var/lib/dkms" / name / version
        if not registration.exists():
            registration.mkdir(parents=True)
            (registration / "source").symlink_to(f"/usr/src/{conf.parent.name}")


@pytest.fixture(scope="module")
def system(testdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight-build") / "root"
    (root / "lib/modules" / INSTALLED).mkdir(parents=True)
    for driver in ("acpi-call", "vpoll"):
        (deb,) = (testdata.root / "debs").glob(f"{driver}-dkms_*.deb")
        dkms_add(root, deb)
    assert kabigate("keygen", "--out", root / "mok", "--bits", "2048").returncode == 0
    (root / "mok.key").rename(root / "var/lib/dkms/mok.key")
    (root / "mok.der").rename(root / "var/lib/dkms/mok.pub")  # DER, as Debian's dkms makes it
    (root / "mok.crt").unlink()
    return root


def test_preflight_builds_each_dkms_package_for_the_new_kernel(testdata, system):
    new_tree = testdata.root / testdata.manifest["build_kernels"][NEW]["root"]
    run = kabigate("preflight", "--root", system, "--build", "--json", new_tree)
    assert run.returncode == 1, run.stdout + run.stderr  # vpoll does not compile on 6.12
    report = json.loads(run.stdout)
    packages = {p["name"]: p for p in report["packages"]}
    assert set(packages) == {"acpi-call", "vpoll"} and report["broken_packages"] == 1
    acpi_call = packages["acpi-call"]
    assert acpi_call["works"] and acpi_call["build"]["outcome"] == "built", acpi_call
    assert [m["verdict"] for m in acpi_call["modules"]] == ["loads"]
    assert acpi_call["build"]["signer"]  # signed with /var/lib/dkms/mok.key
    vpoll = packages["vpoll"]
    assert not vpoll["works"] and vpoll["build"]["outcome"] == "failed"
    assert vpoll["build"]["error"] == testdata.manifest["driver_failures"]["vpoll"][NEW]["error"]
    # (the text report: the APT hook's test below)


def test_the_apt_hook_builds_the_dkms_packages_against_the_kernel_of_the_run(testdata, system, tmp_path):
    """KABIGATE_PREFLIGHT_BUILD=1: the hook builds the installed DKMS packages against the run's
    linux-headers, -common and linux-kbuild packages before dpkg installs the kernel; vpoll does not
    compile on 6.12: a warning, and with KABIGATE_PREFLIGHT_STRICT=1 APT stops."""
    debs = testdata.root / "debs"
    run = [next(debs.glob(f"{name}_*.deb")) for name in (
        f"linux-image-{NEW}-unsigned", f"linux-headers-{NEW}", "linux-headers-6.12.107+deb12-common",
        "linux-kbuild-6.12.107+deb12", "acpi-call-dkms")]
    wrapper = tmp_path / "kabigate"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m kabigate \"$@\" --root {system}\n")
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "KABIGATE_DB"}
    env.update(KABIGATE=str(wrapper), KABIGATE_PREFLIGHT_BUILD="1", KABIGATE_PREFLIGHT_STRICT="1")
    hook = Path(__file__).resolve().parent.parent / "contrib/apt/kabigate-preflight"
    result = subprocess.run([hook], input="".join(f"{deb}\n" for deb in run), capture_output=True, text=True,
                            env=env, check=False)
    assert result.returncode == 1, result.stderr
    vpoll_error = testdata.manifest["driver_failures"]["vpoll"][NEW]["error"]
    assert "acpi-call" in result.stderr and "1 of 1 modules load" in result.stderr, result.stderr
    assert vpoll_error in result.stderr and "1 DKMS packages will have no working module" in result.stderr
    # Without the run's linux-kbuild the tree is incomplete: named, before anything is built.
    incomplete = subprocess.run([hook], input="".join(f"{deb}\n" for deb in run if "kbuild" not in deb.name),
                                capture_output=True, text=True, env=env, check=False)
    assert incomplete.returncode == 1 and "the linux-kbuild-* of 6.12.107+deb12-amd64 not in this run" \
        in incomplete.stderr, incomplete.stderr


def test_preflight_build_passes_when_every_package_builds_and_signs_with_the_mok_key(testdata, system, tmp_path):
    shutil.rmtree(system / "var/lib/dkms/vpoll")
    tree = testdata.root / testdata.manifest["build_kernels"][INSTALLED]["root"]
    run = kabigate("preflight", "--root", system, "--build", "--json", tree)
    assert run.returncode == 0, run.stdout + run.stderr
    [package] = json.loads(run.stdout)["packages"]
    assert package["works"] and package["build"]["signer"], package
    # Secure Boot: the module signed with the MOK key loads once that key is enrolled, not before.
    enrolled = kabigate("preflight", "--root", system, "--build", "--json", "--sig-enforce",
                        "--trust", system / "var/lib/dkms/mok.pub", tree)
    assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr
    not_enrolled = kabigate("preflight", "--root", system, "--build", "--json", "--sig-enforce", tree)
    assert not_enrolled.returncode == 1, not_enrolled.stderr
    [module] = json.loads(not_enrolled.stdout)["packages"][0]["modules"]
    assert [(r["code"], r["message"]) for r in module["reasons"]] == [
        ("untrusted-signature", "Loading of module with unavailable key is rejected")]


def test_preflight_build_refuses_headers_of_another_kernel(testdata, system):
    new_tree = testdata.root / testdata.manifest["build_kernels"][NEW]["root"]
    old_tree = testdata.root / testdata.manifest["build_kernels"][INSTALLED]["root"]
    run = kabigate("preflight", "--root", system, "--build", "--headers", old_tree, new_tree)
    assert run.returncode == 2 and f"the headers of {INSTALLED}, not of {NEW}" in run.stderr, run.stderr

