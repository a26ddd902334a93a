#!/usr/bin/env python3
"""Benchmark: ingest a package end to end (every module parsed: modinfo, __versions, imports,
exports, signature) vs only decompressing its payload with the distribution's tool, in the same run:

    deb: kabigate read_modules(PKG)  vs  dpkg-deb --fsys-tarfile PKG > /dev/null
    rpm: kabigate read_modules(PKG)  vs  rpm2cpio PKG > /dev/null

Run in turn (ours, theirs, ours, ...) --runs times after one untimed warm-up each (page cache warm):
prints the best seconds of each, their ratio, and the median of the ratios run by run (what holds on
a shared machine).

    .venv/bin/python bench/ingest_vs_dpkg.py [--deb PKG] [--rpm PKG] [--runs N]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root
from timing import paired

from kabigate.inputs.modules import read_modules

DEFAULT_DEB = next(iter(sorted((testdata_root() / "debs").glob("linux-image-6.1.0-47-amd64-unsigned_*.deb"))), None)
DEFAULT_RPM = next(iter(sorted((testdata_root() / "packages").glob("6.1.0-47-amd64-*/kernel/kernel-core-*.rpm"))),
                   None)


def compare(package: Path, tool: list[str], runs: int) -> float:
    count = len(read_modules([str(package)]))
    print(f"{package.name}: {package.stat().st_size / 2**20:.0f} MiB, {count} modules")

    def baseline():
        with open("/dev/null", "wb") as sink:
            subprocess.run([*tool, str(package)], stdout=sink, check=True)

    ours, theirs, ratio = paired(runs, lambda: read_modules([str(package)]), baseline)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10  # this process (the tool runs in a child)
    print(f"  kabigate (every module parsed)    {ours:6.2f} s   peak {peak} MiB")
    print(f"  {' '.join(tool) + ' > /dev/null':<32}  {theirs:6.2f} s   ratio {ours / theirs:.2f} of the best, "
          f"{ratio:.2f} median of the {runs} pairs")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path, default=DEFAULT_DEB)
    parser.add_argument("--rpm", type=Path, default=DEFAULT_RPM,
                        help="default: the kernel-core RPM the tests build (run the tests once first)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.deb is None:
        sys.exit(f"no linux-image .deb in {testdata_root() / 'debs'} (run scripts/fetch-testdata)")
    compare(args.deb, ["dpkg-deb", "--fsys-tarfile"], args.runs)
    if args.rpm is not None and shutil.which("rpm2cpio"):
        compare(args.rpm, ["rpm2cpio"], args.runs)
    else:
        print("rpm: skipped (no RPM given/built, or no rpm2cpio)")


if __name__ == "__main__":
    main()
