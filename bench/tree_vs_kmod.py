#!/usr/bin/env python3
"""Benchmark: a whole module tree, kabigate's command line vs kmod's, each a whole process as a
user runs it, alternated run by run (A B A B ...) so that a shared machine's drift hits both:

    check    kabigate check -k /lib/modules/<kver> /lib/modules/<kver>/kernel   vs   depmod -naeE Module.symvers
    inspect  kabigate inspect --json <tree>                                    vs   xargs modinfo (all files)
    inspect1 the same, kabigate held to one CPU (no worker process: the gain of the others, apart)
    help     kabigate --help                                                    (start-up, no baseline)
    one      kabigate check -k /lib/modules/<kver> <one module>                  vs   modinfo <one module>

Prints for each the median seconds (and CPU seconds of all its processes), the median of the
per-pair ratios, and the peak resident memory of the largest single process (wait4's ru_maxrss).

    .venv/bin/python bench/tree_vs_kmod.py [--release 6.1.0-56-amd64] [--runs 5]
        [--only check,inspect,inspect1,help,one]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root

from kabigate.inputs.modules import find_module_files

# As installed: with bytecode caches (a PYTHONDONTWRITEBYTECODE=1 environment compiles every module each run).
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def run(command: list[str], stdin: bytes | None = None, one_cpu: bool = False) -> tuple[float, int, float]:
    """(wall seconds, peak RSS in MiB, CPU seconds with its children's) of one whole process,
    its output thrown away; `one_cpu`: held to the first CPU it may use."""
    start = time.perf_counter()
    cpu = min(os.sched_getaffinity(0))
    process = subprocess.Popen(command, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                               preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if one_cpu else None)
    if stdin is not None:
        process.stdin.write(stdin)
        process.stdin.close()
    _pid, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        sys.exit(f"{' '.join(command)}: exit {os.waitstatus_to_exitcode(status)}")
    return elapsed, usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def compare(label: str, ours: list[str], theirs: list[str] | None, runs: int, stdin: bytes | None = None,
            one_cpu: bool = False) -> None:
    run(ours, one_cpu=one_cpu), theirs and run(theirs, stdin)  # warm the page cache and the bytecode
    our_times, their_times, ratios, peaks, cpu = [], [], [], [], []
    for _ in range(runs):
        seconds, peak, cpu_seconds = run(ours, one_cpu=one_cpu)
        our_times.append(seconds)
        peaks.append(peak)
        cpu.append(cpu_seconds)
        if theirs:
            their_times.append(run(theirs, stdin)[0])
            ratios.append(seconds / their_times[-1])
    line = (f"{label:<8} kabigate {statistics.median(our_times):6.2f} s (cpu {statistics.median(cpu):5.2f} s)"
            f"  peak {max(peaks):4d} MiB")
    if theirs:
        line += (f"   {theirs[0]} {statistics.median(their_times):6.2f} s"
                 f"   ratio median {statistics.median(ratios):5.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default="6.1.0-56-amd64")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="check,inspect,inspect1,help,one")
    args = parser.parse_args()
    root = testdata_root() / "kernels" / args.release
    tree = root / "lib" / "modules" / args.release
    symvers = root / "usr" / "src" / f"linux-headers-{args.release}" / "Module.symvers"
    if not symvers.is_file():
        sys.exit(f"no {symvers} (run scripts/fetch-testdata)")
    files = find_module_files([str(tree / "kernel")])
    print(f"{args.release}: {len(files)} modules, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    kabigate = [sys.executable, "-m", "kabigate"]
    only = args.only.split(",")
    if "check" in only:
        compare("check", [*kabigate, "check", "-k", str(tree), str(tree / "kernel")],
                ["depmod", "-naeE", str(symvers), "-b", str(root), args.release], args.runs)
    if "inspect" in only:
        compare("inspect", [*kabigate, "inspect", "--json", str(tree / "kernel")],
                ["xargs", "-0", "modinfo"], args.runs, "\0".join(files).encode())
    if "inspect1" in only:
        compare("inspect1", [*kabigate, "inspect", "--json", str(tree / "kernel")],
                ["xargs", "-0", "modinfo"], args.runs, "\0".join(files).encode(), one_cpu=True)
    if "help" in only:
        compare("help", [*kabigate, "--help"], None, args.runs)
    if "one" in only:
        module = str(tree / "kernel" / "virt" / "lib" / "irqbypass.ko")
        compare("one", [*kabigate, "check", "-k", str(tree), module], ["modinfo", module], args.runs)


if __name__ == "__main__":
    main()
