#!/usr/bin/env python3
"""Benchmark: ingest one Debian kernel (linux-image .deb + linux-headers .deb) into a new SQLite
store, vs `dpkg-deb --fsys-tarfile` of the same two files, in the same run.

kabigate reads both packages (the image's payload up to its first in-tree module, for the
vermagic; the headers' Module.symvers and .config), stores the kernel's ~25,000 exports and
judges every stored driver build on it (none here: the kernel alone). Best of --runs after one
untimed warm-up each (page cache warm).

    .venv/bin/python bench/kernel_ingest_vs_dpkg.py [--release 6.1.0-47-amd64] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
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


if __name__ == "__main__":
    main()
