"""Package-level verdicts: does a driver package work on a kernel?

People think in packages ("does kmod-jool work on this kernel?"); the store holds builds. A package
works on a kernel when one of its builds loads there whole: a build made for another kernel (what
weak-modules reuses) or one made for this kernel (what DKMS, akmods or a driver repository's rebuild
makes). Otherwise its state (vocabulary.PackageState) says how far it gets, from the stored
verdicts and the recorded build failures: the best build's partial load, the rebuild's error.

Only the builds that can matter to a kernel are considered: those made for a kernel of its series,
the same VERSION.PATCHLEVEL (the top Makefile's, the first two numbers of the release) and flavor.
A 6.1 build is never what a package repository or DKMS installs on a 6.12 kernel (kmods are built
per major release, DKMS per kernel), so on a 6.12 stream it is noise, not a failing package.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from kabigate.model import ReasonCode, version_key
from kabigate.reports.verdicts import kernel_record_json
from kabigate.rules import RULES_VERSION
from kabigate.services.ingest import refresh_verdicts
from kabigate.store import BuildFailure, BuildRecord, Cell, KernelRecord, Store
from kabigate.store.records import flavor_of
from kabigate.vocabulary import PackageState

WORKING = (PackageState.LOADS, PackageState.LOADS_AFTER_REBUILD)
# Packages on a page of /api/v1/packages: 100 x 200 kernels is 20,000 verdicts, as a matrix page's cells.
PACKAGES_PAGE = 100
# dkms refuses a package whose BUILD_EXCLUSIVE_KERNEL/ARCH/CONFIG does not match the kernel ("The
# dkms.conf for this module includes a BUILD_EXCLUSIVE directive which does not match this kernel";
# the corpus' emulation records "dkms excludes KVER: BUILD_EXCLUSIVE_KERNEL=..."): not a failure.
EXCLUSION = re.compile(r"BUILD_EXCLUSIVE")


@functools.lru_cache(maxsize=4096)  # asked for each (build, kernel) pair of a matrix: a few releases, many times
def series(release: str) -> tuple[str, str]:
    """(VERSION.PATCHLEVEL, flavor) of a kernel release: 6.1.0-47-amd64 -> (6.1, amd64)."""
    found = re.match(r"(\d+)\.(\d+)", release)
    return (f"{found[1]}.{found[2]}" if found else release, flavor_of(release))


def matters_to(build: BuildRecord, kernel: KernelRecord) -> bool:
    """A build counts for a kernel of its own architecture and series (a build of unknown vermagic,
    for any of its architecture)."""
    return build.runs_on(kernel) and (build.built_for is None or series(build.built_for) == series(kernel.release))


def is_exclusion(failure: BuildFailure) -> bool:
    return EXCLUSION.search(failure.error) is not None


@dataclass(frozen=True)
class BuildOnKernel:
    build: BuildRecord
    cell: Cell


@dataclass(frozen=True)
class PackageVerdict:
    """One driver package on one kernel."""

    driver: str
    kernel: KernelRecord
    state: PackageState
    best: BuildOnKernel | None  # the build that loads, or else the one that loads the most modules
    failure: BuildFailure | None  # its recorded build failure (or exclusion) for this kernel
    builds: tuple[BuildOnKernel, ...]  # every build that matters to the kernel, best first
    failing_modules: tuple[str, ...] = ()  # the best build's modules that do not load (with detail)
    reasons: tuple[dict, ...] = ()  # their reasons, each with its module's name (with detail)

    @property
    def works(self) -> bool:
        return self.state in WORKING

    @property
    def modules_loading(self) -> int:
        return self.best.cell.modules_loading if self.best else 0

    @property
    def rebuilt(self) -> bool:
        """A build for this kernel was made (it may not load) or its making failed."""
        return self.failure is not None or any(b.build.built_for == self.kernel.release for b in self.builds)


@dataclass(frozen=True)
class PackageMatrix:
    stream: str | None
    kernels: list[KernelRecord]
    drivers: list[str]  # the packages with a build or a build failure that matters to some kernel shown (this page's)
    verdicts: dict[tuple[str, int], PackageVerdict]  # (driver, kernel id)
    page: int | None = None  # one page of the packages (package_verdicts' `page`); None: every one
    pages: int = 1
    total: int | None = None  # the packages on every page, when this is one

    def verdict(self, driver: str, kernel: KernelRecord) -> PackageVerdict:
        return self.verdicts[(driver, kernel.id)]

    def working(self, kernel: KernelRecord) -> list[str]:
        return [d for d in self.drivers if self.verdicts[(d, kernel.id)].works]

    def known(self, kernel: KernelRecord) -> list[str]:
        """The packages something is known of on this kernel (not `not-tried`)."""
        return [d for d in self.drivers if self.verdicts[(d, kernel.id)].state != PackageState.NOT_TRIED]

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {state: 0 for state in PackageState}
        for verdict in self.verdicts.values():
            counts[verdict.state] += 1
        return {"kernels": len(self.kernels), "packages": len(self.drivers), **counts}


def package_verdicts(store: Store, kernels: list[KernelRecord], driver: str | None = None, *,
                     stream: str | None = None, detail: bool = False, page: int | None = None,
                     page_size: int = PACKAGES_PAGE) -> PackageMatrix:
    """Each package (driver; `driver`: a shell pattern on the name) on each of `kernels`, from the
    current verdicts (computed first when missing). With `detail`, a package that does not work
    names its best build's failing modules and their reasons. With `page`, the packages are cut into
    pages of `page_size` and only that page's verdicts are read (a whole 1,000 x 200 store's are 200,000)."""
    refresh_verdicts(store, kernel_ids=[k.id for k in kernels])
    builds, failures = store.driver_builds(driver), store.build_failures(driver)
    names = tried_packages(kernels, builds, failures)
    shown, pages = names, 1
    if page is not None:
        pages = max(1, -(-len(names) // page_size))
        page = min(page, pages)
        shown = names[(page - 1) * page_size:page * page_size]
    wanted = set(shown)  # and only their builds' verdicts are read
    builds, failures = [b for b in builds if b.driver in wanted], [f for f in failures if f.driver in wanted]
    cells = store.cells(RULES_VERSION, build_ids=[b.id for b in builds], kernel_ids=[k.id for k in kernels])
    verdicts = verdicts_of(kernels, builds, cells, failures)
    if detail:
        verdicts = _with_detail(store, verdicts)
    return PackageMatrix(stream, kernels, shown, verdicts, page, pages, None if page is None else len(names))


def tried_packages(kernels: list[KernelRecord], builds: list[BuildRecord], failures: list[BuildFailure]) -> list[str]:
    """The packages something is known of on some of `kernels` (not `not-tried` on all): with a build
    that matters to one (every such pair is judged: refresh_verdicts) or a build failure for one.
    Read from the records alone, without a verdict: a page of packages needs only its own."""
    # matters_to() depends on the architectures and series only: one kernel and one build of each stand for all
    kinds = list({(k.machine, series(k.release)): k for k in kernels}.values())
    matters: dict[tuple, bool] = {}
    for build in builds:
        key = (build.machine, build.built_for and series(build.built_for))
        if key not in matters:
            matters[key] = any(matters_to(build, k) for k in kinds)
    releases = {k.release for k in kernels}
    return sorted({b.driver for b in builds if matters[(b.machine, b.built_for and series(b.built_for))]}
                  | {f.driver for f in failures if f.kernel_release in releases})


def verdicts_of(kernels: list[KernelRecord], builds: list[BuildRecord], cells: dict[tuple[int, int], Cell],
                failures: list[BuildFailure]) -> dict[tuple[str, int], PackageVerdict]:
    """(driver, kernel id) -> each package's verdict on each of `kernels`, from its `builds`' `cells`
    ((build id, kernel id), current verdicts) and its recorded build `failures`."""
    by_driver: dict[str, list[BuildRecord]] = {}
    for build in builds:
        by_driver.setdefault(build.driver, []).append(build)
    failed: dict[tuple[str, str], list[BuildFailure]] = {}
    for failure in failures:
        failed.setdefault((failure.driver, failure.kernel_release), []).append(failure)
    verdicts = {}
    for kernel in kernels:
        for name in sorted(by_driver.keys() | {f.driver for f in failures}):
            found = [BuildOnKernel(b, cells[(b.id, kernel.id)]) for b in by_driver.get(name, ())
                     if matters_to(b, kernel) and (b.id, kernel.id) in cells]
            verdicts[(name, kernel.id)] = _verdict(name, kernel, found, failed.get((name, kernel.release), []))
    return verdicts


def packages_on(store: Store, kernel: KernelRecord, driver: str | None = None) -> list[PackageVerdict]:
    """Every package something is known of on one kernel, with the failing modules of those that do not work."""
    found = package_verdicts(store, [kernel], driver, detail=True)
    return [found.verdict(name, kernel) for name in found.drivers]


def on_newest_kernels(store: Store, driver: str | None = None) -> list[tuple[str, PackageVerdict]]:
    """(stream, verdict) of each package on the newest kernel of each stream, of each architecture in it
    (`drivers`: does it work today?)."""
    newest = {(stream, kernel.machine): kernel for stream in store.streams() for kernel in store.kernels(stream)}
    found = package_verdicts(store, list({k.id: k for k in newest.values()}.values()), driver)
    return [(stream, found.verdict(name, kernel)) for (stream, _), kernel in newest.items() for name in found.drivers
            if found.verdict(name, kernel).state != PackageState.NOT_TRIED]


def _verdict(driver: str, kernel: KernelRecord, found: list[BuildOnKernel], failed: list[BuildFailure]
             ) -> PackageVerdict:
    def rank(entry: BuildOnKernel):
        # loading whole first, and then a build reused from another kernel before one made for this one
        # (a rebuild is needed only when nothing stored loads); then the most modules loading, one not
        # refused whole for another module_layout (which says nothing of the package), the newest
        return (entry.cell.loads, entry.cell.loads and entry.build.built_for != kernel.release,
                entry.cell.modules_loading, entry.cell.first_reason != ReasonCode.MODULE_LAYOUT_MISMATCH,
                entry.build.built_for == kernel.release,
                version_key(entry.build.version or ""), version_key(entry.build.built_for or ""))

    ordered = tuple(sorted(found, key=rank, reverse=True))
    best = ordered[0] if ordered else None
    failure = max(failed, key=lambda f: version_key(f.version)) if failed else None
    if best is not None and best.cell.loads:
        state = PackageState.LOADS_AFTER_REBUILD if best.build.built_for == kernel.release else PackageState.LOADS
    elif failure is not None and is_exclusion(failure):
        state = PackageState.EXCLUDED
    elif best is not None and best.cell.modules_loading:
        state = PackageState.PARTIAL
    elif failure is not None:
        state = PackageState.REBUILD_FAILS
    elif best is not None:
        state = PackageState.BROKEN
    else:
        state = PackageState.NOT_TRIED
    return PackageVerdict(driver, kernel, state, best, failure, ordered)


def _with_detail(store: Store, verdicts: dict[tuple[str, int], PackageVerdict]
                 ) -> dict[tuple[str, int], PackageVerdict]:
    wanted = {key: (v.best.build.id, v.kernel.id) for key, v in verdicts.items() if v.best and not v.best.cell.loads}
    details = store.verdict_details(list(wanted.values()))
    found = dict(verdicts)
    for key, cell in wanted.items():
        modules = details.get(cell, [])
        failing = [m for m in modules if m["reasons"]]
        found[key] = PackageVerdict(**{**vars(verdicts[key]),
                                       "failing_modules": tuple(m["name"] for m in failing),
                                       "reasons": tuple(dict(r, module=m["name"]) for m in failing
                                                        for r in m["reasons"])})
    return found


def why_not(verdict: PackageVerdict) -> str | None:
    """One line on why a package does not work: its build failure, or its best build's first failure."""
    if verdict.works or verdict.state == PackageState.NOT_TRIED:
        return None
    if verdict.failure is not None and verdict.state in (PackageState.EXCLUDED, PackageState.REBUILD_FAILS):
        return f"{verdict.failure.version} does not build: {verdict.failure.error}"
    best = verdict.best
    if best is None:  # no stored build for the kernel: its state says all there is
        return None
    text = f"{best.cell.modules_loading} of {best.cell.modules} modules of {best.build.version} " \
           f"(built for {best.build.built_for}) load"
    first = next((r for r in verdict.reasons if r["code"] != ReasonCode.DEPENDENCY_FAILS), None) \
        or (verdict.reasons[0] if verdict.reasons else None)
    if first is not None:
        text += f"; {first['module']}: {first['code']}" + (f" {first['symbol']}" if first["symbol"] else "")
    elif best.cell.first_reason:
        text += f"; {best.cell.first_reason}"
    if verdict.failure is not None:
        text += f"; its rebuild failed: {verdict.failure.error}"
    return text


