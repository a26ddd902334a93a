"""The maintainer's overview: per stream and architecture, the newest kernel, the packages that work
on it and what changed since the kernel before it, and a timeline over the stream.

A package works on a kernel as services/packages.py says (one of its builds of the kernel's series
loads whole). The newest kernel and the one before it get full package verdicts (states, and why a
package does not work); the timeline only counts working packages per kernel, from the cells that
load, so a stream of 200 kernels and 1,000 packages is read in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from kabigate.reports.verdicts import kernel_record_json
from kabigate.rules import RULES_VERSION
from kabigate.services.ingest import refresh_verdicts
from kabigate.services.packages import PackageVerdict, matters_to, package_verdict_json, package_verdicts
from kabigate.store import GateRun, KernelRecord, Store
from kabigate.vocabulary import PackageState


@dataclass(frozen=True)
class TimelinePoint:
    """One kernel of a stream, beside the kernel before it."""

    kernel: KernelRecord
    working: int  # packages with a build that loads whole here
    exports_changed: int | None  # the previous kernel's exports removed or changed here (None: the first)
    layout_changed: bool  # module_layout's CRC differs from the previous kernel's: every old build is refused
    gate: GateRun | None  # the newest gate run recorded for it in this stream

    @property
    def abi_bump(self) -> bool:
        """Exports removed or changed: what a distribution bumps its kernel ABI name for."""
        return bool(self.exports_changed)


@dataclass(frozen=True)
class StreamOverview:
    stream: str
    machine: str | None
    timeline: list[TimelinePoint]  # the stream's kernels of this machine, oldest first
    packages: int  # packages with a build (or a build failure) that matters to some kernel of it
    newest: list[PackageVerdict]  # each package something is known of on the newest kernel
    broke: list[PackageVerdict]  # on the newest kernel, of the packages that worked on the previous
    fixed: list[PackageVerdict]  # on the newest kernel, of the known packages that did not work on the previous

    @property
    def kernel(self) -> TimelinePoint:
        return self.timeline[-1]

    @property
    def previous(self) -> TimelinePoint | None:
        return self.timeline[-2] if len(self.timeline) > 1 else None

    def count(self, *states: PackageState) -> int:
        return sum(v.state in states for v in self.newest)

    @property
    def counts(self) -> dict[str, int]:
        """Packages on the newest kernel: working as stored, working after a rebuild, not working."""
        return {"working": self.count(PackageState.LOADS),
                "working_after_rebuild": self.count(PackageState.LOADS_AFTER_REBUILD),
                "broken": sum(not v.works and v.state != PackageState.EXCLUDED for v in self.newest),
                "excluded": self.count(PackageState.EXCLUDED)}


def overview(store: Store, arch: str | None = None) -> list[StreamOverview]:
    """Every stream, split by the architecture its kernels are for (as stored), in name order; with
    `arch`, that architecture's only (`uname -m`)."""
    refresh_verdicts(store)
    builds = store.driver_builds()
    failures = store.build_failures()
    runs: dict[tuple[int, str | None], GateRun] = {}
    for run in store.gate_runs():  # newest first: the first met is the latest
        runs.setdefault((run.kernel_id, run.stream), run)
    found = []
    for stream in store.streams():
        by_machine: dict[str | None, list[KernelRecord]] = {}
        for kernel in store.kernels(stream):
            by_machine.setdefault(kernel.machine, []).append(kernel)
        for machine, kernels in sorted(by_machine.items(), key=lambda item: item[0] or ""):
            if arch is not None and machine != arch:
                continue
            found.append(_stream_overview(store, stream, machine, kernels, builds, failures, runs))
    return found


def _stream_overview(store: Store, stream: str, machine: str | None, kernels: list[KernelRecord], builds, failures,
                     runs: dict[tuple[int, str | None], GateRun]) -> StreamOverview:
    releases = {k.release for k in kernels}
    relevant = {b.id: b for b in builds if any(matters_to(b, k) for k in kernels)}
    by_id = {k.id: k for k in kernels}
    working: dict[int, set[str]] = {k.id: set() for k in kernels}
    for build_id, kernel_id in store.loading_cells(RULES_VERSION, list(by_id)):
        if build_id in relevant and matters_to(relevant[build_id], by_id[kernel_id]):
            working[kernel_id].add(relevant[build_id].driver)
    pairs = list(zip(kernels, kernels[1:]))
    dropped = store.exports_dropped([(old.id, new.id) for old, new in pairs])
    timeline = [TimelinePoint(kernel, len(working[kernel.id]),
                              dropped[(previous.id, kernel.id)] if previous else None,
                              previous is not None and previous.module_layout_crc != kernel.module_layout_crc,
                              runs.get((kernel.id, stream)))
                for previous, kernel in [(None, kernels[0]), *pairs]]
    last = package_verdicts(store, kernels[-2:], detail=True, stream=stream)
    newest = [last.verdict(name, kernels[-1]) for name in last.known(kernels[-1])]
    broke, fixed = [], []
    if len(kernels) > 1:
        before = {name: last.verdict(name, kernels[-2]) for name in last.known(kernels[-2])}
        broke = [v for v in newest if not v.works and v.driver in before and before[v.driver].works]
        fixed = [v for v in newest if v.works and v.driver in before and not before[v.driver].works]
    packages = {b.driver for b in relevant.values()} | {f.driver for f in failures if f.kernel_release in releases}
    return StreamOverview(stream, machine, timeline, len(packages), newest, broke, fixed)


def overview_json(streams: list[StreamOverview]) -> dict:
    """/api/v1/overview."""
    def point(p: TimelinePoint) -> dict:
        return {"kernel": p.kernel.release, "working": p.working, "exports_changed": p.exports_changed,
                "abi_bump": p.abi_bump, "module_layout_changed": p.layout_changed,
                "gate": None if p.gate is None else {"uuid": p.gate.uuid, "outcome": p.gate.outcome}}

    return {"streams": [{
        "stream": s.stream, "machine": s.machine, "kernel": kernel_record_json(s.kernel.kernel),
        "previous": s.previous.kernel.release if s.previous else None,
        "gate": point(s.kernel)["gate"], "packages": s.packages, "counts": s.counts,
        "broke": [package_verdict_json(v) for v in s.broke], "fixed": [package_verdict_json(v) for v in s.fixed],
        "timeline": [point(p) for p in s.timeline],
    } for s in streams]}
