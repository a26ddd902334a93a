"""The most likely cause of each crc-mismatch in stored verdicts: from the build's built-for
kernel to the verdict's kernel, explained from their BTF (kabigate explain), as far as kabigate's
cache already holds both kernels (a gate or `explain` read them): computed on read, never stored."""

from __future__ import annotations

import contextlib
import shlex
from collections import Counter
from dataclasses import dataclass

from kabigate.explain.cache import NotCached, cached_only, generation, read_entry, write_entry
from kabigate.explain.crc import cause_json
from kabigate.explain.sources import explain_stored, sources_identity, types_cached
from kabigate.model import Kernel, ReasonCode
from kabigate.store import BuildRecord, KernelRecord, Store


def with_causes(store: Store, build: BuildRecord, kernel: KernelRecord, modules: list[dict]) -> list[dict]:
    """`modules` (Store.verdict_detail) with a `cause` on every crc-mismatch reason it can explain."""
    return cells_with_causes(store, {build.id: build}, {kernel.id: kernel}, {(build.id, kernel.id): modules})[
        (build.id, kernel.id)]


def cells_with_causes(store: Store, builds: dict[int, BuildRecord], kernels: dict[int, KernelRecord],
                      details: dict[tuple[int, int], list[dict]]) -> dict[tuple[int, int], list[dict]]:
    """`details` ((build id, kernel id) -> Store.verdict_detail) with a `cause` on every crc-mismatch
    reason the cache can explain. Cells are grouped by (built-for kernel, kernel): each pair is
    explained once, and each kernel's cached types are read once (the matrix meets a kernel in
    several pairs)."""
    built_for: dict[str | None, KernelRecord | None] = {}  # a build's built-for release -> its stored kernel
    for release in {b.built_for for b in builds.values() if b.built_for}:
        built_for[release] = next(iter(store.find_kernels(release)), None)
    pairs: dict[tuple[int, int], set[str]] = {}
    for (build_id, kernel_id), modules in details.items():
        old = built_for.get(builds[build_id].built_for)
        if old is not None and old.id != kernel_id:
            pairs.setdefault((old.id, kernel_id), set()).update(
                r["symbol"] for m in modules for r in m["reasons"]
                if r["code"] == ReasonCode.CRC_MISMATCH and r["symbol"])
    records = {k.id: k for k in (*built_for.values(), *kernels.values()) if k is not None}
    causes = pair_causes(store, records, pairs)
    found = {}
    for (build_id, kernel_id), modules in details.items():
        old = built_for.get(builds[build_id].built_for)
        known = causes.get((old.id, kernel_id), {}) if old is not None else {}
        found[(build_id, kernel_id)] = modules if not known else [
            dict(m, reasons=[dict(r, cause=known[r["symbol"]])
                             if r["code"] == ReasonCode.CRC_MISMATCH and r["symbol"] in known else r
                             for r in m["reasons"]]) for m in modules]
    return found


# A pair's identity -> (the cache's generation, the CRC changes it could not explain then): a page shown
# again does not look for the same missing entries (a headers tree's 6,000 stats, ~0.2 s a kernel, and
# both kernels' exports) until something is written to the cache. At most UNEXPLAINED_PAIRS are kept.
_UNEXPLAINED: dict[str, tuple[tuple[str, int], frozenset[str]]] = {}
UNEXPLAINED_PAIRS = 4096


def pair_causes(store: Store, records: dict[int, KernelRecord], pairs: dict[tuple[int, int], set[str]],
                cached: bool = True) -> dict[tuple[int, int], dict[str, dict]]:
    """(old kernel id, new kernel id) -> {symbol: cause_json} for the symbols of each pair whose CRC
    change the cache can explain (both kernels' types cached); `records` holds every kernel named.
    Not `cached`: the kernels' types are read from their sources where the cache lacks them (and kept)."""
    loaded: dict[int, Kernel] = {}

    def stored(kernel_id: int) -> tuple[list[str], Kernel]:
        if kernel_id not in loaded:
            loaded[kernel_id] = store.load_kernel(kernel_id)
        return list(records[kernel_id].sources), loaded[kernel_id]

    causes: dict[tuple[int, int], dict[str, dict]] = {}
    with cached_only() if cached else contextlib.nullcontext():
        for (old_id, new_id), symbols in pairs.items():
            # A pair's causes are kept as a small entry of their own: the next matrix reads them
            # without unpickling both kernels' types (~0.6 s each, ~1 s more with their modules).
            identity = "\0".join(("causes", *(cause_identity(records[i]) for i in (old_id, new_id))))
            known = read_entry(identity) or {}
            missing = sorted(symbols - known.keys())
            now, (then, unexplained) = generation(), _UNEXPLAINED.get(identity, (None, frozenset()))
            if cached and then == now and unexplained.issuperset(missing):
                missing = []  # the cache could not explain them and has not changed since
            if missing:
                exports = stored(old_id)[1].exports
                # vmlinux's exports apart from modules': the modules' types may not be cached.
                for group in ([s for s in missing if s not in exports or exports[s].owner == "vmlinux"],
                              [s for s in missing if s in exports and exports[s].owner != "vmlinux"]):
                    try:
                        explained = explain_stored(stored(old_id), stored(new_id), group) or {}
                    except NotCached:
                        continue
                    known = {**known, **{s: cause_json(e) for s, e in explained.items()}}
                if known.keys() & set(missing):
                    write_entry(identity, known)
                if cached and not known.keys() >= set(missing):
                    if len(_UNEXPLAINED) >= UNEXPLAINED_PAIRS:
                        _UNEXPLAINED.clear()
                    _UNEXPLAINED[identity] = (now, frozenset(set(missing) - known.keys()))
            causes[(old_id, new_id)] = known
    return causes