def package_verdict_json(verdict: PackageVerdict) -> dict:
    """One package on one kernel (the gate report, `matrix --packages`, /api/v1/packages): its state,
    the build that decides it (the one loading, or the one loading the most) and the build failure."""
    best = verdict.best
    return {"driver": verdict.driver, "kernel": verdict.kernel.release, "state": verdict.state,
            "build": None if best is None else {"id": best.build.id, "version": best.build.version,
                                                "built_for": best.build.built_for},
            "modules": best.cell.modules if best else 0, "modules_loading": verdict.modules_loading,
            "first_reason": best.cell.first_reason if best else None,
            "failing_modules": list(verdict.failing_modules), "builds": len(verdict.builds),
            "build_failure": None if verdict.failure is None else {"version": verdict.failure.version,
                                                                   "error": verdict.failure.error},
            "why": why_not(verdict)}


def package_matrix_json(matrix: PackageMatrix) -> dict:
    """`matrix --packages --format json` and /api/v1/packages: each package's verdict on each kernel,
    in the kernels' order. A page of packages (the API's) says which, and its summary counts the
    kernels and every page's packages only: a count per state would read every page's verdicts."""
    paging = {} if matrix.page is None else {"page": matrix.page, "pages": matrix.pages}
    summary = matrix.summary() if matrix.page is None else {"kernels": len(matrix.kernels), "packages": matrix.total}
    return {"stream": matrix.stream, "summary": summary, **paging,
            "kernels": [kernel_record_json(k) for k in matrix.kernels],
            "packages": [{"driver": name, "working_on": [k.release for k in matrix.kernels
                                                         if matrix.verdict(name, k).works],
                          "verdicts": [package_verdict_json(matrix.verdict(name, k)) for k in matrix.kernels]}
                         for name in matrix.drivers]}
