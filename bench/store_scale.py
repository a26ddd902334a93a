#!/usr/bin/env python3
"""Benchmark: the store at scale, 1,000 driver builds x 200 kernels, on SQLite (or --db URL).

The data has the real shape:
- driver builds are real modules: the first N in-tree modules of 6.1.0-47-amd64 (real import
  lists with their real __versions CRCs, a third of them depending on another), each renamed
  `drv-NNNN` with its `intree` tag dropped, one build each;
- kernels come from the real symvers history: the 7 kernels of Debian's 6.1 stream in the corpus
  (6.1.0-47 .. -57), and between two consecutive ones the real CRC changes of that step spread over
  the kernels made between them (as a z-stream drifts), 200 kernels in all.

Prints: ingest of the builds, time to add one kernel to a store of 1,000 builds (after its files
are read: store + judge 1,000 builds), the gate of the last kernel (ingest, classes, export diff),
the matrix read from the store, and the size per kernel and per build.

    .venv/bin/python bench/store_scale.py [--builds 1000] [--kernels 200] [--db URL]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root

from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import find_module_files, read_modules
from kabigate.services.gate import previous_in_stream, run_gate
from kabigate.services.ingest import DriverBuildInput, ingest_driver_build, ingest_kernel
from kabigate.services.matrix import build_matrix
from kabigate.store import Store


def real_builds(root: Path, count: int) -> list[DriverBuildInput]:
    tree = root / "kernels/6.1.0-47-amd64/lib/modules/6.1.0-47-amd64/kernel"
    modules = read_modules(find_module_files([str(tree)])[:count])
    builds = []
    for number, module in enumerate(modules):
        name = f"drv-{number:04d}"
        modinfo = tuple((k, name if k == "name" else v) for k, v in module.modinfo if k != "intree")
        renamed = dataclasses.replace(module, modinfo=modinfo, path=f"/bench/{name}.ko")
        builds.append(DriverBuildInput(name, [renamed], "1.0", None, "x86_64", "tree", f"/bench/{name}"))
    return builds


def kernel_history(root: Path, manifest: dict, total: int):
    """`total` kernels: the real Debian 6.1 stream in order (its image and headers .debs), with the
    real CRC changes between two consecutive kernels spread over the kernels made between them."""
    real = [load_kernel([str(root / deb) for deb in manifest["stream_kernels"][release]["debs"]])
            for release in manifest["streams"]["debian-6.1"]]
    steps = max(1, -(-(total - 1) // max(1, len(real) - 1)))  # ceil: enough to reach `total`
    kernels = []
    for older, newer in itertools.pairwise(real):
        changed = sorted(name for name, e in newer.exports.items() if older.exports.get(name) != e)
        for step in range(steps):
            if len(kernels) == total - 1:
                break
            moved = set(changed[:len(changed) * step // steps])
            exports = {**older.exports, **{n: newer.exports[n] for n in moved}}
            release = f"{older.release}.z{step}"
            kernels.append(dataclasses.replace(older, release=release, exports=exports, sources=[release],
                                               vermagic=older.vermagic.replace(older.release, release, 1)))
    kernels.append(real[-1])
    return kernels[:total]


def size_of(url: str) -> int:
    path = url.removeprefix("sqlite:///")
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=1000)
    parser.add_argument("--kernels", type=int, default=200)
    parser.add_argument("--db", help="database URL (default: a new SQLite file in a temp dir)")
    args = parser.parse_args()
    root = testdata_root()
    manifest = json.loads((root / "manifest.json").read_text())
    builds = real_builds(root, args.builds)
    kernels = kernel_history(root, manifest, args.kernels)
    print(f"{len(builds)} driver builds ({sum(len(m.imports) for b in builds for m in b.modules):,} imports), "
          f"{len(kernels)} kernels from {len({k.sources[0].split('.z')[0] for k in kernels})} real ones")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/bench.db"
        with Store.open(url) as store:
            started = time.perf_counter()
            for build in builds:
                ingest_driver_build(store, build)
            print(f"ingest {len(builds)} builds: {time.perf_counter() - started:.1f} s")
            builds_size = size_of(url) if url.startswith("sqlite") else 0
            timings = []
            for kernel in kernels[:-1]:
                started = time.perf_counter()
                ingest_kernel(store, kernel, "bench")
                timings.append(time.perf_counter() - started)
            timings.sort()
            print(f"add one kernel to a store of {len(builds)} builds (store + {len(builds)} verdicts): "
                  f"median {timings[len(timings) // 2]:.2f} s, max {timings[-1]:.2f} s")
            started = time.perf_counter()
            candidate = ingest_kernel(store, kernels[-1], "bench").record
            baseline, stream = previous_in_stream(store, candidate, "bench")
            result = run_gate(store, candidate, baseline, stream=stream)
            print(f"gate of a new kernel (ingest + {len(result.builds)} builds classed, {len(result.regressions)} "
                  f"regressions, exports diffed): {time.perf_counter() - started:.2f} s")
            started = time.perf_counter()
            matrix = build_matrix(store, "bench")
            elapsed = time.perf_counter() - started
            print(f"matrix {len(matrix.kernels)} kernels x {len(matrix.builds)} builds = {len(matrix.cells):,} cells "
                  f"from the store: {elapsed:.1f} s")
            counts = store.counts()
        if url.startswith("sqlite"):
            total = size_of(url)
            print(f"SQLite size: {total / 2**20:.0f} MiB; builds {builds_size / len(builds) / 1024:.1f} KiB each, "
                  f"kernels (with their verdicts) {(total - builds_size) / len(kernels) / 1024:.0f} KiB each")
        print("rows: " + ", ".join(f"{table} {count:,}" for table, count in counts.items()))


if __name__ == "__main__":
    main()
