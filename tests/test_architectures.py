"""Architecture as a dimension of the store: one stream holding Debian's 6.1.0-47 and 6.1.0-56
kernels of amd64 and arm64 side by side, with real x86_64 DKMS builds and real arm64 and x86_64
in-tree fs/fat modules as builds. Verdicts pair a build only with kernels of its architecture; the
matrix, the API and symbol demand filter by it; a gate of 6.1.0-56 covers both architectures, each
against its own baseline, each its own run and ResultsDB result; stablelists are picked per
architecture from a folder of RHEL's Module.kabi_<arch> lists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kabigate.reports.gate import resultsdb_payload
from kabigate.rules import RULES_VERSION
from kabigate.store import Store

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]
KABI = Path(__file__).parent / "data" / "kabi"
AMD64 = ("6.1.0-47-amd64", "6.1.0-56-amd64")
ARM64 = ("6.1.0-47-arm64", "6.1.0-56-arm64")
DRIVERS = ("acpi-call", "jool")  # x86_64 DKMS builds made for 47 and for 56


def kabigate(*args, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*KABIGATE, *map(str, args)], capture_output=True, text=True, check=False)
    if check:
        assert result.returncode in (0, 1), result.stderr
    return result


def arm64_root(testdata, release: str) -> Path:
    foreign = testdata.manifest.get("foreign_kernels", {})
    if release not in foreign:
        pytest.skip(f"foreign kernel {release} not in {testdata.root} (run scripts/fetch-testdata)")
    return testdata.root / foreign[release]["root"]


def fat(testdata, release: str) -> Path:
    """The in-tree fs/fat modules (fat, vfat, msdos) of a kernel: a build of that kernel's architecture."""
    if release in ARM64:
        return arm64_root(testdata, release) / "lib" / "modules" / release / "kernel" / "fs" / "fat"
    return testdata.in_tree(release, "fs/fat")


@pytest.fixture(scope="module")
def db(testdata, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("arch") / "store.db")
    kernels = [testdata.kernel_root(r) for r in AMD64] + [arm64_root(testdata, r) for r in ARM64]
    for kernel in kernels:
        kabigate("ingest", "kernel", "--db", path, "--stream", "debian-6.1", kernel)
    for driver in DRIVERS:
        for built_for in AMD64:
            entry = testdata.manifest["drivers"][driver][built_for]
            kabigate("ingest", "drivers", "--db", path, "--name", driver, "--version", entry["version"],
                     testdata.root / entry["dir"])
    for release in ("6.1.0-47-amd64", "6.1.0-47-arm64"):
        kabigate("ingest", "drivers", "--db", path, "--name", "fat", "--version", "6.1.170-3", fat(testdata, release))
    return path


def builds_of(db: str) -> list[dict]:
    return json.loads(kabigate("drivers", "--db", db, "--json").stdout)["builds"]


def test_builds_say_their_architecture_and_are_judged_only_on_its_kernels(db):
    builds = builds_of(db)
    assert {(b["driver"], b["machine"]) for b in builds} == {
        ("acpi-call", "x86_64"), ("jool", "x86_64"), ("fat", "x86_64"), ("fat", "aarch64")}
    with Store.open(db) as store:
        kernels = {k.id: k for k in store.kernels("debian-6.1")}
        records = {b.id: b for b in store.driver_builds()}
        cells = store.cells(RULES_VERSION, build_ids=list(records))
        # every pair of one architecture judged, none across
        assert set(cells) == {(b, k) for b in records for k in kernels
                              if records[b].machine == kernels[k].machine}
        assert {kernels[k].machine for k in kernels} == {"x86_64", "aarch64"}
        assert store.count_pairs() == len(cells)
    status = json.loads(kabigate("db", "status", "--db", db, "--json").stdout)
    assert status["pending_verdicts"] == 0
    # arm64's fat loads on its own kernel; built for 47, 56 refuses it as amd64's 56 refuses amd64's
    matrix = json.loads(kabigate("matrix", "--db", db, "--stream", "debian-6.1", "--json").stdout)
    fat_cells = {b["machine"]: b["cells"] for b in matrix["builds"] if b["driver"] == "fat"}
    assert fat_cells["aarch64"]["6.1.0-47-arm64"]["loads"] is True
    assert fat_cells["aarch64"]["6.1.0-47-amd64"] is None and fat_cells["x86_64"]["6.1.0-47-arm64"] is None
    assert fat_cells["x86_64"]["6.1.0-47-amd64"]["loads"] is True
    assert (fat_cells["aarch64"]["6.1.0-56-arm64"]["first_reason"]
            == fat_cells["x86_64"]["6.1.0-56-amd64"]["first_reason"])


