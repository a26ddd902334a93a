"""The store under hostile conditions, on the real Debian kernels and drivers: parallel ingests that
share modules and exports (SQLite and PostgreSQL), a damaged SQLite file, a store from a newer
kabigate, and names that cannot be URL path segments or file names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kabigate.modules import read_modules
from kabigate.store import Store

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]
RELEASES = ("6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64")


def _kabigate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KABIGATE, *args], capture_output=True, text=True, check=False)


# -- parallel ingests ------------------------------------------------------------------------------

def test_parallel_first_commands_on_a_new_store_create_it_once(store_url):
    """Each store command creates a missing store: six at once once gave "table ... already exists"
    tracebacks and "has tables but no kabigate schema revision"."""
    processes = [subprocess.Popen([*KABIGATE, "drivers", "--db", store_url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [(process.wait(timeout=300), *process.communicate()) for process in processes]
    assert [status for status, _, _ in results] == [0] * len(processes), results
    with Store.open(store_url) as store:
        assert store.revisions()[0] == store.revisions()[1]


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
