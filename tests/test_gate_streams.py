"""The gate on the real Debian 6.1 stream, kernels read from their image and headers .debs as a
kernel pipeline would: 6.1.0-57 against 6.1.0-56, and 6.1.0-53 against 6.1.0-50, with the real
DKMS drivers of the corpus in the store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]
KERNELS = ("6.1.0-50-amd64", "6.1.0-53-amd64", "6.1.0-56-amd64", "6.1.0-57-amd64")


@pytest.fixture(scope="module")
def stream_db(testdata, tmp_path_factory):
    streams = testdata.manifest.get("stream_kernels", {})
    if not all(release in streams for release in KERNELS):
        pytest.skip("the corpus has no stream kernels (scripts/fetch-testdata fetches them)")
    db = str(tmp_path_factory.mktemp("streams") / "store.db")
    kernels = [",".join(str(testdata.root / deb) for deb in streams[release]["debs"]) for release in KERNELS]
    subprocess.run([*KABIGATE, "ingest", "kernel", "--db", db, "--stream", "debian-6.1", *kernels], check=True,
                   capture_output=True)
    for driver, builds in testdata.manifest["drivers"].items():
        for built_for, entry in builds.items():
            if built_for in KERNELS:
                subprocess.run([*KABIGATE, "ingest", "drivers", "--db", db, "--name", driver, "--version",
                                entry["version"], str(testdata.root / entry["dir"])], check=True, capture_output=True)
    return db


def _gate(db, candidate):
    result = subprocess.run([*KABIGATE, "gate", "--db", db, "--candidate", candidate, "--json"], capture_output=True,
                            text=True, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_57_keeps_56s_abi(stream_db, testdata):
    """What the archive shows: Debian's 6.1.0-57 exports exactly what 6.1.0-56 exports, so every
    driver build made for 56 that loads there loads on 57 too, and the gate passes."""
    status, report = _gate(stream_db, "6.1.0-57-amd64")
    assert report["baseline"]["release"] == "6.1.0-56-amd64"
    assert report["export_changes"] == {"removed_stablelisted": 0, "removed_unlisted": 0, "changed_stablelisted": 0,
                                        "changed_unlisted": 0, "added": 0}
    built_for_56 = [b for b in report["builds"] if b["built_for"] == "6.1.0-56-amd64"]
    assert len(built_for_56) == sum("6.1.0-56-amd64" in builds for builds in testdata.manifest["drivers"].values())
    assert {b["class"] for b in built_for_56} <= {"unaffected", "still_failing"}
    assert report["counts"]["regression"] == 0 and status == 0 and report["outcome"] in ("PASSED", "INFO")


def test_53_against_50_names_the_changes_real_drivers_trip_over(stream_db, testdata):
    status, report = _gate(stream_db, "6.1.0-53-amd64")
    assert report["baseline"]["release"] == "6.1.0-50-amd64"
    in_use = {c["symbol"]: c for c in report["changed_exports_in_use"]}
    for symbol in ("skb_copy_bits", "__pci_register_driver", "request_firmware"):
        assert in_use[symbol]["change"] == "crc" and in_use[symbol]["builds"] >= 1
    # The corpus builds a few drivers for 50 (fetch-testdata's GATE_DRIVERS): they load there and
    # regress on 53, where 50 -> 53 kept module_layout but moved the CRCs they use.
    regressions = {b["driver"]: b for b in report["builds"] if b["class"] == "regression"}
    assert {b["built_for"] for b in regressions.values()} == {"6.1.0-50-amd64"}
    assert {"acpi-call", "dpdk-kmods", "nat-rtsp"} <= regressions.keys() and status == 1
    assert report["outcome"] == "NEEDS_INSPECTION"  # no stablelist: every regression is off-list
    dpdk = {s["symbol"]: s for s in regressions["dpdk-kmods"]["symbols"]}
    assert dpdk["__pci_register_driver"]["code"] == "crc-mismatch"
    assert dpdk["__pci_register_driver"]["kernel_crc"] == in_use["__pci_register_driver"]["new"]
    assert "module_layout" not in dpdk
