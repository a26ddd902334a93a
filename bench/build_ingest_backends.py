#!/usr/bin/env python3
"""Benchmark: ingesting the corpus' driver builds (the manifest's drivers, each build for each kernel it
was built for) into a new SQLite store and a new database of a private PostgreSQL server
(tests/support/pgserver.py), each store holding a few real kernels first so that every build is judged
and its verdicts written: ingest_driver_build() as `kabigate ingest drivers` runs it, files read before.

Rounds alternate the back ends (SQLite, PostgreSQL, SQLite, ...; a fresh store each, the first round
untimed): the machine is shared, so the ratio is the figure, not the times. Prints each back end's median
wall time per build and CPU time per build (this process's, plus on PostgreSQL its server's processes':
what a loaded machine does not inflate as it does each round trip's wait), the ratios PostgreSQL/SQLite,
and the SQL statements per build (SQLAlchemy's before_cursor_execute; a COPY, which the driver runs,
counts as its CREATE/INSERT/DROP around it).

    .venv/bin/python bench/build_ingest_backends.py [--rounds 3] [--kernels 6.1.0-47-amd64,6.1.0-56-amd64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from sqlalchemy import event
from support.pgserver import create_database, postgres_server
from support.testdata import testdata_root

from kabigate.inputs.kernels import load_kernel
from kabigate.services.ingest import DriverBuildInput, ingest_driver_build, ingest_kernel, read_driver_builds
from kabigate.store import Store


def corpus_builds(root: Path, manifest: dict) -> list[DriverBuildInput]:
    return [build for driver, by_kernel in sorted(manifest["drivers"].items())
            for built_for, entry in sorted(by_kernel.items())
            for build in read_driver_builds([str(root / entry["dir"])], driver, entry["version"])]


def server_cpu(url: str) -> float:
    """CPU seconds of a private PostgreSQL server's processes (its postmaster's children), 0 for SQLite."""
    if not url.startswith("postgresql"):
        return 0.0
    postmaster = (Path(url.split("host=", 1)[1]) / "data" / "postmaster.pid").read_text().split()[0]
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if fields[1] == postmaster:  # ppid; utime and stime follow at 11 and 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def ingest_builds(url: str, kernels, builds: list[DriverBuildInput]
                  ) -> tuple[list[float], list[float], float, int, int]:
    """(wall seconds per build, CPU seconds per build, of them the server's in all, statements in all,
    verdicts written) into a new store at `url`."""
    with Store.open(url) as store:
        for kernel in kernels:
            ingest_kernel(store, kernel, "bench")
        statements = 0

        def count(*_args) -> None:
            nonlocal statements
            statements += 1

        event.listen(store.engine, "before_cursor_execute", count)
        times, cpu, verdicts, on_server = [], [], 0, 0.0
        for build in builds:
            server = server_cpu(url)  # outside the times: reading /proc costs a few ms
            start_cpu, start = time.process_time(), time.perf_counter()
            verdicts += ingest_driver_build(store, build).verdicts
            times.append(time.perf_counter() - start)
            client = time.process_time() - start_cpu
            server = server_cpu(url) - server
            cpu.append(client + server)
            on_server += server
        event.remove(store.engine, "before_cursor_execute", count)
    return times, cpu, on_server, statements, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per back end (after one untimed)")
    parser.add_argument("--kernels", default="6.1.0-47-amd64,6.1.0-56-amd64")
    args = parser.parse_args()
    root = testdata_root()
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except OSError:
        sys.exit(f"no manifest in {root} (run scripts/fetch-testdata)")
    kernels = [load_kernel([str(root / manifest["kernels"][release]["root"])]) for release in args.kernels.split(",")]
    builds = corpus_builds(root, manifest)
    modules = sum(len(b.modules) for b in builds)
    print(f"{len(builds)} driver builds ({modules} modules), {len(kernels)} kernels stored first")
    with postgres_server() as server, tempfile.TemporaryDirectory() as tmp:
        urls = {"SQLite": lambda: f"sqlite:///{tmp}/{uuid.uuid4().hex}.db",
                "PostgreSQL": lambda: create_database(server, "b" + uuid.uuid4().hex[:16])}
        times: dict[str, list[float]] = {name: [] for name in urls}
        cpu: dict[str, list[float]] = {name: [] for name in urls}
        statements: dict[str, int] = {}
        on_server = dict.fromkeys(urls, 0.0)
        for run in range(args.rounds + 1):
            for name, new_url in urls.items():
                run_times, run_cpu, run_server, statements[name], verdicts = ingest_builds(new_url(), kernels, builds)
                if run:
                    times[name] += run_times
                    cpu[name] += run_cpu
                    on_server[name] += run_server
    wall = {name: statistics.median(times[name]) for name in urls}
    rounds = {name: sum(times[name]) / args.rounds for name in urls}
    cpus = {name: sum(cpu[name]) / len(cpu[name]) for name in urls}  # mean: a tick is 10 ms
    print(f"  verdicts written per round {verdicts}")
    for name in urls:
        print(f"  {name:<10} median {wall[name] * 1000:6.1f} ms/build   round {rounds[name]:5.2f} s   "
              f"CPU {cpus[name] * 1000:6.1f} ms/build (server {on_server[name] / len(cpu[name]) * 1000:4.1f})   "
              f"{statements[name] / len(builds):5.1f} statements/build")
    print(f"  ratio PostgreSQL/SQLite: median per build {wall['PostgreSQL'] / wall['SQLite']:.2f}   "
          f"round {rounds['PostgreSQL'] / rounds['SQLite']:.2f}   CPU {cpus['PostgreSQL'] / cpus['SQLite']:.2f}")


if __name__ == "__main__":
    main()
