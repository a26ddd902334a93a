"""A gate result as the places that listen for it want it: JSON (kabigate's own, documented in the
README), JUnit XML (Jenkins, GitLab), Markdown (a merge request comment), a ResultsDB v2.0
result (Fedora/CentOS CI, read by Greenwave) and CSV (the dashboard's download). All from one GateResult."""

from __future__ import annotations

import csv
import datetime
import io

import junitparser

from kabigate.services.gate import BuildFinding, GateResult, KernelFinding, PackageFinding
from kabigate.services.packages import package_verdict_json, why_not
from kabigate.vocabulary import GateClass, Outcome

GATE_JSON_VERSION = 1
DEFAULT_TESTCASE = "kabigate.kernel-gate.functional"


def gate_json(result: GateResult) -> dict:
    return {
        "format_version": GATE_JSON_VERSION,
        "outcome": result.outcome,
        "candidate": _kernel(result.candidate),
        "baseline": _kernel(result.baseline) if result.baseline else None,
        "stream": result.stream,
        "policy": result.policy.source,
        "stablelist": result.stablelist,
        "counts": {klass: result.count(klass) for klass in GateClass},
        "coverage": result.coverage,
        "export_changes": result.export_changes,
        "notes": result.notes,
        "builds": [_build(finding) for finding in result.builds],
        "stablelist_violations": [_kernel_finding(finding) for finding in result.kernel_findings],
        "changed_exports_in_use": [vars(change) for change in result.changes_in_use],
        "module_layout_changed": result.module_layout_changed,
        "packages": [_package(finding) for finding in result.packages],
        "rebuilds": [rebuild.json() for rebuild in result.rebuilds],
    }


def _kernel(record) -> dict:
    return {"release": record.release, "package_version": record.package_version, "machine": record.machine}


def _waiver(waiver) -> dict:
    return {"source": waiver.source, "driver": waiver.driver, "symbol": waiver.symbol, "kernel": waiver.kernel,
            "reason": waiver.reason, "who": waiver.who, "expires": str(waiver.expires) if waiver.expires else None}


def waiver_json(waiver) -> dict:
    """A stored waiver as `waiver list --json` and the API show it: the gate report's fields, its id
    and when it was added and revoked."""
    return {**_waiver(waiver), "id": waiver.id,
            "created_at": waiver.created_at.isoformat() if waiver.created_at else None,
            "revoked_at": waiver.revoked_at.isoformat() if waiver.revoked_at else None}


def _build(finding: BuildFinding) -> dict:
    build = finding.build
    return {
        "driver": build.driver, "version": build.version, "built_for": build.built_for, "package": build.package,
        "class": finding.klass, "category": finding.category, "outcome": finding.outcome, "gating": finding.gating,
        "symbols": [{"symbol": s.name, "code": s.code, "module_crc": s.module_crc, "kernel_crc": s.kernel_crc,
                     "stablelisted": s.stablelisted} for s in finding.symbols],
        "reasons": finding.reasons,
        "waivers": [_waiver(w) for w in finding.waivers],
        "expired_waivers": [_waiver(w) for w in finding.expired_waivers],
    }


def _package(finding: PackageFinding) -> dict:
    before = finding.before
    return {**package_verdict_json(finding.after),
            "baseline": None if before is None else {"state": before.state, "modules_loading": before.modules_loading},
            "breaks": finding.breaks, "category": finding.category, "outcome": finding.outcome,
            "gating": finding.gating, "symbols": finding.symbols,
            "waivers": [_waiver(w) for w in finding.waivers],
            "expired_waivers": [_waiver(w) for w in finding.expired_waivers]}


def _kernel_finding(finding: KernelFinding) -> dict:
    return {"symbol": finding.symbol, "change": finding.change, "old": finding.old, "new": finding.new,
            "outcome": finding.outcome, "waivers": [_waiver(w) for w in finding.waivers],
            "expired_waivers": [_waiver(w) for w in finding.expired_waivers]}


def _build_label(finding: BuildFinding) -> str:
    build = finding.build
    return f"{build.driver} {build.version or ''} (built for {build.built_for or '?'})".replace("  ", " ")


def _why(finding: BuildFinding) -> str:
    lines = [f"{reason['module']}: {reason['code']}: {reason['message']}" for reason in finding.reasons]
    return "\n".join(lines)