def cached_causes(store: Store, old: KernelRecord, new: KernelRecord, symbols: set[str]) -> dict[str, dict]:
    """The causes of `symbols`' CRC changes from `old` to `new` that kabigate's cache holds: the pair's
    causes as a gate, matrix or page kept them, or else both kernels' cached types (explained then, and
    kept as the matrix keeps them). Neither kernel is read from the store unless both types are cached."""
    known = read_entry("\0".join(("causes", cause_identity(old), cause_identity(new)))) or {}
    if not symbols - known.keys() or not all(types_cached(list(k.sources), k.release) for k in (old, new)):
        return {s: known[s] for s in symbols if s in known}
    found = pair_causes(store, {old.id: old, new.id: new}, {(old.id, new.id): symbols})[(old.id, new.id)]
    return {s: found[s] for s in symbols if s in found}


def cached_cause(store: Store, old: KernelRecord, new: KernelRecord, symbol: str) -> dict | None:
    """cached_causes() of one symbol; None when the cache holds none."""
    return cached_causes(store, old, new, {symbol}).get(symbol)


# Symbols a page's explain command names; more: the command explains every changed export.
EXPLAIN_SYMBOLS = 12


@dataclass(frozen=True)
class PairCauses:
    """The causes a page shows of the CRC changes from `old` to `new`: each symbol's (stored by a gate
    run with --explain, or from the cache), and the `kabigate explain` command for those without one."""

    old: KernelRecord
    new: KernelRecord
    causes: dict[str, dict]  # symbol -> cause_json
    unknown: list[str]  # CRC changes the cache has no cause of
    command: str | None  # what finds them (None: every cause is known)

    def types(self, symbols: list[str]) -> list[tuple[str, int]]:
        """The most likely changed types behind `symbols`' known causes, with how many each, the most first."""
        return Counter(c["most_likely"]["type"] for s in symbols
                       if (c := self.causes.get(s)) and c["most_likely"]).most_common()


def causes_of_changes(store: Store, old: KernelRecord, new: KernelRecord, symbols: set[str],
                      stored: dict[str, dict] | None = None) -> PairCauses:
    """`symbols` changed CRC from `old` to `new`: their causes from `stored` (a gate report's), else the cache."""
    causes = {s: c for s, c in (stored or {}).items() if s in symbols}
    causes.update(cached_causes(store, old, new, symbols - causes.keys()) if symbols - causes.keys() else {})
    unknown = sorted(symbols - causes.keys())
    return PairCauses(old, new, causes, unknown, explain_command(old, new, unknown) if unknown else None)


def explain_command(old: KernelRecord, new: KernelRecord, symbols: list[str]) -> str:
    """The `kabigate explain` command that explains `symbols`' CRC changes from stored `old` to `new`
    (every changed export's when there are more than EXPLAIN_SYMBOLS), and caches both kernels' types."""
    return " ".join(["kabigate explain", *_paths("--from", old), *_paths("--to", new),
                     *(map(shlex.quote, symbols) if len(symbols) <= EXPLAIN_SYMBOLS else [])])


def _paths(option: str, kernel: KernelRecord) -> list[str]:
    """`explain`'s options naming a stored kernel's files: one a path (a source of packages read
    together is stored as their paths joined by ", ")."""
    return [f"{option} {shlex.quote(path)}" for source in kernel.sources for path in source.split(", ")]


def explainable_cells(store: Store, builds: list[BuildRecord], kernels: list[KernelRecord],
                      cells: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The cells (build id, kernel id) whose built-for kernel and kernel both have their types in the
    cache: the only ones worth reading the stored details of for causes (a matrix may have 200,000)."""
    records = {k.id: k for k in kernels}
    for release in {b.built_for for b in builds if b.built_for}:
        records.update((k.id, k) for k in store.find_kernels(release)[:1])
    cached = {kernel_id: types_cached(list(k.sources), k.release) for kernel_id, k in records.items()}
    built_for = {b.id: next((k.id for k in records.values() if k.release == b.built_for), None) for b in builds}
    return [(b, k) for b, k in cells
            if (old := built_for[b]) is not None and old != k and cached[old] and cached.get(k)]


def cause_identity(kernel: KernelRecord) -> str:
    """A stored kernel as its causes depend on it: what it exports (the store's record of it) and
    the files its types and headers are read from."""
    return "\0".join((kernel.release, kernel.package_version or "", kernel.build_date or "", str(kernel.exports),
                      sources_identity(list(kernel.sources))))
