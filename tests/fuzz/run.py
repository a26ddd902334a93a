"""The fuzz runner: each target in its own child process with its address space capped, fed
deterministic mutations of its seeds (mutate.py), or driven by atheris (coverage-guided) when
asked and installed.

A finding is any exception other than kabigate's one-line InputError, an input taking longer
than --slow seconds, a child killed for hanging (--hang seconds without progress), or a
MemoryError under the --memory cap. Each finding's input is written to --findings and its
(target, seed, iteration) printed: `run.py --replay FILE --target T` runs it again.

    python tests/fuzz/run.py --seed 1 --iterations 300             # the CI slice: fixed work
    python tests/fuzz/run.py --seed 7 --time 600                   # ten minutes over all targets
    python tests/fuzz/run.py --engine atheris --time 3600 package  # coverage-guided, one target
"""

from __future__ import annotations

import argparse
import hashlib
import mmap
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fuzz import mutate, targets


def generate(target: targets.Target, seed: int, iteration: int) -> bytes:
    """The input of (target, seed, iteration): a seed file, mutated 1 to 3 times."""
    rng = random.Random(f"{seed}:{target.name}:{iteration}")
    seeds = target.seeds()
    data = seeds[rng.randrange(len(seeds))]
    if iteration < len(seeds):
        return seeds[iteration]  # every seed once, unmutated, first
    mutator = mutate.Mutator(rng, seeds)
    for _ in range(rng.choice((1, 1, 2, 3))):
        data = mutator.any(data)
    return data


def run_one(target: targets.Target, data: bytes) -> str | None:
    """None when the input is accepted or refused with a one-line InputError; else the finding."""
    try:
        target.run(data)
    except Exception as error:  # noqa: BLE001 - what the harness looks for
        if targets.accepted(error):
            return None
        return "".join(traceback.format_exception(error))[-4000:]
    except RecursionError as error:
        return "".join(traceback.format_exception(error))[-4000:]
    return None


# -- the child: one target, a range of iterations -------------------------------------------------

def child(name: str, seed: int, start: int, iterations: int, deadline: float, slow: float, progress: str) -> int:
    target = targets.TARGETS[name]
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    with open(progress, "r+b") as file:
        shared = mmap.mmap(file.fileno(), 16)
    findings = 0
    iteration = start
    try:
        while iteration < start + iterations and time.monotonic() < deadline:
            shared[:16] = struct.pack("<qd", iteration, time.monotonic())
            try:
                data = generate(target, seed, iteration)
            except Exception:  # noqa: BLE001 - the harness's own bug: reported, and the run goes on
                findings += 1
                report(name, seed, iteration, b"", "the mutator failed:\n" + traceback.format_exc()[-3000:])
                iteration += 1
                continue
            began = time.monotonic()
            finding = run_one(target, data)
            took = time.monotonic() - began
            if finding is None and took > slow:
                finding = f"slow: {took:.1f} s (limit {slow} s)"
            if finding is not None:
                findings += 1
                report(name, seed, iteration, data, finding)
            iteration += 1
    finally:
        shared[:16] = struct.pack("<qd", -iteration - 1, time.monotonic())  # done: how far it got
        targets.context().close()
    return findings


FINDINGS = HERE / "findings"


def report(name: str, seed: int, iteration: int, data: bytes, finding: str) -> None:
    FINDINGS.mkdir(exist_ok=True)
    path = FINDINGS / f"{name}-{seed}-{iteration}-{hashlib.sha256(data).hexdigest()[:12]}.bin"
    path.write_bytes(data)
    print(f"FINDING {name} seed={seed} iteration={iteration} input={path} ({len(data)} bytes)\n{finding}",
          flush=True)


# -- the parent: children, watchdog ------------------------------------------------------------------

def supervise(name: str, seed: int, iterations: int, seconds: float, slow: float, hang: float,
              memory_mb: int) -> tuple[int, int]:
    """(iterations run, findings) for one target; a hanging child is killed and the run resumes
    after the input it hung on."""
    start, findings = 0, 0
    deadline = time.monotonic() + seconds
    progress = Path(os.environ.get("TMPDIR", "/tmp")) / f"kabigate-fuzz-{os.getpid()}-{name}.progress"
    while start < iterations and time.monotonic() < deadline:
        progress.write_bytes(struct.pack("<qd", start, time.monotonic()))
        command = [sys.executable, str(Path(__file__)), "--child", name, "--seed", str(seed), "--start", str(start),
                   "--iterations", str(iterations - start), "--until", str(time.time() + (deadline - time.monotonic())),
                   "--slow", str(slow), "--progress", str(progress)]

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
            os.setpgrp()

        process = subprocess.Popen(command, preexec_fn=limit)  # noqa: PLW1509 - no threads in the parent
        last, since = None, time.monotonic()
        while process.poll() is None:
            time.sleep(0.2)
            current, _ = struct.unpack("<qd", progress.read_bytes()[:16])
            if current != last:
                last, since = current, time.monotonic()
            elif current >= 0 and time.monotonic() - since > hang:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                data = generate(targets.TARGETS[name], seed, current)
                report(name, seed, current, data, f"hang: no progress for {hang} s (killed)")
                findings += 1
                break
        current, _ = struct.unpack("<qd", progress.read_bytes()[:16])
        if process.returncode is not None and process.returncode > 0 and current < 0:
            findings += process.returncode
        elif process.returncode not in (0, None) and current >= 0 and process.returncode != -signal.SIGKILL:
            data = generate(targets.TARGETS[name], seed, current)
            report(name, seed, current, data, f"child died with status {process.returncode}")
            findings += 1
        start = -current - 1 if current < 0 else current + 1
    progress.unlink(missing_ok=True)
    return start, findings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help=f"targets (default all): {', '.join(targets.TARGETS)}")
    parser.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=10**9, help="per target")
    parser.add_argument("--time", type=float, default=None, help="seconds in all (split between the targets)")
    parser.add_argument("--slow", type=float, default=5.0, help="seconds one input may take")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds without progress before a kill")
    parser.add_argument("--memory", type=int, default=2048, help="MiB of address space per child")
    parser.add_argument("--replay", type=Path, help="run one input file on --target (one target)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--progress", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        deadline = time.monotonic() + (args.until - time.time())
        return min(100, child(args.child, args.seed, args.start, args.iterations, deadline, args.slow, args.progress))
    names = args.targets or list(targets.TARGETS)
    unknown = [n for n in names if n not in targets.TARGETS]
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)}")
    if args.replay:
        finding = run_one(targets.TARGETS[names[0]], args.replay.read_bytes())
        print(finding or "ok: accepted or refused with one line")
        return 1 if finding else 0
    if args.engine == "atheris":
        from fuzz import atheris_engine
        return atheris_engine.main(names, args)
    if args.time is None and args.iterations == 10**9:
        parser.error("give --time or --iterations")
    per_target = (args.time / len(names)) if args.time else float("inf")
    total = 0
    for name in names:
        began = time.monotonic()
        ran, findings = supervise(name, args.seed, args.iterations, per_target, args.slow, args.hang, args.memory)
        total += findings
        print(f"{name:<16} {ran:>7} inputs  {time.monotonic() - began:6.1f} s  {findings} findings", flush=True)
    print(f"{'all':<16} {total} findings", flush=True)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