def test_check_still_says_arch_mismatch_when_asked_directly(testdata, db):
    result = kabigate("check", "--json", "-k", arm64_root(testdata, "6.1.0-47-arm64"), fat(testdata, "6.1.0-47-amd64"))
    assert result.returncode == 1
    modules = json.loads(result.stdout)["modules"]
    assert {m["reasons"][0]["code"] for m in modules} == {"arch-mismatch"}


def test_matrix_and_api_filter_by_architecture(db):
    arm = json.loads(kabigate("matrix", "--db", db, "--stream", "debian-6.1", "--arch", "aarch64", "--json").stdout)
    assert arm["arch"] == "aarch64"
    assert [k["release"] for k in arm["kernels"]] == list(ARM64)
    assert [(b["driver"], b["machine"]) for b in arm["builds"]] == [("fat", "aarch64")]
    x86 = json.loads(kabigate("matrix", "--db", db, "--arch", "x86_64", "--json").stdout)
    assert [k["release"] for k in x86["kernels"]] == list(AMD64)
    assert {b["machine"] for b in x86["builds"]} == {"x86_64"} and len(x86["builds"]) == 5
    assert x86["summary"]["cells"] == 10 and arm["summary"]["cells"] == 2
    packages = json.loads(kabigate("matrix", "--db", db, "--arch", "aarch64", "--packages", "--json").stdout)
    assert [k["release"] for k in packages["kernels"]] == list(ARM64)
    # the text matrix: a table per architecture, each with its builds only
    text = kabigate("matrix", "--db", db, "--stream", "debian-6.1").stdout
    assert "debian-6.1 x86_64: 2 kernels" in text and "debian-6.1 aarch64: 2 kernels" in text
    arm_table = text.split("debian-6.1 aarch64")[1]
    assert "acpi-call" not in arm_table and "fat 6.1.170-3" in arm_table
    unknown = kabigate("matrix", "--db", db, "--arch", "s390x", check=False)
    assert unknown.returncode == 2
    assert "--arch s390x: no kernel of that architecture (architectures: aarch64, x86_64)" in unknown.stderr

    from fastapi.testclient import TestClient

    from kabigate.web import create_app
    with TestClient(create_app(db)) as client:
        page = client.get("/api/v1/matrix", params={"arch": "aarch64"}).json()
        assert page["arch"] == "aarch64" and [k["release"] for k in page["kernels"]] == list(ARM64)
        assert {c["kernel_id"] for c in page["cells"]} == {k["id"] for k in page["kernels"]}
        assert [k["machine"] for k in client.get("/api/v1/kernels", params={"arch": "aarch64"}).json()["kernels"]] \
            == ["aarch64", "aarch64"]
        assert [b["driver"] for b in client.get("/api/v1/drivers", params={"arch": "aarch64"}).json()["builds"]] \
            == ["fat"]
        assert client.get("/api/v1/matrix", params={"arch": "x86 64"}).status_code == 422


def test_a_gate_covers_every_architecture_of_the_release(db, tmp_path):
    junit = tmp_path / "gate.xml"
    result = kabigate("gate", "--db", db, "--candidate", "6.1.0-56-amd64", "--stream", "debian-6.1", "--json",
                      "--junit", junit)
    report = json.loads(result.stdout)
    # the candidate's own report, as before: its architecture's builds only
    assert report["candidate"]["release"] == "6.1.0-56-amd64" and report["baseline"]["release"] == "6.1.0-47-amd64"
    assert sorted(b["driver"] for b in report["builds"]) == ["acpi-call", "acpi-call", "fat", "jool", "jool"]
    arches = {a["arch"]: a for a in report["architectures"]}
    assert [a["arch"] for a in report["architectures"]] == ["x86_64", "aarch64"]
    assert arches["aarch64"]["candidate"] == "6.1.0-56-arm64" and arches["aarch64"]["baseline"] == "6.1.0-47-arm64"
    assert report["outcome_all_architectures"] in {a["outcome"] for a in arches.values()}
    assert result.returncode == (0 if report["outcome_all_architectures"] in ("PASSED", "INFO") else 1)
    assert junit.is_file() and (tmp_path / "gate.aarch64.xml").is_file()
    with Store.open(db) as store:
        arm_report = store.gate_report(arches["aarch64"]["run"])
        assert arm_report["candidate"]["machine"] == "aarch64"
        assert [(b["driver"], b["class"]) for b in arm_report["builds"]] == [("fat", "regression")]
        payload = resultsdb_payload(arm_report, item="kernel-6.1.192-2")
        assert payload["data"]["arch"] == "aarch64" and payload["data"]["scenario"] == "aarch64.debian-6.1"
        assert resultsdb_payload(store.gate_report(arches["x86_64"]["run"]))["data"]["arch"] == "x86_64"
    # a gate of the arm64 release has the amd64 one beside it, its baseline amd64's 47
    arm = json.loads(kabigate("gate", "--db", db, "--candidate", "6.1.0-56-arm64", "--json").stdout)
    assert arm["baseline"]["release"] == "6.1.0-47-arm64"
    assert [(a["arch"], a["baseline"]) for a in arm["architectures"]] == [("aarch64", "6.1.0-47-arm64"),
                                                                           ("x86_64", "6.1.0-47-amd64")]
    text = kabigate("gate", "--db", db, "--candidate", "6.1.0-56-amd64", "--baseline", "6.1.0-47-amd64").stdout
    assert "gate of 6.1.0-56-arm64 (aarch64) against 6.1.0-47-arm64" in text
    assert "all architectures: " in text


