"""The store on SQLite and on a real PostgreSQL server: schema and migrations, round trips of real
kernels and drivers, idempotent ingest, stream order, verdicts equal to `kabigate check`,
recomputation after a rules change, and a store left whole by SIGKILL mid-ingest."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import find_module_files, read_modules
from kabigate.rules import RULES_VERSION
from kabigate.services import ingest as ingest_service
from kabigate.services.ingest import DriverBuildInput, ingest_driver_build, ingest_kernel, read_driver_builds
from kabigate.services.matrix import build_matrix, driver_history
from kabigate.store import Store, StoreError, flavor_of, version_key
from kabigate.store import schema as t
from kabigate.store.base import BULK

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]
RELEASES = ("6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64")
@pytest.fixture(scope="session")
def kernels(testdata):
    return {release: load_kernel([str(testdata.kernel_root(release))]) for release in RELEASES}


def _builds(testdata, driver, built_for):
    return read_driver_builds([str(testdata.driver_dir(driver, built_for))], driver,
                              testdata.manifest["drivers"][driver][built_for]["version"])


def _snapshot(store: Store) -> dict:
    """The store's content by natural keys (ids differ between two stores holding the same facts)."""
    kernels = {k.id: k.release for k in store.kernels()}
    builds = {b.id: (b.driver, b.version, b.built_for) for b in store.driver_builds()}
    cells = store.cells(RULES_VERSION)
    return {
        "kernels": sorted((k.release, k.exports, k.streams, k.vermagic, k.module_layout_crc) for k in store.kernels()),
        "exports": {k.release: sorted(store.load_kernel(k.id).exports.values(), key=lambda e: e.name)
                    for k in store.kernels()},
        "builds": sorted((b.driver, b.version, b.built_for, b.modules) for b in store.driver_builds()),
        "imports": sorted((builds[b], symbol, crc) for b, symbol, crc in store.imports_of(sorted(builds))),
        "cells": sorted((builds[b], kernels[k], c.loads, c.first_reason, c.failing_symbols)
                        for (b, k), c in cells.items()),
        "details": sorted((builds[b], kernels[k], json.dumps(store.verdict_detail(b, k))) for b, k in cells),
    }


# -- schema ------------------------------------------------------------------------------------

def test_a_new_store_gets_the_schema_the_code_queries(store_url):
    with Store.open(store_url) as store:
        current, head = store.revisions()
        assert current == head
        with store.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), t.metadata) == []


def test_an_old_store_is_refused_then_upgraded_with_its_data(store_url, kernels):
    with Store.open(store_url) as store:
        from alembic import command

        with store.transaction():
            store.add_kernel(kernels["6.1.0-47-amd64"], "debian-6.1")
        # taken back to revision 0001 with its data, as a kabigate of that revision left it
        config = store._alembic_config()
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0001")
        head = store.revisions()[1]
    with pytest.raises(StoreError, match="revision 0001.*kabigate db upgrade"):
        Store.open(store_url)
    result = subprocess.run([*KABIGATE, "db", "upgrade", "--db", store_url],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert f"revision {head} (was 0001)" in result.stdout
    with Store.open(store_url) as store:
        assert [k.release for k in store.kernels("debian-6.1")] == ["6.1.0-47-amd64"]
        assert store.load_kernel(store.kernels()[0].id).exports == kernels["6.1.0-47-amd64"].exports
        assert store.build_failures() == []


def test_a_store_from_a_newer_kabigate_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url) as store, store.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(StoreError, match="newer kabigate"):
        Store.open(url)


