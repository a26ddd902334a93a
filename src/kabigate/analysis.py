"""Comparisons built on the model: kernel-to-kernel export diffs and stablelist coverage."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from kabigate.formats.elrepo import SpecRevision
from kabigate.formats.stablelist import Stablelist
from kabigate.model import Export, Kernel, Module


@dataclass(frozen=True)
class ExportChange:
    name: str
    old: Export | None
    new: Export | None


@dataclass
class KernelDiff:
    added: list[ExportChange] = field(default_factory=list)
    removed: list[ExportChange] = field(default_factory=list)
    crc_changed: list[ExportChange] = field(default_factory=list)
    became_gpl_only: list[ExportChange] = field(default_factory=list)
    namespace_changed: list[ExportChange] = field(default_factory=list)
    # check-kabi: listed symbols that were removed or changed (CRC, GPL-only, namespace)
    stablelist_violations: list[ExportChange] = field(default_factory=list)

    @property
    def breaks_abi(self) -> bool:
        return bool(self.removed or self.crc_changed or self.became_gpl_only or self.namespace_changed)


def diff_kernels(old: Kernel, new: Kernel, stablelist: Stablelist | None = None) -> KernelDiff:
    return diff_exports(old.exports, new.exports, stablelist)


def diff_exports(old: dict[str, Export], new: dict[str, Export], stablelist: Stablelist | None = None) -> KernelDiff:
    """Two kernels' exports by name compared; each side may leave out the exports both hold alike
    (Store.export_difference): the diff is the same."""
    diff = KernelDiff()
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before is after or before == after:  # a store's kernels share their unchanged exports' records
            continue  # most of a kernel's exports: nothing to say (a kernel page diffs ~50,000)
        change = ExportChange(name, before, after)
        if before is None:
            diff.added.append(change)
            continue
        if after is None:
            diff.removed.append(change)
        else:
            if before.crc != after.crc:
                diff.crc_changed.append(change)
            if after.gpl_only and not before.gpl_only:
                diff.became_gpl_only.append(change)
            if before.namespace != after.namespace:
                diff.namespace_changed.append(change)
        if stablelist is not None and name in stablelist and _is_breaking(before, after):
            diff.stablelist_violations.append(change)
    return diff


def _is_breaking(before: Export, after: Export | None) -> bool:
    return (after is None or before.crc != after.crc or (after.gpl_only and not before.gpl_only)
            or before.namespace != after.namespace)


def stablelist_coverage(module: Module, set_exports: set[str], stablelist: Stablelist) -> tuple[list[str], list[str]]:
    """(on, off): the module's kernel imports that are / are not on the stablelist, as Red Hat's
    ksc reports them. Symbols another module of the set provides are not kernel ABI."""
    wanted = sorted({i.name for i in module.imports} - set_exports - {e.name for e in module.exports})
    on = [name for name in wanted if name in stablelist]
    off = [name for name in wanted if name not in stablelist]
    return on, off


@dataclass(frozen=True)
class ListStep:
    """From one release's stablelist to the next: what the promise gained, lost and moved."""

    before: str
    after: str
    size: int  # symbols in `after`
    added: list[str]
    removed: list[str]
    crc_changed: list[str]  # kept symbols whose reference CRC moved (lists that carry CRCs)


def stablelist_history(lists: list[Stablelist]) -> list[ListStep]:
    """Consecutive pairs of lists, in the order given (oldest first)."""
    steps = []
    for before, after in itertools.pairwise(lists):
        kept = before.symbols & after.symbols
        steps.append(ListStep(
            before.source, after.source, len(after.symbols),
            added=sorted(after.symbols - before.symbols),
            removed=sorted(before.symbols - after.symbols),
            crc_changed=sorted(s for s in kept if s in before.crcs and s in after.crcs
                               and before.crcs[s] != after.crcs[s]),
        ))
    return steps


# The kernel release number each RHEL minor shipped with at GA (2.6.18-8 is 5.0, 4.18.0-305 is 8.4):
# a z-stream kernel (4.18.0-305.7.1.el8_4) keeps its GA number.
RHEL_GA_KERNELS = {
    5: (8, 53, 92, 128, 164, 194, 238, 274, 308, 348, 371, 398),
    6: (71, 131, 220, 279, 358, 431, 504, 573, 642, 696, 754),
    7: (123, 229, 327, 514, 693, 862, 957, 1062, 1127, 1160),
    8: (80, 147, 193, 240, 305, 348, 372, 425, 477, 513, 553),
    9: (70, 162, 284, 362, 427, 503, 570, 611, 687),
}


def rhel_minor(kernel_release: str) -> str | None:
    """"4.18.0-305.7.1.el8_4" -> "8.4"; "beta" below a major's first GA; None when not a RHEL kernel."""
    match = re.match(r"^\d+\.\d+\.\d+-(\d+)[.\w]*\.el(\d+)", kernel_release)
    if match is None or int(match.group(2)) not in RHEL_GA_KERNELS:
        return None
    number, major = int(match.group(1)), int(match.group(2))
    minors = [minor for minor, ga in enumerate(RHEL_GA_KERNELS[major]) if number >= ga]
    return f"{major}.{minors[-1]}" if minors else f"{major} beta"


@dataclass(frozen=True)
class MinorRebuilds:
    minor: str
    first_builds: int  # kmod specs whose first target is this minor's kernel
    rebuilds: int  # kmod specs that had targeted an earlier minor and were rebuilt for this one
    revisions: int  # spec revisions that target it


def kmod_rebuilds(revisions: list[SpecRevision]) -> list[MinorRebuilds]:
    """Per RHEL minor: how many ELRepo kmods had to be rebuilt for its kernel (a spec revision whose
    target kernel is of another minor than the spec's previous target): a measure of the kABI
    breaks that reached real drivers, since a kmod whose symbols stayed stable is reused as it is."""
    last_minor: dict[str, str] = {}
    first: dict[str, set[str]] = {}
    rebuilt: dict[str, set[str]] = {}
    targeting: dict[str, int] = {}
    for revision in sorted(revisions, key=lambda r: r.date):  # stable: same-day commits keep their order
        minor = rhel_minor(revision.target_kernel)
        if minor is None:
            continue
        targeting[minor] = targeting.get(minor, 0) + 1
        previous = last_minor.get(revision.spec)
        if previous != minor:
            (first if previous is None else rebuilt).setdefault(minor, set()).add(revision.spec)
            last_minor[revision.spec] = minor
    return [MinorRebuilds(minor, len(first.get(minor, ())), len(rebuilt.get(minor, ())), targeting[minor])
            for minor in sorted(targeting, key=lambda m: [int(p) if p.isdigit() else -1 for p in m.split(".")])]
