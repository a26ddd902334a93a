"""A SUSE kernel module package (KMP) built with rpmbuild in SUSE's layout: named
<name>-kmp-<flavor>, modules in /lib/modules/<kver>/updates/, and Requires in SUSE's
`ksym(<flavor>:<symbol>) = <crc>` form (hex without 0x, as SUSE's find-requires.ksyms writes
them), from a real acpi-call build. precheck reads those Requires as the loader's CRC check, and a
repository's KMP is found by them (it is not a kmod-*)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import packaging as rpm_fixtures

from kabigate.formats.module import read_module
from kabigate.inputs.kernels import load_kernel
from kabigate.rules import check_modules

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]
BUILT_FOR, NEWER = "6.1.0-47-amd64", "6.1.0-56-amd64"


@pytest.fixture(scope="module")
def kmp(testdata, tmp_path_factory):
    if not rpm_fixtures.available():
        pytest.skip("rpmbuild/createrepo_c missing (scripts/bootstrap installs them)")
    out = tmp_path_factory.mktemp("kmp")
    module_path = testdata.driver_dir("acpi-call", BUILT_FOR) / "acpi_call.ko"
    root = out / "stage"
    updates = root / "lib" / "modules" / BUILT_FOR / "updates"
    updates.mkdir(parents=True)
    (updates / "acpi_call.ko").write_bytes(module_path.read_bytes())
    module = read_module(str(module_path))
    requires = [f"ksym(default:{v.name}) = {v.crc:08x}" for v in module.versions if v.name != "module_layout"]
    (out / "repo").mkdir()
    rpm = rpm_fixtures._rpmbuild(out / "repo", "acpi-call-kmp-default", "1.2.2_k6.1.0_47", "150600.1", root,
                                 provides=["acpi-call-kmp = 1.2.2", "multiversion(kernel)"],
                                 requires=[*requires, "kernel-default"],
                                 payload="w6.xzdio")
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(out / "repo")], check=True)
    return rpm, out / "repo", module


def precheck(testdata, release: str, target) -> tuple[int, dict]:
    result = subprocess.run([*KABIGATE, "precheck", "--json", "-k", str(testdata.kernel_root(release)), str(target)],
                            capture_output=True, text=True, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_ksym_flavor_requires_are_the_crc_check(testdata, kmp):
    rpm, _repo, module = kmp
    status, report = precheck(testdata, BUILT_FOR, rpm)
    (package,) = report["packages"]
    assert status == 0 and package["kabi_requires"] == len(module.versions) - 1
    status, report = precheck(testdata, NEWER, rpm)
    (package,) = report["packages"]
    assert status == 1
    # The CRCs the KMP requires that 6.1.0-56 changed are the loader's crc-mismatches.
    verdict = check_modules([module], load_kernel([str(testdata.kernel_root(NEWER))]))[0]
    assert {(f["code"], f["symbol"]) for f in package["findings"]} == \
        {(r.code, r.symbol) for r in verdict.reasons if r.code in ("crc-mismatch", "missing-symbol")}


def test_a_repository_kmp_is_found_by_its_ksym_requires(testdata, kmp):
    _rpm, repo, _module = kmp
    status, report = precheck(testdata, NEWER, repo)
    assert status == 1 and [p["package"].split("-1.2.2")[0] for p in report["packages"]] == ["acpi-call-kmp-default"]
    checked = subprocess.run([*KABIGATE, "check", "--json", "-k", str(testdata.kernel_root(BUILT_FOR)), str(repo)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    (verdict,) = json.loads(checked.stdout)["modules"]
    assert verdict["name"] == "acpi_call" and verdict["verdict"] == "loads"
