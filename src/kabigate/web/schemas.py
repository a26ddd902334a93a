"""What each /api/v1 route answers, as pydantic models: they document the replies in OpenAPI
(/api/v1/openapi.json) and tests/test_web_schema.py holds the real replies to them.

The replies are built elsewhere (kabigate.reports, kabigate.services, web/views.py); these models
describe them, field for field and in the same order. The small replies go through them
(`response_model`); the large ones (the matrix can be 200,000 cells) are only documented with them
and sent as built. Objects are closed (`extra="forbid"`: no undocumented field), so a field added
to a reply without its model fails the schema test."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kabigate.model import LoadVerdict, ReasonCode
from kabigate.vocabulary import (
    BuildOutcome,
    ChannelKind,
    ExportChange,
    GateCategory,
    GateClass,
    Outcome,
    PackageState,
    SubscriptionTarget,
    TaskState,
)


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ---------------------------------------------------------------------------------------

class ErrorMessage(Closed):
    """Every error of the API but a refused request's parameters (web/app.py's error handlers)."""

    detail: str


class ValidationIssue(Closed):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrors(Closed):
    """A request whose parameters or body are not what the route takes (422); the input is not quoted."""

    detail: list[ValidationIssue]


# -- the store's records --------------------------------------------------------------------------

class StreamPosition(Closed):
    stream: str
    position: int


class KernelRecord(Closed):
    """A stored kernel (reports.verdicts.kernel_record_json)."""

    id: int
    release: str
    machine: str | None
    flavor: str
    vermagic: str | None
    module_layout_crc: str | None = Field(description="hexadecimal, as modules record it")
    package_version: str | None
    exports: int
    streams: list[StreamPosition]
    sources: list[str]


class BuildRecord(Closed):
    """A stored driver build (reports.verdicts.build_record_json)."""

    id: int
    driver: str
    package: str | None
    version: str | None
    arch: str | None = Field(description="the package's architecture, as the package names it (amd64, x86_64, all)")
    machine: str | None = Field(description="its modules' architecture (`uname -m`); judged on kernels of it only")
    format: str
    built_for: str | None = Field(description="the kernel release it was built for")
    source: str
    modules: list[str] = Field(description="module names, in the build's order")


class BuildFailure(Closed):
    """A driver build that failed for a kernel (store.records.BuildFailure)."""

    driver: str
    version: str
    kernel_release: str
    error: str


class Cell(Closed):
    """One driver build on one kernel, as judged (reports.verdicts.cell_json)."""

    build_id: int
    kernel_id: int
    loads: bool
    modules: int
    modules_loading: int
    first_reason: ReasonCode | None
    failing_symbols: int
    rules_version: int


class Streams(Closed):
    streams: list[str]


class Kernels(Closed):
    kernels: list[KernelRecord]


class KernelDetail(KernelRecord):
    gate_runs: list[str] = Field(description="uuids of the gate runs of this kernel")


class Drivers(Closed):
    builds: list[BuildRecord]
    build_failures: list[BuildFailure]
    aliases: dict[str, list[str]]  # a shown driver's other names, as `kabigate db alias-driver` gave them


# -- why a CRC changed (explain.crc.cause_json) ----------------------------------------------------

class CauseCandidate(Closed):
    type: str
    key: list[str]
    via: str
    depth: int
    seen_by_headers: int


class Cause(Closed):
    """A CRC change's most likely cause, or why there is none."""

    most_likely: CauseCandidate | None
    candidates: int
    no_type_information: str | None


# -- verdicts -------------------------------------------------------------------------------------

class Reason(Closed):
    """Why a module fails to load, or (a warning) what loading it does (reports.verdicts.reason_report)."""

    code: ReasonCode
    symbol: str | None
    module_crc: str | None
    kernel_crc: str | None
    message: str
    cause: Cause | None = Field(None, description="on a crc-mismatch whose cause the explain cache knows")


class ModuleVerdict(Closed):
    path: str
    name: str
    verdict: LoadVerdict
    reasons: list[Reason]
    warnings: list[Reason]


class CellDetail(Closed):
    """GET /verdicts/{build_id}/{kernel_id}."""

    build: BuildRecord
    kernel: KernelRecord
    cell: Cell
    modules: list[ModuleVerdict]


# -- the matrix and packages ----------------------------------------------------------------------

