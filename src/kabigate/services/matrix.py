"""The driver x kernel matrix and a driver's history along a stream, read from the store.

Verdicts missing for the current rules (a rules change, a pair never judged) are computed and
stored first, so what is shown is always what today's rules say.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kabigate.errors import InputError
from kabigate.rules import RULES_VERSION
from kabigate.services import Advance, no_progress
from kabigate.services.ingest import refresh_verdicts
from kabigate.store import BuildFailure, BuildRecord, Cell, KernelRecord, Store


@dataclass(frozen=True)
class Matrix:
    kernels: list[KernelRecord]  # columns, in stream order
    builds: list[BuildRecord]  # rows
    cells: dict[tuple[int, int], Cell]  # (build id, kernel id)
    build_failures: list[BuildFailure]
    stream: str | None

    def cell(self, build: BuildRecord, kernel: KernelRecord) -> Cell | None:
        return self.cells.get((build.id, kernel.id))

    def summary(self) -> dict[str, int]:
        cells = list(self.cells.values())
        return {"kernels": len(self.kernels), "driver_builds": len(self.builds),
                "drivers": len({b.driver for b in self.builds}), "cells": len(cells),
                "loading": sum(c.loads for c in cells), "failing": sum(not c.loads for c in cells),
                "build_failures": len(self.build_failures)}


def select_kernels(store: Store, stream: str | None = None, since: str | None = None) -> list[KernelRecord]:
    """Kernels of `stream` in order (all kernels without one), from the kernel released as `since` on."""
    kernels = store.kernels(stream)
    if since is not None:
        start = next((i for i, k in enumerate(kernels) if since in (k.release, k.package_version)), None)
        if start is None:
            raise InputError(f"--since {since}: no such kernel{' in stream ' + stream if stream else ''}")
        kernels = kernels[start:]
    return kernels


def build_matrix(store: Store, stream: str | None = None, driver: str | None = None, since: str | None = None,
                 advance: Advance = no_progress) -> Matrix:
    refresh_verdicts(store, advance)
    kernels = select_kernels(store, stream, since)
    builds = store.driver_builds(driver)
    cells = store.cells(RULES_VERSION, build_ids=[b.id for b in builds], kernel_ids=[k.id for k in kernels])
    return Matrix(kernels, builds, cells, store.build_failures(driver), stream)


def failing_cell_details(store: Store, matrix: Matrix) -> dict[tuple[int, int], list[dict]]:
    """Each failing cell's module verdicts (reasons and warnings), for reports that show them."""
    return {key: store.verdict_detail(*key) or [] for key, cell in matrix.cells.items() if not cell.loads}


@dataclass(frozen=True)
class Break:
    """Where a build stops loading along a stream: the kernel, why, and which builds load there."""

    kernel: KernelRecord
    last_loading: KernelRecord | None
    reasons: dict[str, int]  # reason code -> how many
    symbols: list[str]
    fixed_by: list[BuildRecord]


@dataclass(frozen=True)
class BuildHistory:
    build: BuildRecord
    loads_on: list[KernelRecord]
    breaks: list[Break] = field(default_factory=list)  # each time it goes from loading to failing


@dataclass(frozen=True)
class StreamHistory:
    stream: str | None
    kernels: list[KernelRecord]
    builds: list[BuildHistory]


def driver_history(store: Store, driver: str, stream: str | None = None) -> list[StreamHistory]:
    """For each stream (or the one given): each build of `driver`, where it stops loading and why,
    and which builds of the same driver load on that kernel."""
    builds = [b for b in store.driver_builds() if b.driver == driver]
    if not builds:
        raise InputError(f"no driver named {driver!r} in the store")
    refresh_verdicts(store)
    cells = store.cells(RULES_VERSION, build_ids=[b.id for b in builds])
    histories = []
    for name in [stream] if stream else store.streams() or [None]:
        kernels = store.kernels(name)
        histories.append(StreamHistory(name, kernels, [_build_history(store, b, builds, kernels, cells)
                                                        for b in builds]))
    return histories


def _build_history(store: Store, build: BuildRecord, builds: list[BuildRecord], kernels: list[KernelRecord],
                   cells: dict[tuple[int, int], Cell]) -> BuildHistory:
    history = BuildHistory(build, [k for k in kernels if (c := cells.get((build.id, k.id))) and c.loads])
    last_loading = None
    for kernel in kernels:
        cell = cells.get((build.id, kernel.id))
        if cell is None:
            continue
        if cell.loads:
            last_loading = kernel
            continue
        if last_loading is None or (history.breaks and history.breaks[-1].last_loading is last_loading):
            continue  # never loaded yet in this stream, or still broken since the last break
        detail = store.verdict_detail(build.id, kernel.id) or []
        failing = [reason for module in detail for reason in module["reasons"]]
        history.breaks.append(Break(
            kernel=kernel, last_loading=last_loading,
            reasons=dict(Counter(reason["code"] for reason in failing).most_common()),
            symbols=sorted({reason["symbol"] for reason in failing if reason["symbol"]}),
            fixed_by=[other for other in builds if other.id != build.id
                      and (c := cells.get((other.id, kernel.id))) is not None and c.loads]))
    return history
