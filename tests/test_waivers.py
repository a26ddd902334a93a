"""Stored waivers: the migration that adds them to an older store, `kabigate waiver add|list|revoke`,
the API's /waivers, and gates (CLI and API) applying them with a waivers file's, on the real Debian
kernels and drivers: a stored waiver forgives the 6.1.0-50 regression, an expired or revoked one
does not, and bad waivers are refused by the waivers file's rules (exit 2 / HTTP 400)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from support.realstore import STREAM, build_store
from support.resultsdb import ResultsDB, WaiverDB, post_waiver, resultsdb_server

from kabigate.formats.gatepolicy import waiver_from_mapping
from kabigate.inputs.kernels import load_kernel
from kabigate.reports.gate import kernel_item
from kabigate.store import Store, StoreError
from kabigate.web import create_app

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]
TOKEN = "waiver-test-token-0c1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACPI = {"driver": "acpi-call", "kernel": "6.1.0-5*", "reason": "rebuilt for every ABI; bug 1234",
        "who": "jane@example.org"}


def _kabigate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KABIGATE, *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def base_db(testdata, tmp_path_factory):
    return build_store(testdata, tmp_path_factory.mktemp("waivers") / "store.db")


@pytest.fixture
def db(base_db, tmp_path):
    """A copy of the store for one test: waivers added here do not leak into others."""
    copy = tmp_path / "store.db"
    shutil.copy(base_db, copy)
    return str(copy)


def _gate(db: str, *options: str) -> tuple[int, dict]:
    result = _kabigate("gate", "--candidate", "6.1.0-50-amd64", "--driver", "acpi-call", "--json", "--db", db,
                       *options)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _regression(report: dict) -> dict:
    (regression,) = [b for b in report["builds"] if b["class"] == "regression"]
    return regression


# -- the migration ---------------------------------------------------------------------------------

def test_a_0003_store_is_upgraded_with_its_data_and_gets_waivers(tmp_path, testdata):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Store.open(url) as store:
        from alembic import command

        kernel = load_kernel([str(testdata.kernel_root("6.1.0-47-amd64"))])
        with store.transaction():
            record, _ = store.add_kernel(kernel, STREAM)
            store.record_gate_run(record.id, None, STREAM, "PASSED", {"outcome": "PASSED"})
        # taken back to revision 0003 with its data, as a kabigate of that revision left it
        config = store._alembic_config()
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
        head = store.revisions()[1]
    with pytest.raises(StoreError, match="revision 0003.*kabigate db upgrade"):
        Store.open(url)
    upgraded = _kabigate("db", "upgrade", "--db", url)
    assert upgraded.returncode == 0 and f"revision {head} (was 0003)" in upgraded.stdout, upgraded.stderr
    with Store.open(url) as store:
        assert [k.release for k in store.kernels(STREAM)] == ["6.1.0-47-amd64"]
        assert store.load_kernel(store.kernels()[0].id).exports == kernel.exports
        assert [r.outcome for r in store.gate_runs()] == ["PASSED"]
        assert store.waivers(include_revoked=True) == []
        with store.transaction():
            waiver_id = store.add_waiver(waiver_from_mapping(ACPI, "test"))
        assert [w.source for w in store.waivers()] == [f"store#{waiver_id}"]


# -- the CLI ---------------------------------------------------------------------------------------

def test_add_list_revoke(db):
    added = _kabigate("waiver", "add", "--db", db, "--driver", "acpi-call", "--kernel", "6.1.0-5*",
                      "--reason", "bug 1234", "--who", "jane@example.org", "--expires", "2099-01-31", "--json")
    assert added.returncode == 0, added.stderr
    waiver = json.loads(added.stdout)
    assert waiver["id"] == 1 and waiver["source"] == "store#1" and waiver["symbol"] == "*"
    assert waiver["expires"] == "2099-01-31" and waiver["revoked_at"] is None
    listed = _kabigate("waiver", "list", "--db", db)
    assert "driver=acpi-call symbol=* kernel=6.1.0-5*" in listed.stdout and "until 2099-01-31" in listed.stdout
    revoked = _kabigate("waiver", "revoke", "--db", db, "1")
    assert revoked.returncode == 0 and "waiver 1 revoked" in revoked.stdout, revoked.stderr
    assert json.loads(_kabigate("waiver", "list", "--db", db, "--json").stdout) == {"waivers": []}
    (kept,) = json.loads(_kabigate("waiver", "list", "--db", db, "--all", "--json").stdout)["waivers"]
    assert kept["id"] == 1 and kept["revoked_at"] is not None  # revoked, never deleted
    again = _kabigate("waiver", "revoke", "--db", db, "1")
    assert again.returncode == 2 and "already revoked" in again.stderr
    missing = _kabigate("waiver", "revoke", "--db", db, "7")
    assert missing.returncode == 2 and "no waiver 7" in missing.stderr


@pytest.mark.parametrize("options, message", [
    (["--driver", "x", "--reason", "", "--who", "w"], "'reason' is required"),
    (["--driver", "x", "--reason", "r", "--who", "  "], "'who' is required"),
    (["--reason", "r", "--who", "w"], "waives everything"),
    (["--driver", "*", "--symbol", "*", "--kernel", "*", "--reason", "r", "--who", "w"], "waives everything"),
    (["--driver", "x", "--reason", "r", "--who", "w", "--expires", "2027-02-30"], "'expires' must be a date"),
    (["--driver", "x", "--reason", "r", "--who", "w", "--expires", "soon"], "'expires' must be a date"),
])
def test_bad_waivers_are_one_line_errors(db, options, message):
    result = _kabigate("waiver", "add", "--db", db, *options)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    with Store.open(db) as store:
        assert store.waivers(include_revoked=True) == []


# -- gates apply them ------------------------------------------------------------------------------

def test_a_stored_waiver_forgives_the_regression(db, tmp_path):
    status, report = _gate(db)
    assert status == 1 and _regression(report)["outcome"] == "NEEDS_INSPECTION"
    assert _kabigate("waiver", "add", "--db", db, *[f"--{k}={v}" for k, v in ACPI.items()]).returncode == 0
    status, report = _gate(db)
    regression = _regression(report)
    assert status == 0 and report["outcome"] == "INFO" and regression["outcome"] == "INFO"
    assert [w["source"] for w in regression["waivers"]] == ["store#1"]
    # With a waivers file: both apply, the file's first.
    waivers = tmp_path / "waivers.toml"
    waivers.write_text('[[waiver]]\ndriver = "acpi-*"\nreason = "file"\nwho = "joe"\n')
    _status, report = _gate(db, "--waivers", str(waivers))
    assert [w["source"] for w in _regression(report)["waivers"]] == [f"{waivers}#1", "store#1"]
    # Revoked: no longer applied.
    assert _kabigate("waiver", "revoke", "--db", db, "1").returncode == 0
    status, report = _gate(db)
    assert status == 1 and _regression(report)["waivers"] == []


def test_an_expired_stored_waiver_is_reported_not_applied(db):
    assert _kabigate("waiver", "add", "--db", db, *[f"--{k}={v}" for k, v in ACPI.items()],
                     "--expires", "2020-01-31").returncode == 0
    status, report = _gate(db)
    regression = _regression(report)
    assert status == 1 and regression["outcome"] == "NEEDS_INSPECTION" and regression["waivers"] == []
    assert [w["source"] for w in regression["expired_waivers"]] == ["store#1"]
    assert any("expired waiver no longer applies: store#1" in note and "2020-01-31" in note
               for note in report["notes"])


# -- the API and the page --------------------------------------------------------------------------

def test_api_adds_lists_revokes_and_gates_with_stored_waivers(db):
    with TestClient(create_app(db, token=TOKEN)) as client:
        assert client.get("/api/v1/waivers").json() == {"waivers": []}
        added = client.post("/api/v1/waivers", json=dict(ACPI, expires="2099-01-31"), headers=AUTH)
        assert added.status_code == 201, added.text
        waiver = added.json()
        assert waiver["source"] == f"store#{waiver['id']}" and waiver["expires"] == "2099-01-31"
        assert [w["id"] for w in client.get("/api/v1/waivers").json()["waivers"]] == [waiver["id"]]
        report = client.post("/api/v1/gate", json={"candidate": "6.1.0-50-amd64", "driver": "acpi-call"},
                             headers=AUTH).json()
        assert _regression(report)["outcome"] == "INFO"
        assert f"waiver store#{waiver['id']}" in client.get(f"/gate-runs/{report['run']}").text
        page = client.get("/waivers").text
        assert "rebuilt for every ABI; bug 1234" in page and "until 2099-01-31" in page
        revoked = client.post(f"/api/v1/waivers/{waiver['id']}/revoke", headers=AUTH)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        assert client.get("/api/v1/waivers").json() == {"waivers": []}
        assert len(client.get("/api/v1/waivers", params={"all": "true"}).json()["waivers"]) == 1
        assert "revoked" in client.get("/waivers").text
        assert client.post(f"/api/v1/waivers/{waiver['id']}/revoke", headers=AUTH).status_code == 400
        assert client.post("/api/v1/waivers/999/revoke", headers=AUTH).status_code == 404
        report = client.post("/api/v1/gate", json={"candidate": "6.1.0-50-amd64", "driver": "acpi-call"},
                             headers=AUTH).json()
        assert _regression(report)["outcome"] == "NEEDS_INSPECTION"


@pytest.mark.parametrize("body, message", [
    ({"driver": "x", "reason": "", "who": "w"}, "'reason' is required"),
    ({"driver": "x", "reason": "r"}, "'who' is required"),
    ({"reason": "r", "who": "w"}, "waives everything"),
    ({"driver": "*", "symbol": "*", "kernel": "*", "reason": "r", "who": "w"}, "waives everything"),
    ({"driver": "x", "reason": "r", "who": "w", "expires": "2027-13-01"}, "'expires' must be a date"),
    ({"driver": "x", "reason": "r", "who": "w", "expires": "31/01/2027"}, "'expires' must be a date"),
])
def test_api_refuses_bad_waivers_with_400(db, body, message):
    with TestClient(create_app(db, token=TOKEN)) as client:
        response = client.post("/api/v1/waivers", json=body, headers=AUTH)
        assert response.status_code == 400 and message in response.json()["detail"], response.text
        assert client.get("/api/v1/waivers", params={"all": "true"}).json() == {"waivers": []}


def test_api_refuses_waiver_writes_without_the_token(db):
    with TestClient(create_app(db, token=TOKEN)) as client:
        assert client.post("/api/v1/waivers", json=ACPI).status_code == 401
        assert client.post("/api/v1/waivers", json=ACPI, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/api/v1/waivers", json=ACPI, headers=AUTH).status_code == 201
        assert client.post("/api/v1/waivers/1/revoke").status_code == 401
        assert client.get("/api/v1/waivers").status_code == 200
    with TestClient(create_app(db)) as client:  # started without a token: read-only
        assert client.post("/api/v1/waivers", json=ACPI, headers=AUTH).status_code == 403
        assert client.post("/api/v1/waivers/1/revoke", headers=AUTH).status_code == 403
        assert [w["id"] for w in client.get("/api/v1/waivers").json()["waivers"]] == [1]


# -- WaiverDB ----------------------------------------------------------------------------------------

PRODUCT = "debian-12"
CANDIDATE = "6.1.0-50-amd64"


def _as(user: str | None, *args: str) -> subprocess.CompletedProcess:
    """kabigate with $KABIGATE_WAIVERDB_TOKEN (the WaiverDB-shaped server's user), or without one."""
    env = {k: v for k, v in os.environ.items() if k != "KABIGATE_WAIVERDB_TOKEN"}
    if user is not None:
        env["KABIGATE_WAIVERDB_TOKEN"] = user
    return subprocess.run([*KABIGATE, *args], capture_output=True, text=True, check=False, env=env)


def _item(db: str, release: str) -> str:
    with Store.open(db) as store:
        kernel = store.find_kernels(release)[0]
    return kernel_item(kernel.release, kernel.package_version)


def test_a_waiver_posted_to_waiverdb_comes_back_with_its_patterns_in_another_store(db, base_db, tmp_path,
                                                                                    waiverdb):
    added = _as("kabigate-bot", "waiver", "add", "--db", db, "--driver", "acpi-call", "--kernel", CANDIDATE,
                "--reason", "bug 1234", "--who", "jane@example.org", "--waiverdb", waiverdb,
                "--product-version", PRODUCT, "--json")
    assert added.returncode == 0, added.stderr
    (posted,) = WaiverDB.stored
    assert {k: posted[k] for k in ("subject_type", "subject_identifier", "testcase", "product_version", "waived",
                                   "scenario", "username")} == {
        "subject_type": "koji_build", "subject_identifier": _item(db, CANDIDATE),
        "testcase": "kabigate.kernel-gate.functional", "product_version": PRODUCT, "waived": True,
        "scenario": "x86_64.debian-6.1", "username": "kabigate-bot"}
    assert posted["comment"].startswith("bug 1234 [kabigate driver=\"acpi-call\"")
    assert json.loads(added.stdout)["waiverdb"] == [{"url": waiverdb, "id": "1", "item": _item(db, CANDIDATE),
                                                     "scenario": "x86_64.debian-6.1"}]
    # Read back into the store that posted it: already there, nothing copied.
    again = _as(None, "waiver", "import", "--db", db, "--waiverdb", waiverdb, "--json")
    assert json.loads(again.stdout) == {"added": [], "revoked": [], "already_stored": 1, "items_not_stored": [],
                                        "refused": []}
    # Another store imports it with its patterns; its gates apply it, and the result they publish says so.
    other = str(tmp_path / "other.db")
    shutil.copy(base_db, other)
    imported = _as(None, "waiver", "import", "--db", other, "--waiverdb", waiverdb, "--product-version", PRODUCT)
    assert imported.returncode == 0, imported.stderr
    assert "1 waivers imported, 0 revoked, 0 already stored" in imported.stderr
    (stored,) = json.loads(_kabigate("waiver", "list", "--db", other, "--json").stdout)["waivers"]
    assert {k: stored[k] for k in ("driver", "symbol", "kernel", "reason", "who", "source")} == {
        "driver": "acpi-call", "symbol": "*", "kernel": CANDIDATE, "reason": "bug 1234", "who": "jane@example.org",
        "source": "store#1 (WaiverDB 1)"}
    with resultsdb_server() as resultsdb:
        status, report = _gate(other, "--resultsdb", resultsdb)
        (result,) = ResultsDB.received
    assert status == 0 and _regression(report)["outcome"] == "INFO"
    assert result["data"]["waived_by"] == ["store#1 (WaiverDB 1)"]
    assert result["note"].endswith("waived by store#1 (WaiverDB 1)")
    # Revoked in kabigate: in WaiverDB too (a newer waiver of the same subject, waived false).
    revoked = _as("kabigate-bot", "waiver", "revoke", "1", "--db", db, "--waiverdb", waiverdb)
    assert revoked.returncode == 0 and "1 WaiverDB copies revoked" in revoked.stdout, revoked.stderr
    assert [(w["subject_identifier"], w["waived"]) for w in WaiverDB.stored] == [(_item(db, CANDIDATE), True),
                                                                                (_item(db, CANDIDATE), False)]


def test_a_waiver_written_in_waiverdb_forgives_its_kernel_until_waiverdb_revokes_it(db, waiverdb):
    waiver = {"subject_type": "koji_build", "subject_identifier": _item(db, CANDIDATE), "product_version": PRODUCT,
              "testcase": "kabigate.kernel-gate.functional", "comment": "known ABI break,\nsee bug 99"}
    post_waiver(waiverdb, "jane", waiver)
    post_waiver(waiverdb, "jane", dict(waiver, subject_identifier="kernel-9.9.9-1"))  # a kernel not in the store
    post_waiver(waiverdb, "jane", dict(waiver, testcase="another.testcase"))  # not the gate's
    # a kabigate mark edited into one that waives everything: refused, the others imported
    post_waiver(waiverdb, "jane", dict(waiver, subject_identifier="kernel-0",
                                       comment='x [kabigate driver="*" who="j"]'))
    imported = _as(None, "waiver", "import", "--db", db, "--waiverdb", waiverdb, "--json")
    assert imported.returncode == 0, imported.stderr
    document = json.loads(imported.stdout)
    (added,) = document["added"]
    assert document["items_not_stored"] == ["kernel-9.9.9-1"]
    assert document["refused"] == ["WaiverDB waiver 4: waives everything; name a driver, symbol or kernel pattern"]
    assert {k: added[k] for k in ("driver", "symbol", "kernel", "reason", "who")} == {
        "driver": "*", "symbol": "*", "kernel": CANDIDATE, "reason": "known ABI break, see bug 99", "who": "jane"}
    status, report = _gate(db)
    assert status == 0 and report["outcome"] == "INFO"
    post_waiver(waiverdb, "jane", dict(waiver, waived=False, comment="fixed after all"))
    revoked = _as(None, "waiver", "import", "--db", db, "--waiverdb", waiverdb, "--json")
    assert [w["id"] for w in json.loads(revoked.stdout)["revoked"]] == [added["id"]]
    status, report = _gate(db)
    assert status == 1 and _regression(report)["waivers"] == []


def test_a_gate_with_waiverdb_imports_its_waivers_first(db, waiverdb):
    """gate --waiverdb (and watch, which gates through the same code) imports before judging: a waiver
    written in WaiverDB since the last gate applies to the next, and its revocation likewise."""
    waiver = {"subject_type": "koji_build", "subject_identifier": _item(db, CANDIDATE), "product_version": PRODUCT,
              "testcase": "kabigate.kernel-gate.functional", "comment": "known ABI break"}
    post_waiver(waiverdb, "jane", dict(waiver, product_version="debian-13"))  # another product's: not imported
    status, report = _gate(db, "--waiverdb", waiverdb, "--product-version", PRODUCT)
    assert status == 1 and _regression(report)["waivers"] == []
    post_waiver(waiverdb, "jane", waiver)
    status, report = _gate(db, "--waiverdb", waiverdb, "--product-version", PRODUCT)
    assert status == 0 and report["outcome"] == "INFO"
    post_waiver(waiverdb, "jane", dict(waiver, waived=False, comment="fixed after all"))
    status, report = _gate(db, "--waiverdb", waiverdb, "--product-version", PRODUCT)
    assert status == 1 and _regression(report)["waivers"] == []
    refused = _kabigate("gate", "--candidate", CANDIDATE, "--db", db, "--product-version", PRODUCT)
    assert refused.returncode == 2 and "--product-version goes with --waiverdb" in refused.stderr


@pytest.mark.parametrize("hostile, message", [
    ("junk", "WaiverDB's answer is not JSON"),
    ("500", "WaiverDB refused the request: HTTP 500: <html><body>Internal Server Error"),
    ("huge", "cannot reach WaiverDB: answer larger than 1024 KiB"),
])
def test_hostile_waiverdb_answers_are_one_line_errors(db, waiverdb, hostile, message):
    WaiverDB.hostile = hostile
    for args in (["import"], ["add", "--driver", "acpi-call", "--kernel", CANDIDATE, "--reason", "r", "--who", "w",
                              "--product-version", PRODUCT]):
        result = _as("kabigate-bot", "waiver", *args, "--db", db, "--waiverdb", waiverdb)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    with Store.open(db) as store:
        assert store.waivers(include_revoked=True) == []


def test_waiverdb_refusals_are_one_line_errors_and_store_nothing(db, waiverdb):
    add = ["waiver", "add", "--db", db, "--driver", "acpi-call", "--reason", "r", "--who", "w", "--waiverdb",
           waiverdb]
    for user, args, message in [
            ("bot", ["--kernel", CANDIDATE], "give --product-version"),
            (None, ["--kernel", CANDIDATE, "--product-version", PRODUCT],
             "WaiverDB refused the request: HTTP 401: \"Unauthorized\""),
            ("bot", ["--kernel", "5.*", "--product-version", PRODUCT], "covers no stored kernel")]:
        result = _as(user, *add, *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert WaiverDB.stored == []
    with Store.open(db) as store:
        assert store.waivers(include_revoked=True) == []
