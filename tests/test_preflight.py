"""kabigate preflight on fake RHEL-layout systems (tests/support/weakroot.py) against the real Debian kernel
packages, and the APT hook that runs it before dpkg installs a kernel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import weakroot

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


def _hook(stdin: str, env: dict, strict: bool = False) -> subprocess.CompletedProcess:
    """The APT hook as APT runs it (DPkg::Pre-Install-Pkgs: the run's .deb files on stdin)."""
    env = {**env, "KABIGATE_PREFLIGHT_STRICT": "1" if strict else "0"}
    return subprocess.run([str(HOOK)], input=stdin, capture_output=True, text=True, env=env, check=False)


def _kabigate_in(system: Path, folder: Path) -> dict:
    """The environment of a hook whose kabigate (this checkout's) judges `system`."""
    wrapper = folder / "kabigate"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m kabigate \"$@\" --root {system}\n")
    wrapper.chmod(0o755)
    return {**os.environ, "KABIGATE": str(wrapper)}


def test_apt_hook_warns_before_dpkg(system, testdata, tmp_path):
    """DPkg::Pre-Install-Pkgs gives the run's .deb files on stdin; the hook judges the kernel when
    image and headers are both there, warns, and lets APT go on (unless strict)."""
    image, headers = _debs(testdata, NEW)
    env = _kabigate_in(system, tmp_path)
    stdin = "\n".join([str(image), str(headers), str(testdata.root / "debs" / "acpi-call-dkms_1.2.2-2.1_all.deb")])
    result = _hook(stdin + "\n", env)
    assert result.returncode == 0, result.stderr
    assert f"installed modules will not load on {NEW}" in result.stderr
    assert "module-layout-mismatch" in result.stderr
    assert _hook(stdin + "\n", env, strict=True).returncode == 1
    # Without its headers the kernel cannot be judged: a warning, and in strict mode a stop.
    alone = _hook(f"{image}\n", env)
    assert alone.returncode == 0 and "is not in this run" in alone.stderr and "WARNING: cannot judge" in alone.stderr
    alone = _hook(f"{image}\n", env, strict=True)
    assert alone.returncode == 1 and "is not in this run" in alone.stderr
    assert "KABIGATE_PREFLIGHT_STRICT=1: stopping before dpkg" in alone.stderr


def test_apt_hook_judges_debian_12s_own_kernels(tmp_path, testdata):
    """6.12.107+deb12-amd64: the '+' of Debian 12's 6.12 releases is a pattern operator; the hook
    finds the kernel's headers all the same, and strict stops on 6.1's modules (a 6.12 kernel
    refuses every one: module-struct-size)."""
    base = tmp_path / "root"
    weakroot.add_kernel(base, testdata, OLD)
    weakroot.add_driver(base, testdata, "acpi-call", OLD)
    krel = "6.12.107+deb12-amd64"
    debs = [testdata.root / deb for deb in testdata.manifest["stream_kernels"][krel]["debs"]]
    result = _hook("".join(f"{deb}\n" for deb in debs), _kabigate_in(base, tmp_path), strict=True)
    assert result.returncode == 1, result.stderr
    assert f"1 installed modules will not load on {krel}" in result.stderr
    assert "acpi_call" in result.stderr and "module-struct-size" in result.stderr
    assert "cannot judge" not in result.stderr


