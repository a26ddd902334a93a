"""Comparisons built on the model: kernel-to-kernel export diffs and stablelist coverage."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

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
    diff = KernelDiff()
    for name in sorted(old.exports.keys() | new.exports.keys()):
        before, after = old.exports.get(name), new.exports.get(name)
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
