"""A symbol along the store: its CRC on each stream's kernels (where it changed, and why when kabigate's
cache knows), whether the server's stablelist lists it, and which stored driver builds import it;
and the dashboard's search over packages, kernels and symbols."""

from __future__ import annotations

from dataclasses import dataclass

from kabigate.errors import InputError
from kabigate.formats.stablelist import Stablelist
from kabigate.model import Export
from kabigate.reports.verdicts import build_record_json, crc_text, kernel_record_json
from kabigate.services.causes import cached_cause, explain_command
from kabigate.store import BuildRecord, KernelRecord, Store

SEARCH_LIMIT = 50  # matches of each kind a search shows


@dataclass(frozen=True)
class SymbolOnKernel:
    kernel: KernelRecord
    export: Export | None  # None: the kernel does not export it
    changed: bool  # its CRC, or whether it is exported, differs from the kernel before it in the stream
    cause: dict | None = None  # a CRC change's cause (explain.cause_json), when the cache holds it
    explain: str | None = None  # a CRC change the cache has no cause of: the command that finds it


@dataclass(frozen=True)
class SymbolStream:
    stream: str | None  # None: the kernels in no stream
    kernels: list[SymbolOnKernel]

    @property
    def changes(self) -> int:
        return sum(k.changed for k in self.kernels)


@dataclass(frozen=True)
class Importer:
    build: BuildRecord
    modules: list[str]  # its modules that import the symbol
    crcs: list[int | None]  # the CRCs they were built with


@dataclass(frozen=True)
class SymbolStory:
    name: str
    streams: list[SymbolStream]
    stablelisted: bool | None  # None: no stablelist given to the server
    importers: list[Importer]


def symbol_story(store: Store, name: str, stablelist: Stablelist | None = None) -> SymbolStory:
    exports = store.export_of(name)
    importing = store.importers_of(name)
    if not exports and not importing:
        raise InputError(f"no stored kernel exports {name} and no stored driver build imports it")
    streams = []
    groups: list[tuple[str | None, list[KernelRecord]]] = [(s, store.kernels(s)) for s in store.streams()]
    groups.append((None, [k for k in store.kernels() if not k.streams]))
    for stream, kernels in groups:
        if not kernels:
            continue
        points: list[SymbolOnKernel] = []
        before: KernelRecord | None = None
        for kernel in kernels:
            export = exports.get(kernel.id)
            cause = command = None
            if before is None:
                changed = False
            else:
                previous = exports.get(before.id)
                crc_changed = previous is not None and export is not None and previous.crc != export.crc
                changed = crc_changed or (previous is None) != (export is None)
                cause = cached_cause(store, before, kernel, name) if crc_changed else None
                if crc_changed and cause is None:
                    command = explain_command(before, kernel, [name])
            points.append(SymbolOnKernel(kernel, export, changed, cause, command))
            before = kernel
        streams.append(SymbolStream(stream, points))
    builds = {b.id: b for b in store.driver_builds()}
    by_build: dict[int, Importer] = {}
    for build_id, path, crc in importing:
        importer = by_build.setdefault(build_id, Importer(builds[build_id], [], []))
        importer.modules.append(path.rsplit("/", 1)[-1])
        importer.crcs.append(crc)
    return SymbolStory(name, streams, None if stablelist is None else name in stablelist,
                       sorted(by_build.values(), key=lambda i: (i.build.driver, i.build.built_for or "")))


def symbol_story_json(story: SymbolStory) -> dict:
    """/api/v1/symbols/NAME."""
    return {"symbol": story.name, "stablelisted": story.stablelisted,
            "streams": [{"stream": s.stream, "kernels": [{
                "kernel": p.kernel.release, "crc": crc_text(p.export.crc) if p.export else None,
                "exported": p.export is not None, "owner": p.export.owner if p.export else None,
                "changed": p.changed, "cause": p.cause, "explain": p.explain} for p in s.kernels]}
                        for s in story.streams],
            "importers": [{"build": build_record_json(i.build), "modules": i.modules,
                           "crcs": [crc_text(c) for c in i.crcs]} for i in story.importers]}


@dataclass(frozen=True)
class SearchResult:
    query: str
    drivers: list[str]
    kernels: list[KernelRecord]
    symbols: list[str]


def search(store: Store, query: str) -> SearchResult:
    """Drivers (packages) and kernel releases containing `query` (any case), and symbols, up to SEARCH_LIMIT each."""
    text = query.strip()
    if not text:
        return SearchResult(query, [], [], [])
    lowered = text.lower()
    drivers = sorted({b.driver for b in store.driver_builds() if lowered in b.driver.lower()}
                     | {f.driver for f in store.build_failures() if lowered in f.driver.lower()})
    kernels = [k for k in store.kernels() if lowered in k.release.lower()
               or lowered in (k.package_version or "").lower()]
    return SearchResult(text, drivers[:SEARCH_LIMIT], kernels[:SEARCH_LIMIT],
                        store.symbols_matching(text, SEARCH_LIMIT))


def search_json(result: SearchResult) -> dict:
    return {"query": result.query, "drivers": result.drivers,
            "kernels": [kernel_record_json(k) for k in result.kernels], "symbols": result.symbols}
