"""Shared by the bench scripts: best-of-N wall time (after one untimed warm-up run)."""

import time


def best_of(runs: int, action) -> float:
    action()  # warm the page cache
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)