class MatrixSummary(Closed):
    """The whole matrix's counts, not the page's."""

    kernels: int
    driver_builds: int
    drivers: int
    cells: int
    loading: int
    failing: int
    build_failures: int


class MatrixPage(Closed):
    """GET /matrix (services.matrix.matrix_page_json): one page of driver builds, the cells flat."""

    stream: str | None
    arch: str | None = Field(description="the architecture asked for; null: every one")
    summary: MatrixSummary
    page: int
    pages: int
    kernels: list[KernelRecord]
    builds: list[BuildRecord]
    cells: list[Cell]
    build_failures: list[BuildFailure]


class DecidingBuild(Closed):
    id: int
    version: str | None
    built_for: str | None


class PackageBuildFailure(Closed):
    version: str
    error: str


class PackageVerdict(Closed):
    """A driver package on one kernel (services.packages.package_verdict_json)."""

    driver: str
    kernel: str
    state: PackageState
    build: DecidingBuild | None = Field(description="the build that decides the state: the one loading, or the "
                                                    "one loading the most")
    modules: int
    modules_loading: int
    first_reason: ReasonCode | None
    failing_modules: list[str]
    builds: int
    build_failure: PackageBuildFailure | None
    why: str | None


class PackageRow(Closed):
    driver: str
    working_on: list[str] = Field(description="releases of the kernels it works on")
    verdicts: list[PackageVerdict] = Field(description="one a kernel, in the kernels' order")


class PackageTotals(Closed):
    kernels: int
    packages: int = Field(description="the packages on every page")


class PackagePage(Closed):
    """GET /packages (services.packages.package_matrix_json): one page of packages."""

    stream: str | None
    summary: PackageTotals
    page: int
    pages: int
    kernels: list[KernelRecord]
    packages: list[PackageRow]


# -- a driver's history ---------------------------------------------------------------------------

class Break(Closed):
    kernel: str = Field(description="the first kernel of the stream the build fails on after loading")
    last_loading: str | None
    reasons: dict[ReasonCode, int] = Field(description="reason code -> failing modules")
    symbols: list[str]
    fixed_by: list[BuildRecord] = Field(description="later builds that load on that kernel")


class BuildHistory(BuildRecord):
    loads_on: list[str]
    breaks: list[Break]


class StreamHistory(Closed):
    stream: str
    kernels: list[str]
    builds: list[BuildHistory]
    packages: list[PackageVerdict]


class DriverHistory(Closed):
    """GET /drivers/{name}/history (services.matrix.history_json)."""

    driver: str
    streams: list[StreamHistory]


# -- the gate -------------------------------------------------------------------------------------

class GateCounts(Closed):
    """Driver builds in each gate class."""

    regression: int
    still_failing: int
    fixed: int
    unaffected: int
    new: int


class ExportChangeCounts(Closed):
    """Exports removed, changed and added from baseline to candidate; empty without a baseline."""

    removed_stablelisted: int = 0
    removed_unlisted: int = 0
    changed_stablelisted: int = 0
    changed_unlisted: int = 0
    added: int = 0


class GateKernel(Closed):
    release: str
    package_version: str | None
    machine: str | None


class Waiver(Closed):
    """A waiver as the gate report shows it (reports.gate)."""

    source: str = Field(description='where it was read: "waivers.toml#2", or "store#12"')
    driver: str
    symbol: str
    kernel: str
    reason: str
    who: str
    expires: str | None = Field(description="YYYY-MM-DD, the last day it applies")


class StoredWaiver(Waiver):
    """A stored waiver (reports.gate.waiver_json)."""

    id: int
    created_at: str | None
    revoked_at: str | None


class Waivers(Closed):
    waivers: list[StoredWaiver]


class FaultSymbol(Closed):
    symbol: str
    code: ReasonCode
    module_crc: str | None
    kernel_crc: str | None
    stablelisted: bool


class ModuleReason(Reason):
    module: str


class BuildFinding(Closed):
    driver: str
    version: str | None
    built_for: str | None
    package: str | None
    class_: GateClass = Field(alias="class")
    category: GateCategory
    outcome: Outcome
    gating: bool
    symbols: list[FaultSymbol]
    reasons: list[ModuleReason]
    waivers: list[Waiver]
    expired_waivers: list[Waiver]


