"""`kabigate gate`: may this kernel ship, given the stored driver builds? PASS or FAIL with evidence."""

from __future__ import annotations

import os
import sys

import click

from kabigate.cli import (
    EXIT_INCOMPATIBLE,
    EXIT_OK,
    cli,
    emit_json,
    err,
    out,
    progress,
    read_stablelist,
    write_atomically,
)
from kabigate.cli.store import store_option
from kabigate.errors import read_capped
from kabigate.formats.gatepolicy import DEFAULT_POLICY, MAX_POLICY_FILE, parse_policy, parse_waivers
from kabigate.gate_report import DEFAULT_TESTCASE, gate_json, gate_junit, gate_markdown, resultsdb_payload
from kabigate.kernels import load_kernel
from kabigate.services.gate import previous_in_stream, publish_gate, record_gate, resolve_kernel, run_gate
from kabigate.services.ingest import ingest_kernel
from kabigate.store import KernelRecord, Store

OUTCOME_STYLE = {"PASSED": "bold green", "INFO": "bold green", "NEEDS_INSPECTION": "bold yellow",
                 "FAILED": "bold red"}


@cli.command()
@click.option("--candidate", required=True, metavar="KERNEL",
              help="The kernel to gate: a release in the store, or its files as `check -k` takes them "
                   "(comma-joined), which are ingested first.")
@click.option("--baseline", metavar="KERNEL", help="Compare with this kernel (default: the candidate's "
                                                    "predecessor in its stream).")
@click.option("--stream", metavar="NAME", help="The candidate's stream (its baseline is the kernel before it).")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Gate policy (TOML); default: regressions through stablelisted symbols and stablelist "
                   "violations fail, other regressions need inspection.")
@click.option("--waivers", "waivers_path", type=click.Path(dir_okay=False), metavar="FILE", help="Waivers (TOML).")
@click.option("--stablelist", "stablelist_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="The distribution's kABI stablelist (which symbols are promised stable).")
@click.option("--driver", metavar="GLOB", help="Only the driver builds whose name matches.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), metavar="FILE", help="Write JUnit XML.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write a Markdown summary (a merge request comment).")
@click.option("--matrix-url", metavar="URL", help="Link to the HTML matrix in the Markdown summary.")
@click.option("--resultsdb", "resultsdb_url", metavar="URL",
              help="Publish the outcome to this ResultsDB API (…/api/v2.0); token from $KABIGATE_RESULTSDB_TOKEN.")
@click.option("--testcase", default=DEFAULT_TESTCASE, show_default=True, help="ResultsDB test case name.")
@click.option("--item", metavar="NVR", help="ResultsDB item (default: kernel-<package version>).")
@click.option("--ref-url", metavar="URL", help="ResultsDB ref_url: where the details are (e.g. the CI job).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report.")
@store_option
def gate(store: Store, candidate: str, baseline: str | None, stream: str | None, policy_path, waivers_path,
         stablelist_path, driver, junit_path, markdown_path, matrix_url, resultsdb_url, testcase, item, ref_url,
         as_json: bool) -> None:
    """Gate a candidate kernel on the stored driver builds. Exit 0 PASSED/INFO, 1 FAILED or
    NEEDS_INSPECTION, 2 error."""
    policy = parse_policy(_read(policy_path), policy_path) if policy_path else DEFAULT_POLICY
    waivers = tuple(parse_waivers(_read(waivers_path), waivers_path)) if waivers_path else ()
    candidate_record = _kernel(store, candidate, stream)
    stablelist = read_stablelist(stablelist_path, candidate_record.machine)
    if baseline is not None:
        baseline_record = _kernel(store, baseline, None)
        chosen_stream = stream
    else:
        baseline_record, chosen_stream = previous_in_stream(store, candidate_record, stream)
    result = run_gate(store, candidate_record, baseline_record, stream=chosen_stream, policy=policy, waivers=waivers,
                      stablelist=stablelist, driver=driver)
    if junit_path:
        write_atomically(junit_path, gate_junit(result))
    if markdown_path:
        write_atomically(markdown_path, gate_markdown(result, matrix_url))
    document = gate_json(result)
    run = record_gate(store, result, document)
    document["run"] = run.uuid
    published = None
    if resultsdb_url:
        payload = resultsdb_payload(result, item=item, testcase=testcase, ref_url=ref_url)
        published = publish_gate(store, run, resultsdb_url, payload, os.environ.get("KABIGATE_RESULTSDB_TOKEN"))
        document["resultsdb"] = {"url": resultsdb_url, "id": published}
    if as_json:
        emit_json(document)
    else:
        _print_summary(result)
        if published is not None:
            err.print(f"published to {resultsdb_url}: result {published}", markup=False)
    sys.exit(EXIT_OK if result.passed else EXIT_INCOMPATIBLE)


def _read(path: str) -> bytes:
    return read_capped(path, MAX_POLICY_FILE, "larger than a policy file can be")


def _kernel(store: Store, argument: str, stream: str | None) -> KernelRecord:
    """A stored kernel by release, or kernel files (ingested into `stream`)."""
    paths = [p for p in argument.split(",") if p]
    if not any(os.path.exists(p) or "://" in p for p in paths):
        return resolve_kernel(store, argument, stream)
    with progress(f"reading {os.path.basename(paths[0])}", len(paths)) as advance:
        kernel = load_kernel(paths, None, advance)
    with progress(f"judging driver builds on {kernel.release}", len(store.driver_builds())) as advance:
        return ingest_kernel(store, kernel, stream, advance).record


def _print_summary(result) -> None:
    style = OUTCOME_STYLE[result.outcome]
    baseline = result.baseline.release if result.baseline else "none (first of its stream)"
    out.print(f"[{style}]{result.outcome}[/{style}]  ", end="")
    out.print(f"gate of {result.candidate.release} against {baseline}"
              + (f" in {result.stream}" if result.stream else ""), markup=False)
    counts = ", ".join(f"{result.count(k)} {k.replace('_', ' ')}"
                       for k in ("regression", "still_failing", "fixed", "unaffected", "new"))
    out.print(f"  driver builds: {counts}; {result.coverage} gating", markup=False)
    for finding in result.regressions:
        symbols = sorted({s.name + (" (stablelisted)" if s.stablelisted else "") for s in finding.symbols})
        codes = sorted({reason["code"] for reason in finding.reasons})
        waived = "  waived by " + ", ".join(w.source for w in finding.waivers) if finding.waivers else ""
        build = finding.build
        out.print(f"  {finding.outcome:<16} {build.driver} {build.version or ''} (built for {build.built_for}): "
                  f"{', '.join(codes)}: {', '.join(symbols[:8])}{' ...' if len(symbols) > 8 else ''}{waived}",
                  markup=False)
    for violation in result.kernel_findings:
        out.print(f"  {violation.outcome:<16} stablelisted {violation.symbol}: {violation.change} "
                  f"{violation.old} -> {violation.new}", markup=False)
    if result.export_changes:
        changes = result.export_changes
        out.print(f"  exports: {changes['removed_stablelisted'] + changes['removed_unlisted']} removed, "
                  f"{changes['changed_stablelisted'] + changes['changed_unlisted']} changed "
                  f"({changes['changed_stablelisted']} on the stablelist), {changes['added']} added", markup=False)
    for note in result.notes:
        out.print(f"  note: {note}", markup=False)

