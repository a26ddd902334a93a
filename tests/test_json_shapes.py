"""Every public JSON shape kabigate prints or serves, pinned: the CLI's `--json` reports and the
REST API's answers, made from the real store (tests/support/realstore.py), reduced to their shapes (keys,
value types, list element shapes) and compared with tests/snapshots/json_shapes.json.

A shape that changes on purpose is rewritten with KABIGATE_UPDATE_SNAPSHOTS=1 and said in the
README; one that changes by accident (a field renamed, dropped, or a type changed while code moves)
fails here. Values are the other tests' business."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from fastapi.testclient import TestClient
from support.realstore import RELEASES, STREAM, build_store
from support.resultsdb import resultsdb_server, waiverdb_server

from kabigate.web import create_app

pytestmark = pytest.mark.realdata
SNAPSHOTS = Path(__file__).parent / "snapshots" / "json_shapes.json"
UPDATE = os.environ.get("KABIGATE_UPDATE_SNAPSHOTS") == "1"
TOKEN = "shape-token-0b1c"

# Objects keyed by data (kernel releases, reason codes, symbols), not by field names: their keys
# become "*" and their values share one shape. Paths as shape_of() writes them.
MAPS = {
    "matrix": ["$.builds[].cells"],
    "history": ["$.streams[].builds[].breaks[].reasons"],
    "api drivers/NAME/history": ["$.streams[].builds[].breaks[].reasons"],
}


NULLABLE = "(null or)"  # an object or list that is sometimes null


def _type(value) -> str:
    return "null" if value is None else type(value).__name__


def _merge(a, b):
    """One shape covering both (None: nothing known yet): objects key by key, lists element by
    element, scalar types as a sorted union ("null|str")."""
    if a is None or b is None:
        return b if a is None else a
    if NULLABLE in (a if isinstance(a, dict) else ()) or NULLABLE in (b if isinstance(b, dict) else ()) \
            or "null" in (a, b) and (isinstance(a, dict | list) or isinstance(b, dict | list)):
        inner = [x[NULLABLE] if isinstance(x, dict) and NULLABLE in x else x for x in (a, b) if x != "null"]
        return {NULLABLE: _merge(inner[0], inner[1]) if len(inner) == 2 else inner[0]}
    if isinstance(a, dict) and isinstance(b, dict):
        return {key: _merge(a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys())}
    if isinstance(a, list) and isinstance(b, list):
        element = _merge(a[0] if a else None, b[0] if b else None)
        return [element] if element is not None else []
    if isinstance(a, str) and isinstance(b, str):
        return "|".join(sorted(set(a.split("|")) | set(b.split("|"))))
    raise AssertionError(f"a value is sometimes a container, sometimes not: {a!r} / {b!r}")


def shape_of(value, maps: list[str] = (), path: str = "$"):
    if isinstance(value, dict):
        if path in maps:
            merged = None
            for item in value.values():
                merged = _merge(merged, shape_of(item, maps, path + ".*"))
            return {"*": merged} if value else {}
        return {key: shape_of(item, maps, f"{path}.{key}") for key, item in sorted(value.items())}
    if isinstance(value, list):
        merged = None
        for item in value:
            merged = _merge(merged, shape_of(item, maps, path + "[]"))
        return [merged] if merged is not None else []
    return _type(value)


@pytest.fixture(scope="module")
def snapshots():
    known = json.loads(SNAPSHOTS.read_text()) if SNAPSHOTS.is_file() else {}
    seen: dict = {}
    yield known, seen
    if UPDATE:
        SNAPSHOTS.parent.mkdir(exist_ok=True)
        SNAPSHOTS.write_text(json.dumps({**known, **seen}, indent=1, sort_keys=True) + "\n")


def pin(snapshots, name: str, document) -> None:
    known, seen = snapshots
    shape = shape_of(document, MAPS.get(name, []))
    seen[name] = shape
    if not UPDATE:
        assert name in known, f"no snapshot of {name!r}: run with KABIGATE_UPDATE_SNAPSHOTS=1"
        assert shape == known[name], f"the JSON shape of {name!r} changed"


@pytest.fixture(scope="module", autouse=True)
def explain_cache(tmp_path_factory):
    """A cache of this module's own: a matrix cell or verdict carries `causes` when the cache holds its
    kernels' types, which the gate puts there, so the shapes depend on what ran before."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KABIGATE_CACHE", str(tmp_path_factory.mktemp("explain-cache")))
        yield


@pytest.fixture(scope="module")
def store(testdata, tmp_path_factory):
    return build_store(testdata, tmp_path_factory.mktemp("shapes") / "store.db")


