"""The driver x kernel matrix and a driver's history along a stream, read from the store.

Verdicts missing for the current rules (a rules change, a pair never judged) are computed and
stored first, so what is shown is always what today's rules say.
"""

from __future__ import annotations

import csv
import glob
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from kabigate.errors import InputError
from kabigate.reports.verdicts import build_record_json, cell_json, kernel_record_json
from kabigate.rules import RULES_VERSION
from kabigate.services import Advance, no_progress
from kabigate.services.causes import cells_with_causes, explainable_cells
from kabigate.services.ingest import refresh_verdicts
from kabigate.services.packages import (
    PACKAGES_PAGE,
    PackageMatrix,
    PackageVerdict,
    matters_to,
    package_verdict_json,
    package_verdicts,
    verdicts_of,
)
from kabigate.store import BuildFailure, BuildRecord, Cell, KernelRecord, Store

# Driver builds on one page of a matrix too large for one (the dashboard's, the API's default):
# 100 builds x 200 kernels is 20,000 cells, rendered in well under 2 s.
PAGE_SIZE = 100
# Partial loads named on a page (their failing modules, from each cell's detail, ~70 us a cell): all of a
# real page's; a page of 20,000 partial cells names its first ones only.
PARTIAL_DETAILS = 2000


@dataclass(frozen=True)
class MatrixFilter:
    """The dashboard's row filters: the driver name contains `text` (any case), a cell fails first for
    `reason`, some cell fails. Applied by the server before paging a matrix of several pages."""

    text: str = ""
    reason: str = ""
    failing: bool = False

    def keeps(self, build: BuildRecord, reasons: set[str]) -> bool:
        """`reasons`: the first reasons of the build's failing cells."""
        return (self.text.lower() in build.driver.lower() and (not self.reason or self.reason in reasons)
                and (not self.failing or bool(reasons)))

    def keeps_failure(self, failure: BuildFailure) -> bool:
        """A build that failed fails, with no loader reason (a reason filter hides it)."""
        return self.text.lower() in failure.driver.lower() and not self.reason


@dataclass(frozen=True)
class Matrix:
    kernels: list[KernelRecord]  # columns, in stream order
    builds: list[BuildRecord]  # rows (of this page)
    cells: dict[tuple[int, int], Cell]  # (build id, kernel id)
    build_failures: list[BuildFailure]
    stream: str | None
    page: int = 1
    pages: int = 1
    totals: dict[str, int] | None = None  # the whole matrix's summary when this is one page of it
    reason_codes: list[str] | None = None  # every failing cell's first reason, when paged
    filtered: bool = False  # rows were filtered (MatrixFilter) by the server before paging
    arch: str | None = None  # the architecture asked for; None: every one
    off_page: list[BuildRecord] = field(default_factory=list)  # this page's drivers' builds on other pages

    def architectures(self) -> list[str]:
        return sorted({k.machine for k in self.kernels if k.machine})

    def placed_failures(self) -> tuple[list[BuildFailure], list[BuildFailure]]:
        """The build failures for one of these kernels (shown in its column), and the others."""
        columns = {k.release for k in self.kernels}
        return ([f for f in self.build_failures if f.kernel_release in columns],
                [f for f in self.build_failures if f.kernel_release not in columns])

    def cell(self, build: BuildRecord, kernel: KernelRecord) -> Cell | None:
        return self.cells.get((build.id, kernel.id))

    def failing_reasons(self, build: BuildRecord) -> set[str]:
        """The first reasons of the build's failing cells here (what MatrixFilter.keeps() takes)."""
        return {c.first_reason for k in self.kernels
                if (c := self.cell(build, k)) is not None and not c.loads and c.first_reason}

    def summary(self) -> dict[str, int]:
        if self.totals is not None:
            return dict(self.totals)
        cells = list(self.cells.values())
        return {"kernels": len(self.kernels), "driver_builds": len(self.builds),
                "drivers": len({b.driver for b in self.builds}), "cells": len(cells),
                "loading": sum(c.loads for c in cells), "failing": sum(not c.loads for c in cells),
                "build_failures": len(self.build_failures)}

    def reasons(self) -> list[str]:
        if self.reason_codes is not None:
            return self.reason_codes
        return sorted({c.first_reason for c in self.cells.values() if c.first_reason})


