#!/usr/bin/env python3
"""Benchmark: `weak-modules --add-kernel` over 100 installed out-of-tree modules and 5 installed
kernels, kabigate vs the depmod-based approach of RHEL's weak-modules, on the same root.

The root (built from the real test data, the RHEL way: symvers.gz, extra/, in-tree modules): the
five kernels of the corpus (6.1.0-47, -47-cloud, -47-rt, -50, -56), 100 real DKMS-built modules
in their extra/ (every build for 6.1.0-47, then 6.1.0-56's up to 100: some drivers in both), and
the kernel added: 6.1.0-47's files installed as 6.1.0-47.1 (one kABI, so most modules link).
Where both kernels have a build, the script links the later one (`ln -sf`), depmod rejects it and
the earlier build, which loads, is never tried; kabigate tries it: the link counts differ.

The depmod side is the algorithm of RHEL's script (add_kernel() -> update_modules_for_krel()):
every other kernel's extra/ modules linked into weak-updates/, then `depmod -naeE symvers` run
and the links it complains about removed, again until it complains no more
(validate_weak_links()), then `depmod -ae` (the script's own
shell overhead, a few hundred processes, is left out: the ratio is a lower bound). Both end with
the same `depmod -ae`; each run starts from a fresh copy of the root. Prints seconds and the ratio.

    .venv/bin/python bench/weak_modules_vs_depmod.py [--runs N] [--keep DIR]
"""

import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support import weakroot  # lays the root out
from support.testdata import testdata_root

from kabigate.host import weakmodules as wm

KERNELS = ("6.1.0-47-amd64", "6.1.0-47-cloud-amd64", "6.1.0-47-rt-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64")
ADDED = "6.1.0-47.1-amd64"
WARNING = re.compile(r"^depmod: WARNING: (/\S+\.ko) (needs unknown symbol|disagrees about version of symbol) ")


class Data:
    def __init__(self, root: Path):
        self.root = root
        self.manifest = json.loads((root / "manifest.json").read_text())

    def kernel_root(self, release):
        return self.root / self.manifest["kernels"][release]["root"]

    def headers(self, release):
        return self.root / self.manifest["kernels"][release]["headers_dir"]

    def modules_dir(self, release):
        return self.root / self.manifest["kernels"][release]["modules_dir"]

    def driver_dir(self, driver, built_for):
        return self.root / self.manifest["drivers"][driver][built_for]["dir"]


def build_root(base: Path, data: Data) -> int:
    for krel in KERNELS:
        weakroot.add_kernel(base, data, krel)
    weakroot.add_kernel(base, data, "6.1.0-47-amd64", release=ADDED)
    count = 0
    for built_for in ("6.1.0-47-amd64", "6.1.0-56-amd64"):
        for driver in sorted(data.manifest["drivers"]):
            if built_for in data.manifest["drivers"][driver]:
                for path in weakroot.add_driver(base, data, driver, built_for):
                    if count == 100:
                        (base / path.lstrip("/")).unlink()
                    else:
                        count += 1
    return count


def depmod_based(base: Path) -> int:
    """RHEL weak-modules' add_kernel(), its depmod loop in Python: -> links made.

    The links are made in the kernel's weak-updates/ itself, as the RHEL 7 script did: the RHEL 8
    script's sandbox (`depmod -C` with `external <krel> <copy>`) makes Debian 12's kmod 30 report
    "disagrees about version" for symbols whose CRCs agree (seen on this root), which would
    time a different, wrong answer."""
    root = wm.Root(str(base))
    modules = [p for k in root.kernels() if k != ADDED for p in root.module_files(k, "extra")]
    weak = root.weak_dir(ADDED)
    weak.mkdir()
    for module in modules:  # ln -sf: the later kernel's module of one path wins
        krel = module.relative_to(root.modules).parts[0]
        link = weak / root.weak_link(root.inside(module), krel)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(module)
    symvers = base / "symvers"
    symvers.write_bytes(gzip.decompress(root.symvers(ADDED).read_bytes()))
    while True:
        result = subprocess.run(["depmod", "-b", str(base), "-naeE", str(symvers), ADDED],
                                capture_output=True, text=True, check=True)
        bad = {m.group(1) for line in result.stderr.splitlines() if (m := WARNING.match(line))
               and m.group(1).startswith(str(weak))}
        if not bad:
            break
        for path in bad:
            Path(path).unlink()
    symvers.unlink()
    subprocess.run(["depmod", "-b", str(base), "-ae", ADDED], capture_output=True, check=True)
    return sum(1 for p in weak.rglob("*") if p.is_symlink())


def kabigate_run(base: Path) -> int:
    subprocess.run([sys.executable, "-m", "kabigate", "weak-modules", "--basedir", str(base), "--no-initramfs",
                    "--add-kernel", ADDED], capture_output=True, check=False)
    return len(wm.Root(str(base)).links(ADDED))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="build the root in DIR and keep it")
    args = parser.parse_args()
    data = Data(testdata_root())
    missing = [k for k in KERNELS if k not in data.manifest["kernels"]]
    if missing:
        sys.exit(f"kernels {missing} not in the test data (run scripts/fetch-testdata)")
    work = Path(args.keep or tempfile.mkdtemp(prefix="kabigate-bench-"))
    template = work / "template"
    modules = build_root(template, data)
    per_kernel = {k: len(wm.Root(str(template)).module_files(k, "extra")) for k in KERNELS}
    print(f"root: {len(KERNELS)} installed kernels, {modules} out-of-tree modules in extra/ "
          f"({', '.join(f'{n} for {k}' for k, n in per_kernel.items() if n)}), adding {ADDED}")

    def timed(action) -> tuple[float, float, int]:
        """-> best total, best total less the closing `depmod -ae` (timed again on the result), links."""
        best, best_deciding, links = None, None, None
        for run in range(args.runs + 1):  # the first run warms the page cache
            trial = work / f"trial-{run}"
            shutil.copytree(template, trial, symlinks=True)
            start = time.perf_counter()
            links = action(trial)
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            subprocess.run(["depmod", "-b", str(trial), "-ae", ADDED], capture_output=True, check=True)
            closing = time.perf_counter() - start
            shutil.rmtree(trial)
            if run:
                best = elapsed if best is None else min(best, elapsed)
                deciding = elapsed - closing
                best_deciding = deciding if best_deciding is None else min(best_deciding, deciding)
        return best, best_deciding, links

    theirs, their_deciding, their_links = timed(depmod_based)
    ours, our_deciding, our_links = timed(kabigate_run)
    print(f"depmod-based (weak-modules' loop): {theirs:.2f} s, {their_deciding:.2f} s before the closing "
          f"depmod -ae; {their_links} links")
    print(f"kabigate weak-modules:            {ours:.2f} s, {our_deciding:.2f} s before the closing "
          f"depmod -ae; {our_links} links (the kernel refuses the rest)")
    print(f"ratio: kabigate is {theirs / ours:.1f}x faster in all, {their_deciding / our_deciding:.1f}x in deciding")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
