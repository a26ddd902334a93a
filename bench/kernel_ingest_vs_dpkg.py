#!/usr/bin/env python3
"""Benchmark: ingest one Debian kernel (linux-image .deb + linux-headers .deb) into a new SQLite
store, vs `dpkg-deb --fsys-tarfile` of the same two files, in the same run.

kabigate reads both packages (the image's payload up to its first in-tree module, for the
vermagic; the headers' Module.symvers and .config), stores the kernel's ~25,000 exports and
judges every stored driver build on it (none here: the kernel alone). Best of --runs after one
untimed warm-up each (page cache warm).

With --postgres, also the store step alone (the kernel read once) into a new SQLite file and into a
new database of a private PostgreSQL server (tests/support/pgserver.py), in turn: their ratio.

    .venv/bin/python bench/kernel_ingest_vs_dpkg.py [--release 6.1.0-47-amd64] [--runs N] [--postgres]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root
from timing import best_of

from kabigate.inputs.kernels import load_kernel
from kabigate.services.ingest import ingest_kernel
from kabigate.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="6.1.0-47-amd64")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="compare the store step on PostgreSQL and SQLite")
    args = parser.parse_args()
    root = testdata_root()
    try:
        entry = json.loads((root / "manifest.json").read_text())["stream_kernels"][args.release]
    except (OSError, KeyError):
        sys.exit(f"no {args.release} in {root}/manifest.json (run scripts/fetch-testdata)")
    debs = [str(root / deb) for deb in entry["debs"]]
    size = sum((root / deb).stat().st_size for deb in entry["debs"])
    print(f"{args.release}: {len(debs)} packages, {size / 2**20:.0f} MiB")

    def ingest():
        with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{tmp}/bench.db") as store:
            ingest_kernel(store, load_kernel(debs), "bench")

    def dpkg():
        with open("/dev/null", "wb") as sink:
            for deb in debs:
                subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], stdout=sink, check=True)

    ours = best_of(args.runs, ingest)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10  # this process: the ingest's peak (goal < 300)
    theirs = best_of(args.runs, dpkg)
    print(f"  kabigate ingest kernel (read + store)   {ours:6.2f} s   peak {peak} MiB")
    print(f"  dpkg-deb --fsys-tarfile, both > /dev/null {theirs:6.2f} s   ratio {ours / theirs:.2f}")
    if args.postgres:
        compare_backends(load_kernel(debs), args.runs)


def compare_backends(kernel, runs: int) -> None:
    from support.pgserver import create_database, postgres_server

    with postgres_server() as server, tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": lambda: f"sqlite:///{tmp}/{uuid.uuid4().hex}.db",
                "postgresql": lambda: create_database(server, "b" + uuid.uuid4().hex[:16])}
        times: dict[str, list[float]] = {name: [] for name in urls}
        for run in range(runs + 1):  # the first of each untimed
            for name, new_url in urls.items():
                with Store.open(new_url()) as store:
                    start = time.perf_counter()
                    ingest_kernel(store, kernel, "bench")
                    if run:
                        times[name].append(time.perf_counter() - start)
    sqlite, postgresql = (statistics.median(times[name]) for name in urls)
    print(f"  store step (median of {runs}): SQLite {sqlite:5.2f} s   PostgreSQL {postgresql:5.2f} s   "
          f"ratio {postgresql / sqlite:.2f}")


if __name__ == "__main__":
    main()
