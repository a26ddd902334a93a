"""Shared by the bench scripts: best-of-N wall time (after one untimed warm-up run), the corpus root."""

import time


def best_of(runs: int, action) -> float:
    action()  # warm the page cache
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


def testdata_root():
    """Where scripts/fetch-testdata caches the real corpus (its default_root())."""
    import os
    from pathlib import Path

    if os.environ.get("KABIGATE_TESTDATA"):
        return Path(os.environ["KABIGATE_TESTDATA"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kabigate" / "testdata"