class KernelFinding(Closed):
    """A stablelisted export removed or changed."""

    symbol: str
    change: ExportChange
    old: str
    new: str
    outcome: Outcome
    waivers: list[Waiver]
    expired_waivers: list[Waiver]


class ChangedExport(Closed):
    """An export removed or changed that stored driver builds import."""

    symbol: str
    change: ExportChange
    old: str
    new: str
    stablelisted: bool
    builds: int
    cause: Cause | None


class BaselinePackage(Closed):
    state: PackageState
    modules_loading: int


class PackageFinding(PackageVerdict):
    baseline: BaselinePackage | None
    breaks: bool
    category: GateCategory
    outcome: Outcome
    gating: bool
    symbols: list[str]
    waivers: list[Waiver]
    expired_waivers: list[Waiver]


class Rebuild(Closed):
    """A package rebuilt for the candidate by `gate --rebuild` (services.rebuild.Rebuild.json)."""

    driver: str
    source: str | None = Field(description="the source it was built from (its stored build's built_from)")
    outcome: BuildOutcome | None = Field(description="null: not tried (reason says why)")
    reason: str | None = Field(description="why it was not tried, or the build's first error line")
    seconds: float
    signer: str | None


class GateReport(Closed):
    """The gate's JSON (reports.gate.gate_json), as `gate --json` prints it."""

    format_version: int
    outcome: Outcome
    candidate: GateKernel
    baseline: GateKernel | None
    stream: str | None
    policy: str
    stablelist: str | None
    counts: GateCounts
    coverage: int = Field(description="gating builds judged on the candidate")
    export_changes: ExportChangeCounts
    notes: list[str]
    builds: list[BuildFinding]
    stablelist_violations: list[KernelFinding]
    changed_exports_in_use: list[ChangedExport]
    module_layout_changed: bool
    packages: list[PackageFinding]
    rebuilds: list[Rebuild]


class RecordedGate(GateReport):
    """POST /gate: the report, and the uuid of the gate run recorded."""

    run: str


class GateRun(Closed):
    """A recorded gate run (web.views.gate_run_json)."""

    uuid: str
    outcome: Outcome
    stream: str | None
    kernel: str
    baseline: str | None
    created_at: str
    published_to: str | None
    resultsdb_id: str | None


class GateRuns(Closed):
    gate_runs: list[GateRun]


class GateRunDetail(GateRun):
    report: GateReport


# -- what a kernel changed (web.views.story_json) ---------------------------------------------------

class Regression(Closed):
    build: BuildRecord
    category: GateCategory
    symbols: list[str]
    reasons: list[ReasonCode]


class GateRunRef(Closed):
    uuid: str
    outcome: Outcome
    created_at: str


class KernelChanges(Closed):
    """GET /kernels/{release}/changes: the gate's classes against the kernel before it, not recorded."""

    kernel: KernelRecord
    stream: str | None
    previous: KernelRecord | None
    counts: GateCounts | None
    export_changes: ExportChangeCounts | None
    regressions: list[Regression]
    fixed: list[BuildRecord]
    gate_runs: list[GateRunRef]


# -- the overview (services.overview.overview_json) -------------------------------------------------

class GateOutcome(Closed):
    uuid: str
    outcome: Outcome


class TimelinePoint(Closed):
    kernel: str
    working: int = Field(description="packages with a build that loads whole on it")
    exports_changed: int | None = Field(description="the previous kernel's exports removed or changed on it "
                                                    "(null: the stream's first kernel)")
    abi_bump: bool
    module_layout_changed: bool
    gate: GateOutcome | None = Field(description="the newest gate run recorded for it in the stream")


class NewestCounts(Closed):
    working: int
    working_after_rebuild: int
    broken: int
    excluded: int


class StreamOverview(Closed):
    stream: str
    machine: str | None
    kernel: KernelRecord = Field(description="the stream's newest kernel of this machine")
    previous: str | None
    gate: GateOutcome | None
    packages: int = Field(description="packages with a build or build failure that matters to the stream")
    counts: NewestCounts = Field(description="packages on the newest kernel")
    broke: list[PackageVerdict] = Field(description="worked on the previous kernel, not on the newest")
    fixed: list[PackageVerdict] = Field(description="did not work on the previous kernel, work on the newest")
    timeline: list[TimelinePoint] = Field(description="one a kernel, oldest first")


