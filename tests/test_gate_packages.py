"""Packages, not builds, on the real corpus: each driver package's state on each kernel (from its
stored builds of the kernel's series and its recorded build failures) and the gate on packages:
dahdi's partial load, the 6.1.0-53/-54 kernels on which no package works, the 6.12 stream without
its 6.1 builds, a rebuild that fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from kabigate.errors import InputError
from kabigate.formats.gatepolicy import parse_policy
from kabigate.inputs.kernels import load_kernel
from kabigate.services.gate import previous_in_stream, resolve_kernel, run_gate
from kabigate.services.ingest import ingest_driver_build, ingest_kernel, read_driver_builds, record_build_failure
from kabigate.services.matrix import package_matrix
from kabigate.services.packages import packages_on, why_not
from kabigate.store import Store

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]
STREAMS = {"debian-6.1": ("6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-53-amd64", "6.1.0-54-amd64"),
           "debian-6.12": ("6.12.107+deb12-amd64", "6.12.111+deb12-amd64")}


@pytest.fixture(scope="module")
def db(testdata, tmp_path_factory):
    """The stream kernels above (from their .debs), every driver build of the corpus and its build failures."""
    streams = testdata.manifest.get("stream_kernels", {})
    if not all(release in streams for releases in STREAMS.values() for release in releases):
        pytest.skip("the corpus has no stream kernels (scripts/fetch-testdata fetches them)")
    path = str(tmp_path_factory.mktemp("packages") / "store.db")
    with Store.open(path) as store:
        for stream, releases in STREAMS.items():
            for release in releases:
                debs = [str(testdata.root / deb) for deb in streams[release]["debs"]]
                ingest_kernel(store, load_kernel(debs), stream)
        for driver, builds in testdata.manifest["drivers"].items():
            for entry in builds.values():
                for build in read_driver_builds([str(testdata.root / entry["dir"])], driver, entry["version"]):
                    ingest_driver_build(store, build)
        for driver, failures in testdata.manifest["driver_failures"].items():
            for release, failure in failures.items():
                record_build_failure(store, driver, failure["version"], release, failure["error"])
    return path


def _gate(db, release, **options):
    with Store.open(db) as store:
        candidate = resolve_kernel(store, release)
        baseline, stream = previous_in_stream(store, candidate, None)
        return run_gate(store, candidate, baseline, stream=stream, **options)


def test_dahdi_loads_31_of_32_and_a_kernel_that_stops_them_breaks_the_package(db):
    """dahdi's oslec echo canceller needs a staging module Debian does not build: its build loads
    31 of 32 modules on the kernel it was built for. 50 loads none of them: a build-level gate calls
    it "still failing", the package gate a package the candidate broke."""
    with Store.open(db) as store:
        (dahdi,) = packages_on(store, resolve_kernel(store, "6.1.0-47-amd64"), "dahdi")
    assert dahdi.state == "partial" and (dahdi.best.cell.modules, dahdi.modules_loading) == (32, 31)
    assert dahdi.failing_modules == ("dahdi_echocan_oslec",)
    assert "31 of 32 modules" in why_not(dahdi) and "missing-symbol oslec_create" in why_not(dahdi)
    result = _gate(db, "6.1.0-50-amd64")
    packages = {f.driver: f for f in result.packages}
    assert {f.klass for f in result.builds if f.build.driver == "dahdi"} == {"still_failing"}
    assert packages["dahdi"].before.state == "partial" and packages["dahdi"].after.state == "broken"
    assert packages["dahdi"].category == "package_not_rebuilt" and packages["dahdi"].outcome == "NEEDS_INSPECTION"
    # 47 -> 50 changed module_layout: said as such, and every build for 47 fails on it for that reason
    assert result.module_layout_changed and any(n.startswith("module_layout changed") for n in result.notes)
    # the builds made for 50 load there: those packages work, by a build made for this kernel
    assert {d for d, f in packages.items() if f.after.works} == {"acpi-call", "adv-17v35x", "dpdk-kmods", "nat-rtsp"}
    assert {f.after.state for f in packages.values() if f.after.works} == {"loads-after-rebuild"}


def test_a_kernel_on_which_no_package_works_does_not_pass(db):
    """6.1.0-54 against -53: no stored build loads on either (builds for 50 trip over moved CRCs,
    those for 47 and 56 over module_layout), so no build regresses; the gate used to say INFO."""
    status = subprocess.run([*KABIGATE, "gate", "--db", db, "--candidate", "6.1.0-54-amd64", "--json", "--no-explain"],
                            capture_output=True, text=True, check=False)
    report = json.loads(status.stdout)
    assert report["counts"]["regression"] == 0 and status.returncode == 1
    assert report["outcome"] == "NEEDS_INSPECTION"
    assert not any(p["state"] in ("loads", "loads-after-rebuild") for p in report["packages"])
    note = next(n for n in report["notes"] if n.startswith("none of the"))
    assert all(p["driver"] in note for p in report["packages"] if p["gating"])
    # a stricter policy fails it; a policy that does not require working packages lets it through
    strict = parse_policy(b'[coverage]\nno_working_packages = "FAILED"\n', "policy.toml")
    assert _gate(db, "6.1.0-54-amd64", policy=strict).outcome == "FAILED"
    lax = parse_policy(b"[coverage]\nrequire_working_packages = false\n", "policy.toml")
    assert _gate(db, "6.1.0-54-amd64", policy=lax).outcome == "INFO"
    # `gate --driver 'v*'` on 53: v4l2loopback and vpoll load on neither 50 nor 53
    subset = _gate(db, "6.1.0-53-amd64", driver="v*")
    assert not subset.passed and {f.driver for f in subset.packages} == {"v4l2loopback", "vpoll"}


def test_53_breaks_the_packages_built_for_50_and_names_why(db):
    result = _gate(db, "6.1.0-53-amd64")
    broken = {f.driver: f for f in result.broken_packages}
    assert broken.keys() == {"acpi-call", "adv-17v35x", "dpdk-kmods", "nat-rtsp"}
    assert not result.module_layout_changed  # 50 -> 53 kept module_layout, moved CRCs
    dpdk = broken["dpdk-kmods"]
    assert dpdk.before.state == "loads-after-rebuild" and dpdk.after.state == "broken"
    # the reason comes from the build that loaded on 50 (CRCs), not from one refused for its module_layout
    assert dpdk.after.best.build.built_for == "6.1.0-50-amd64" and "__pci_register_driver" in dpdk.symbols
    assert "crc-mismatch" in why_not(dpdk.after)


def test_the_612_stream_shows_only_its_own_builds(db, testdata):
    with Store.open(db) as store:
        matrix = package_matrix(store, "debian-6.12")
    built_for_612 = {d for d, builds in testdata.manifest["drivers"].items() if "6.12.107+deb12-amd64" in builds}
    failed_612 = {d for d, f in testdata.manifest["driver_failures"].items() if "6.12.107+deb12-amd64" in f}
    # dahdi, jool, xtables-addons: only 6.1 builds, no 6.12 outcome: not in the 6.12 view
    assert set(matrix.drivers) == built_for_612 | failed_612 and "dahdi" not in matrix.drivers
    assert all(b.build.built_for.startswith("6.12.") for v in matrix.verdicts.values() for b in v.builds)
    first = matrix.kernels[0]
    assert set(matrix.working(first)) == built_for_612
    for driver in failed_612:
        verdict = matrix.verdict(driver, first)
        assert verdict.state == "rebuild-fails"
        assert verdict.failure.error == testdata.manifest["driver_failures"][driver][first.release]["error"]


def test_a_rebuild_that_fails_breaks_the_package_and_fails_the_gate(db, tmp_path):
    """6.12.111 changed module_layout: the 6.12.107 builds are refused. With the rebuild of
    acpi-call for 111 recorded as failed, the package is broken (FAILED), named with its error."""
    copy = tmp_path / "store.db"
    shutil.copyfile(db, copy)
    error = "acpi_call.c:12:1: error: unknown type name 'proc_ops'"
    with Store.open(str(copy)) as store:
        record_build_failure(store, "acpi-call", "1.2.2-2.1", "6.12.111+deb12-amd64", error)
    result = _gate(str(copy), "6.12.111+deb12-amd64")
    broken = {f.driver: f for f in result.broken_packages}
    assert broken["acpi-call"].category == "package_broken" and broken["acpi-call"].outcome == "FAILED"
    assert broken["acpi-call"].after.state == "rebuild-fails" and error in why_not(broken["acpi-call"].after)
    assert broken["bbswitch"].category == "package_not_rebuilt"
    assert result.outcome == "FAILED" and result.module_layout_changed


@pytest.mark.parametrize("text, message", [
    (b"[coverage]\nrequire_working_packages = 1\n", "coverage.require_working_packages must be true or false"),
    (b'[coverage]\nno_working_packages = "BAD"\n', "an outcome is one of"),
    (b'[outcomes]\npackage_broken = "NOPE"\n', "an outcome is one of"),
    (b"[packages]\nrequire = true\n", "unknown key packages"),
    (b'[drivers]\nrebuild = "yes"\n', "drivers.rebuild must be true or false"),
    (b'[signing]\nkey = "repo.key"\n', "signing.key and signing.cert go together"),
    (b'[signing]\nkey = ""\ncert = "repo.crt"\n', "signing.key must be a file's path"),
    (b"[signing]\nhash = 256\n", "signing.hash must be a hash algorithm's name"),
])
def test_package_policy_keys_are_parsed_strictly(text, message):
    with pytest.raises(InputError, match=message):
        parse_policy(text, "policy.toml")
