"""What the pages and the API show, from the services: finding records by their URL names and the
JSON shapes of the store's records."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Path, Query

from kabigate.errors import InputError
from kabigate.formats.stablelist import Stablelist
from kabigate.reports.verdicts import build_record_json, kernel_record_json
from kabigate.rules import RULES_VERSION
from kabigate.services.gate import KernelStory
from kabigate.services.ingest import refresh_verdicts
from kabigate.services.symbols import SymbolStory, symbol_story
from kabigate.store import BuildRecord, Cell, GateRun, KernelRecord, Store
from kabigate.vocabulary import GateClass

# A store row id in a URL: SQLite and PostgreSQL integers are 64-bit; a larger number is a 422,
# not an overflow deep in the database driver.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]
ArchQuery = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_]+$",
                                        description="only this architecture (`uname -m`: x86_64, aarch64, ...)")]


def pick_architecture(store: Store, stream: str | None, arch: str | None) -> tuple[list[str], str | None]:
    """The architectures of `stream`'s kernels (every kernel's without a stream), and the one a page shows:
    `arch`, else the first when there are several, so that no table pairs a build with another
    architecture's kernel (a build is judged on its own architecture's kernels only)."""
    architectures = sorted({k.machine for k in store.kernels(stream) if k.machine})
    if arch is not None and arch not in architectures:
        raise HTTPException(404, f"no kernel of architecture {arch}" + (f" in stream {stream}" if stream else "")
                            + f" (architectures: {', '.join(architectures) or 'none known'})")
    return architectures, arch or (architectures[0] if len(architectures) > 1 else None)


def find_kernel(store: Store, release: str, stream: str | None = None) -> KernelRecord:
    """The kernel a URL names by its release (`stream` tells apart two stored kernels of one release)."""
    found = [k for k in store.find_kernels(release) if stream is None or stream in dict(k.streams)]
    if not found:
        raise HTTPException(404, f"no kernel {release} in the store" + (f" in stream {stream}" if stream else ""))
    if len(found) > 1:
        raise HTTPException(409, f"several stored kernels are {release}: add ?stream=NAME")
    return found[0]


def find_cell(store: Store, build_id: int, kernel_id: int) -> tuple[BuildRecord, KernelRecord, Cell]:
    """One verdict by its build and kernel ids (judged first if the rules changed since)."""
    try:
        build, kernel = store.driver_build(build_id), store.kernel(kernel_id)
    except IndexError:
        raise HTTPException(404, f"no driver build {build_id} or no kernel {kernel_id} in the store") from None
    refresh_verdicts(store, kernel_ids=[kernel_id])
    cells = store.cells(RULES_VERSION, build_ids=[build_id], kernel_ids=[kernel_id])
    return build, kernel, cells[(build_id, kernel_id)]


def find_gate_run(store: Store, run: str) -> GateRun:
    try:
        return store.gate_run(run)
    except InputError:
        raise HTTPException(404, f"no gate run {run} in the store") from None


def find_symbol(store: Store, name: str, stablelist: Stablelist | None) -> SymbolStory:
    try:
        return symbol_story(store, name, stablelist)
    except InputError as error:
        raise HTTPException(404, str(error)) from None


# -- JSON shapes ----------------------------------------------------------------------------------


def gate_run_json(run: GateRun, kernels: dict[int, KernelRecord]) -> dict:
    return {"uuid": run.uuid, "outcome": run.outcome, "stream": run.stream,
            "kernel": kernels[run.kernel_id].release,
            "baseline": kernels[run.baseline_id].release if run.baseline_id is not None else None,
            "created_at": run.created_at.isoformat(), "published_to": run.published_to,
            "resultsdb_id": run.resultsdb_id}


def story_json(story: KernelStory) -> dict:
    result = story.result
    return {
        "kernel": kernel_record_json(story.kernel), "stream": story.stream,
        "previous": kernel_record_json(story.previous) if story.previous else None,
        "counts": ({klass: result.count(klass) for klass in GateClass} if result else None),
        "export_changes": result.export_changes if result else None,
        "regressions": [{"build": build_record_json(f.build), "category": f.category,
                         "symbols": sorted({s.name for s in f.symbols}),
                         "reasons": sorted({r["code"] for r in f.reasons})} for f in result.regressions]
        if result else [],
        "fixed": [build_record_json(f.build) for f in result.builds if f.klass == GateClass.FIXED] if result else [],
        "gate_runs": [{"uuid": r.uuid, "outcome": r.outcome, "created_at": r.created_at.isoformat()}
                      for r in story.gate_runs],
    }
