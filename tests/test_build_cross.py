"""`kabigate build` for kernels of other architectures: Debian's arm64, s390x and ppc64el headers
.debs with their -common and the amd64 linux-kbuild-6.1 (the host tools) are a build tree; the
architecture comes from the tree's .config, dkms builds with ARCH and CROSS_COMPILE and strips with
the target's strip. The module is the target's and loads on the real kernel's files."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from test_build import deb, elrepo_srpm, kabigate_build

from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import read_modules
from kabigate.rules import check_modules

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not (shutil.which("bwrap") and shutil.which("dkms")), reason="needs dkms, bubblewrap"),
              pytest.mark.skipif(platform.machine() != "x86_64", reason="the host tools are amd64's linux-kbuild")]

# flavour -> (`uname -m`, the cross compiler)
FLAVOURS = {"arm64": ("aarch64", "aarch64-linux-gnu-gcc"), "s390x": ("s390x", "s390x-linux-gnu-gcc"),
            "powerpc64le": ("ppc64le", "powerpc64le-linux-gnu-gcc")}


def tree_debs(testdata, release: str) -> list[Path]:
    debs = testdata.root / "debs"
    abi = release.rsplit("-", 1)[0]
    found = [*debs.glob(f"linux-headers-{release}_*.deb"), *debs.glob(f"linux-headers-{abi}-common_*.deb"),
             *debs.glob("linux-kbuild-6.1_*.deb")]
    if len(found) != 3:
        pytest.skip(f"the headers, -common and linux-kbuild-6.1 .debs of {release} are not in {debs}")
    return found


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_vpoll_cross_builds_for_each_architecture(testdata, flavour, tmp_path):
    machine, compiler = FLAVOURS[flavour]
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler} (scripts/bootstrap installs it)")
    release = f"6.1.0-47-{flavour}"
    args = [a for path in tree_debs(testdata, release) for a in ("-k", path)]
    run = kabigate_build(*args, deb(testdata, "vpoll"), "--keep", tmp_path / "built", "--db", tmp_path / "store.db")
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert (result["outcome"], result["kernel_release"], result["modules"]) == ("built", release, ["vpoll.ko"])
    assert (result["stored"]["build"]["arch"], result["stored"]["build"]["built_for"]) == (machine, release)
    tmp_path = tmp_path / "built"
    (module,) = read_modules([str(tmp_path / "vpoll.ko")])
    assert b".debug_info" not in (tmp_path / "vpoll.ko").read_bytes()  # dkms's strip -g, the target's strip
    kernel = load_kernel([str(testdata.root / testdata.manifest["foreign_kernels"][release]["root"])])
    assert (module.machine, module.vermagic) == (machine, kernel.vermagic)  # with MODULE_ARCH_VERMAGIC
    (verdict,) = check_modules([module], kernel)
    assert verdict.loads, verdict.reasons


@pytest.mark.parametrize("driver, release, outcome", [
    ("tp-smapi", "6.1.0-47-arm64", "failed"),  # x86's asm/mc146818rtc.h
    ("tp-smapi", "6.1.0-47-powerpc64le", "failed"),  # x86's registers in its asm
    ("acpi-call", "6.1.0-47-s390x", "excluded"),  # BUILD_EXCLUSIVE_CONFIG="CONFIG_ACPI"
])
def test_a_package_that_does_not_build_for_an_architecture_says_why_as_the_corpus_recorded(
        testdata, driver, release, outcome):
    recorded = testdata.manifest.get("foreign_driver_failures", {}).get(driver, {}).get(release)
    if recorded is None:
        pytest.skip(f"no recorded failure of {driver} for {release} (scripts/fetch-testdata --corpus full)")
    args = [a for path in tree_debs(testdata, release) for a in ("-k", path)]
    run = kabigate_build(*args, deb(testdata, driver))
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert (result["outcome"], result["modules"]) == (outcome, [])
    assert recorded["error"] in (result["error"], f"dkms excludes {release}: {result['error']}")


def test_a_kbuild_folder_cross_builds(testdata, tmp_path):
    """make -C KDIR M= (no dkms): vpoll's source alone, for big-endian s390x."""
    subprocess.run(["dpkg-deb", "-x", deb(testdata, "vpoll"), tmp_path / "deb"], check=True)
    (source,) = (tmp_path / "deb/usr/src").iterdir()
    (source / "dkms.conf").unlink()
    args = [a for path in tree_debs(testdata, "6.1.0-47-s390x") for a in ("-k", path)]
    run = kabigate_build(*args, source, "--keep", tmp_path / "built")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (json.loads(run.stdout)["method"], json.loads(run.stdout)["modules"]) == ("kbuild", ["vpoll.ko"])
    (module,) = read_modules([str(tmp_path / "built" / "vpoll.ko")])
    assert module.machine == "s390x" and (tmp_path / "built" / "vpoll.ko").read_bytes()[5] == 2  # ELFDATA2MSB


def headers_folder(folder: Path, config: str) -> Path:
    """The least a headers folder is (a Makefile, utsrelease.h) with a .config of another architecture."""
    (folder / "include/generated").mkdir(parents=True)
    (folder / "include/generated/utsrelease.h").write_text('#define UTS_RELEASE "6.1.0-47-other"\n')
    (folder / "Makefile").write_text("all:\n")
    (folder / ".config").write_text(config)
    return folder


def test_an_architecture_without_a_known_cross_compiler_is_a_one_line_error(testdata, tmp_path):
    tree = headers_folder(tmp_path / "riscv", "CONFIG_RISCV=y\nCONFIG_64BIT=y\n")
    run = kabigate_build("-k", tree, deb(testdata, "vpoll"))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        "kabigate: error: 6.1.0-47-other: cannot build for riscv64 kernels here (cross compilers known for "
        "aarch64, ppc64, ppc64le, s390x, x86_64)"], run.stderr


def test_a_missing_cross_compiler_is_a_one_line_error(testdata, tmp_path):
    """Big-endian ppc64 (CONFIG_PPC64 without CONFIG_CPU_LITTLE_ENDIAN): Debian's powerpc64-linux-gnu-gcc."""
    if shutil.which("powerpc64-linux-gnu-gcc"):
        pytest.skip("powerpc64-linux-gnu-gcc is installed here")
    tree = headers_folder(tmp_path / "ppc64", "CONFIG_PPC64=y\nCONFIG_CPU_BIG_ENDIAN=y\n")
    run = kabigate_build("-k", tree, deb(testdata, "vpoll"))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        "kabigate: error: this build needs powerpc64-linux-gnu-gcc: apt-get install gcc-powerpc64-linux-gnu"]


def test_a_source_rpm_is_not_cross_built(testdata, tmp_path):
    """rpmbuild --rebuild builds for the host's architecture (its RPMS/x86_64): kabigate says so."""
    args = [a for path in tree_debs(testdata, "6.1.0-47-arm64") for a in ("-k", path)]
    run = kabigate_build(*args, elrepo_srpm(testdata, "vpoll", "0.1", tmp_path))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        "kabigate: error: 6.1.0-47-arm64 (aarch64): a source RPM is rebuilt for this host's architecture (x86_64) "
        "only"]