class Overview(Closed):
    """GET /overview: per stream and machine."""

    streams: list[StreamOverview]


# -- a symbol, and search (services.symbols) --------------------------------------------------------

class SymbolOnKernel(Closed):
    kernel: str
    crc: str | None
    exported: bool
    owner: str | None = Field(description="vmlinux, or the exporting module")
    changed: bool = Field(description="its CRC, or whether it is exported, differs from the kernel before it")
    cause: Cause | None = Field(description="a CRC change's cause, when kabigate's cache holds it")
    explain: str | None = Field(description="a CRC change without a cached cause: the command that finds it")


class SymbolStream(Closed):
    stream: str | None
    kernels: list[SymbolOnKernel]


class SymbolImporter(Closed):
    build: BuildRecord
    modules: list[str]
    crcs: list[str | None] = Field(description="the CRC each module was built with")


class Symbol(Closed):
    """GET /symbols/{name}."""

    symbol: str
    stablelisted: bool | None = Field(description="on the server's stablelist (null: it has none)")
    streams: list[SymbolStream]
    importers: list[SymbolImporter]


class SearchResults(Closed):
    """GET /search."""

    query: str
    drivers: list[str]
    kernels: list[KernelRecord]
    symbols: list[str]


# -- stablelist demand (services.evidence.demand_json) ----------------------------------------------

class CrcChange(Closed):
    """A symbol's CRC differing between two neighbouring kernels of the stream."""

    kernel: str = Field(description="the release where the new CRC first appears")
    previous: str = Field(description="the release before it in the stream")
    old_crc: int | None
    new_crc: int | None
    cause: Cause | None = Field(description="null: the explain cache does not hold both kernels' types")


class SymbolDemand(Closed):
    symbol: str
    stablelisted: bool
    drivers: list[str]
    builds: int
    greylisted_by: int
    exported_by: int
    crc_changes: int
    crc_changed_in: list[CrcChange]
    removals: int
    reappearances: int
    failures: int = Field(description="driver x kernel cells the symbol refuses where it decides the verdict "
                          "(no earlier check, such as module_layout or vermagic, refuses the module)")
    first_kernel: str | None
    last_kernel: str | None
    kabi_violation: bool


class Demand(Closed):
    """GET /demand: the symbols the stored drivers import, ranked, against the server's stablelist."""

    stream: str
    arch: str | None = Field(description="the architecture of the kernels and builds counted (`uname -m`)")
    stablelist: str
    kernels: list[str]
    builds: int
    drivers: int
    symbols: list[SymbolDemand]


# -- ingests --------------------------------------------------------------------------------------

class IngestedKernel(Closed):
    kernel: KernelRecord
    created: bool = Field(description="false: the kernel was stored already")
    verdicts: int = Field(description="verdicts computed for it")


class IngestedBuild(BuildRecord):
    created: bool
    verdicts: int


class IngestedBuilds(Closed):
    builds: list[IngestedBuild]


class BuildLog(Closed):
    """GET /build-logs/{driver}/{version}/{kernel_release} (services.build.build_log_json)."""

    driver: str
    version: str
    kernel_release: str
    outcome: BuildOutcome
    error: str = Field(description="the first compiler error line, or dkms's reason for the exclusion")
    log: str | None = Field(description="the build's bounded log; null when none was kept")


class Subscription(Closed):
    """Who follows a package or a stream, and by what (reports.notifications.subscription_json)."""

    id: int
    owner: str
    target_kind: SubscriptionTarget
    target: str = Field(description="the package's or the stream's name")
    channel: ChannelKind
    address: str | None = Field(description="the e-mail address or webhook URL; null for the bus")
    has_secret: bool = Field(description="a webhook's messages are signed (the secret is never shown)")
    created_at: str


class Subscriptions(Closed):
    subscriptions: list[Subscription]


class Task(Closed):
    """A task (reports.tasks.task_json): POST /explanations, GET /tasks/{key}, `kabigate tasks --json`."""

    key: str = Field(description="what names the work: the same request has the same key, and is done once")
    kind: str = Field(description="explain, ingest-kernel, ingest-drivers, gate")
    args: dict = Field(description="what was asked")
    state: TaskState
    attempts: int
    error: str | None
    result: dict | None = Field(description="an explanation's: how many of its symbols were explained")
    created_at: str
    updated_at: str
