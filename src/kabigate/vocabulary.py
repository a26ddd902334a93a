"""The closed vocabularies of the gate and the workers, as StrEnums: each member equals, prints and
serialises as its text, the one JSON, the store's columns, policies and messages hold. A leaf module
(no imports of kabigate), so that formats, services, the store and the CLI's lazily loaded commands
can all name them. The loader's reason codes are model.ReasonCode."""

from __future__ import annotations

from enum import StrEnum


class GateClass(StrEnum):
    """A driver build's class in a gate: its verdict on the candidate against the baseline's."""

    REGRESSION = "regression"
    STILL_FAILING = "still_failing"
    FIXED = "fixed"
    UNAFFECTED = "unaffected"
    NEW = "new"  # no verdict on the baseline to compare with


class GateCategory(StrEnum):
    """What a gate policy gives an outcome to (its [outcomes] keys): a build's class, a regression
    split by the stablelist, and the kernel side's stablelist violations."""

    REGRESSION_STABLELISTED = "regression_stablelisted"
    REGRESSION_UNLISTED = "regression_unlisted"
    STABLELIST_VIOLATION = "stablelist_violation"
    STILL_FAILING = "still_failing"
    FIXED = "fixed"
    UNAFFECTED = "unaffected"
    NEW = "new"
    PACKAGE_BROKEN = "package_broken"
    PACKAGE_NOT_REBUILT = "package_not_rebuilt"


class PackageState(StrEnum):
    """A driver package on one kernel (services/packages.py), from its stored builds that matter to
    the kernel and its recorded build failures; the first that holds, in this order."""

    LOADS = "loads"  # a build made for another kernel loads whole (what weak-modules reuses)
    LOADS_AFTER_REBUILD = "loads-after-rebuild"  # a build made for this kernel loads whole (DKMS, akmods)
    EXCLUDED = "excluded"  # its build for this kernel was refused by dkms' BUILD_EXCLUSIVE_*: not for it
    PARTIAL = "partial"  # no build loads whole; the best loads some of its modules
    REBUILD_FAILS = "rebuild-fails"  # no build loads a module; its build for this kernel failed
    BROKEN = "broken"  # builds judged here, none loads a module, no failed build recorded
    NOT_TRIED = "not-tried"  # no build that matters to this kernel, no build failure: nothing known


class Outcome(StrEnum):
    """ResultsDB's outcomes, in increasing severity (the order of the members)."""

    PASSED = "PASSED"
    INFO = "INFO"
    NEEDS_INSPECTION = "NEEDS_INSPECTION"
    FAILED = "FAILED"


class ExportChange(StrEnum):
    """How a stablelisted or used export changed from baseline to candidate (a gate's `change`)."""

    REMOVED = "removed"
    CRC = "crc"
    GPL_ONLY = "gpl-only"
    NAMESPACE = "namespace"


class BuildOutcome(StrEnum):
    """What building a driver package against a kernel came to (kabigate build, the build_failure
    table's `outcome`): built, failed (a compiler error, a limit), excluded (dkms's BUILD_EXCLUSIVE_*)."""

    BUILT = "built"
    FAILED = "failed"
    EXCLUDED = "excluded"


class TaskState(StrEnum):
    """A worker task's state, as the task table's `state` column holds it."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # for the tasks it asked for (a gate for its package rebuilds); queued when they finish
    DONE = "done"
    FAILED = "failed"


class RequiresVerdict(StrEnum):
    """`precheck`'s verdict on a package's kernel(sym)/ksym(sym) requirements."""

    PASSES = "passes"
    FAILS = "fails"


class GateStage(StrEnum):
    """A gate's stages, in the order it runs them (a progress bar names the one running)."""

    REBUILD = "rebuilding packages"
    JUDGE = "judging driver builds"
    EXPORTS = "comparing exports"
    EXPLAIN = "explaining CRC changes"
    PACKAGES = "judging packages"
    CONFIRM = "confirming in qemu"
    RECORD = "recording the run"
    PUBLISH = "publishing to ResultsDB"


class EventKind(StrEnum):
    """What a subscriber is told of (services/notify.py): a kernel breaks a package that worked on the
    kernel before it in the stream, a rebuild makes a package work again, a gate does not pass."""

    PACKAGE_BROKEN = "package-broken"
    PACKAGE_FIXED = "package-fixed"
    GATE_BLOCKED = "gate-blocked"


class SubscriptionTarget(StrEnum):
    """What a subscription follows: one driver package's events, or every event of a stream."""

    PACKAGE = "package"
    STREAM = "stream"


class ChannelKind(StrEnum):
    """Where a subscription's messages go: an e-mail address (SMTP), a webhook URL (a signed JSON
    POST), or the message bus (the package's or stream's topic)."""

    EMAIL = "email"
    WEBHOOK = "webhook"
    BUS = "bus"


class SmtpSecurity(StrEnum):
    """How e-mail reaches the SMTP server ($KABIGATE_SMTP_SECURITY): in clear (port 25), upgraded
    by STARTTLS (RFC 3207, port 587), or over TLS from the first byte (RFC 8314's implicit TLS, port 465)."""

    NONE = "none"
    STARTTLS = "starttls"
    TLS = "tls"


class DeliveryState(StrEnum):
    """One event's delivery to one subscription (the outbox): pending until sent, failed once its
    bounded attempts are spent."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WaiverLink(StrEnum):
    """How a stored waiver and a WaiverDB waiver are related (store waiver_link.direction)."""

    POSTED = "posted"  # kabigate waiver add --waiverdb posted it there
    IMPORTED = "imported"  # kabigate waiver import read it from there
