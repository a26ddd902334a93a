"""Ingest: kernels and driver builds into the store, each with its verdicts, all or nothing.

Files are read (the slow part) before the store is touched; then one transaction stores the item
and judges it against everything already stored (a new kernel against every driver build, a new
build against every kernel). An interrupted ingest leaves the store as it was; ingesting the same
content again changes nothing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from kabigate.errors import InputError
from kabigate.inputs.modules import read_modules
from kabigate.model import Kernel, Module, PackageOrigin, driver_name
from kabigate.reports.verdicts import build_record_json, verdict_report
from kabigate.rules import RULES_VERSION, LoadOptions, check_modules
from kabigate.services import Advance, no_progress
from kabigate.signing.verify import TrustedCert, key_check, trust_from_der, trust_to_der
from kabigate.store import BuildRecord, Cell, KernelRecord, Store, StoredVerdict

# Driver and stream names and kernel releases become URL path segments (/drivers/NAME,
# /kernels/RELEASE) and file names (gate --output-dir writes RELEASE.json): the characters of RPM
# and Debian package names, first a letter or digit (no "..", no option), as long as the columns
# hold. Kernel releases may hold '~' too. Versions are only shown, never part of a path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,199}")


def checked_name(name: str, what: str, pattern: re.Pattern = NAME) -> str:
    """`name` if it may be a path segment, else an InputError naming `what` ("driver name", ...)."""
    if not pattern.fullmatch(name):
        shown = name if len(name) <= 80 else name[:80] + "..."
        allowed = "._+~-" if pattern is RELEASE else "._+-"
        raise InputError(f"{what} {shown!r}: not usable in a URL or file name (letters, digits and {allowed}, "
                         "first a letter or digit, at most 200 characters)")
    return name


@dataclass(frozen=True)
class IngestedKernel:
    record: KernelRecord
    created: bool
    verdicts: int  # cells computed for it


@dataclass(frozen=True)
class IngestedBuild:
    record: BuildRecord
    created: bool
    verdicts: int


def ingest_kernel(store: Store, kernel: Kernel, stream: str | None = None,
                  advance: Advance = no_progress) -> IngestedKernel:
    """Store a kernel (kernels.load_kernel() reads one) and judge every stored driver build on it."""
    if kernel.release is not None:  # Store.add_kernel says why a kernel without one is refused
        checked_name(kernel.release, "kernel release", RELEASE)
    if stream is not None:
        checked_name(stream, "stream name")
    with store.transaction():
        record, created = store.add_kernel(kernel, stream)
        pairs = store.pairs_needing_verdicts(RULES_VERSION, kernel_ids=[record.id])
        computed = _judge_pairs(store, pairs, {record.id: kernel}, advance)
    return IngestedKernel(record, created, computed)


@dataclass(frozen=True)
class DriverBuildInput:
    """One driver build as read from files: a package's modules, or the loose modules of a tree."""

    driver: str
    modules: list[Module]
    version: str | None
    package: str | None
    arch: str | None
    format: str
    source: str
    greylist: tuple[str, ...] | None = None
    built_from: str | None = None  # what kabigate build made it from

    def __post_init__(self):
        # here, not at ingest: every build read from an upload or a repository is checked before
        # the first of them is stored
        checked_name(self.driver, "driver name")


def read_driver_builds(paths: list[str], name: str | None = None, version: str | None = None,
                       advance: Advance = no_progress) -> list[DriverBuildInput]:
    """The driver builds under `paths`: each package is one build (its modules a set), and the loose
    modules found under each path are one build. `name` and `version` name tree builds (default:
    the first module's name and its modinfo version); a package names itself. A name given or a
    package's is the driver's one name (model.driver_name: kmod-jool and jool-dkms are jool)."""
    builds = []
    for path in paths:
        loose: list[Module] = []
        packages: dict[str, tuple[PackageOrigin, list[Module]]] = {}  # its first module's origin, its modules
        for module in read_modules([path], advance):
            if module.origin is None:
                loose.append(module)
            else:
                packages.setdefault(module.origin.package, (module.origin, []))[1].append(module)
        if loose:
            builds.append(DriverBuildInput(
                driver=driver_name(name) if name else loose[0].name,
                modules=loose,
                version=version or next((v for m in loose if (v := m.info("version"))), None),
                package=None, arch=loose[0].machine, format="tree", source=os.path.abspath(path)))
        for location, (origin, modules) in packages.items():
            builds.append(DriverBuildInput(
                driver=driver_name(name or origin.name), modules=modules, version=origin.version, package=origin.name,
                arch=origin.arch, format=origin.format, source=location, greylist=origin.greylist))
    return builds