def rhel_lists(folder: Path, *arches: str) -> Path:
    """A folder of RHEL 9.3's Module.kabi_<arch> lists, as the kernel SRPM's SOURCES holds them."""
    folder.mkdir()
    for arch in arches:
        shutil.copy(KABI / f"rhel-9.3-Module.kabi_{arch}", folder / f"Module.kabi_{arch}")
    return folder


def test_check_picks_the_kernels_architectures_list(testdata, tmp_path):
    lists = rhel_lists(tmp_path / "SOURCES", "x86_64", "aarch64")
    arm = kabigate("check", "--stablelist", lists, "-k", arm64_root(testdata, "6.1.0-47-arm64"),
                   fat(testdata, "6.1.0-47-arm64"))
    assert f"stablelist {lists / 'Module.kabi_aarch64'} (466 symbols)" in arm.stdout.replace("\n", "")
    x86 = kabigate("check", "--json", "--stablelist", lists, "-k", testdata.kernel_root("6.1.0-47-amd64"),
                   fat(testdata, "6.1.0-47-amd64"))
    coverage = json.loads(x86.stdout)["modules"][0]["stablelist"]
    assert coverage["source"] == str(lists / "Module.kabi_x86_64")
    # a list named for another architecture than the kernel's is refused, as is a folder without the kernel's
    wrong = kabigate("check", "--stablelist", lists / "Module.kabi_aarch64", "-k",
                     testdata.kernel_root("6.1.0-47-amd64"), fat(testdata, "6.1.0-47-amd64"), check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().endswith("Module.kabi_aarch64: a stablelist of aarch64, not of the kernel's "
                                         "architecture x86_64")
    only_arm = rhel_lists(tmp_path / "arm-only", "aarch64")
    missing = kabigate("check", "--stablelist", only_arm, "-k", testdata.kernel_root("6.1.0-47-amd64"),
                       fat(testdata, "6.1.0-47-amd64"), check=False)
    assert missing.returncode == 2
    assert "stablelists for aarch64; the kernel's architecture x86_64 is not among them" in missing.stderr


def test_stablelist_demand_and_request_use_the_architectures_kernels_builds_and_list(db, tmp_path):
    lists = rhel_lists(tmp_path / "SOURCES", "x86_64", "aarch64")
    both = kabigate("stablelist", "demand", "--db", db, "--stablelist", lists, check=False)
    assert both.returncode == 2 and "stream debian-6.1 holds kernels of aarch64, x86_64: give --arch" in both.stderr
    arm = json.loads(kabigate("stablelist", "demand", "--db", db, "--stablelist", lists, "--arch", "aarch64",
                              "--json").stdout)
    assert arm["arch"] == "aarch64" and arm["stablelist"] == str(lists / "Module.kabi_aarch64")
    assert arm["kernels"] == list(ARM64) and arm["builds"] == 1 and arm["drivers"] == 1
    x86 = json.loads(kabigate("stablelist", "demand", "--db", db, "--stablelist", lists, "--arch", "x86_64",
                              "--json").stdout)
    assert x86["stablelist"] == str(lists / "Module.kabi_x86_64") and x86["kernels"] == list(AMD64)
    assert x86["builds"] == 5 and x86["drivers"] == 3
    request = kabigate("stablelist", "request", "--db", db, "--stablelist", lists, "--arch", "aarch64")
    assert request.stdout.startswith("[rhel9_aarch64_stablelist]\n")
    assert f"off {lists / 'Module.kabi_aarch64'}" in request.stderr


def test_history_of_folders_picks_the_architecture(tmp_path):
    old = tmp_path / "9.2"
    old.mkdir()
    shutil.copy(KABI / "rhel-9.2-Module.kabi_x86_64", old / "Module.kabi_x86_64")
    new = rhel_lists(tmp_path / "9.3", "x86_64", "aarch64")
    result = json.loads(kabigate("stablelist", "history", "--json", old, new).stdout)
    [step] = result["steps"]
    assert (step["from"], step["to"]) == (str(old / "Module.kabi_x86_64"), str(new / "Module.kabi_x86_64"))
    files = json.loads(kabigate("stablelist", "history", "--json", KABI / "rhel-9.2-Module.kabi_x86_64",
                                KABI / "rhel-9.3-Module.kabi_x86_64").stdout)
    assert files["steps"][0]["added"] == step["added"] and files["steps"][0]["crc_changed"] == step["crc_changed"]
    text = kabigate("stablelist", "history", old, new).stdout
    assert str(old / "Module.kabi_x86_64") in text  # the same file name twice: the paths tell them apart
    arm = kabigate("stablelist", "history", "--arch", "aarch64", old, new, check=False)
    assert arm.returncode == 2 and "stablelists for x86_64; the kernel's architecture aarch64" in arm.stderr


def test_dashboard_shows_one_architecture_at_a_time(db):
    from fastapi.testclient import TestClient

    from kabigate.web import create_app

    def columns(html: str) -> list[str]:
        return re.findall(r'<th title="(\S+) ', html)

    def rows(html: str) -> set[str]:
        return set(re.findall(r'<tr class="build-row" data-driver="([^"]+)"', html))

    with TestClient(create_app(db)) as client:
        # a stream of two architectures: the first one's table, a link to the other, no cell across them
        arm = client.get("/matrix", params={"stream": "debian-6.1"}).text
        assert columns(arm) == list(ARM64) and rows(arm) == {"fat"}
        assert 'href="/matrix?stream=debian-6.1&amp;arch=x86_64"' in arm and 'class="cell none"' not in arm
        x86 = client.get("/matrix", params={"stream": "debian-6.1", "arch": "x86_64"}).text
        assert columns(x86) == list(AMD64) and rows(x86) == {"acpi-call", "jool", "fat"}
        assert 'class="cell none"' not in x86 and '<input type="hidden" name="arch" value="x86_64">' in x86
        assert 'href="/matrix.csv?stream=debian-6.1&amp;arch=x86_64"' in x86
        download = client.get("/matrix.csv", params={"stream": "debian-6.1", "arch": "x86_64"})
        assert download.text.splitlines()[0] == "driver,version,built_for," + ",".join(AMD64)
        assert len(download.text.splitlines()) == 1 + 5
        assert 'filename="matrix-debian-6.1-x86_64.csv"' in download.headers["content-disposition"]
        unknown = client.get("/matrix", params={"arch": "s390x"})
        assert unknown.status_code == 404
        assert "no kernel of architecture s390x in stream debian-6.1 (architectures: aarch64, x86_64)" in unknown.text
        assert client.get("/matrix", params={"arch": "x86 64"}).status_code == 422
        # the overview: a section per architecture, and a filter to one of them
        both = client.get("/").text
        assert re.findall(r'<section class="stream" id="([^"]+)"', both) == ["stream-debian-6.1-aarch64",
                                                                             "stream-debian-6.1-x86_64"]
        assert 'href="/?arch=aarch64"' in both and 'href="/matrix?stream=debian-6.1&amp;arch=x86_64"' in both
        one = client.get("/", params={"arch": "aarch64"}).text
        assert re.findall(r'<section class="stream" id="([^"]+)"', one) == ["stream-debian-6.1-aarch64"]
        assert "6.1.0-56-arm64" in one and "6.1.0-56-amd64" not in one
        assert client.get("/", params={"arch": "s390x"}).status_code == 404
        api = client.get("/api/v1/overview", params={"arch": "x86_64"}).json()
        assert [(s["stream"], s["machine"], s["kernel"]["release"]) for s in api["streams"]] == [
            ("debian-6.1", "x86_64", "6.1.0-56-amd64")]
