"""Gate policies and waivers: TOML files a kernel pipeline keeps beside its code.

A policy says what each class of finding means for the candidate kernel, in ResultsDB's outcomes
(PASSED, INFO, NEEDS_INSPECTION, FAILED), like SUSE's kabi severities file says which symbol
changes fail a build; and which drivers gate at all. A waiver forgives findings that match its
patterns until it expires, like a libabigail suppression or Android's allowed breaks, and says
who decided and why:

    # policy.toml
    [outcomes]
    regression_stablelisted = "FAILED"        # loads on the baseline, not on the candidate, through
    regression_unlisted = "NEEDS_INSPECTION"  #   a stablelisted symbol / only through others
    stablelist_violation = "FAILED"           # a stablelisted export removed or changed
    still_failing = "INFO"
    fixed = "PASSED"
    unaffected = "PASSED"
    new = "INFO"                              # no verdict on the baseline to compare with
    package_broken = "FAILED"                 # a package that worked on the baseline (or loaded more
                                              #   modules there) has no build loading on the candidate,
                                              #   and its build for the candidate failed or does not load
    package_not_rebuilt = "NEEDS_INSPECTION"  #   ... and no build for the candidate is stored yet
    [drivers]
    gating = ["*"]                            # shell patterns of the drivers whose results gate
    [coverage]
    minimum_builds = 1                        # fewer gating builds judged than this ->
    below_minimum = "NEEDS_INSPECTION"
    require_working_packages = true           # judged gating packages, none of them works ->
    no_working_packages = "NEEDS_INSPECTION"  #   (rebuilds that fail are package_broken: FAILED)

    # waivers.toml
    [[waiver]]
    driver = "acpi-call"                      # shell patterns; an omitted one matches anything
    symbol = "proc_*"
    kernel = "6.1.0-5*"
    reason = "acpi-call is rebuilt for every ABI; tracked in bug 1234"
    who = "jane@example.org"
    expires = 2027-01-31
"""

from __future__ import annotations

import contextlib
import datetime
import re
from dataclasses import dataclass, field

from kabigate.errors import InputError
from kabigate.formats.toml import parse_toml
from kabigate.vocabulary import GateCategory, Outcome

OUTCOMES = tuple(Outcome)  # in increasing severity
CLASSES = tuple(GateCategory)
DEFAULT_OUTCOMES = {
    GateCategory.REGRESSION_STABLELISTED: Outcome.FAILED,
    GateCategory.REGRESSION_UNLISTED: Outcome.NEEDS_INSPECTION,
    GateCategory.STABLELIST_VIOLATION: Outcome.FAILED,
    GateCategory.STILL_FAILING: Outcome.INFO,
    GateCategory.FIXED: Outcome.PASSED,
    GateCategory.UNAFFECTED: Outcome.PASSED,
    GateCategory.NEW: Outcome.INFO,
    GateCategory.PACKAGE_BROKEN: Outcome.FAILED,
    GateCategory.PACKAGE_NOT_REBUILT: Outcome.NEEDS_INSPECTION,
}
MAX_POLICY_FILE = 1 << 20


@dataclass(frozen=True)
class Policy:
    outcomes: dict[GateCategory, Outcome] = field(default_factory=lambda: dict(DEFAULT_OUTCOMES))
    gating: tuple[str, ...] = ("*",)
    minimum_builds: int = 1
    below_minimum: Outcome = Outcome.NEEDS_INSPECTION
    require_working_packages: bool = True
    no_working_packages: Outcome = Outcome.NEEDS_INSPECTION
    source: str = "(built-in policy)"


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Waiver:
    reason: str
    who: str
    expires: datetime.date | None
    driver: str = "*"
    symbol: str = "*"
    kernel: str = "*"
    source: str = ""  # where it was read: "waivers.toml#2", or "store#12" for a stored waiver
    id: int | None = None  # a stored waiver's id
    created_at: datetime.datetime | None = None  # when a stored waiver was added
    revoked_at: datetime.datetime | None = None  # when a stored waiver was revoked (never deleted)

    def expired(self, today: datetime.date) -> bool:
        return self.expires is not None and self.expires < today

    @property
    def label(self) -> str:
        return f"{self.source}: driver={self.driver} symbol={self.symbol} kernel={self.kernel} ({self.who})"