@pytest.mark.parametrize("location, message", [
    ("mysql://user@localhost/db", "SQLite or PostgreSQL, not mysql"),
    ("postgresql://nobody@/nothing?host=/nonexistent", "cannot open the database"),
    ("not a url://", "not a database URL"),
])
def test_bad_store_locations_are_one_line_errors(location, message, tmp_path):
    result = subprocess.run([*KABIGATE, "kernels", "--db", location], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_file_that_is_not_a_database_is_an_input_error(tmp_path):
    bogus = tmp_path / "store.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    result = subprocess.run([*KABIGATE, "kernels", "--db", str(bogus)], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "file is not a database" in result.stderr and "Traceback" not in result.stderr


# -- kernels and builds --------------------------------------------------------------------------

def test_kernels_and_builds_round_trip(store_url, kernels, testdata):
    built = _builds(testdata, "jool", "6.1.0-47-amd64")[0]
    with Store.open(store_url) as store:
        with store.transaction():
            record, created = store.add_kernel(kernels["6.1.0-56-amd64"], "debian-6.1")
            build, build_created = store.add_driver_build(built.driver, built.modules, version=built.version,
                                                          package=None, arch="x86_64", format="tree",
                                                          source=built.source)
        assert created and build_created
        stored = store.load_kernel(record.id)
        original = kernels["6.1.0-56-amd64"]
        assert (stored.release, stored.vermagic, stored.machine, stored.config) == \
               (original.release, original.vermagic, original.machine, original.config)
        assert stored.exports == original.exports
        assert record.module_layout_crc == original.exports["module_layout"].crc
        assert record.flavor == "amd64" and record.exports == len(original.exports)
        assert store.load_build(build.id) == built.modules
        assert build.built_for == "6.1.0-47-amd64" and len(build.modules) == 3
        assert build == store.driver_build(build.id)  # the record made without reading it back


def test_ingesting_the_same_content_again_changes_nothing(store_url, kernels, testdata):
    with Store.open(store_url) as store:
        ingest_kernel(store, kernels["6.1.0-47-amd64"], "debian-6.1")
        for build in _builds(testdata, "acpi-call", "6.1.0-47-amd64"):
            ingest_driver_build(store, build)
        before = store.counts()
        again = ingest_kernel(store, kernels["6.1.0-47-amd64"], "debian-6.1")
        assert not again.created and again.verdicts == 0
        for build in _builds(testdata, "acpi-call", "6.1.0-47-amd64"):
            assert not ingest_driver_build(store, build).created
        assert store.counts() == before


def test_kernels_share_export_rows(store_url, kernels):
    """The rt and generic 6.1.0-47 kernels differ in few exports: the second adds only those."""
    with Store.open(store_url) as store:
        with store.transaction():
            store.add_kernel(kernels["6.1.0-47-amd64"])
        first = store.counts()["export"]
        rt = load_kernel([str(kernels["6.1.0-47-amd64"].sources[0]).replace("-amd64", "-rt-amd64")])
        with store.transaction():
            store.add_kernel(rt)
        shared = sum(1 for name, e in rt.exports.items() if kernels["6.1.0-47-amd64"].exports.get(name) == e)
        assert store.counts()["export"] == first + len(rt.exports) - shared
        assert store.counts()["export_set"] == 2


def test_streams_are_kept_in_version_order_whatever_the_ingest_order(store_url, kernels):
    with Store.open(store_url) as store:
        for release in ("6.1.0-56-amd64", "6.1.0-47-amd64", "6.1.0-50-amd64"):
            ingest_kernel(store, kernels[release], "debian-6.1")
        ingest_kernel(store, kernels["6.1.0-50-amd64"], "other")
        assert [k.release for k in store.kernels("debian-6.1")] == list(RELEASES)
        assert [k.release for k in store.kernels("other")] == ["6.1.0-50-amd64"]
        assert dict(store.kernels("other")[0].streams) == {"debian-6.1": 1, "other": 0}


def test_version_order_and_flavors():
    assert sorted(["6.1.0-9-amd64", "6.1.0-47-amd64", "6.1.0-10-amd64"], key=version_key) == \
           ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-47-amd64"]
    assert sorted(["5.14.0-427.40.1.el9_4", "5.14.0-427.31.1.el9_4", "5.14.0-427.el9"], key=version_key) == \
           ["5.14.0-427.el9", "5.14.0-427.31.1.el9_4", "5.14.0-427.40.1.el9_4"]
    assert sorted(["6.12.117-1~deb12u1", "6.12.107-1~deb12u1", "6.12.11-1~deb12u1"], key=version_key) == \
           ["6.12.11-1~deb12u1", "6.12.107-1~deb12u1", "6.12.117-1~deb12u1"]
    assert [flavor_of(r) for r in ("6.1.0-47-rt-amd64", "6.12.107+deb12-cloud-amd64", "6.1.0-47-amd64",
                                   "5.14.0-427.el9.x86_64+rt", "5.14.0-427.el9.x86_64")] == \
           ["rt-amd64", "cloud-amd64", "amd64", "rt", "default"]


# -- verdicts -------------------------------------------------------------------------------------

def test_stored_verdicts_equal_kabigate_check_cell_for_cell(tmp_path, testdata):
    """Every driver build x kernel of the corpus: the stored cell and its reasons are what
    `kabigate check --json` says on the same files."""
    db = str(tmp_path / "store.db")
    kernel_paths = {release: str(testdata.kernel_root(release)) for release in RELEASES}
    subprocess.run([*KABIGATE, "ingest", "kernel", "--db", db, "--stream", "debian-6.1", *kernel_paths.values()],
                   check=True, capture_output=True)
    build_dirs = {(driver, built_for): str(testdata.root / entry["dir"])
                  for driver, builds in testdata.manifest["drivers"].items() for built_for, entry in builds.items()}
    manifest = tmp_path / "builds.toml"  # every build in one run (ingest drivers --manifest)
    manifest.write_text("".join(f"[[build]]\npath = {json.dumps(path)}\nname = {json.dumps(driver)}\n"
                                f"version = {json.dumps(testdata.manifest['drivers'][driver][built_for]['version'])}\n"
                                for (driver, built_for), path in build_dirs.items()))
    subprocess.run([*KABIGATE, "ingest", "drivers", "--db", db, "--manifest", str(manifest)],
                   check=True, capture_output=True)
    matrix = json.loads(subprocess.run([*KABIGATE, "matrix", "--db", db, "--json"], check=True,
                                       capture_output=True, text=True).stdout)
    with Store.open(db) as store:
        records = {(b.driver, b.built_for): b for b in store.driver_builds()}
        kernels = {k.release: k for k in store.kernels()}
        compared = 0
        for build in matrix["builds"]:
            for release, cell in build["cells"].items():
                check = subprocess.run([*KABIGATE, "check", "--json", "-k", kernel_paths[release],
                                        build_dirs[(build["driver"], build["built_for"])]],
                                       capture_output=True, text=True, check=False)
                reported = json.loads(check.stdout)["modules"]
                assert cell["loads"] == (check.returncode == 0) == all(m["verdict"] == "loads" for m in reported)
                detail = store.verdict_detail(records[(build["driver"], build["built_for"])].id,
                                              kernels[release].id)
                assert detail == reported
                compared += 1
    assert compared == len(build_dirs) * len(RELEASES) >= 30


def test_kmod_rpms_of_a_yum_repository_are_builds_judged_like_check_judges_them(tmp_path, testdata):
    """Kernel from kernel-core + kernel-devel RPMs, drivers from a createrepo_c repository of kmod
    RPMs (ELRepo layout): each package is one build of format rpm, and its stored verdict is what
    `kabigate check` says of the same packages."""
    from support import packaging as rpm_fixtures

    if not rpm_fixtures.available():
        pytest.skip("rpmbuild/createrepo_c missing (scripts/bootstrap installs them)")
    # The packages test_packages.py builds (cached once for both).
    rpms = rpm_fixtures.build_packages(testdata, "6.1.0-47-amd64", {"acpi-call": "6.1.0-47-amd64",
                                                                     "jool": "6.1.0-47-amd64",
                                                                     "v4l2loopback": "6.1.0-56-amd64"})
    kernel = ",".join(str(p) for p in sorted((rpms / "kernel").glob("kernel-*.rpm")))
    db = str(tmp_path / "store.db")
    subprocess.run([*KABIGATE, "ingest", "kernel", "--db", db, "--stream", "el-test", kernel], check=True,
                   capture_output=True)
    subprocess.run([*KABIGATE, "ingest", "drivers", "--db", db, str(rpms / "kmods")], check=True, capture_output=True)
    with Store.open(db) as store:
        builds = store.driver_builds()
        assert sorted(b.package for b in builds) == ["kmod-acpi-call", "kmod-jool", "kmod-v4l2loopback"]
        assert {b.format for b in builds} == {"rpm"} and all(b.version for b in builds)
        (kernel_record,) = store.kernels("el-test")
        for build in builds:
            check = subprocess.run([*KABIGATE, "check", "--json", *(f"-k{p}" for p in kernel.split(",")),
                                    build.source], capture_output=True, text=True, check=False)
            assert store.verdict_detail(build.id, kernel_record.id) == json.loads(check.stdout)["modules"]
            assert store.cells(RULES_VERSION)[(build.id, kernel_record.id)].loads == (check.returncode == 0)


def test_a_rules_change_recomputes_stored_verdicts(store_url, kernels, testdata, monkeypatch):
    with Store.open(store_url) as store:
        for release in RELEASES[:2]:
            ingest_kernel(store, kernels[release], "debian-6.1")
        for build in _builds(testdata, "v4l2loopback", "6.1.0-47-amd64"):
            ingest_driver_build(store, build)
        before = {key: (c.loads, c.first_reason) for key, c in store.cells(RULES_VERSION).items()}
        monkeypatch.setattr(ingest_service, "RULES_VERSION", RULES_VERSION + 1)
        monkeypatch.setattr("kabigate.services.matrix.RULES_VERSION", RULES_VERSION + 1)
        matrix = build_matrix(store)
        assert {key: (c.loads, c.first_reason) for key, c in matrix.cells.items()} == before
        assert {c.rules_version for c in matrix.cells.values()} == {RULES_VERSION + 1}
        assert store.cells(RULES_VERSION) == {}


def test_bulk_rows_make_the_same_store_on_both_backends(tmp_path, new_database, kernels, testdata, monkeypatch):
    """From BULK rows on, PostgreSQL gets them by COPY (a kernel's symbols and exports, a package's
    modules and imports, the verdicts of a kernel on every build, upserted again after a rules
    change), fewer by one INSERT from arrays (each one-module build's imports): the same store as
    SQLite's row by row."""
    tree = testdata.kernel_root(RELEASES[0]) / "lib" / "modules" / RELEASES[0] / "kernel"
    modules = read_modules(find_module_files([str(tree)])[:2 * BULK + 10])
    builds = [DriverBuildInput("bulk", modules[:BULK + 10], "1", "bulk", "x86_64", "tree", "/bulk")]
    builds += [DriverBuildInput(f"drv-{n}", [dataclasses.replace(m, path=f"/drv-{n}.ko")], "1", None, "x86_64",
                                "tree", f"/drv-{n}") for n, m in enumerate(modules[BULK + 10:])]
    stores = {}
    for name, url in (("sqlite", f"sqlite:///{tmp_path / 'store.db'}"), ("postgresql", new_database("bulk"))):
        with Store.open(url) as store:
            for build in builds:
                ingest_driver_build(store, build)
            for release in RELEASES:
                ingest_kernel(store, kernels[release], "debian-6.1")
            before = _snapshot(store)
            with monkeypatch.context() as patch:
                patch.setattr(ingest_service, "RULES_VERSION", RULES_VERSION + 1)
                patch.setattr("kabigate.services.matrix.RULES_VERSION", RULES_VERSION + 1)
                matrix = build_matrix(store)
            kernel_names = {k.id: k.release for k in matrix.kernels}
            build_names = {b.id: (b.driver, b.version) for b in matrix.builds}
            after = sorted((build_names[b], kernel_names[k], c.rules_version, c.loads, c.first_reason)
                           for (b, k), c in matrix.cells.items())
            stores[name] = before, after, store.counts(["module", "module_import", "verdict"])
    assert stores["sqlite"] == stores["postgresql"]
    counts = stores["sqlite"][2]
    assert counts["module"] == 2 * BULK + 10 and counts["module_import"] > BULK and counts["verdict"] == 3 * 201
    assert {cell[2] for cell in stores["sqlite"][1]} == {RULES_VERSION + 1}


def test_history_names_the_break_and_the_build_that_loads_again(store_url, kernels, testdata):
    with Store.open(store_url) as store:
        for release in RELEASES:
            ingest_kernel(store, kernels[release], "debian-6.1")
        for built_for in ("6.1.0-47-amd64", "6.1.0-56-amd64"):
            for build in _builds(testdata, "acpi-call", built_for):
                ingest_driver_build(store, build)
        (stream,) = driver_history(store, "acpi-call")
        old, new = stream.builds
        assert old.build.built_for == "6.1.0-47-amd64"
        assert [k.release for k in old.loads_on] == ["6.1.0-47-amd64"]
        (brk,) = old.breaks
        assert brk.kernel.release == "6.1.0-50-amd64" and brk.last_loading.release == "6.1.0-47-amd64"
        assert brk.reasons["module-layout-mismatch"] == 1 and brk.reasons["crc-mismatch"] >= 1
        assert "proc_create" in brk.symbols
        assert brk.fixed_by == []  # nothing stored loads on 50
        assert [k.release for k in new.loads_on] == ["6.1.0-56-amd64"] and new.breaks == []
    text = subprocess.run([*KABIGATE, "history", "acpi-call", "--db", store_url],
                          capture_output=True, text=True, check=False)
    assert "breaks at 6.1.0-50-amd64" in text.stdout and "module-layout-mismatch" in text.stdout


def test_matrix_formats(tmp_path, kernels, testdata):
    db = str(tmp_path / "store.db")
    with Store.open(db) as store:
        for release in RELEASES:
            ingest_kernel(store, kernels[release], "debian-6.1")
        for built_for in ("6.1.0-47-amd64", "6.1.0-56-amd64"):
            for build in _builds(testdata, "jool", built_for):
                ingest_driver_build(store, build)
    rows = list(csv.reader(subprocess.run([*KABIGATE, "matrix", "--db", db, "--format", "csv"], check=True,
                                          capture_output=True, text=True).stdout.splitlines()))
    assert rows[0] == ["driver", "version", "built_for", *RELEASES]
    (row_47,) = [row for row in rows[1:] if row[2] == "6.1.0-47-amd64"]
    assert row_47[:4] == ["jool", "4.1.9-1", "6.1.0-47-amd64", "loads"]
    assert row_47[4].startswith("fails:module-layout-mismatch:")
    page = tmp_path / "matrix.html"
    subprocess.run([*KABIGATE, "matrix", "--db", db, "--format", "html", "-o", str(page)], check=True,
                   capture_output=True)
    html = page.read_text()
    assert "6.1.0-50-amd64" in html and "jool" in html and "disagrees about version of symbol" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    table = subprocess.run([*KABIGATE, "matrix", "--db", db, "--since", "6.1.0-50-amd64"], check=True,
                           capture_output=True, text=True).stdout
    assert "50=6.1.0-50-amd64" in table and "47=" not in table


def test_a_failing_ingest_leaves_the_store_as_it_was(store_url, kernels, testdata, monkeypatch):
    with Store.open(store_url) as store:
        for build in _builds(testdata, "acpi-call", "6.1.0-47-amd64"):
            ingest_driver_build(store, build)
        before = store.counts()

        def judging_fails(*_args):
            raise RuntimeError("judging failed")

        monkeypatch.setattr(ingest_service, "check_modules", judging_fails)
        with pytest.raises(RuntimeError, match="judging failed"):
            ingest_kernel(store, kernels["6.1.0-47-amd64"], "debian-6.1")
        assert store.counts() == before and store.kernels() == []
        monkeypatch.undo()
        result = ingest_kernel(store, kernels["6.1.0-47-amd64"], "debian-6.1")
        assert result.created and result.verdicts == 1
        assert store.cells(RULES_VERSION)[(store.driver_builds()[0].id, result.record.id)].loads


# -- crash safety -----------------------------------------------------------------------------------

def test_an_ingest_killed_mid_way_then_rerun_gives_the_same_store(tmp_path, testdata):
    kernel_args = [str(testdata.kernel_root(release)) for release in RELEASES]
    driver_args = [str(testdata.driver_dir(driver, "6.1.0-47-amd64")) for driver in ("jool", "dahdi")]

    def ingest(db, *, kill_after=None):
        for command in (["ingest", "drivers", "--db", db, *driver_args],
                        ["ingest", "kernel", "--db", db, "--stream", "debian-6.1", *kernel_args]):
            process = subprocess.Popen([*KABIGATE, *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if kill_after is not None:
                time.sleep(kill_after)
                process.send_signal(signal.SIGKILL)
            process.wait()

    reference = str(tmp_path / "reference.db")
    ingest(reference)
    killed = str(tmp_path / "killed.db")
    stored_after_kill = []
    for delay in (0.8, 1.6, 2.4, 3.2):
        ingest(killed, kill_after=delay)
        with Store.open(killed) as store:
            stored_after_kill.append(store.counts()["kernel"])
    assert min(stored_after_kill) < len(RELEASES)  # some kill did land mid-way
    ingest(killed)
    with Store.open(reference) as expected, Store.open(killed) as store:
        assert _snapshot(store) == _snapshot(expected)
        assert store.counts() == expected.counts()
    assert not [name for name in os.listdir(tmp_path) if name.endswith("-journal")]


def test_modules_read_back_equal_modules_read_from_files(tmp_path, testdata):
    """Every module of every driver of the corpus survives the store unchanged: as the ingest judges it
    (kept from the ingest) and as read back by another process."""
    read = {}
    with Store.open(str(tmp_path / "store.db")) as store:
        for driver, builds in testdata.manifest["drivers"].items():
            for built_for in builds:
                for build in _builds(testdata, driver, built_for):
                    record = ingest_driver_build(store, build).record
                    read[record.id] = read_modules([build.source])
                    assert store.load_build(record.id) == read[record.id]
    with Store.open(str(tmp_path / "store.db")) as store:
        assert store.load_builds(list(read)) == read


def test_text_from_outside_is_printed_as_it_is(tmp_path, testdata):
    """Versions (free text: a module's modinfo version may be "0.29 04Jul2016") are neither Rich
    markup nor emoji codes in the text reports. Names that could be are refused at ingest
    (tests/test_hostile_store.py)."""
    db, odd = str(tmp_path / "store.db"), "x[/bold]:smile:[red]"
    subprocess.run([*KABIGATE, "ingest", "kernel", "--db", db, "--stream", "s",
                    str(testdata.kernel_root("6.1.0-47-amd64"))], check=True, capture_output=True)
    subprocess.run([*KABIGATE, "ingest", "drivers", "--db", db, "--name", "acpi-call", "--version", odd,
                    str(testdata.driver_dir("acpi-call", "6.1.0-47-amd64"))], check=True, capture_output=True)
    for command in (["drivers"], ["matrix"], ["history", "acpi-call"]):
        result = subprocess.run([*KABIGATE, *command, "--db", db], capture_output=True, text=True, check=False)
        assert result.returncode == 0 and odd in result.stdout, (command, result.stdout, result.stderr)


def test_a_fifo_given_as_stablelist_is_refused_not_opened(tmp_path, testdata):
    fifo = tmp_path / "stablelist"
    os.mkfifo(fifo)
    result = subprocess.run([*KABIGATE, "check", "-k", str(testdata.kernel_root("6.1.0-47-amd64")), "--stablelist",
                             str(fifo), str(testdata.driver_dir("acpi-call", "6.1.0-47-amd64"))],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "not a regular file" in result.stderr
