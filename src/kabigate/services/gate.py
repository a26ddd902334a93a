"""The gate: may a candidate kernel ship, given what it does to the stored driver builds?

Each build is classed by comparing its verdict on the candidate with its verdict on the baseline
(by default the previous kernel of the candidate's stream): regression, still failing, fixed,
unaffected, or new. A regression is "stablelisted" when a symbol at fault is on the kABI
stablelist. The kernel side is RHEL's check-kabi: stablelisted exports removed or changed
between baseline and candidate. The policy maps each class to a ResultsDB outcome; waivers
forgive what they match until they expire; the gate's outcome is the most severe that remains.

Packages gate too (services/packages.py): a candidate breaks a package when none of its builds
loads there whole while one did on the baseline, or its best build loads fewer modules than on the
baseline (dahdi: 31 of 32 on 6.1.0-47, none on -50); it is `package_broken` when its build for the
candidate failed or does not load, `package_not_rebuilt` when none is stored. A candidate on which
no judged gating package works at all fails (`require_working_packages`), whatever the baseline did.
With `rebuild`, the packages that do not work are rebuilt for the candidate before it is judged.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

from kabigate.analysis import diff_exports
from kabigate.builder.source import Signing
from kabigate.errors import InputError
from kabigate.formats.gatepolicy import DEFAULT_POLICY, OUTCOMES, Policy, Waiver, waiver_from_mapping
from kabigate.formats.stablelist import Stablelist
from kabigate.model import ReasonCode, release_across_architectures
from kabigate.reports import resultsdb
from kabigate.reports.verdicts import crc_text
from kabigate.rules import RULES_VERSION
from kabigate.services.causes import PairCauses, causes_of_changes
from kabigate.services.ingest import refresh_verdicts
from kabigate.services.notify import Event, event_key, event_payload, record_events
from kabigate.services.packages import PackageVerdict, package_verdicts, why_not
from kabigate.services.rebuild import Rebuild, needing_rebuild, rebuild_packages
from kabigate.store import BuildRecord, Cell, GateRun, KernelRecord, Store
from kabigate.vocabulary import EventKind, ExportChange, GateCategory, GateClass, GateStage, Outcome, PackageState


@dataclass(frozen=True)
class FaultSymbol:
    """A symbol a failing module trips over on the candidate."""

    name: str
    code: ReasonCode
    module_crc: str | None
    kernel_crc: str | None
    stablelisted: bool


@dataclass(frozen=True)
class BuildFinding:
    build: BuildRecord
    klass: GateClass
    category: GateCategory  # the policy key: the class, a regression split by the stablelist
    outcome: Outcome  # after waivers and the gating filter
    gating: bool
    reasons: list[dict]  # the candidate's failing reasons, each with its module's name
    symbols: list[FaultSymbol]
    waivers: list[Waiver] = field(default_factory=list)  # the waivers that forgive it
    expired_waivers: list[Waiver] = field(default_factory=list)  # would have, had they not expired


@dataclass(frozen=True)
class PackageFinding:
    """A driver package on the candidate, beside the baseline."""

    before: PackageVerdict | None  # on the baseline (None: no baseline)
    after: PackageVerdict
    category: GateCategory | None  # package_broken or package_not_rebuilt when the candidate breaks it
    outcome: Outcome  # after waivers and the gating filter
    gating: bool
    symbols: list[str]  # the symbols its best build trips over on the candidate
    waivers: list[Waiver] = field(default_factory=list)
    expired_waivers: list[Waiver] = field(default_factory=list)

    @property
    def driver(self) -> str:
        return self.after.driver

    @property
    def breaks(self) -> bool:
        return self.category is not None


@dataclass(frozen=True)
class KernelFinding:
    """A stablelisted export removed or changed between baseline and candidate (check-kabi)."""

    symbol: str
    change: ExportChange
    old: str
    new: str
    outcome: Outcome
    waivers: list[Waiver] = field(default_factory=list)
    expired_waivers: list[Waiver] = field(default_factory=list)


@dataclass(frozen=True)
class ChangedExport:
    """An export removed or changed from baseline to candidate that stored driver builds import."""

    symbol: str
    change: ExportChange
    old: str
    new: str
    stablelisted: bool
    builds: int  # stored builds (of the gate) that import it
    cause: dict | None = None  # a CRC change's most likely cause (explain.cause_json), when explained


@dataclass(frozen=True)
class GateResult:
    candidate: KernelRecord
    baseline: KernelRecord | None
    stream: str | None
    policy: Policy
    stablelist: str | None  # its source, when one was given
    builds: list[BuildFinding]
    kernel_findings: list[KernelFinding]
    export_changes: dict[str, int]  # removed/changed exports, on and off the stablelist
    changes_in_use: list[ChangedExport]  # removed/changed exports that stored builds import
    coverage: int  # gating builds judged on the candidate
    notes: list[str]
    outcome: Outcome
    packages: list[PackageFinding] = field(default_factory=list)
    module_layout_changed: bool = False  # every build made for the baseline is refused by the candidate
    rebuilds: list[Rebuild] = field(default_factory=list)  # the packages rebuilt for the candidate first

    @property
    def passed(self) -> bool:
        return self.outcome in (Outcome.PASSED, Outcome.INFO)

    def count(self, klass: GateClass) -> int:
        return sum(1 for finding in self.builds if finding.klass == klass)

    @property
    def regressions(self) -> list[BuildFinding]:
        return [finding for finding in self.builds if finding.klass == GateClass.REGRESSION]

    @property
    def broken_packages(self) -> list[PackageFinding]:
        return [finding for finding in self.packages if finding.breaks]


def resolve_kernel(store: Store, release: str, stream: str | None = None) -> KernelRecord:
    """The stored kernel of this release (in `stream` when given)."""
    found = [k for k in store.find_kernels(release) if stream is None or stream in dict(k.streams)]
    if not found:
        raise InputError(f"no kernel {release} in the store{' in stream ' + stream if stream else ''}; "
                         "give its files, or ingest it first")
    if len(found) > 1:
        raise InputError(f"several stored kernels are {release}: name the stream with --stream")
    return found[0]


def previous_in_stream(store: Store, kernel: KernelRecord, stream: str | None) -> tuple[KernelRecord | None, str]:
    """The kernel of the same architecture before `kernel` in `stream` (its only stream when not given)."""
    streams = dict(kernel.streams)
    if stream is None:
        if len(streams) != 1:
            raise InputError(f"{kernel.release} is in {len(streams)} streams ({', '.join(streams) or 'none'}): "
                             "give --stream or --baseline")
        (stream,) = streams
    if stream not in streams:
        raise InputError(f"{kernel.release} is not in stream {stream}")
    ordered = [k for k in store.kernels(stream) if k.machine == kernel.machine]
    position = next(i for i, k in enumerate(ordered) if k.id == kernel.id)
    return (ordered[position - 1] if position else None), stream


def release_architectures(store: Store, kernel: KernelRecord, stream: str | None) -> list[KernelRecord]:
    """The kernel and the same release of every other architecture in `stream` (6.1.0-56-amd64 and
    6.1.0-56-arm64), the kernel first, then by architecture: what a gate of the release covers."""
    if stream is None:
        return [kernel]
    release = release_across_architectures(kernel.release, kernel.machine)
    others = [k for k in store.kernels(stream) if k.machine != kernel.machine and k.machine is not None
              and release_across_architectures(k.release, k.machine) == release]
    return [kernel, *sorted(others, key=lambda k: k.machine or "")]


def same_release_of(store: Store, kernel: KernelRecord | None, machine: str | None) -> KernelRecord | None:
    """The kernel of `machine` of the same release as `kernel` (a baseline given for another
    architecture's candidate), among the streams of `kernel`."""
    if kernel is None or kernel.machine == machine:
        return kernel
    release = release_across_architectures(kernel.release, kernel.machine)
    return next((k for k in store.kernels() if k.machine == machine and set(dict(k.streams)) & set(dict(kernel.streams))
                 and release_across_architectures(k.release, k.machine) == release), None)


def stream_of(kernel: KernelRecord, stream: str | None) -> str | None:
    """The stream a gate of `kernel` is of: the one given, else the kernel's only one (None when it is
    in several or none). A gate against a chosen baseline is of that stream too, so that ResultsDB's
    scenario (architecture.stream) is one per stream however the baseline was chosen."""
    if stream is not None:
        return stream
    streams = [name for name, _position in kernel.streams]
    return streams[0] if len(streams) == 1 else None


def run_gate(store: Store, candidate: KernelRecord, baseline: KernelRecord | None, *, stream: str | None = None,
             policy: Policy = DEFAULT_POLICY, waivers: tuple[Waiver, ...] = (), stablelist: Stablelist | None = None,
             driver: str | None = None, today: datetime.date | None = None, explain: bool = False,
             rebuild: bool = False, signing: Signing | None = None, rebuilt: list[Rebuild] | None = None,
             step: Callable[[GateStage], None] = lambda _stage: None) -> GateResult:
    """Judge the candidate against the stored builds (`driver`: a pattern on their names). With
    `explain`, CRC changes and crc-mismatch regressions name their most likely cause, from the BTF
    of the kernels' images among their stored sources. With `rebuild`, the gating packages that do
    not work on the candidate are first rebuilt for it (services/rebuild.py; signed with `signing`);
    `rebuilt`: they were rebuilt already, this is what happened (the workers' build tasks).
    `step` is told each stage as it starts."""
    today = today or datetime.date.today()
    rebuilds = list(rebuilt or [])
    if rebuild and rebuilt is None:
        step(GateStage.REBUILD)
        rebuilds = rebuild_packages(store, candidate, needing_rebuild(store, candidate, driver, policy.gating), signing)
    rebuild = rebuild or rebuilt is not None
    kernel_ids = [candidate.id] + ([baseline.id] if baseline else [])
    step(GateStage.JUDGE)
    refresh_verdicts(store, kernel_ids=kernel_ids)
    builds = [b for b in store.driver_builds(driver) if b.runs_on(candidate)]  # others' are not judged on it
    cells = store.cells(RULES_VERSION, build_ids=[b.id for b in builds], kernel_ids=kernel_ids)
    details = store.verdict_details([(b.id, candidate.id) for b in builds
                                     if (cell := cells.get((b.id, candidate.id))) is not None and not cell.loads])
    findings = []
    for build in builds:
        after = cells.get((build.id, candidate.id))
        if after is None:
            continue
        before = cells.get((build.id, baseline.id)) if baseline else None
        findings.append(_build_finding(build, details.get((build.id, candidate.id), []), before, after, policy,
                                       waivers, stablelist, candidate.release, today))
    step(GateStage.EXPORTS)
    kernel_findings, export_changes, in_use = _kernel_side(store, candidate, baseline, builds, policy, waivers,
                                                           stablelist, today)
    coverage = sum(1 for finding in findings if finding.gating)
    notes = [f"{r.driver} not rebuilt: {r.reason}" for r in rebuilds if r.outcome is None]
    if explain and baseline is not None:
        step(GateStage.EXPLAIN)
        in_use = _explain_changes(store, baseline, candidate, findings, in_use, notes)
    step(GateStage.PACKAGES)
    packages = _package_findings(store, candidate, baseline, driver, policy, waivers, today)
    if rebuild:  # rebuilding is the policy: a build whose package's rebuild loads is replaced, not regressed
        replaced = {f.driver for f in packages if f.after.state == PackageState.LOADS_AFTER_REBUILD}
        superseded = [f for f in findings if f.klass == GateClass.REGRESSION and f.build.driver in replaced]
        if superseded:
            notes.append(f"{len(superseded)} regressed builds are replaced by rebuilds that load on "
                         f"{candidate.release}: " + ", ".join(sorted({f.build.label for f in superseded})))
        findings = [dataclasses.replace(f, outcome=min(f.outcome, Outcome.INFO, key=OUTCOMES.index))
                    if f in superseded else f for f in findings]
    outcomes = [f.outcome for f in findings] + [f.outcome for f in kernel_findings] + [f.outcome for f in packages]
    if coverage < policy.minimum_builds:
        notes.append(f"only {coverage} gating driver builds judged; the policy wants {policy.minimum_builds}")
        outcomes.append(policy.below_minimum)
    layout_changed = (baseline is not None and None not in (baseline.module_layout_crc, candidate.module_layout_crc)
                      and baseline.module_layout_crc != candidate.module_layout_crc)
    if layout_changed and baseline is not None:  # layout_changed: there is a baseline
        notes.append(f"module_layout changed ({crc_text(baseline.module_layout_crc)} -> "
                     f"{crc_text(candidate.module_layout_crc)}): the kernel refuses every module built for "
                     f"{baseline.release} (check_modstruct_layout); only builds for the candidate's ABI load")
    judged = [f for f in packages if f.gating and f.after.state not in (PackageState.NOT_TRIED, PackageState.EXCLUDED)]
    if policy.require_working_packages and judged and not any(f.after.works for f in judged):
        # forgiven when waivers cover every one of them on the candidate, as they forgive a finding
        waived = all(_waivers_for(f.driver, f.symbols or ["*"], candidate.release, waivers, today)[0] for f in judged)
        notes.append(f"none of the {len(judged)} gating packages judged works on {candidate.release}"
                     + (" (each is waived)" if waived else "") + ": " + ", ".join(f.driver for f in judged))
        if not waived:
            outcomes.append(policy.no_working_packages)
    expired = {w.source: w for f in [*findings, *kernel_findings, *packages] for w in f.expired_waivers}
    notes += [f"expired waiver no longer applies: {w.label}, expired {w.expires}" for w in expired.values()]
    return GateResult(candidate, baseline, stream, policy, stablelist.source if stablelist else None, findings,
                      kernel_findings, export_changes, in_use, coverage, notes,
                      max(outcomes, key=OUTCOMES.index, default=Outcome.PASSED), packages, layout_changed, rebuilds)


def _package_findings(store: Store, candidate: KernelRecord, baseline: KernelRecord | None, driver: str | None,
                      policy: Policy, waivers, today) -> list[PackageFinding]:
    """Each package on the candidate beside the baseline: broken when no build loads whole on the
    candidate (nor is it excluded there) and it worked on the baseline, or loads fewer modules than there."""
    kernels = [candidate] + ([baseline] if baseline else [])
    found = package_verdicts(store, kernels, driver, detail=True)
    findings = []
    for name in found.drivers:
        after = found.verdict(name, candidate)
        before = found.verdict(name, baseline) if baseline else None
        category = None
        if (before is not None and not after.works and after.state != PackageState.EXCLUDED
                and (before.works or after.modules_loading < before.modules_loading)):
            category = GateCategory.PACKAGE_BROKEN if after.rebuilt else GateCategory.PACKAGE_NOT_REBUILT
        symbols = sorted({r["symbol"] for r in after.reasons if r["symbol"]})
        gating = any(fnmatch.fnmatchcase(name, pattern) for pattern in policy.gating)
        outcome = (policy.outcomes[category] if category is not None
                   else Outcome.PASSED if after.works else Outcome.INFO)  # still not working: as still_failing
        applied: list[Waiver] = []
        expired: list[Waiver] = []
        if OUTCOMES.index(outcome) > OUTCOMES.index(Outcome.INFO):
            applied, expired = _waivers_for(name, symbols or ["*"], candidate.release, waivers, today)
            if applied:
                outcome = Outcome.INFO
        if not gating:
            outcome = min(outcome, Outcome.INFO, key=OUTCOMES.index)
        findings.append(PackageFinding(before, after, category, outcome, gating, symbols, applied, expired))
    return findings


@dataclass(frozen=True)
class KernelStory:
    """What a kernel did to the stored builds, compared with the kernel before it in `stream`."""

    kernel: KernelRecord
    stream: str | None
    previous: KernelRecord | None
    result: GateResult | None  # the gate's classes and export changes, not recorded as a gate run
    gate_runs: list[GateRun]


def kernel_story(store: Store, kernel: KernelRecord, stream: str | None,
                 stablelist: Stablelist | None) -> KernelStory:
    """A kernel's page: the gate against the kernel before it in `stream` (by default its first
    stream), not recorded as a gate run, and the gate runs recorded for it."""
    streams = [name for name, _ in kernel.streams]
    stream = stream or (streams[0] if streams else None)
    previous, result = None, None
    if stream is not None:
        previous, stream = previous_in_stream(store, kernel, stream)
        if previous is not None:
            result = run_gate(store, kernel, previous, stream=stream, stablelist=stablelist)
    return KernelStory(kernel, stream, previous, result, store.gate_runs_of(kernel.id))


def story_causes(store: Store, story: KernelStory) -> PairCauses | None:
    """The causes of the CRC changes a kernel's page shows (exports in use or stablelisted, the
    regressions' crc-mismatches), from the kernel before it, as kabigate's cache holds them."""
    result = story.result
    if result is None or result.baseline is None:
        return None
    symbols = ({c.symbol for c in result.changes_in_use if c.change == ExportChange.CRC}
               | {f.symbol for f in result.kernel_findings if f.change == ExportChange.CRC}
               | {r["symbol"] for f in result.regressions for r in f.reasons
                  if r["code"] == ReasonCode.CRC_MISMATCH and r["symbol"]})
    return causes_of_changes(store, result.baseline, result.candidate, symbols)


def gate_run_causes(store: Store, run: GateRun, report: dict) -> PairCauses | None:
    """The causes of the CRC changes a recorded gate report shows: those it stored (a gate with
    --explain), the others as kabigate's cache holds them now."""
    if run.baseline_id is None:
        return None
    changes = [c for c in [*report.get("changed_exports_in_use", []), *report.get("stablelist_violations", [])]
               if c["change"] == ExportChange.CRC]
    reasons = [r for b in report.get("builds", []) if b["class"] == GateClass.REGRESSION for r in b["reasons"]
               if r["code"] == ReasonCode.CRC_MISMATCH and r["symbol"]]
    stored = {c["symbol"]: c["cause"] for c in [*changes, *reasons] if c.get("cause")}
    return causes_of_changes(store, store.kernel(run.baseline_id), store.kernel(run.kernel_id),
                             {c["symbol"] for c in [*changes, *reasons]}, stored)


def _explain_changes(store: Store, baseline: KernelRecord, candidate: KernelRecord, findings: list[BuildFinding],
                     in_use: list[ChangedExport], notes: list[str]) -> list[ChangedExport]:
    """Attach causes to the changed exports in use and to the regressions' crc-mismatches (a build
    that loaded on the baseline was built with the baseline's CRC, so baseline -> candidate is it)."""
    from kabigate.explain.crc import cause_json
    from kabigate.explain.sources import explain_stored

    regressions = [r for f in findings if f.klass == GateClass.REGRESSION for r in f.reasons
                   if r["code"] == ReasonCode.CRC_MISMATCH]
    symbols = [c.symbol for c in in_use if c.change == ExportChange.CRC] + [r["symbol"] for r in regressions]
    if not symbols:
        return in_use
    causes = explain_stored((list(baseline.sources), store.load_kernel(baseline.id)),
                            (list(candidate.sources), store.load_kernel(candidate.id)), symbols)
    if causes is None:
        notes.append("CRC changes not explained: no kernel image (vmlinuz) among the kernels' stored sources")
        return in_use
    for reason in regressions:
        reason["cause"] = cause_json(causes[reason["symbol"]])
    return [dataclasses.replace(c, cause=cause_json(causes[c.symbol])) if c.change == ExportChange.CRC else c
            for c in in_use]


def _build_finding(build: BuildRecord, detail: list[dict], before: Cell | None, after: Cell, policy: Policy, waivers,
                   stablelist: Stablelist | None, release: str, today) -> BuildFinding:
    """One build's class and outcome; `detail` is its failing verdict's modules on the candidate."""
    if before is None:
        klass = GateClass.NEW
    elif before.loads:
        klass = GateClass.UNAFFECTED if after.loads else GateClass.REGRESSION
    else:
        klass = GateClass.FIXED if after.loads else GateClass.STILL_FAILING
    reasons, symbols = [], []
    for module in detail:
        for reason in module["reasons"]:
            reasons.append(dict(reason, module=module["name"]))
            if reason["symbol"]:
                symbols.append(FaultSymbol(reason["symbol"], ReasonCode(reason["code"]), reason["module_crc"],
                                           reason["kernel_crc"], stablelist is not None
                                           and reason["symbol"] in stablelist))
    if klass == GateClass.REGRESSION:
        category = (GateCategory.REGRESSION_STABLELISTED if any(s.stablelisted for s in symbols)
                    else GateCategory.REGRESSION_UNLISTED)
    else:
        category = GateCategory(klass)
    gating = any(fnmatch.fnmatchcase(build.driver, pattern) for pattern in policy.gating)
    outcome = policy.outcomes[category]
    applied: list[Waiver] = []
    expired: list[Waiver] = []
    if OUTCOMES.index(outcome) > OUTCOMES.index(Outcome.INFO):
        applied, expired = _waivers_for(build.driver, [s.name for s in symbols] or ["*"], release, waivers, today)
        if applied:
            outcome = Outcome.INFO
    if not gating:
        outcome = min(outcome, Outcome.INFO, key=OUTCOMES.index)
    return BuildFinding(build, klass, category, outcome, gating, reasons, symbols, applied, expired)


def _waivers_for(driver: str, symbols: list[str], release: str, waivers, today) -> tuple[list[Waiver], list[Waiver]]:
    """The waivers that together cover every symbol at fault (and those that would, but expired)."""
    def matching(waiver: Waiver, symbol: str) -> bool:
        return (fnmatch.fnmatchcase(driver, waiver.driver) and fnmatch.fnmatchcase(release, waiver.kernel)
                and fnmatch.fnmatchcase(symbol, waiver.symbol))

    live = [w for w in waivers if not w.expired(today)]
    covering = [w for w in live if any(matching(w, s) for s in symbols)]
    if not all(any(matching(w, s) for w in covering) for s in symbols):
        covering = []
    expired = [w for w in waivers if w.expired(today) and any(matching(w, s) for s in symbols)]
    return covering, expired


def _kernel_side(store: Store, candidate: KernelRecord, baseline: KernelRecord | None, builds: list[BuildRecord],
                 policy: Policy, waivers, stablelist: Stablelist | None, today):
    """check-kabi's findings, the export change counts, and the changed exports stored builds use."""
    if baseline is None:
        return [], {}, []
    diff = diff_exports(*store.export_difference(baseline.id, candidate.id), stablelist)
    listed = (lambda name: name in stablelist) if stablelist is not None else (lambda name: False)
    changed = {c.name for c in [*diff.crc_changed, *diff.became_gpl_only, *diff.namespace_changed]}
    counts = {
        "removed_stablelisted": sum(1 for c in diff.removed if listed(c.name)),
        "removed_unlisted": sum(1 for c in diff.removed if not listed(c.name)),
        "changed_stablelisted": sum(1 for name in changed if listed(name)),
        "changed_unlisted": sum(1 for name in changed if not listed(name)),
        "added": len(diff.added),
    }
    findings = []
    for change in diff.stablelist_violations:
        outcome = policy.outcomes[GateCategory.STABLELIST_VIOLATION]
        applied, expired = _waivers_for("*", [change.name], candidate.release,
                                        [w for w in waivers if w.driver == "*"], today)
        findings.append(KernelFinding(change.name, *_described(change), Outcome.INFO if applied else outcome,
                                      applied, expired))
    users: dict[str, set[int]] = {}
    for build_id, symbol, _crc in store.imports_of([b.id for b in builds]):
        users.setdefault(symbol, set()).add(build_id)
    in_use = [ChangedExport(c.name, *_described(c), listed(c.name), len(users[c.name]))
              for c in [*diff.removed, *diff.crc_changed, *diff.became_gpl_only, *diff.namespace_changed]
              if c.name in users]
    in_use.sort(key=lambda c: (-c.builds, c.symbol))
    return findings, counts, in_use


def _described(change) -> tuple[ExportChange, str, str]:
    """(what changed, before, after) of an export that was removed or changed."""
    old, new = change.old, change.new
    if new is None:
        return ExportChange.REMOVED, crc_text(old.crc) or "-", "-"
    if old.crc != new.crc:
        return ExportChange.CRC, crc_text(old.crc) or "-", crc_text(new.crc) or "-"
    if new.gpl_only and not old.gpl_only:
        return ExportChange.GPL_ONLY, old.export_type, new.export_type
    return ExportChange.NAMESPACE, old.namespace or "-", new.namespace or "-"


def record_gate(store: Store, result: GateResult, report: dict) -> GateRun:
    """Keep the gate's outcome and report (reports.gate.gate_json) in the store, and with them the
    notification events it saw (services/notify.py), in the same transaction."""
    with store.transaction():
        run = store.record_gate_run(result.candidate.id, result.baseline.id if result.baseline else None,
                                    result.stream, result.outcome, report)
        record_events(store, run.uuid, gate_events(store, result, run.uuid))
        return run


def gate_events(store: Store, result: GateResult, run: str) -> list[Event]:
    """What subscribers are told of a gate: each package the candidate breaks (it worked, or loaded
    more modules, on the baseline), each package a build made for the candidate makes work where it
    did not on the baseline or was reported broken on the candidate before, and a gate that does not pass."""
    candidate, baseline, stream = result.candidate, result.baseline, result.stream
    gate = {"stream": stream, "kernel": candidate.release, "baseline": baseline.release if baseline else None,
            "gate_run": run, "gate_outcome": result.outcome}
    events = []
    for finding in result.packages:
        name, after, before = finding.driver, finding.after, finding.before
        details = {"state": after.state, "state_before": before.state if before else None,
                   "modules_loading": after.modules_loading, "symbols": finding.symbols}
        if finding.breaks:
            summary = f"{candidate.release} breaks {name}" + (f" ({stream})" if stream else "") + \
                      f": {why_not(after) or after.state}"
            events.append(Event(event_key(EventKind.PACKAGE_BROKEN, name, stream, candidate.id),
                                EventKind.PACKAGE_BROKEN, name, stream, candidate.release,
                                event_payload(EventKind.PACKAGE_BROKEN, summary, name, gate,
                                              dict(details, category=finding.category))))
        elif after.state == PackageState.LOADS_AFTER_REBUILD and (
                (before is not None and not before.works)
                or store.event_exists(event_key(EventKind.PACKAGE_BROKEN, name, stream, candidate.id))):
            build = after.best.build if after.best else None
            summary = f"{name} works on {candidate.release} after a rebuild" + (f" ({stream})" if stream else "") + \
                      (f": {build.version} built for it loads" if build else "")
            events.append(Event(event_key(EventKind.PACKAGE_FIXED, name, stream, candidate.id),
                                EventKind.PACKAGE_FIXED, name, stream, candidate.release,
                                event_payload(EventKind.PACKAGE_FIXED, summary, name, gate,
                                              dict(details, category=None))))
    if not result.passed:
        broken = sorted(f.driver for f in result.broken_packages)
        summary = (f"gate of {candidate.release}" + (f" ({stream})" if stream else "") + f": {result.outcome}; "
                   f"{len(broken)} packages broken, {len(result.regressions)} builds regressed")
        events.append(Event(event_key(EventKind.GATE_BLOCKED, None, stream, candidate.id), EventKind.GATE_BLOCKED,
                            None, stream, candidate.release,
                            event_payload(EventKind.GATE_BLOCKED, summary, None, gate,
                                          {"broken_packages": broken, "regressions": len(result.regressions)})))
    return events


def publish_gate(store: Store, run: GateRun, api_url: str, payload: dict, token: str | None = None) -> str:
    """Publish a recorded gate run to ResultsDB once: the payload carries the run's id, and a result
    already there with it (a publisher killed before it noted the publication) is not posted again."""
    if run.published_to == api_url and run.resultsdb_id:
        return run.resultsdb_id
    payload = dict(payload, data=dict(payload["data"], kabigate_run=run.uuid))
    testcase = payload["testcase"]["name"]
    existing = resultsdb.find_result(api_url, testcase, {"item": payload["data"]["item"], "kabigate_run": run.uuid},
                                     token)
    result_id = existing or resultsdb.publish_result(api_url, payload, token)
    with store.transaction():
        store.mark_published(run.uuid, api_url, result_id)
    return result_id


def add_waiver(store: Store, fields: dict) -> Waiver:
    """Store a waiver given as a [[waiver]] table's keys (a JSON object, command line options), checked by
    the waivers file's rules; the waiver as stored."""
    waiver = waiver_from_mapping(fields, "waiver")
    with store.transaction():
        waiver_id = store.add_waiver(waiver)
    return next(w for w in store.waivers() if w.id == waiver_id)


def revoke_waiver(store: Store, waiver_id: int) -> Waiver:
    """Revoke a stored waiver: kept, shown as revoked, no longer applied by gates."""
    with store.transaction():
        return store.revoke_waiver(waiver_id)
