"""Managing a real store from the command line: removing kernels and drivers with what depends on
them, renaming streams, moving kernels, pruning; each one transaction, refusals one line and exit 2."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support.realstore import RELEASES, STREAM, build_store

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def built(testdata, tmp_path_factory) -> Path:
    return Path(build_store(testdata, tmp_path_factory.mktemp("upkeep") / "store.db"))


@pytest.fixture
def db(built, tmp_path) -> str:
    copy = tmp_path / "store.db"
    shutil.copy(built, copy)
    return str(copy)


def kabigate(db: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kabigate", "--db", db, *args], capture_output=True, text=True)


def as_json(db: str, *args: str):
    result = kabigate(db, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def rows(db: str, query: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query).fetchall()


def stream_positions(db: str, stream: str) -> dict[str, int]:
    return {kernel["release"]: place["position"] for kernel in as_json(db, "kernels")["kernels"]
            for place in kernel["streams"] if place["stream"] == stream}


def test_remove_kernel_takes_its_verdicts_and_renumbers_the_stream(db):
    as_json(db, "matrix")  # every verdict computed
    [kernel_id] = [r[0] for r in rows(db, f"select id from kernel where release = '{RELEASES[1]}'")]
    assert rows(db, f"select count(*) from verdict where kernel_id = {kernel_id}")[0][0] > 0
    report = as_json(db, "db", "remove-kernel", RELEASES[1])
    assert report["removed"]["kernels"] == 1 and report["removed"]["verdicts"] > 0
    assert rows(db, f"select count(*) from verdict where kernel_id = {kernel_id}") == [(0,)]
    assert stream_positions(db, STREAM) == {RELEASES[0]: 0, RELEASES[2]: 1}
    matrix = as_json(db, "matrix")
    assert RELEASES[1] not in json.dumps(matrix["kernels"])


def test_remove_driver_version_keeps_the_others(db):
    builds = as_json(db, "drivers")
    jool = [b for b in builds["builds"] if b["driver"] == "jool"]
    assert len(jool) == 2
    others = len(builds["builds"]) - 2
    removed = as_json(db, "db", "remove-driver", "jool")["removed"]
    assert removed["builds"] == 2 and removed["drivers"] == 1
    after = as_json(db, "drivers")
    assert len(after["builds"]) == others and all(b["driver"] != "jool" for b in after["builds"])
    assert rows(db, "select count(*) from driver where name = 'jool'") == [(0,)]
    # the modules only jool's builds held are left for prune, which removes exactly them
    before = rows(db, "select count(*) from module")[0][0]
    pruned = as_json(db, "db", "prune")["removed"]
    assert pruned["modules"] > 0
    assert rows(db, "select count(*) from module")[0][0] == before - pruned["modules"]
    assert rows(db, "select count(*) from module m where not exists "
                    "(select 1 from build_module b where b.module_id = m.id)") == [(0,)]


def test_prune_drops_verdicts_of_older_rules_only(db):
    as_json(db, "matrix")
    total = rows(db, "select count(*) from verdict")[0][0]
    with sqlite3.connect(db) as connection:  # as an older kabigate left them
        connection.execute("update verdict set rules_version = rules_version - 1 where build_id in "
                           "(select min(id) from driver_build)")
    old = rows(db, "select count(*) from verdict where rules_version < (select max(rules_version) from verdict)")[0][0]
    assert 0 < old < total
    assert as_json(db, "db", "prune")["removed"]["old verdicts"] == old
    assert rows(db, "select count(*) from verdict")[0][0] == total - old


def test_rename_stream_and_move_a_kernel(db):
    as_json(db, "db", "rename-stream", STREAM, "debian-12")
    assert stream_positions(db, "debian-12") == {release: i for i, release in enumerate(RELEASES)}
    as_json(db, "db", "move-kernel", RELEASES[2], "--from", "debian-12", "--to", "debian-12-next")
    assert stream_positions(db, "debian-12") == {RELEASES[0]: 0, RELEASES[1]: 1}
    assert stream_positions(db, "debian-12-next") == {RELEASES[2]: 0}


def test_an_alias_merges_a_driver_ingested_under_another_name_and_names_it_after(db, testdata):
    """A module tree ingests as its first module's name (acpi_call), the package as acpi-call: one driver."""
    entry = testdata.manifest["drivers"]["acpi-call"][RELEASES[0]]
    tree = str(testdata.root / entry["dir"])
    assert kabigate(db, "ingest", "drivers", tree, "--version", "9.9").returncode == 0
    assert {b["driver"] for b in as_json(db, "drivers")["builds"]} >= {"acpi-call", "acpi_call"}
    merged = as_json(db, "db", "alias-driver", "acpi-call", "acpi_call")
    assert merged == {"driver": "acpi-call", "alias": "acpi_call", "merged": {"builds": 1}}
    builds = [b for b in as_json(db, "drivers")["builds"] if b["driver"].startswith("acpi")]
    assert {(b["driver"], b["version"]) for b in builds} >= {("acpi-call", "9.9")}
    assert rows(db, "select count(*) from driver where name = 'acpi_call'") == [(0,)]
    assert "acpi-call is also named acpi_call" in kabigate(db, "drivers").stdout
    assert as_json(db, "drivers", "--driver", "acpi*")["aliases"] == {"acpi-call": ["acpi_call"]}
    assert as_json(db, "drivers", "--driver", "jool")["aliases"] == {}  # only the drivers shown
    # Named by its alias: ingests, history and removal go to the driver.
    assert kabigate(db, "ingest", "drivers", tree, "--name", "acpi_call", "--version", "9.10").returncode == 0
    assert {b["version"] for b in as_json(db, "drivers")["builds"] if b["driver"] == "acpi-call"} >= {"9.9", "9.10"}
    assert as_json(db, "history", "acpi_call")["driver"] == "acpi-call"
    assert as_json(db, "db", "remove-driver", "acpi_call", "--version", "9.10")["removed"]["builds"] == 1
    assert as_json(db, "db", "alias-driver", "acpi-call", "acpi_call")["merged"] == {}  # again: nothing to do
    # A package name given for a tree, or a failure, is the driver's one name; looked up by it too.
    assert kabigate(db, "ingest", "drivers", tree, "--name", "kmod-acpi-call", "--version", "9.11").returncode == 0
    assert kabigate(db, "ingest", "build-failure", "--name", "acpi-call-dkms", "--version", "9.12", "--kernel",
                    RELEASES[2], "--error", "no").returncode == 0
    drivers = as_json(db, "drivers")
    assert {b["driver"] for b in drivers["builds"] if b["version"] == "9.11"} == {"acpi-call"}
    assert {f["driver"] for f in drivers["build_failures"] if f["version"] == "9.12"} == {"acpi-call"}
    assert as_json(db, "history", "kmod-acpi-call")["driver"] == "acpi-call"
    assert as_json(db, "db", "remove-driver", "acpi-call")["removed"]["aliases"] == 1  # the driver goes


