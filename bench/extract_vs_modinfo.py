#!/usr/bin/env python3
"""Benchmark: metadata extraction for every module of a kernel tree, kabigate vs kmod's modinfo.

kabigate extracts modinfo, __versions, imports, exports with CRCs/namespaces and the signature;
modinfo prints modinfo fields and the signature. Both read the same files (page cache warm:
each side runs once untimed first). Prints seconds and the ratio.

    .venv/bin/python bench/extract_vs_modinfo.py [MODULE_TREE] [--per-file]
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root
from timing import best_of

from kabigate.inputs.modules import find_module_files, read_modules

DEFAULT_TREE = testdata_root() / "kernels/6.1.0-47-amd64/lib/modules/6.1.0-47-amd64/kernel"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", nargs="?", default=str(DEFAULT_TREE))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-file", action="store_true",
                        help="also time one modinfo process per module, as shell loops run it")
    args = parser.parse_args()
    files = find_module_files([args.tree])
    if not files:
        sys.exit(f"no modules under {args.tree} (run scripts/fetch-testdata)")
    size = sum(os.path.getsize(f) for f in files)
    print(f"{len(files)} modules, {size / 2**20:.0f} MiB, in {args.tree}")

    def modinfo_batch():
        subprocess.run(["xargs", "-0", "modinfo"], input="\0".join(files).encode(),
                       stdout=subprocess.DEVNULL, check=True)

    def modinfo_per_file():
        for path in files:
            subprocess.run(["modinfo", path], stdout=subprocess.DEVNULL, check=True)

    ours = best_of(args.runs, lambda: read_modules([args.tree]))
    batch = best_of(args.runs, modinfo_batch)
    print(f"kabigate (full extraction, one process)   {ours:7.2f} s")
    print(f"modinfo  (all files in one process)       {batch:7.2f} s   kabigate/modinfo = {ours / batch:.2f}")
    if args.per_file:
        per_file = best_of(1, modinfo_per_file)
        print(f"modinfo  (one process per module)         {per_file:7.2f} s   kabigate/modinfo = {ours / per_file:.2f}")


if __name__ == "__main__":
    main()
