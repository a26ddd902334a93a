"""The gate rebuilds, on the real corpus: acpi-call built for 6.1.0-50 by `kabigate build` (its
source remembered) no longer loads on -56 (CRCs moved); `gate --rebuild` builds it again from its
-dkms .deb against -56's headers .debs (with the -common and linux-kbuild they Depend on, found
beside them), signed with the repository's key, and the package works: loads-after-rebuild. On -55,
whose -common .deb the corpus lacks, it stays not rebuilt, saying why. The gate of 6.1.0-53 on
the four packages built for -50 rebuilds those that regress, and passes. The gate of 6.12.111 with
the builds for 6.12.107 rebuilds them, names the package that never built for 6.12, and fails against
6.1.0-50, where it loaded. One real dkms build each (~5 s)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from kabigate.inputs.kernels import load_kernel
from kabigate.services.ingest import ingest_kernel
from kabigate.store import Store

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not (shutil.which("bwrap") and shutil.which("dkms")), reason="needs dkms, bubblewrap")]
KABIGATE = [sys.executable, "-m", "kabigate"]
RELEASES = ("6.1.0-50-amd64", "6.1.0-53-amd64", "6.1.0-55-amd64", "6.1.0-56-amd64")
GATE_DRIVERS = ("acpi-call", "adv-17v35x", "dpdk-kmods", "nat-rtsp")  # built for -50 in the corpus too
BASELINE_612, CANDIDATE_612 = "6.12.107+deb12-amd64", "6.12.111+deb12-amd64"
SERIES_TREE_DEBS = ("linux-headers-6.12.111+deb12-common", "linux-kbuild-6.12.111+deb12")  # beside .111's headers


def kabigate(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KABIGATE_DB"}
    return subprocess.run([*KABIGATE, *map(str, args)], capture_output=True, text=True, check=False, env=env)


@pytest.fixture(scope="module")
def store_with_a_built_package(testdata, tmp_path_factory):
    """-50, -53, -55 and -56 from their linux-image and linux-headers .debs; acpi-call built for -50 from its
    -dkms .deb."""
    streams = testdata.manifest.get("stream_kernels", {})
    if not all(release in streams for release in RELEASES):
        pytest.skip("the corpus has no stream kernels (scripts/fetch-testdata fetches them)")
    top = tmp_path_factory.mktemp("rebuild")
    db = top / "store.db"
    with Store.open(str(db)) as store:
        for release in RELEASES:
            ingest_kernel(store, load_kernel([str(testdata.root / deb) for deb in streams[release]["debs"]]),
                          "debian-6.1")
    (source,) = (testdata.root / "debs").glob("acpi-call-dkms_*.deb")
    tree = testdata.root / testdata.manifest["build_kernels"]["6.1.0-50-amd64"]["root"]
    built = kabigate("build", "--json", "-k", tree, source, "--db", db)
    assert built.returncode == 0, built.stderr
    key = top / "repo"
    subprocess.run([*KABIGATE, "keygen", "--out", key, "--subject", "CN=Example kmods", "--bits", "2048"], check=True,
                   capture_output=True)
    return db, source, key


def test_the_gate_rebuilds_a_package_that_no_longer_loads_and_it_works(store_with_a_built_package, tmp_path):
    db, source, key = store_with_a_built_package
    copy = tmp_path / "store.db"
    shutil.copyfile(db, copy)
    # without --rebuild: broken on -56, not rebuilt
    run = kabigate("gate", "--db", copy, "--candidate", "6.1.0-56-amd64", "--baseline", "6.1.0-50-amd64", "--json",
                   "--no-explain")
    report = json.loads(run.stdout)
    (package,) = report["packages"]
    assert (package["state"], package["category"], report["rebuilds"]) == ("broken", "package_not_rebuilt", [])
    assert run.returncode == 1
    run = kabigate("gate", "--db", copy, "--candidate", "6.1.0-56-amd64", "--baseline", "6.1.0-50-amd64", "--json",
                   "--no-explain", "--rebuild", "--sign-key", f"{key}.key", "--sign-cert", f"{key}.crt")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    (rebuild,) = report["rebuilds"]
    assert (rebuild["driver"], rebuild["source"], rebuild["outcome"], rebuild["signer"]) == \
        ("acpi-call", str(source), "built", "Example kmods")
    (package,) = report["packages"]
    assert (package["state"], package["category"], package["build"]["built_for"]) == \
        ("loads-after-rebuild", None, "6.1.0-56-amd64")
    # the build for -50 still regresses (its class stays), but its package's rebuild replaces it: INFO, a pass
    assert report["counts"]["regression"] == 1 and report["outcome"] == "INFO"
    assert any(n.startswith("1 regressed builds are replaced by rebuilds") for n in report["notes"])
    with Store.open(str(copy)) as store:
        (rebuilt,) = [b for b in store.driver_builds("acpi-call") if b.built_for == "6.1.0-56-amd64"]
        assert rebuilt.built_from == str(source)
        assert [m.signature.signer for m in store.load_build(rebuilt.id)] == ["Example kmods"]
    # once rebuilt, a gate rebuilds nothing again
    run = kabigate("gate", "--db", copy, "--candidate", "6.1.0-56-amd64", "--baseline", "6.1.0-50-amd64", "--json",
                   "--no-explain", "--rebuild")
    assert run.returncode == 0 and json.loads(run.stdout)["rebuilds"] == []


def test_a_kernel_whose_headers_are_incomplete_leaves_the_package_not_rebuilt_saying_why(store_with_a_built_package,
                                                                                         tmp_path):
    db, _, _ = store_with_a_built_package
    copy = tmp_path / "store.db"
    shutil.copyfile(db, copy)
    policy = tmp_path / "policy.toml"
    policy.write_text("[drivers]\nrebuild = true\n")
    run = kabigate("gate", "--db", copy, "--candidate", "6.1.0-55-amd64", "--baseline", "6.1.0-50-amd64",
                   "--policy", policy, "--json", "--no-explain")
    report = json.loads(run.stdout)
    (rebuild,) = report["rebuilds"]
    assert rebuild["outcome"] is None and "linux-headers-6.1.0-55-common (= 6.1.192-1)" in rebuild["reason"], rebuild
    assert any(n.startswith("acpi-call not rebuilt: ") for n in report["notes"])
    (package,) = report["packages"]
    assert (package["state"], package["category"]) == ("broken", "package_not_rebuilt")
    assert run.returncode == 1


def test_a_rebuild_that_fails_breaks_the_package_with_the_compilers_error(store_with_a_built_package, testdata,
                                                                          tmp_path):
    """A Kbuild folder built for -50, then broken at its source: -56 refuses the -50 build (module_layout
    moved), the gate's rebuild fails with the compiler's error, kept with its log: package_broken, FAILED."""
    db, _, _ = store_with_a_built_package
    copy = tmp_path / "store.db"
    shutil.copyfile(db, copy)
    source = tmp_path / "hello"
    source.mkdir()
    (source / "Kbuild").write_text("obj-m := hello.o\n")
    (source / "hello.c").write_text('#include <linux/module.h>\nMODULE_LICENSE("GPL");\n')
    tree = testdata.root / testdata.manifest["build_kernels"]["6.1.0-50-amd64"]["root"]
    built = kabigate("build", "--json", "-k", tree, source, "--db", copy, "--package-version", "1.0")
    assert built.returncode == 0, built.stderr
    (source / "hello.c").write_text('#include <linux/module.h>\nMODULE_LICENSE("GPL");\n'
                                    'int broken(void) { return x; }\n')
    run = kabigate("gate", "--db", copy, "--candidate", "6.1.0-56-amd64", "--baseline", "6.1.0-50-amd64", "--json",
                   "--no-explain", "--rebuild", "--driver", "hello", "--markdown", tmp_path / "gate.md")
    report = json.loads(run.stdout)
    (rebuild,) = report["rebuilds"]
    assert rebuild["outcome"] == "failed" and "hello.c:3:" in rebuild["reason"] and "error:" in rebuild["reason"]
    (package,) = report["packages"]
    assert (package["state"], package["category"], package["outcome"]) == \
        ("rebuild-fails", "package_broken", "FAILED")
    assert package["build_failure"] == {"version": "1.0", "error": rebuild["reason"]}
    assert report["outcome"] == "FAILED" and run.returncode == 1
    assert "| hello | failed | " in (tmp_path / "gate.md").read_text()
    log = kabigate("build-log", "--db", copy, "hello", "1.0", "6.1.0-56-amd64")
    assert log.returncode == 0 and "undeclared (first use in this function)" in log.stdout
    assert "Error 2" in log.stdout  # the log, beyond the first error line


def test_the_gate_of_53_rebuilds_the_packages_that_regress_from_50_and_passes(store_with_a_built_package, testdata,
                                                                             tmp_path):
    """The issue's case on the real corpus: the gate drivers built for 6.1.0-50 from their -dkms .debs;
    on 6.1.0-53 those whose CRCs moved no longer load, are rebuilt from their sources against -53's
    headers (its linux-headers, -common and linux-kbuild .debs), load, and the gate passes."""
    db, _, _ = store_with_a_built_package
    copy = tmp_path / "store.db"
    shutil.copyfile(db, copy)
    tree = testdata.root / testdata.manifest["build_kernels"]["6.1.0-50-amd64"]["root"]
    for driver in GATE_DRIVERS[1:]:
        (source,) = (testdata.root / "debs").glob(f"{driver}-dkms_*.deb")
        built = kabigate("build", "--json", "-k", tree, source, "--db", copy)
        assert built.returncode == 0 and json.loads(built.stdout)["outcome"] == "built", built.stdout + built.stderr
    run = kabigate("gate", "--db", copy, "--candidate", "6.1.0-53-amd64", "--baseline", "6.1.0-50-amd64", "--json",
                   "--no-explain", "--rebuild")
    report = json.loads(run.stdout)
    states = {p["driver"]: p["state"] for p in report["packages"]}
    rebuilt = {r["driver"]: r["outcome"] for r in report["rebuilds"]}
    assert set(states) == set(GATE_DRIVERS), states
    assert rebuilt and set(rebuilt.values()) == {"built"}, report["rebuilds"]
    assert all(states[d] == "loads-after-rebuild" for d in rebuilt), states
    assert all(states[d] == "loads" for d in set(GATE_DRIVERS) - set(rebuilt)), states
    assert run.returncode == 0 and report["outcome"] in ("PASSED", "INFO"), (report["outcome"], report["notes"])


@pytest.fixture(scope="module")
def gate_of_111(store_with_a_built_package, testdata, tmp_path_factory):
    """The 6.12 case beside the 6.1 store: 6.12.107 and .111 from their .debs (stream debian-6.12); acpi-call
    (built for 6.1.0-50 already) and nat-rtsp built for -50 and for 6.12.107, where nat-rtsp does not compile
    (strlcpy is gone); then the gate of .111 against .107 with rebuilds. Of the corpus' 21 DKMS packages,
    the 5 that build for .107 all rebuild for .111 and load, and the 16 that do not build for .107 do not for
    .111 either: acpi-call and nat-rtsp are one of each (4 real dkms builds)."""
    streams = testdata.manifest["stream_kernels"]
    if not all(list((testdata.root / "debs").glob(f"{p}_*.deb")) for p in SERIES_TREE_DEBS):
        pytest.skip("the corpus lacks 6.12.111's -common and linux-kbuild .debs (scripts/fetch-testdata)")
    db, _, _ = store_with_a_built_package
    top = tmp_path_factory.mktemp("series")
    copy = top / "store.db"
    shutil.copyfile(db, copy)
    with Store.open(str(copy)) as store:
        for release in (BASELINE_612, CANDIDATE_612):
            ingest_kernel(store, load_kernel([str(testdata.root / deb) for deb in streams[release]["debs"]]),
                          "debian-6.12")
    (nat_rtsp,) = (testdata.root / "debs").glob("nat-rtsp-dkms_*.deb")
    (acpi_call,) = (testdata.root / "debs").glob("acpi-call-dkms_*.deb")
    for source, release, outcome in ((nat_rtsp, "6.1.0-50-amd64", "built"), (acpi_call, BASELINE_612, "built"),
                                     (nat_rtsp, BASELINE_612, "failed")):
        tree = testdata.root / testdata.manifest["build_kernels"][release]["root"]
        built = kabigate("build", "--json", "-k", tree, source, "--db", copy)
        assert json.loads(built.stdout)["outcome"] == outcome, built.stdout + built.stderr
    run = kabigate("gate", "--db", copy, "--candidate", CANDIDATE_612, "--json", "--no-explain", "--rebuild")
    return copy, run


def test_the_gate_of_6_12_111_rebuilds_what_107_built_and_names_what_never_built_for_6_12(gate_of_111):
    """.111 refuses every module built for .107 (module_layout moved): acpi-call is rebuilt and loads. nat-rtsp,
    known only by its 6.1 build and its failed build for .107, is built for .111 too (its source is known, as
    dkms autoinstall builds every package for a new kernel) and is named rebuild-fails with the compiler's
    error. .111 did not break it (it did not build for .107 either): still failing, INFO, and the gate passes.
    Failing it would block every kernel of the series until the package is ported, and say nothing of the kernel."""
    _, run = gate_of_111
    report = json.loads(run.stdout)
    assert (report["baseline"]["release"], report["module_layout_changed"]) == (BASELINE_612, True)
    rebuilt = {r["driver"]: r for r in report["rebuilds"]}
    assert {d: r["outcome"] for d, r in rebuilt.items()} == {"acpi-call": "built", "nat-rtsp": "failed"}, rebuilt
    assert "error: implicit declaration of function ‘strlcpy’" in rebuilt["nat-rtsp"]["reason"]
    packages = {p["driver"]: p for p in report["packages"]}
    assert (packages["acpi-call"]["state"], packages["acpi-call"]["build"]["built_for"]) == \
        ("loads-after-rebuild", CANDIDATE_612)
    nat = packages["nat-rtsp"]
    assert (nat["state"], nat["category"], nat["outcome"]) == ("rebuild-fails", None, "INFO")
    assert nat["build_failure"]["error"] == rebuilt["nat-rtsp"]["reason"] and "strlcpy" in nat["why"]
    assert report["outcome"] == "INFO" and run.returncode == 0, (report["outcome"], report["notes"])


def test_the_move_from_6_1_to_6_12_111_breaks_the_packages_that_do_not_compile_and_fails(gate_of_111, tmp_path):
    """The issue's failing case from real data: against 6.1.0-50, where both packages' builds load, .111
    breaks nat-rtsp (it does not compile for 6.12): package_broken, FAILED, named with the compiler's error;
    acpi-call works after its rebuild. Rebuilt already, nothing is built again."""
    db, _ = gate_of_111
    copy = tmp_path / "store.db"
    shutil.copyfile(db, copy)
    run = kabigate("gate", "--db", copy, "--candidate", CANDIDATE_612, "--baseline", "6.1.0-50-amd64", "--json",
                   "--no-explain", "--rebuild", "--markdown", tmp_path / "gate.md")
    report = json.loads(run.stdout)
    assert report["rebuilds"] == []
    packages = {p["driver"]: p for p in report["packages"]}
    assert {d: (p["state"], p["category"], p["outcome"]) for d, p in packages.items()} == {
        "acpi-call": ("loads-after-rebuild", None, "PASSED"),
        "nat-rtsp": ("rebuild-fails", "package_broken", "FAILED")}
    assert "strlcpy" in packages["nat-rtsp"]["build_failure"]["error"]
    assert report["outcome"] == "FAILED" and run.returncode == 1
    assert "nat-rtsp" in (tmp_path / "gate.md").read_text()