@pytest.mark.parametrize("args, message", [
    (["db", "alias-driver", "nosuch", "x"], "no driver 'nosuch' in the store"),
    (["db", "alias-driver", "jool", "jool"], "'jool' is the driver's own name"),
    (["db", "alias-driver", "jool", "../x"], "not usable in a URL or file name"),
    (["db", "remove-kernel", "9.9.9-1-amd64"], "no kernel '9.9.9-1-amd64' in the store"),
    (["db", "remove-driver", "nosuch"], "no driver 'nosuch' in the store"),
    (["db", "remove-driver", "jool", "--version", "0.0"], "no build of 'jool' version '0.0' in the store"),
    (["db", "rename-stream", "nosuch", "x"], "no stream 'nosuch' in the store"),
    (["db", "rename-stream", STREAM, "../x"], "not usable in a URL or file name"),
    (["db", "move-kernel", RELEASES[0], "--from", "nosuch", "--to", "x"], f"no kernel '{RELEASES[0]}' in stream"),
])
def test_refusals_are_one_line_and_change_nothing(db, args, message):
    before = rows(db, "select (select count(*) from kernel), (select count(*) from driver_build), "
                      "(select group_concat(name) from stream)")
    result = kabigate(db, *args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("kabigate: error: ") and message in line
    assert rows(db, "select (select count(*) from kernel), (select count(*) from driver_build), "
                    "(select group_concat(name) from stream)") == before


def test_a_long_lived_store_reads_a_build_anew_when_its_id_is_taken_again(db, testdata):
    """A worker keeps its Store across tasks, with the builds it has read. Another process removes
    the newest builds and ingests another: SQLite gives the new build a freed id, and the kept
    Store reads the new build's modules, not the old ones it remembers under that id."""
    from kabigate.inputs.modules import read_modules
    from kabigate.store import Store

    with Store.open(db) as kept:
        builds = kept.driver_builds()
        remembered = kept.load_builds([build.id for build in builds])
        newest = max(builds, key=lambda build: build.id)
        assert kept.load_build(newest.id) is remembered[newest.id]  # kept: not read again
        assert kabigate(db, "db", "remove-driver", newest.driver, "--version", newest.version).returncode == 0
        other = next(name for name in ("vpoll", "acpi-call") if name != newest.driver)
        folder = testdata.driver_dir(other, RELEASES[0])
        assert kabigate(db, "ingest", "drivers", "--name", "taken-again", "--version", "1", str(folder)).returncode == 0
        [again] = [build for build in kept.driver_builds() if build.driver == "taken-again"]
        assert again.id in remembered and remembered[again.id]  # an id SQLite gave again
        assert [m.path for m in kept.load_build(again.id)] == [m.path for m in read_modules([str(folder)])]
        assert kept.load_build(again.id) != remembered[again.id]