def ingest_driver_build(store: Store, build: DriverBuildInput, advance: Advance = no_progress) -> IngestedBuild:
    """Store a driver build and judge it on every stored kernel."""
    with store.transaction():
        record, created = store.add_driver_build(
            build.driver, build.modules, version=build.version, package=build.package, arch=build.arch,
            format=build.format, source=build.source, greylist=build.greylist,
            built_from=build.built_from)
        pairs = store.pairs_needing_verdicts(RULES_VERSION, build_ids=[record.id])
        computed = _judge_pairs(store, pairs, {}, advance)
    return IngestedBuild(record, created, computed)


def record_build_failure(store: Store, driver: str, version: str, kernel_release: str, error: str) -> bool:
    if not error.strip():
        raise InputError("a build failure needs its error message")
    checked_name(driver, "driver name")
    checked_name(kernel_release, "kernel release", RELEASE)
    with store.transaction():
        return store.record_build_failure(driver_name(driver), version, kernel_release, error.strip().splitlines()[0])


def refresh_verdicts(store: Store, advance: Advance = no_progress, kernel_ids: list[int] | None = None) -> int:
    """Judge every (build, kernel) pair (of these kernels) that has no verdict from the current
    rules; the count. Cheap when there is nothing to do: one count query (none pending in the store,
    none among these kernels: reading their pairs would be 200,000 rows on a 1,000 x 200 store)."""
    if count_pending_verdicts(store) == 0:
        return 0
    pairs = store.pairs_needing_verdicts(RULES_VERSION, kernel_ids=kernel_ids)
    by_kernel: dict[int, list[tuple[int, int]]] = {}
    for pair in pairs:
        by_kernel.setdefault(pair[1], []).append(pair)
    for kernel_pairs in by_kernel.values():  # one transaction a kernel: progress survives an interruption
        with store.transaction():
            _judge_pairs(store, kernel_pairs, {}, advance)
    return len(pairs)


def enforce_signatures(store: Store, stream: str, trust: list[TrustedCert] | None,
                       advance: Advance = no_progress) -> int:
    """Mark a stream as enforcing module signatures with `trust` (built-in keys and enrolled MOK
    certificates), or (None) as not; its kernels are judged again. The verdicts computed."""
    with store.transaction():
        kernel_ids = store.enforce_signatures(stream, None if trust is None else trust_to_der(trust))
    return refresh_verdicts(store, advance, kernel_ids)


def count_pending_verdicts(store: Store) -> int:
    """Pairs without a verdict from the current rules (a rules change makes them all pending); a build
    is paired only with the kernels of its architecture."""
    return store.count_pairs() - store.count_verdicts(RULES_VERSION)


def _judge_pairs(store: Store, pairs: list[tuple[int, int]], kernels: dict[int, Kernel], advance: Advance) -> int:
    builds = store.load_builds(sorted({build_id for build_id, _ in pairs}))
    kernel_ids = sorted({kernel_id for _, kernel_id in pairs})
    kernels.update(store.load_kernels([kernel_id for kernel_id in kernel_ids if kernel_id not in kernels]))
    trust = {kernel_id: None if certificates is None else trust_from_der(certificates)
             for kernel_id, certificates in store.signature_trusts(kernel_ids).items()}
    verdicts = []
    for build_id, kernel_id in pairs:
        verdicts.append(judge(build_id, kernel_id, builds[build_id], kernels[kernel_id], trust[kernel_id]))
        advance()
    store.save_verdicts(verdicts)
    return len(verdicts)


def judge(build_id: int, kernel_id: int, modules: list[Module], kernel: Kernel,
          trust: list[TrustedCert] | None = None) -> StoredVerdict:
    """The loader rules on one build (its modules installed together) and one kernel, as a cell;
    with `trust` (the kernel is in a stream that enforces signatures), as module.sig_enforce=1 does,
    each module's signer matched against the trusted keys."""
    options = LoadOptions() if trust is None else LoadOptions(
        require_signature=True, signature_checks={m.path: key_check(m.signature, trust) for m in modules})
    verdicts = check_modules(modules, kernel, options)
    failing = [v for v in verdicts if not v.loads]
    symbols = {reason.symbol for v in failing for reason in v.reasons if reason.symbol}
    cell = Cell(build_id=build_id, kernel_id=kernel_id, rules_version=RULES_VERSION, loads=not failing,
                modules=len(verdicts), modules_loading=len(verdicts) - len(failing),
                first_reason=failing[0].reasons[0].code if failing else None, failing_symbols=len(symbols))
    return StoredVerdict(cell, [verdict_report(v) for v in verdicts])


def ingested_builds_json(results: list[IngestedBuild]) -> dict:
    return {"builds": [dict(build_record_json(r.record), created=r.created, verdicts=r.verdicts) for r in results]}
