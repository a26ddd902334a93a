"""The store under hostile conditions, on the real Debian kernels and drivers: parallel ingests that
share modules and exports (SQLite and PostgreSQL), a damaged SQLite file, a store from a newer
kabigate, and names that cannot be URL path segments or file names."""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.realstore import build_store

from kabigate.errors import InputError
from kabigate.inputs.modules import read_modules
from kabigate.services.ingest import DriverBuildInput, ingest_kernel, record_build_failure
from kabigate.store import Store
from kabigate.web import create_app

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]
RELEASES = ("6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64")
TOKEN = "hostile-store-token-7f3b"


def _kabigate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KABIGATE, *args], capture_output=True, text=True, check=False)


# -- parallel ingests ------------------------------------------------------------------------------

def test_parallel_first_commands_on_a_new_store_create_it_once(store_url):
    """Each ingest creates a missing store: six at once once gave "table ... already exists"
    tracebacks and "has tables but no kabigate schema revision"."""
    record = ["ingest", "build-failure", "--name", "jool", "--version", "1", "--kernel", "6.1.0-47-amd64",
              "--error", "jool.c:1:1: error: stop"]
    processes = [subprocess.Popen([*KABIGATE, *record, "--db", store_url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [(process.wait(timeout=300), *process.communicate()) for process in processes]
    assert [status for status, _, _ in results] == [0] * len(processes), results
    with Store.open(store_url) as store:
        assert store.revisions()[0] == store.revisions()[1]
        assert len(store.build_failures()) == 1


def test_read_commands_refuse_a_store_that_was_never_made(store_url):
    """A read command on an empty database (PostgreSQL's, or a missing SQLite file) creates nothing."""
    result = _kabigate("drivers", "--db", store_url)
    assert result.returncode == 2 and "no kabigate store here" in result.stderr, result.stderr
    if "://" in store_url:  # PostgreSQL: the database is there, still without a schema
        with Store.connect(store_url) as store:
            assert store.revisions()[0] is None
    else:
        assert not os.path.exists(store_url)


def test_parallel_ingests_sharing_modules_and_exports_all_succeed_and_store_each_once(store_url, testdata):
    """Six builds of the same three modules under six names and two kernels that share ~24,000
    exports, each ingested by its own process at once: once 3 of 4 such ingests failed on
    "UNIQUE constraint failed: module.digest". A stored kernel makes each ingest judge, so that
    their transactions overlap."""
    first = _kabigate("ingest", "kernel", "--stream", "debian-6.1", str(testdata.kernel_root("6.1.0-47-amd64")),
                      "--db", store_url)
    assert first.returncode == 0, first.stderr
    jool = str(testdata.driver_dir("jool", "6.1.0-47-amd64"))
    commands = [["ingest", "drivers", "--name", f"jool-{n}", "--version", "1", jool] for n in range(6)]
    commands += [["ingest", "kernel", "--stream", "debian-6.1", str(testdata.kernel_root(release))]
                 for release in ("6.1.0-56-amd64", "6.1.0-50-amd64")]
    processes = [subprocess.Popen([*KABIGATE, *command, "--db", store_url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for command in commands]
    results = [(process.wait(timeout=600), *process.communicate()) for process in processes]
    assert [status for status, _, _ in results] == [0] * len(commands), results
    modules = read_modules([jool])
    with Store.open(store_url) as store:
        counts = store.counts()
        assert counts["module"] == len(modules) and counts["driver_build"] == 6
        assert counts["module_import"] == sum(len({i.name for i in m.imports}) for m in modules)
        assert [(k.release, k.streams) for k in store.kernels("debian-6.1")] == [
            (release, (("debian-6.1", position),)) for position, release in enumerate(RELEASES)]


def test_an_sqlite_writer_waits_minutes_for_another_not_seconds(tmp_path):
    """A kernel ingest holds SQLite's one write lock while it judges every stored build: a second
    writer waits for it (busy_timeout) rather than failing with "database is locked"."""
    with Store.open(str(tmp_path / "store.db")) as store, store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 600_000


# -- damaged and newer stores ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_store(testdata, tmp_path_factory) -> Path:
    return Path(build_store(testdata, tmp_path_factory.mktemp("hostile") / "store.db", RELEASES[:2]))


@pytest.fixture
def db(base_store, tmp_path) -> Path:
    """A copy of the store for one test to damage."""
    return Path(shutil.copy(base_store, tmp_path / "store.db"))


def _damage_a_page(path: Path, table: str) -> int:
    """Random bytes over the second half of a middle leaf page of `table` (a bad sector, a torn
    copy); the page's number."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        pages = [page for (page,) in connection.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (table,))]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    page = pages[len(pages) // 2]
    with open(path, "r+b") as file:
        file.seek((page - 1) * page_size + page_size // 2)
        file.write(random.Random(1).randbytes(page_size // 2))
    return page


def test_a_damaged_sqlite_store_is_refused_by_every_command(db):
    """A damaged page of `symbol` made `gate` a KeyError traceback and `kernels`, `drivers` and
    `matrix` print from the damaged store without a word."""
    page = _damage_a_page(db, "symbol")
    for command in (["gate", "--candidate", "6.1.0-50-amd64"], ["kernels"], ["drivers"], ["matrix"],
                    ["history", "jool"], ["db", "status"], ["db", "upgrade"]):
        result = _kabigate(*command, "--db", str(db))
        assert result.returncode == 2 and result.stdout == "", (command, result)
        assert re.fullmatch(rf"kabigate: error: store sqlite:///{re.escape(str(db))} is damaged "
                            rf"\(quick_check: On tree page {page} cell \d+: [^\n]+\)\n",
                            result.stderr), (command, result.stderr)


@pytest.mark.parametrize("damage, message", [
    ("UPDATE verdict SET detail = flipped(detail)", "the store is damaged: a stored"),
    ("UPDATE export_set SET members = flipped(members)", "the store is damaged: a stored"),
    ("DELETE FROM export WHERE id = (SELECT max(id) FROM export)", "names 1 exports it does not hold"),
])
def test_damage_inside_rows_is_a_one_line_error(db, damage, message):
    """Damage quick_check cannot see (it checks pages, not the bytes of a row): compressed blobs
    with bytes changed were zstd tracebacks, a lost export a KeyError."""
    with sqlite3.connect(db) as connection:
        connection.create_function("flipped", 1, lambda blob: blob[:len(blob) // 2] + bytes(
            b ^ 0x5A for b in blob[len(blob) // 2:len(blob) // 2 + 8]) + blob[len(blob) // 2 + 8:])
        connection.execute(damage)
    result = _kabigate("gate", "--candidate", "6.1.0-50-amd64", "--db", str(db))
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result


def test_db_upgrade_of_a_store_from_a_newer_kabigate_is_a_one_line_error(store_url):
    with Store.open(store_url) as store, store.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    result = _kabigate("db", "upgrade", "--db", store_url)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "revision 0099, which this kabigate (revision 0013) does not know: it was written by a newer kabigate" \
        in result.stderr
    with Store.connect(store_url) as store:
        assert store.revisions()[0] == "0099"


# -- names that become URL path segments and file names --------------------------------------------

@pytest.mark.parametrize("name", ["a/b", "..", "acpi call", "x[/bold]", "café", "a" * 201])
def test_driver_and_stream_names_that_cannot_be_path_segments_are_refused_at_ingest(db, testdata, name):
    """A driver named "a/b" got a dashboard link (/drivers/a/b) that always 404s."""
    acpi = str(testdata.driver_dir("acpi-call", "6.1.0-47-amd64"))
    for command, what in ((["ingest", "drivers", "--name", name, acpi], "driver name"),
                          (["ingest", "kernel", "--stream", name, str(testdata.kernel_root("6.1.0-56-amd64"))],
                           "stream name"),
                          (["ingest", "build-failure", "--name", name, "--version", "1", "--kernel", "6.1.0-56-amd64",
                            "--error", "e"], "driver name")):
        result = _kabigate(*command, "--db", str(db))
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, (command, result)
        assert result.stderr.startswith(f"kabigate: error: {what} ") and "not usable in a URL or file name" \
            in result.stderr, result.stderr
    with Store.open(str(db)) as store:
        assert len(store.driver_builds()) == 10 and store.streams() == ["debian-6.1"] and store.build_failures() == []


def test_names_are_checked_in_the_service_for_every_edge(db, testdata):
    """The CLI, the API and the workers all ingest through services.ingest: a kernel release from
    a package's vermagic, a build named by its package and an API upload's name are checked there."""
    with Store.open(str(db)) as store:
        kernel = store.load_kernel(store.kernels()[0].id)
        for release in ("6.1.0-47/../../../etc", "../6.1.0-47-amd64", "6.1.0 47"):
            with pytest.raises(InputError, match=r"^kernel release .*: not usable in a URL or file name"):
                ingest_kernel(store, dataclasses.replace(kernel, release=release), "debian-6.1")
        with pytest.raises(InputError, match=r"^driver name '\.\./x': not usable"):
            DriverBuildInput("../x", [], "1", "../x", "x86_64", "rpm", "/srv/x.rpm")
        with pytest.raises(InputError, match=r"^kernel release '\.\.': not usable"):
            record_build_failure(store, "acpi-call", "1", "..", "does not build")
        assert len(store.kernels()) == 2 and store.build_failures() == []
    module = testdata.driver_dir("acpi-call", "6.1.0-47-amd64") / "acpi_call.ko"
    with TestClient(create_app(str(db), token=TOKEN)) as client:
        response = client.post("/api/v1/drivers", headers={"Authorization": f"Bearer {TOKEN}"},
                               data={"name": "acpi/call"}, files=[("files", ("acpi_call.ko", module.read_bytes()))])
        assert response.status_code == 400 and "driver name 'acpi/call': not usable" in response.json()["detail"]
        assert len(client.get("/api/v1/drivers").json()["builds"]) == 10