def gate_builds_csv(report: dict) -> str:
    """A gate report's (gate_json(), or a recorded run's) driver builds as CSV, one row a build: its class,
    category and outcome, and the symbols at fault (space-separated, a stablelisted one marked *)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["driver", "version", "built_for", "class", "category", "outcome", "gating", "symbols"])
    for build in report["builds"]:
        symbols = dict.fromkeys(s["symbol"] + ("*" if s["stablelisted"] else "") for s in build["symbols"])
        writer.writerow([build["driver"], build["version"] or "", build["built_for"] or "", build["class"],
                         build["category"], build["outcome"], str(build["gating"]).lower(), " ".join(symbols)])
    return buffer.getvalue()


def gate_junit(result: GateResult) -> str:
    """One test case per driver build (and per stablelist violation); FAILED and NEEDS_INSPECTION
    are failures, builds that already failed on the baseline are skipped."""
    suite = junitparser.TestSuite(f"kabigate gate {result.candidate.release}")
    suite.timestamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    classname = f"kabigate.gate.{result.candidate.release}"
    for finding in result.builds:
        case = junitparser.TestCase(_build_label(finding), classname=classname)
        if finding.outcome in (Outcome.FAILED, Outcome.NEEDS_INSPECTION):
            symbols = ", ".join(sorted({s.name for s in finding.symbols})[:20])
            failure = junitparser.Failure(f"{finding.category} ({finding.outcome}): {symbols}", finding.outcome)
            failure.text = _why(finding)
            case.result = [failure]
        elif finding.klass == GateClass.STILL_FAILING:
            case.result = [junitparser.Skipped("fails on the baseline too")]
        if finding.waivers:
            case.system_out = "waived: " + "; ".join(f"{w.label}: {w.reason}" for w in finding.waivers)
        suite.add_testcase(case)
    for package in result.packages:
        case = junitparser.TestCase(f"package {package.driver}", classname=f"{classname}.packages")
        if package.outcome in (Outcome.FAILED, Outcome.NEEDS_INSPECTION):
            failure = junitparser.Failure(f"{package.category} ({package.outcome}): {why_not(package.after)}",
                                          package.outcome)
            case.result = [failure]
        elif not package.after.works:
            case.result = [junitparser.Skipped(f"{package.after.state} on the baseline too" if package.before
                                               and not package.before.works else str(package.after.state))]
        suite.add_testcase(case)
    for violation in result.kernel_findings:
        case = junitparser.TestCase(f"kABI {violation.symbol}", classname=f"{classname}.stablelist")
        if violation.outcome in (Outcome.FAILED, Outcome.NEEDS_INSPECTION):
            failure = junitparser.Failure(f"stablelisted {violation.symbol}: {violation.change} "
                                          f"{violation.old} -> {violation.new}", violation.outcome)
            case.result = [failure]
        suite.add_testcase(case)
    xml = junitparser.JUnitXml()
    xml.add_testsuite(suite)
    return xml.tostring().decode()


def gate_markdown(result: GateResult, matrix_url: str | None = None) -> str:
    baseline = result.baseline.release if result.baseline else "none"
    lines = [f"## kabigate gate: {result.candidate.release}: **{result.outcome}**", "",
             f"Baseline {baseline}" + (f" (stream {result.stream})" if result.stream else "")
             + f"; policy {result.policy.source}; stablelist {result.stablelist or 'none'}.", "",
             "| regression | still failing | fixed | unaffected | new |", "|---|---|---|---|---|",
             "| " + " | ".join(str(result.count(k)) for k in GateClass) + " |", ""]
    working = [f for f in result.packages if f.after.works]
    lines += [(f"Packages: {len(working)} of {len(result.packages)} work on the candidate, "
               f"{len(result.broken_packages)} broken by it."), ""]
    if result.rebuilds:
        lines += ["### Packages rebuilt for the candidate", "",
                  "| package | outcome | seconds | signer | error, or why not tried |", "|---|---|---|---|---|"]
        for rebuild in result.rebuilds:
            why = (rebuild.reason or "").replace("|", "\\|")
            lines.append(f"| {rebuild.driver} | {rebuild.outcome or 'not tried'} | {rebuild.seconds:.1f} | "
                         f"{rebuild.signer or '-'} | {why} |")
        lines.append("")
    if result.broken_packages:
        lines += ["### Packages the candidate breaks", "",
                  "| package | on the baseline | on the candidate | outcome | why |", "|---|---|---|---|---|"]
        for broken in result.broken_packages:
            waived = " (waived)" if broken.waivers else ""
            before = broken.before.state if broken.before is not None else ""  # broken: it worked before
            lines.append(f"| {broken.driver} | {before} | {broken.after.state} | "
                         f"{broken.outcome}{waived} | {why_not(broken.after)} |")
        lines.append("")
    if result.regressions:
        lines += ["### Regressions (load on the baseline, not on the candidate)", "",
                  "| driver build | outcome | symbols at fault |", "|---|---|---|"]
        for finding in result.regressions:
            symbols = ", ".join(f"`{s.name}`" + (" (stablelisted)" if s.stablelisted else "")
                                for s in _unique(finding.symbols)[:12])
            more = len(_unique(finding.symbols)) - 12
            waived = " (waived)" if finding.waivers else ""
            lines.append(f"| {_build_label(finding)} | {finding.outcome}{waived} | "
                         f"{symbols}{f' and {more} more' if more > 0 else ''} |")
        lines.append("")
    if result.kernel_findings:
        lines += ["### Stablelisted exports removed or changed", "", "| symbol | change | outcome |", "|---|---|---|"]
        lines += [f"| `{f.symbol}` | {f.change} {f.old} -> {f.new} | {f.outcome} |" for f in result.kernel_findings]
        lines.append("")
    if result.changes_in_use:
        lines += ["### Changed exports the stored drivers use", "", "| symbol | change | builds using it |",
                  "|---|---|---|"]
        lines += [f"| `{c.symbol}`{' (stablelisted)' if c.stablelisted else ''} | {c.change} {c.old} -> {c.new}"
                  f"{_cause(c.cause)} | {c.builds} |" for c in result.changes_in_use[:30]]
        if len(result.changes_in_use) > 30:
            lines.append(f"| ... and {len(result.changes_in_use) - 30} more | | |")
        lines.append("")
    if result.export_changes:
        changes = result.export_changes
        lines.append(f"Exports: {changes['removed_stablelisted'] + changes['removed_unlisted']} removed, "
                     f"{changes['changed_stablelisted'] + changes['changed_unlisted']} changed "
                     f"({changes['changed_stablelisted']} changed on the stablelist), {changes['added']} added.")
        lines.append("")
    lines += [f"- {note}" for note in result.notes]
    if matrix_url:
        lines += ["", f"[The driver x kernel matrix]({matrix_url})"]
    return "\n".join(lines).rstrip() + "\n"


def _cause(cause: dict | None) -> str:
    if cause is None:
        return ""
    first = cause["most_likely"]
    return f" (most likely `{first['type']}`)" if first else f" (no type information: {cause['no_type_information']})"


def _unique(symbols):
    seen, unique = set(), []
    for symbol in symbols:
        if symbol.name not in seen:
            seen.add(symbol.name)
            unique.append(symbol)
    return unique


def kernel_item(release: str, package_version: str | None) -> str:
    """The ResultsDB/WaiverDB item a kernel's results are about: its package's NVR (a koji_build), else its release."""
    return f"kernel-{package_version}" if package_version else release


def scenario_of(machine: str | None, stream: str | None) -> str:
    """A gate's scenario: one per architecture and stream however the gate was run (Greenwave keeps a
    requirement per scenario)."""
    return f"{machine or 'noarch'}.{stream or 'default'}"


def resultsdb_payload(report: dict, *, item: str | None = None, testcase: str = DEFAULT_TESTCASE,
                      ref_url: str | None = None, scenario: str | None = None) -> dict:
    """A result for ResultsDB's POST /api/v2.0/results, made from a gate report (gate_json), as
    Fedora/CentOS CI submit them: the kernel's NVR as a koji_build item, so that a Greenwave
    PassingTestCaseRule on `testcase` gates it."""
    candidate, baseline, counts = report["candidate"], report["baseline"], report["counts"]
    nvr = item or kernel_item(candidate["release"], candidate["package_version"])
    arch = candidate["machine"] or "noarch"
    broken = sum(1 for package in report.get("packages", ()) if package["breaks"])
    note = (f"{broken} packages broken; "
            f"{counts[GateClass.REGRESSION]} regressions, {counts[GateClass.STILL_FAILING]} still failing, "
            f"{counts[GateClass.FIXED]} fixed, {counts[GateClass.UNAFFECTED]} unaffected, {counts[GateClass.NEW]} new; "
            f"{len(report['stablelist_violations'])} "
            f"stablelist violations; baseline {baseline['release'] if baseline else 'none'}")
    # What forgave a finding, said in the result itself: an INFO after a waiver is not a clean pass.
    findings = [*report["builds"], *report.get("packages", ()), *report["stablelist_violations"]]
    waived = [f for f in findings if f["waivers"]]
    waivers = sorted({w["source"] for f in waived for w in f["waivers"]})
    if waived:
        note += f"; {len(waived)} findings waived by {', '.join(waivers)}"
    data: dict[str, str | list[str]] = {
        "item": nvr, "type": "koji_build", "arch": arch,
        "scenario": scenario or scenario_of(candidate["machine"], report["stream"]),
        "kernel_release": candidate["release"]}
    if baseline:
        data["baseline"] = baseline["release"]
    if waivers:
        data["waived_by"] = waivers
    payload = {"outcome": report["outcome"], "testcase": {"name": testcase}, "note": note, "data": data}
    if ref_url:  # on the result: ResultsDB keeps one testcase ref_url, overwritten by each publish
        payload["ref_url"] = ref_url
    return payload
