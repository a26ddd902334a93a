"""The most likely cause of each crc-mismatch in a stored verdict: from the build's built-for
kernel to the verdict's kernel, explained from their BTF (kabigate explain), as far as kabigate's
cache already holds both kernels (a gate or `explain` read them): computed on read, never stored."""

from __future__ import annotations

from kabigate.explain import cause_json
from kabigate.explain_cache import NotCached, cached_only, explain_stored
from kabigate.store import BuildRecord, KernelRecord, Store


def with_causes(store: Store, build: BuildRecord, kernel: KernelRecord, modules: list[dict]) -> list[dict]:
    """`modules` (Store.verdict_detail) with a `cause` on every crc-mismatch reason it can explain."""
    symbols = [r["symbol"] for m in modules for r in m["reasons"] if r["code"] == "crc-mismatch" and r["symbol"]]
    built_for = next(iter(store.find_kernels(build.built_for)), None) if build.built_for else None
    if not symbols or built_for is None or built_for.id == kernel.id:
        return modules
    try:
        with cached_only():
            causes = explain_stored((list(built_for.sources), store.load_kernel(built_for.id)),
                                    (list(kernel.sources), store.load_kernel(kernel.id)), symbols)
    except NotCached:
        return modules
    if causes is None:
        return modules
    return [dict(m, reasons=[dict(r, cause=cause_json(causes[r["symbol"]])) if r["code"] == "crc-mismatch"
                             and r["symbol"] in causes else r for r in m["reasons"]]) for m in modules]
