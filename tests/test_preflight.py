"""kabigate preflight on fake RHEL-layout systems (tests/weakroot.py) against the real Debian kernel
packages, and the APT hook that runs it before dpkg installs a kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import weakroot

pytestmark = pytest.mark.realdata

OLD, NEW = "6.1.0-47-amd64", "6.1.0-56-amd64"
RESPIN = "6.1.0-47.1-amd64"
REPO = Path(__file__).resolve().parent.parent
HOOK = REPO / "contrib" / "apt" / "kabigate-preflight"


def _kabigate(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kabigate", *args], check=False, capture_output=True, text=True,
                          env=env)


def _debs(testdata, krel: str) -> tuple[Path, Path]:
    debs = testdata.root / "debs"
    image = next(debs.glob(f"linux-image-{krel}-unsigned_*.deb"))
    headers = next(debs.glob(f"linux-headers-{krel}_*.deb"))
    return image, headers


@pytest.fixture
def system(tmp_path, testdata, synthetic_modules):
    """OLD and RESPIN (OLD's files as another release) installed, OLD's kmods in extra/, and
    v4l2loopback the Debian way (DKMS: updates/dkms/)."""
    base = tmp_path / "root"
    weakroot.add_kernel(base, testdata, OLD)
    weakroot.add_kernel(base, testdata, OLD, release=RESPIN, symvers_in_boot=False)
    for driver in ("acpi-call", "jool", "dahdi"):
        weakroot.add_driver(base, testdata, driver, OLD)
    weakroot.add_driver(base, testdata, "v4l2loopback", OLD, subdir="updates/dkms")
    for name in ("proprietary_gpl", "ns_missing"):
        weakroot.add_module_file(base, OLD, synthetic_modules[name], "synthetic")
    return base


def test_new_kernel_packages_break_the_installed_modules(system, testdata, tmp_path):
    image, headers = _debs(testdata, NEW)
    result = _kabigate("preflight", "--root", str(system), "--json", f"{image},{headers}")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["kernel"] == NEW
    names = {m["name"]: m for m in report["modules"]}
    assert {"acpi_call", "jool", "jool_common", "dahdi", "v4l2loopback"} <= names.keys()
    assert all(not m["loads"] and m["reasons"][0]["code"] == "module-layout-mismatch" for m in names.values())
    assert names["v4l2loopback"]["dkms"] and not names["acpi_call"]["dkms"]
    assert report["breaks"] == len(names) - 1  # DKMS rebuilds v4l2loopback: a warning, not a break

    # A store that knows acpi-call's build for NEW: preflight names it.
    store_path = tmp_path / "store.db"
    for built_for in (NEW, OLD):
        ingest = _kabigate("ingest", "drivers", "--db", str(store_path), "--name", "acpi-call",
                           "--version", "1.2.2-2.1", str(testdata.driver_dir("acpi-call", built_for)))
        assert ingest.returncode == 0, ingest.stderr
    # (the extracted packages this time: the same kernel, read faster)
    result = _kabigate("preflight", "--root", str(system), "--db", str(store_path), str(testdata.kernel_root(NEW)))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[1:2] == ["acpi_call"])
    assert f"a build that loads: acpi-call 1.2.2-2.1 (built for {NEW})" in lines[at + 1]
    assert not any(f"(built for {OLD})" in line for line in lines if "a build that loads" in line)


def test_same_kabi_respin_keeps_what_the_kernel_accepts(system):
    """RESPIN is installed (its symvers under /lib/modules): OLD's builds load there, but for the
    modules the kernel refuses for reasons depmod does not check."""
    result = _kabigate("preflight", "--root", str(system), "--json", RESPIN)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    loads = {m["name"] for m in report["modules"] if m["loads"]}
    assert {"acpi_call", "jool", "jool_common", "jool_siit", "dahdi", "v4l2loopback"} <= loads
    failing = {m["name"]: m["reasons"][0]["code"] for m in report["modules"] if not m["loads"]}
    assert failing == {"proprietary_gpl": "gpl-only", "ns_missing": "namespace-not-imported",
                       "dahdi_echocan_oslec": "missing-symbol"}


def test_unknown_kernel_is_an_input_error(system):
    result = _kabigate("preflight", "--root", str(system), "9.9.9-none")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_apt_hook_warns_before_dpkg(system, testdata, tmp_path):
    """DPkg::Pre-Install-Pkgs gives the run's .deb files on stdin; the hook judges the kernel when
    image and headers are both there, warns, and lets APT go on (unless strict)."""
    image, headers = _debs(testdata, NEW)
    wrapper = tmp_path / "kabigate"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m kabigate \"$@\" --root {system}\n")
    wrapper.chmod(0o755)
    env = {**os.environ, "KABIGATE": str(wrapper)}
    stdin = "\n".join([str(image), str(headers), str(testdata.root / "debs" / "acpi-call-dkms_1.2.2-2.1_all.deb")])
    result = subprocess.run([str(HOOK)], input=stdin + "\n", capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert f"installed modules will not load on {NEW}" in result.stderr
    assert "module-layout-mismatch" in result.stderr
    strict = subprocess.run([str(HOOK)], input=stdin + "\n", capture_output=True, text=True, check=False,
                            env={**env, "KABIGATE_PREFLIGHT_STRICT": "1"})
    assert strict.returncode == 1
    alone = subprocess.run([str(HOOK)], input=f"{image}\n", capture_output=True, text=True, env=env, check=False)
    assert alone.returncode == 0 and "is not in this run" in alone.stderr


def test_dnf_plugin_warns_before_the_transaction(tmp_path, testdata):
    """Real dnf installs a real kernel-core RPM (6.1.0-47, tests/packaging.py) into a system whose
    kmods were built for 6.1.0-56: contrib/dnf's plugin runs preflight on the downloaded package
    before the transaction, warns, and with strict = 1 stops dnf before anything is installed."""
    import shutil

    import packaging as rpm_fixtures

    if shutil.which("dnf") is None or not rpm_fixtures.available():
        pytest.skip("dnf, rpmbuild or createrepo_c missing (scripts/bootstrap installs them)")
    # The packages test_packages.py builds (cached once for all).
    rpms = rpm_fixtures.build_packages(testdata, OLD, {"acpi-call": OLD, "jool": OLD, "v4l2loopback": NEW})
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(next((rpms / "kernel").glob("kernel-core-*.rpm")), repo)
    subprocess.run(["createrepo_c", "-q", str(repo)], check=True)
    plugins, conf = tmp_path / "plugins", tmp_path / "conf"
    plugins.mkdir()
    conf.mkdir()
    shutil.copy(REPO / "contrib" / "dnf" / "kabigate_preflight.py", plugins)
    shim = tmp_path / "kabigate"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m kabigate \"$@\"\n")
    shim.chmod(0o755)

    def install(strict: bool) -> tuple[subprocess.CompletedProcess, Path]:
        system = tmp_path / f"root-{strict}"
        weakroot.add_kernel(system, testdata, NEW)
        for driver in ("acpi-call", "v4l2loopback"):
            weakroot.add_driver(system, testdata, driver, NEW)
        settings = (REPO / "contrib" / "dnf" / "kabigate_preflight.conf").read_text()
        (conf / "kabigate_preflight.conf").write_text(
            settings.replace("strict = 0", f"strict = {int(strict)}").replace("command = kabigate", f"command = {shim}"))
        result = subprocess.run(
            ["dnf", "-y", f"--installroot={system}", "--releasever=9", "--setopt=reposdir=/dev/null",
             f"--repofrompath=local,file://{repo}", "--repo=local", "--nogpgcheck",
             f"--setopt=pluginpath={plugins}", f"--setopt=pluginconfpath={conf}", "install", "kernel-core"],
            capture_output=True, text=True, check=False, timeout=300)
        return result, system

    result, system = install(strict=False)
    assert result.returncode == 0, result.stdout + result.stderr
    warning = result.stdout.index("installed modules will not load on kernel-core-")
    assert "module-layout-mismatch" in result.stdout[:warning]
    assert warning < result.stdout.index("Running transaction\n")  # before anything is installed
    assert (system / "lib" / "modules" / OLD / "symvers.gz").is_file()

    result, system = install(strict=True)
    assert result.returncode == 1 and "kabigate preflight: installed modules will not load" in result.stderr
    assert not (system / "lib" / "modules" / OLD).exists()