def kabigate(*args, expect: tuple[int, ...] = (0,)) -> object:
    result = subprocess.run([sys.executable, "-m", "kabigate", *map(str, args)], check=False, capture_output=True,
                            text=True)
    assert result.returncode in expect, result.stderr
    return json.loads(result.stdout)


def test_module_reports(testdata, snapshots):
    kernel = testdata.kernel_root(RELEASES[2])
    old_build = testdata.driver_dir("acpi-call", RELEASES[0])
    pin(snapshots, "inspect", kabigate("inspect", "--json", old_build))
    pin(snapshots, "check", kabigate("check", "--json", "-k", kernel, old_build, expect=(1,)))
    pin(snapshots, "diff", kabigate("diff", "--json", "--no-explain", testdata.kernel_root(RELEASES[1]), kernel,
                                    expect=(1,)))


def test_store_reports(store, testdata, tmp_path, snapshots):
    pin(snapshots, "matrix", kabigate("matrix", "--db", store, "--format", "json"))  # no causes cached
    pin(snapshots, "matrix --packages", kabigate("matrix", "--db", store, "--packages", "--format", "json"))
    pin(snapshots, "history", kabigate("history", "acpi-call", "--db", store, "--json"))
    pin(snapshots, "kernels", kabigate("kernels", "--db", store, "--json"))
    pin(snapshots, "drivers", kabigate("drivers", "--db", store, "--json"))
    pin(snapshots, "db status", kabigate("db", "status", "--db", store, "--json"))
    stablelist = tmp_path / "stablelist"
    stablelist.write_text("proc_create\nkmalloc_trace\n")
    pin(snapshots, "stablelist demand", kabigate("stablelist", "demand", "--db", store, "--stablelist", stablelist,
                                                 "--json"))


def test_gate_report(store, tmp_path, snapshots):
    copy = tmp_path / "store.db"
    copy.write_bytes(Path(store).read_bytes())
    waivers = tmp_path / "waivers.toml"
    waivers.write_text('[[waiver]]\ndriver = "acpi-call"\nsymbol = "proc_*"\nreason = "r"\nwho = "w@example.org"\n'
                       'expires = 2020-01-01\n[[waiver]]\ndriver = "jool"\nreason = "r"\nwho = "w@example.org"\n')
    # 50 against 47: regressions with causes, a waived one and an expired waiver
    report = kabigate("gate", "--db", copy, "--candidate", RELEASES[1], "--stream", STREAM, "--waivers", waivers,
                      "--json", expect=(1,))
    pin(snapshots, "gate", report)
    with resultsdb_server() as resultsdb:
        pin(snapshots, "gate --publish", kabigate("gate", "--db", copy, "--publish", report["run"], "--resultsdb",
                                                  resultsdb, "--json"))
    pin(snapshots, "matrix, causes cached", kabigate("matrix", "--db", copy, "--format", "json"))  # by the gate
    pin(snapshots, "waiver add", kabigate("waiver", "add", "--db", copy, "--driver", "dahdi", "--reason", "r",
                                          "--who", "w@example.org", "--json"))
    pin(snapshots, "waiver list", kabigate("waiver", "list", "--db", copy, "--all", "--json"))
    pin(snapshots, "subscribe add", kabigate("subscribe", "add", "--db", copy, "--package", "jool", "--webhook",
                                             "https://ci.example.org/hook", "--secret", "0123456789abcdef",
                                             "--owner", "ci", "--json"))
    pin(snapshots, "subscribe list", kabigate("subscribe", "list", "--db", copy, "--json"))
    other = tmp_path / "other.db"
    other.write_bytes(Path(store).read_bytes())
    with waiverdb_server() as waiverdb, pytest.MonkeyPatch.context() as patch:
        patch.setenv("KABIGATE_WAIVERDB_TOKEN", "kabigate-bot")
        pin(snapshots, "waiver add --waiverdb", kabigate(
            "waiver", "add", "--db", copy, "--driver", "jool", "--kernel", RELEASES[1], "--reason", "r", "--who",
            "w@example.org", "--waiverdb", waiverdb, "--product-version", "debian-12", "--json"))
        pin(snapshots, "waiver import", kabigate("waiver", "import", "--db", other, "--waiverdb", waiverdb, "--json"))


