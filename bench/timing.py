"""Shared by the bench scripts: best-of-N wall time (after one untimed warm-up run), and two actions
timed in turn."""

import statistics
import time


def best_of(runs: int, action) -> float:
    action()  # warm the page cache
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


def paired(runs: int, first, second) -> tuple[float, float, float]:
    """Best wall time of `first`, of `second`, and the median of their ratios run by run: the two
    run in turn (A B A B ...) after one untimed warm-up each, so that the ratio holds on a shared
    machine whose speed drifts between runs."""
    first()
    second()
    pairs = []
    for _ in range(runs):
        pairs.append([])
        for action in (first, second):
            start = time.perf_counter()
            action()
            pairs[-1].append(time.perf_counter() - start)
    return min(a for a, _ in pairs), min(b for _, b in pairs), statistics.median(a / b for a, b in pairs)