def test_apt_hook_takes_a_path_with_spaces_whole(system, testdata, tmp_path):
    """A local .deb's folder may hold spaces (and commas, which kabigate's command line joins
    packages with): each of APT's lines is one file."""
    folder = tmp_path / "local debs, with spaces"
    folder.mkdir()
    for deb in _debs(testdata, NEW):
        (folder / deb.name).symlink_to(deb)
    stdin = "".join(f"{folder / deb.name}\n" for deb in _debs(testdata, NEW))
    result = _hook(stdin, _kabigate_in(system, tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"installed modules will not load on {NEW}" in result.stderr and "cannot judge" not in result.stderr


def _shims(folder: Path) -> dict[str, Path]:
    """kabigate commands that cannot judge: one failing with exit 2, one killed by a signal."""
    shims = {"fails": "echo 'kabigate: error: something went wrong' >&2; exit 2", "crashes": "kill -SEGV $$"}
    for name, body in shims.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return {name: folder / name for name in shims}


def test_apt_hook_when_kabigate_cannot_judge(testdata, tmp_path):
    """kabigate missing, failing (exit 2) or crashing: a warning and APT goes on; strict stops it.
    A run without a kernel does not need kabigate at all."""
    stdin = "".join(f"{deb}\n" for deb in _debs(testdata, NEW))
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    assert shutil.which("kabigate", path=path) is None
    missing = {**{k: v for k, v in os.environ.items() if k != "KABIGATE"}, "PATH": path}
    result = _hook(stdin, missing)
    assert result.returncode == 0 and "WARNING: cannot judge" in result.stderr
    assert "'kabigate' is not installed" in result.stderr
    result = _hook(stdin, missing, strict=True)
    assert result.returncode == 1 and "'kabigate' is not installed" in result.stderr
    assert "stopping before dpkg" in result.stderr
    for strict in (False, True):
        no_kernel = _hook(str(testdata.root / "debs" / "acpi-call-dkms_1.2.2-2.1_all.deb") + "\n", missing, strict)
        assert no_kernel.returncode == 0 and no_kernel.stderr == ""
    for shim in _shims(tmp_path).values():
        env = {**os.environ, "KABIGATE": str(shim)}
        result = _hook(stdin, env)
        assert result.returncode == 0 and "WARNING: cannot judge" in result.stderr, result.stderr
        result = _hook(stdin, env, strict=True)
        assert result.returncode == 1 and "kabigate preflight failed (exit status" in result.stderr, result.stderr


@pytest.fixture
def dnf_install(tmp_path, testdata):
    """Real dnf installing a real kernel-core RPM (6.1.0-47, tests/support/packaging.py) into a system whose
    kmods were built for 6.1.0-56, with contrib/dnf's plugin: install(strict, command) -> (dnf's
    result, the root). The repository and roots are in folders with spaces and commas."""
    from support import packaging as rpm_fixtures

    if shutil.which("dnf") is None or not rpm_fixtures.available():
        pytest.skip("dnf, rpmbuild or createrepo_c missing (scripts/bootstrap installs them)")
    # The packages test_packages.py builds (cached once for all).
    rpms = rpm_fixtures.build_packages(testdata, OLD, {"acpi-call": OLD, "jool": OLD, "v4l2loopback": NEW})
    repo = tmp_path / "dnf repo, local"
    repo.mkdir()
    shutil.copy(next((rpms / "kernel").glob("kernel-core-*.rpm")), repo)
    subprocess.run(["createrepo_c", "-q", str(repo)], check=True)
    plugins, conf = tmp_path / "plugins", tmp_path / "conf"
    plugins.mkdir()
    conf.mkdir()
    shutil.copy(REPO / "contrib" / "dnf" / "kabigate_preflight.py", plugins)
    settings = (REPO / "contrib" / "dnf" / "kabigate_preflight.conf").read_text()
    runs = iter(range(100))

    def install(strict: bool, command: str) -> tuple[subprocess.CompletedProcess, Path]:
        system = tmp_path / f"root {next(runs)}, {strict}"
        weakroot.add_kernel(system, testdata, NEW)
        for driver in ("acpi-call", "v4l2loopback"):
            weakroot.add_driver(system, testdata, driver, NEW)
        (conf / "kabigate_preflight.conf").write_text(
            settings.replace("strict = 0", f"strict = {int(strict)}")
            .replace("command = kabigate", f"command = {command}"))
        result = subprocess.run(
            ["dnf", "-y", f"--installroot={system}", "--releasever=9", "--setopt=reposdir=/dev/null",
             f"--repofrompath=local,{repo.as_uri()}", "--repo=local", "--nogpgcheck",
             f"--setopt=pluginpath={plugins}", f"--setopt=pluginconfpath={conf}", "install", "kernel-core"],
            capture_output=True, text=True, check=False, timeout=300)
        return result, system

    return install


def test_dnf_plugin_warns_before_the_transaction(dnf_install, tmp_path):
    """contrib/dnf's plugin runs preflight on the downloaded package before the transaction, warns,
    and with strict = 1 stops dnf before anything is installed."""
    shim = tmp_path / "kabigate"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m kabigate \"$@\"\n")
    shim.chmod(0o755)
    result, system = dnf_install(strict=False, command=str(shim))
    assert result.returncode == 0, result.stdout + result.stderr
    warning = result.stdout.index("installed modules will not load on kernel-core-")
    assert "module-layout-mismatch" in result.stdout[:warning]
    assert warning < result.stdout.index("Running transaction\n")  # before anything is installed
    assert (system / "lib" / "modules" / OLD / "symvers.gz").is_file()

    result, system = dnf_install(strict=True, command=str(shim))
    assert result.returncode == 1 and "kabigate preflight: installed modules will not load" in result.stderr
    assert not (system / "lib" / "modules" / OLD).exists()


def test_dnf_plugin_when_kabigate_cannot_judge(dnf_install, tmp_path):
    """kabigate not installed: a warning and the kernel is installed; strict stops the transaction,
    as it does when kabigate fails (exit 2)."""
    missing = str(tmp_path / "no such folder" / "kabigate")
    result, system = dnf_install(strict=False, command=missing)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kabigate: WARNING: could not judge kernel-core-" in result.stdout and "No such file" in result.stdout
    assert (system / "lib" / "modules" / OLD / "symvers.gz").is_file()
    result, system = dnf_install(strict=True, command=missing)
    assert result.returncode == 1 and "kabigate preflight: could not judge kernel-core-" in result.stderr
    assert not (system / "lib" / "modules" / OLD).exists()
    result, system = dnf_install(strict=True, command=str(_shims(tmp_path)["fails"]))
    assert result.returncode == 1 and "something went wrong (strict = 1: stopping)" in result.stderr
    assert not (system / "lib" / "modules" / OLD).exists()