def declared(app, method: str, path: str, status: int, document) -> None:
    """`document` is what the OpenAPI schema declares `method path` answers with `status`
    (web/schemas.py's models), so a model that drifts from the real reply fails here too."""
    openapi = app.openapi()
    [operation] = [operations[method.lower()] for template, operations in openapi["paths"].items()
                   if method.lower() in operations and re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", template), path)]
    schema = operation["responses"][str(status)]["content"]["application/json"]
    jsonschema.validate(document, {**schema["schema"], "components": openapi["components"]},
                        cls=jsonschema.Draft202012Validator)


def test_api(store, tmp_path, snapshots):
    copy = tmp_path / "store.db"
    copy.write_bytes(Path(store).read_bytes())
    stablelist = tmp_path / "stablelist"
    stablelist.write_text("proc_create\nkmalloc_trace\n")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # the server never decompresses a kernel: the CLI's gate puts 47 -> 50's types in the cache, so
    # that the API's answers carry the causes whether or not test_gate_report ran first
    kabigate("gate", "--db", copy, "--candidate", RELEASES[1], "--stream", STREAM, "--json", expect=(1,))
    with TestClient(create_app(str(copy), token=TOKEN, stablelist_path=str(stablelist))) as client:
        def get(url: str, **params):
            answer = client.get(f"/api/v1/{url}", params=params)
            assert answer.status_code == 200, answer.text
            declared(client.app, "GET", f"/api/v1/{url}", 200, answer.json())
            return answer.json()

        report = client.post("/api/v1/gate", json={"candidate": RELEASES[1]}, headers=auth)
        declared(client.app, "POST", "/api/v1/gate", report.status_code, report.json())
        pin(snapshots, "api POST gate", report.json())
        waiver = client.post("/api/v1/waivers", json={"driver": "dahdi", "reason": "r", "who": "w@example.org"},
                             headers=auth)
        declared(client.app, "POST", "/api/v1/waivers", waiver.status_code, waiver.json())
        pin(snapshots, "api POST waivers", waiver.json())
        subscription = client.post("/api/v1/subscriptions", json={"owner": "me", "package": "jool",
                                                                  "email": "me@example.org"}, headers=auth)
        declared(client.app, "POST", "/api/v1/subscriptions", subscription.status_code, subscription.json())
        pin(snapshots, "api POST subscriptions", subscription.json())
        subscriptions = client.get("/api/v1/subscriptions", headers=auth)
        declared(client.app, "GET", "/api/v1/subscriptions", subscriptions.status_code, subscriptions.json())
        pin(snapshots, "api subscriptions", subscriptions.json())
        matrix = get("matrix", stream=STREAM)
        build = next(b for b in matrix["builds"] if b["driver"] == "acpi-call" and b["built_for"] == RELEASES[0])
        kernel = next(k for k in matrix["kernels"] if k["release"] == RELEASES[1])
        for name, url in [("streams", "streams"), ("kernels", "kernels"), ("kernels/RELEASE", f"kernels/{RELEASES[1]}"),
                          ("kernels/RELEASE/changes", f"kernels/{RELEASES[1]}/changes"), ("drivers", "drivers"),
                          ("drivers/NAME/history", "drivers/acpi-call/history"), ("matrix", "matrix"),
                          ("verdicts/BUILD/KERNEL", f"verdicts/{build['id']}/{kernel['id']}"),
                          ("gate-runs", "gate-runs"), ("gate-runs/UUID", f"gate-runs/{report.json()['run']}"),
                          ("demand", "demand"), ("waivers", "waivers"), ("packages", "packages"),
                          ("overview", "overview"), ("symbols/NAME", "symbols/proc_create")]:
            pin(snapshots, f"api {name}", get(url))
        pin(snapshots, "api search", get("search", q="proc"))
        queued = client.post("/api/v1/explanations", json={"old": RELEASES[0], "new": RELEASES[1],
                                                           "symbols": ["proc_create"]}, headers=auth)
        declared(client.app, "POST", "/api/v1/explanations", queued.status_code, queued.json())
        pin(snapshots, "api POST explanations", queued.json())
        deadline = time.monotonic() + 300
        while (task := get(f"tasks/{queued.json()['key']}"))["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, task
            time.sleep(0.2)
        pin(snapshots, "api tasks/KEY", task)


def test_build_reports(testdata, tmp_path, snapshots):
    db = tmp_path / "built.db"
    tree = testdata.root / testdata.manifest["build_kernels"][RELEASES[0]]["root"]
    (deb,) = (testdata.root / "debs").glob("vpoll-dkms_*.deb")
    pin(snapshots, "build", kabigate("build", "--json", "-k", tree, deb, "--db", db))
    new = testdata.root / testdata.manifest["build_kernels"]["6.12.107+deb12-amd64"]["root"]
    pin(snapshots, "build (failed)", kabigate("build", "--json", "-k", new, deb, "--db", db, expect=(1,)))