def select_kernels(store: Store, stream: str | None = None, since: str | None = None,
                   arch: str | None = None) -> list[KernelRecord]:
    """Kernels of `stream` in order (all kernels without one), from the kernel released as `since` on;
    with `arch`, only those of that architecture (`uname -m`: x86_64, aarch64, ...)."""
    kernels = store.kernels(stream)
    if arch is not None:
        architectures = sorted({k.machine for k in kernels if k.machine})
        kernels = [k for k in kernels if k.machine == arch]
        if not kernels:
            raise InputError(f"--arch {arch}: no kernel of that architecture{' in stream ' + stream if stream else ''}"
                             f" (architectures: {', '.join(architectures) or 'none known'})")
    if since is not None:
        start = next((i for i, k in enumerate(kernels) if since in (k.release, k.package_version)), None)
        if start is None:
            raise InputError(f"--since {since}: no such kernel{' in stream ' + stream if stream else ''}")
        kernels = kernels[start:]
    return kernels


def package_matrix(store: Store, stream: str | None = None, driver: str | None = None,
                   since: str | None = None, arch: str | None = None, *, page: int | None = None,
                   page_size: int = PACKAGES_PAGE) -> PackageMatrix:
    """Packages x the kernels of `stream` (every kernel without one; of `arch`), from `since` on: only the
    builds of each kernel's architecture and series count (services/packages.py); with `page`, one page
    of `page_size` packages."""
    return package_verdicts(store, select_kernels(store, stream, since, arch), driver, stream=stream, page=page,
                            page_size=page_size)