def parse_policy(data: bytes, what: str) -> Policy:
    document = _toml(data, what)
    _only(document, {"outcomes", "drivers", "coverage"}, what, "")
    outcomes = dict(DEFAULT_OUTCOMES)
    table = _table(document, "outcomes", what)
    _only(table, set(CLASSES), what, "outcomes.")
    for key, value in table.items():
        outcomes[GateCategory(key)] = _outcome(value, what, f"outcomes.{key}")
    drivers = _table(document, "drivers", what)
    _only(drivers, {"gating"}, what, "drivers.")
    gating = drivers.get("gating", ["*"])
    if not isinstance(gating, list) or not all(isinstance(p, str) and p for p in gating):
        raise InputError(f"{what}: drivers.gating must be a list of driver name patterns")
    coverage = _table(document, "coverage", what)
    _only(coverage, {"minimum_builds", "below_minimum", "require_working_packages", "no_working_packages"}, what,
          "coverage.")
    minimum = coverage.get("minimum_builds", 1)
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        raise InputError(f"{what}: coverage.minimum_builds must be a whole number >= 0")
    below = _outcome(coverage.get("below_minimum", Outcome.NEEDS_INSPECTION), what, "coverage.below_minimum")
    require = coverage.get("require_working_packages", True)
    if not isinstance(require, bool):
        raise InputError(f"{what}: coverage.require_working_packages must be true or false")
    none_working = _outcome(coverage.get("no_working_packages", Outcome.NEEDS_INSPECTION), what,
                            "coverage.no_working_packages")
    return Policy(outcomes, tuple(gating), minimum, below, require, none_working, what)


def parse_waivers(data: bytes, what: str) -> list[Waiver]:
    document = _toml(data, what)
    _only(document, {"waiver"}, what, "")
    entries = document.get("waiver", [])
    if not isinstance(entries, list):
        raise InputError(f"{what}: waivers are [[waiver]] tables")
    return [waiver_from_mapping(entry, f"{what}: waiver #{number}", f"{what}#{number}")
            for number, entry in enumerate(entries, 1)]


WAIVER_KEYS = ("driver", "symbol", "kernel", "reason", "who", "expires")


def waiver_from_mapping(entry, where: str, source: str = "", waiver_id: int | None = None) -> Waiver:
    """One waiver from a [[waiver]] table, a JSON object or stored columns, checked by the same rules:
    reason and who required, non-empty patterns (omitted: "*") that do not all match everything, and
    `expires` a date (a TOML date, or YYYY-MM-DD text) or none. `where` names it in errors."""
    if not isinstance(entry, dict):
        raise InputError(f"{where}: not a table")
    _only(entry, set(WAIVER_KEYS), where, "")
    for key in ("reason", "who"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise InputError(f"{where}: '{key}' is required (say why, and who decided)")
    patterns = {key: "*" if entry.get(key) is None else entry[key] for key in ("driver", "symbol", "kernel")}
    for key, pattern in patterns.items():
        if not isinstance(pattern, str) or not pattern.strip():
            raise InputError(f"{where}: '{key}' must be a non-empty pattern")
    if patterns == {"driver": "*", "symbol": "*", "kernel": "*"}:
        raise InputError(f"{where}: waives everything; name a driver, symbol or kernel pattern")
    expires = entry.get("expires")
    if isinstance(expires, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", expires):
        with contextlib.suppress(ValueError):
            expires = datetime.date.fromisoformat(expires)
    if isinstance(expires, datetime.datetime):
        expires = expires.date()
    if expires is not None and not isinstance(expires, datetime.date):
        raise InputError(f"{where}: 'expires' must be a date (expires = 2027-01-31)")
    return Waiver(entry["reason"].strip(), entry["who"].strip(), expires, driver=patterns["driver"],
                  symbol=patterns["symbol"], kernel=patterns["kernel"], source=source, id=waiver_id)


def _toml(data: bytes, what: str) -> dict:
    if len(data) > MAX_POLICY_FILE:
        raise InputError(f"{what}: larger than {MAX_POLICY_FILE >> 10} KiB, not a policy file")
    return parse_toml(data, what)


def _table(document: dict, key: str, what: str) -> dict:
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise InputError(f"{what}: [{key}] must be a table")
    return value


def _only(table: dict, allowed: set[str], what: str, prefix: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise InputError(f"{what}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(allowed))})")


def _outcome(value, what: str, key: str) -> Outcome:
    if value not in OUTCOMES:
        raise InputError(f"{what}: {key} = {value!r}: an outcome is one of {', '.join(OUTCOMES)}")
    return Outcome(value)
