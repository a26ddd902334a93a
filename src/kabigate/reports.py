"""JSON-ready shapes of what the rules say, one shape wherever a verdict is shown or kept:
`check --json`, the store's verdict details, the HTML matrix and the web API."""

from __future__ import annotations

from kabigate.model import Reason, Verdict


def crc_text(value: int | None) -> str | None:
    return None if value is None else f"0x{value:08x}"


def reason_report(reason: Reason) -> dict:
    return {"code": reason.code, "symbol": reason.symbol, "module_crc": crc_text(reason.module_crc),
            "kernel_crc": crc_text(reason.kernel_crc), "message": reason.message}


def verdict_report(verdict: Verdict) -> dict:
    return {
        "path": verdict.module.path,
        "name": verdict.module.name,
        "verdict": "loads" if verdict.loads else "fails",
        "reasons": [reason_report(r) for r in verdict.reasons],
        "warnings": [reason_report(w) for w in verdict.warnings],
    }