def build_matrix(store: Store, stream: str | None = None, driver: str | None = None, since: str | None = None,
                 advance: Advance = no_progress, *, page: int | None = None, page_size: int = PAGE_SIZE,
                 where: MatrixFilter | None = None, arch: str | None = None) -> Matrix:
    """The matrix; with `page`, a matrix of more than `page_size` builds is cut into pages (the rows
    `where` keeps first, when given) and only that page's cells are read: totals come from counts.
    With `arch`, the kernels and builds of that architecture; without, every one, each build's cells
    only on the kernels of its architecture."""
    refresh_verdicts(store, advance)
    kernels = select_kernels(store, stream, since, arch)
    builds = [b for b in store.driver_builds(driver) if arch is None or b.machine in (arch, None)]
    kernel_ids = [k.id for k in kernels]
    failures = store.build_failures(driver)
    if page is None or len(builds) <= page_size:
        cells = store.cells(RULES_VERSION, build_ids=[b.id for b in builds], kernel_ids=kernel_ids)
        return Matrix(kernels, builds, cells, failures, stream, arch=arch)
    counts = store.cell_counts(RULES_VERSION, kernel_ids)
    wanted = {b.id for b in builds}
    counts = [row for row in counts if row[0] in wanted]
    reasons: dict[int, set[str]] = {}
    for build_id, loads, reason, _count in counts:
        if not loads and reason:
            reasons.setdefault(build_id, set()).add(reason)
    totals = {"kernels": len(kernels), "driver_builds": len(builds), "drivers": len({b.driver for b in builds}),
              "cells": sum(row[3] for row in counts), "loading": sum(row[3] for row in counts if row[1]),
              "failing": sum(row[3] for row in counts if not row[1]), "build_failures": len(failures)}
    everything = builds
    if where is not None:
        builds = [b for b in builds if where.keeps(b, reasons.get(b.id, set()))]
    pages = max(1, -(-len(builds) // page_size))
    page = min(max(page, 1), pages)
    shown = builds[(page - 1) * page_size:page * page_size]
    cells = store.cells(RULES_VERSION, build_ids=[b.id for b in shown], kernel_ids=kernel_ids)
    names, ids = {b.driver for b in shown}, {b.id for b in shown}
    return Matrix(kernels, shown, cells, failures, stream, page, pages, totals,
                  sorted(set().union(*reasons.values())), where is not None, arch,
                  [b for b in everything if b.driver in names and b.id not in ids])


def partial_loads(store: Store, matrix: Matrix) -> dict[tuple[int, int], list[str]]:
    """The failing modules of each cell that loads some of its build's modules but not all (dahdi's 31
    of 32 on 6.1.0-47: all but dahdi_echocan_oslec), up to PARTIAL_DETAILS cells."""
    partial = [key for key, cell in matrix.cells.items() if not cell.loads and cell.modules_loading]
    details = store.verdict_details(partial[:PARTIAL_DETAILS])
    return {key: [m["name"] for m in modules if m["reasons"]] for key, modules in details.items()}


def page_packages(store: Store, matrix: Matrix) -> PackageMatrix:
    """The package verdicts of the drivers with a build on this page of `matrix`, on its kernels (the
    matrix page's package rows): from all of each package's builds (those on other pages too), the
    page's cells read already, and its build failures."""
    names = {b.driver for b in matrix.builds}
    cells = matrix.cells
    if matrix.off_page:
        cells = {**cells, **store.cells(RULES_VERSION, build_ids=[b.id for b in matrix.off_page],
                                        kernel_ids=[k.id for k in matrix.kernels])}
    failures = [f for f in matrix.build_failures if f.driver in names]
    return PackageMatrix(matrix.stream, matrix.kernels, sorted(names),
                         verdicts_of(matrix.kernels, [*matrix.builds, *matrix.off_page], cells, failures))


def failing_cell_details(store: Store, matrix: Matrix, explainable_only: bool = False
                         ) -> dict[tuple[int, int], list[dict]]:
    """Each failing cell's module verdicts (reasons and warnings; a crc-mismatch's most likely
    cause when kabigate's cache holds both kernels), for reports that show them; `explainable_only`:
    only the cells a cause may be found for (reports that show causes, not reasons)."""
    failing = [key for key, cell in matrix.cells.items() if not cell.loads]
    if explainable_only:
        failing = explainable_cells(store, matrix.builds, matrix.kernels, failing)
    details = store.verdict_details(failing)
    return cells_with_causes(store, {b.id: b for b in matrix.builds}, {k.id: k for k in matrix.kernels}, details)


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
    packages: list[PackageVerdict]  # the package on each kernel, in order


def driver_history(store: Store, driver: str, stream: str | None = None) -> list[StreamHistory]:
    """For each stream (or the one given): the package on each kernel, and each build of `driver`
    that can matter to the stream, where it stops loading and why, and which builds load there."""
    driver = store.canonical_driver(driver)  # history of an alias is its driver's
    builds = [b for b in store.driver_builds() if b.driver == driver]
    if not builds:
        raise InputError(f"no driver named {driver!r} in the store")
    refresh_verdicts(store)
    cells = store.cells(RULES_VERSION, build_ids=[b.id for b in builds])
    histories = []
    names: list[str | None] = [stream] if stream else [*store.streams()] or [None]  # None: a store without streams
    for name in names:
        kernels = store.kernels(name)
        packages = package_verdicts(store, kernels, glob.escape(driver), detail=True)
        # the builds that can matter to the stream: a 6.1 build is no news on a 6.12 stream
        relevant = [b for b in builds if any(matters_to(b, k) for k in kernels)]
        histories.append(StreamHistory(name, kernels, [_build_history(store, b, relevant, kernels, cells)
                                                        for b in relevant],
                                       [packages.verdicts[(driver, k.id)] for k in kernels
                                        if (driver, k.id) in packages.verdicts]))
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


def history_json(driver: str, histories: list[StreamHistory]) -> dict:
    return {"driver": driver, "streams": [{
        "stream": h.stream, "kernels": [k.release for k in h.kernels],
        "builds": [{**build_record_json(b.build), "loads_on": [k.release for k in b.loads_on], "breaks": [{
            "kernel": brk.kernel.release, "last_loading": brk.last_loading.release if brk.last_loading else None,
            "reasons": brk.reasons, "symbols": brk.symbols,
            "fixed_by": [build_record_json(f) for f in brk.fixed_by]} for brk in b.breaks]} for b in h.builds],
        "packages": [package_verdict_json(v) for v in h.packages],
    } for h in histories]}


# The matrix has two shapes: `matrix --format json` nests each build's cells, keyed by kernel release
# (with causes); /api/v1/matrix is paged and lists the cells flat, by build and kernel id.

def matrix_by_build_json(matrix: Matrix, details: dict[tuple[int, int], list[dict]]) -> dict:
    """`matrix --format json`. `details`: failing_cell_details(); a cell's crc-mismatches with a known
    cause add `causes` (symbol -> cause, as check --built-for gives it)."""
    def cell(found: Cell | None) -> dict | None:
        if found is None:
            return None
        causes = {r["symbol"]: r["cause"] for m in details.get((found.build_id, found.kernel_id), [])
                  for r in m["reasons"] if "cause" in r}
        return dict(cell_json(found), causes=causes) if causes else cell_json(found)

    return {
        "stream": matrix.stream, "arch": matrix.arch, "summary": matrix.summary(),
        "kernels": [kernel_record_json(k) for k in matrix.kernels],
        "builds": [dict(build_record_json(b), cells={k.release: cell(matrix.cell(b, k)) for k in matrix.kernels})
                   for b in matrix.builds],
        "build_failures": [vars(f) for f in matrix.build_failures],
    }


def matrix_page_json(matrix: Matrix) -> dict:
    """/api/v1/matrix: one page of builds, the cells flat."""
    return {"stream": matrix.stream, "arch": matrix.arch, "summary": matrix.summary(), "page": matrix.page,
            "pages": matrix.pages,
            "kernels": [kernel_record_json(k) for k in matrix.kernels],
            "builds": [build_record_json(b) for b in matrix.builds],
            "cells": [cell_json(c) for c in matrix.cells.values()],
            "build_failures": [vars(f) for f in matrix.build_failures]}


def matrix_csv(result: Matrix) -> str:
    """`matrix --format csv` and the driver page's download: a row a build, a column a kernel; a cell is
    empty (not judged), `loads`, or `fails:FIRST_REASON:FAILING_SYMBOLS`."""
    words = {b.id: ["" if (c := result.cell(b, k)) is None else _cell_word(c.loads, c.first_reason, c.failing_symbols)
                    for k in result.kernels] for b in result.builds}
    return "".join(_csv_pieces(result.kernels, result.builds, words))


def whole_matrix_csv(store: Store, stream: str | None, arch: str | None = None,
                     where: MatrixFilter | None = None) -> Iterator[str]:
    """The dashboard's /matrix.csv: matrix_csv() of the whole matrix (every page; the builds `where`
    keeps), its cells read in one query of their summaries, and written in pieces as they are sent
    (the 1,000 x 200 store's is 6 MB)."""
    refresh_verdicts(store)
    kernels = select_kernels(store, stream, arch=arch)
    builds = [b for b in store.driver_builds() if arch is None or b.machine in (arch, None)]
    column = {k.id: i for i, k in enumerate(kernels)}
    words = {b.id: [""] * len(kernels) for b in builds}
    reasons: dict[int, set[str]] = {}
    for build_id, kernel_id, loads, reason, symbols in store.cell_words(RULES_VERSION, list(column)):
        if (row := words.get(build_id)) is not None:
            row[column[kernel_id]] = _cell_word(loads, reason, symbols)
            if not loads and reason:
                reasons.setdefault(build_id, set()).add(reason)
    if where is not None:
        builds = [b for b in builds if where.keeps(b, reasons.get(b.id, set()))]
    return _csv_pieces(kernels, builds, words)


def _cell_word(loads: bool, reason: str | None, symbols: int) -> str:
    return "loads" if loads else f"fails:{reason}:{symbols}"


# Builds a piece of a streamed CSV: each piece ~300 KB on a 200-kernel stream.
CSV_ROWS = 50


def _csv_pieces(kernels: list[KernelRecord], builds: list[BuildRecord], words: dict[int, list[str]]) -> Iterator[str]:
    """The matrix CSV's one shape: a header of kernel releases, then a row a build (`words`: build id ->
    its cells' words, in the kernels' order), CSV_ROWS rows a piece."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["driver", "version", "built_for", *[k.release for k in kernels]])
    for number, build in enumerate(builds, 1):
        writer.writerow([build.driver, build.version or "", build.built_for or "", *words[build.id]])
        if number % CSV_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
