"""Coverage-guided fuzzing of one target with atheris (libFuzzer), for long runs at release
time: `run.py --engine atheris --time 3600 TARGET`. Half of the mutations are libFuzzer's, half
the structure-aware ones of mutate.py (through compression, ar, tar, cpio, RPM and ELF layers);
libFuzzer keeps the inputs that reach new code. Findings are written by libFuzzer as crash-*,
timeout-* and oom-* files in tests/fuzz/findings/.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

from fuzz import mutate, targets
from fuzz.run import FINDINGS, run_one


def main(names: list[str], args) -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: .venv/bin/pip install atheris (or use --engine mutate)", file=sys.stderr)
        return 2
    if len(names) != 1:
        print("the atheris engine runs one target at a time", file=sys.stderr)
        return 2
    target = targets.TARGETS[names[0]]
    seeds = target.seeds()
    corpus = Path(tempfile.mkdtemp(prefix=f"kabigate-atheris-{target.name}-"))
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index}").write_bytes(seed)
    FINDINGS.mkdir(exist_ok=True)

    def test_one(data: bytes) -> None:
        finding = run_one(target, data)
        if finding is not None:
            raise RuntimeError(finding)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        return mutate.Mutator(rng, seeds).any(data)[:max_size]

    options = [sys.argv[0], str(corpus), f"-max_total_time={int(args.time or 600)}", f"-rss_limit_mb={args.memory}",
               f"-timeout={int(args.hang)}", f"-max_len={max(len(s) for s in seeds) * 4}",
               f"-artifact_prefix={FINDINGS}/{target.name}-", f"-seed={args.seed}"]
    atheris.instrument_all()
    atheris.Setup(options, test_one, custom_mutator=custom_mutator)
    atheris.Fuzz()
    return 0
