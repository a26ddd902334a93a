"""JSON-ready shapes of what the rules say and the store keeps, one shape wherever they are shown or
kept: `check --json`, the store's verdict details, the CLI's store reports and the web API. A service's
result is shaped in its own module, which imports this one (ingest stores verdict_report()):
services.evidence.demand_json, services.ingest.ingested_builds_json, services.matrix.history_json,
matrix_by_build_json and matrix_page_json."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kabigate.analysis import stablelist_coverage
from kabigate.model import Kernel, LoadVerdict, Reason, ReasonCode, Verdict

if TYPE_CHECKING:  # the store's records; not imported at run time (it would load SQLAlchemy)
    from kabigate.explain.crc import SymbolExplanation
    from kabigate.formats.stablelist import Stablelist
    from kabigate.store import BuildFailure, BuildRecord, Cell, KernelRecord


# A matrix cell's short text (the CLI's table, the dashboard's cells and legend): the first reason's code,
# abbreviated.
SHORT_REASONS: dict[str, str] = {  # keyed by ReasonCode; the store gives plain text
    ReasonCode.CRC_MISMATCH: "crc", ReasonCode.MODULE_LAYOUT_MISMATCH: "layout", ReasonCode.VERMAGIC_MISMATCH: "magic",
    ReasonCode.MISSING_SYMBOL: "missing", ReasonCode.GPL_ONLY: "gpl", ReasonCode.NAMESPACE_NOT_IMPORTED: "ns",
    ReasonCode.NO_VERSIONS: "nover", ReasonCode.NO_SYMBOL_VERSION: "nosymver", ReasonCode.ARCH_MISMATCH: "arch",
    ReasonCode.DUPLICATE_EXPORT: "dup", ReasonCode.ALREADY_LOADED: "dupname", ReasonCode.DEPENDENCY_FAILS: "dep",
    ReasonCode.BAD_SIGNATURE: "badsig", ReasonCode.UNSIGNED: "unsigned", ReasonCode.UNTRUSTED_SIGNATURE: "untrusted",
    ReasonCode.UNSUPPORTED_SIGNATURE: "unsupcrypto",
}


def cell_text(cell: Cell | None) -> str:
    """A matrix cell in a word or two: ok, or the first reason (abbreviated) and how many symbols fail."""
    if cell is None:
        return "-"
    if cell.loads:
        return "ok"
    code = SHORT_REASONS.get(cell.first_reason or "", cell.first_reason or "fails")
    return f"{code} {cell.failing_symbols}" if cell.failing_symbols else code


def crc_text(value: int | None) -> str | None:
    return None if value is None else f"0x{value:08x}"


def reason_report(reason: Reason) -> dict:
    return {"code": reason.code, "symbol": reason.symbol, "module_crc": crc_text(reason.module_crc),
            "kernel_crc": crc_text(reason.kernel_crc), "message": reason.message}


def verdict_report(verdict: Verdict) -> dict:
    return {
        "path": verdict.module.path,
        "name": verdict.module.name,
        "verdict": LoadVerdict.LOADS if verdict.loads else LoadVerdict.FAILS,
        "reasons": [reason_report(r) for r in verdict.reasons],
        "warnings": [reason_report(w) for w in verdict.warnings],
    }


def checked_verdict_report(verdict: Verdict, set_exports: set[str], stablelist: Stablelist | None,
                           causes: dict[str, SymbolExplanation] | None = None) -> dict:
    """A verdict as `check --json` and `boot-check --json` show it: with each crc-mismatch's likely
    cause (from `causes`) and, given a stablelist, which of the module's imports are on it."""
    report = verdict_report(verdict)
    if causes:
        from kabigate.explain.crc import cause_json  # loaded already: the causes came from it

        for reason, shown in zip(verdict.reasons, report["reasons"]):
            if reason.code == ReasonCode.CRC_MISMATCH and reason.symbol in causes:
                shown["cause"] = cause_json(causes[reason.symbol])
    if stablelist is not None:
        on, off = stablelist_coverage(verdict.module, set_exports, stablelist)
        report["stablelist"] = {"source": stablelist.source, "on": on, "off": off}
        origin = verdict.module.origin
        if origin is not None and origin.greylist is not None:  # the kmod package's own greylist.txt
            report["stablelist"]["greylist_missing"] = sorted(set(off) - set(origin.greylist))
    return report


def kernel_report(kernel: Kernel) -> dict:
    """A kernel as read (not stored): what `check`, `diff` and `boot-check` say they checked against."""
    return {"release": kernel.release, "vermagic": kernel.vermagic, "machine": kernel.machine,
            "exports": len(kernel.exports), "modversions": kernel.has_modversions, "sources": kernel.sources}


def kernel_record_json(record: KernelRecord) -> dict:
    return {"id": record.id, "release": record.release, "machine": record.machine, "flavor": record.flavor,
            "vermagic": record.vermagic, "module_layout_crc": crc_text(record.module_layout_crc),
            "package_version": record.package_version, "exports": record.exports,
            "streams": [{"stream": s, "position": p} for s, p in record.streams], "sources": list(record.sources)}


def build_record_json(record: BuildRecord) -> dict:
    return {"id": record.id, "driver": record.driver, "package": record.package, "version": record.version,
            "arch": record.arch, "machine": record.machine, "format": record.format, "built_for": record.built_for,
            "source": record.source, "modules": list(record.modules)}


def cell_json(cell: Cell) -> dict:
    return {"build_id": cell.build_id, "kernel_id": cell.kernel_id, "loads": cell.loads, "modules": cell.modules,
            "modules_loading": cell.modules_loading, "first_reason": cell.first_reason,
            "failing_symbols": cell.failing_symbols, "rules_version": cell.rules_version}


def shown_aliases(builds: list[BuildRecord], failures: list[BuildFailure],
                  aliases: dict[str, list[str]]) -> dict[str, list[str]]:
    """The other names (kabigate db alias-driver) of the drivers these builds and failures are of."""
    shown = {b.driver for b in builds} | {f.driver for f in failures}
    return {name: names for name, names in aliases.items() if name in shown}


def drivers_json(builds: list[BuildRecord], failures: list[BuildFailure], aliases: dict[str, list[str]]) -> dict:
    return {"builds": [build_record_json(b) for b in builds], "build_failures": [vars(f) for f in failures],
            "aliases": shown_aliases(builds, failures, aliases)}
