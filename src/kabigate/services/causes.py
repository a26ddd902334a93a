"""The most likely cause of each crc-mismatch in stored verdicts: from the build's built-for
kernel to the verdict's kernel, explained from their BTF (kabigate explain), as far as kabigate's
cache already holds both kernels (a gate or `explain` read them): computed on read, never stored."""

from __future__ import annotations

from kabigate.explain.cache import NotCached, cached_only, read_entry, write_entry
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


def pair_causes(store: Store, records: dict[int, KernelRecord],
                pairs: dict[tuple[int, int], set[str]]) -> dict[tuple[int, int], dict[str, dict]]:
    """(old kernel id, new kernel id) -> {symbol: cause_json} for the symbols of each pair whose CRC
    change the cache can explain (both kernels' types cached); `records` holds every kernel named."""
    loaded: dict[int, Kernel] = {}

    def stored(kernel_id: int) -> tuple[list[str], Kernel]:
        if kernel_id not in loaded:
            loaded[kernel_id] = store.load_kernel(kernel_id)
        return list(records[kernel_id].sources), loaded[kernel_id]

    causes: dict[tuple[int, int], dict[str, dict]] = {}
    with cached_only():
        for (old_id, new_id), symbols in pairs.items():
            # A pair's causes are kept as a small entry of their own: the next matrix reads them
            # without unpickling both kernels' types (~0.6 s each, ~1 s more with their modules).
            identity = "\0".join(("causes", *(_identity(records[i]) for i in (old_id, new_id))))
            known = read_entry(identity) or {}
            missing = sorted(symbols - known.keys())
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
            causes[(old_id, new_id)] = known
    return causes


def cached_cause(store: Store, old: KernelRecord, new: KernelRecord, symbol: str) -> dict | None:
    """The cause of `symbol`'s CRC change from `old` to `new`, from kabigate's cache only: the pair's
    causes as a gate, matrix or verdict page kept them, or else both kernels' cached types (explained
    then, and kept as the matrix keeps them); None when the cache holds neither."""
    identity = "\0".join(("causes", _identity(old), _identity(new)))
    known = read_entry(identity) or {}
    if symbol in known or not all(types_cached(list(k.sources), k.release) for k in (old, new)):
        return known.get(symbol)
    with cached_only():
        try:
            explained = explain_stored((list(old.sources), store.load_kernel(old.id)),
                                       (list(new.sources), store.load_kernel(new.id)), [symbol]) or {}
        except NotCached:
            return None
    if symbol not in explained:
        return None
    write_entry(identity, {**known, symbol: cause_json(explained[symbol])})
    return cause_json(explained[symbol])


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


def _identity(kernel: KernelRecord) -> str:
    """A stored kernel as its causes depend on it: what it exports (the store's record of it) and
    the files its types and headers are read from."""
    return "\0".join((kernel.release, kernel.package_version or "", kernel.build_date or "", str(kernel.exports),
                      sources_identity(list(kernel.sources))))
