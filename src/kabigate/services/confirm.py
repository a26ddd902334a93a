"""The gate's optional confirmation in qemu: boot the candidate kernel and insmod a sample of
the gated driver builds, to see the kernel agree (or not) with the stored verdicts.

The sample takes the findings that decide the gate first (regressions, then builds still
failing, fixed, new, unaffected), as many as asked; builds whose module names collide go in
separate boots, the others share one.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kabigate.boot.check import boot_check
from kabigate.boot.qemu import kernel_image
from kabigate.errors import InputError
from kabigate.inputs.modules import read_modules
from kabigate.inputs.packages import is_url
from kabigate.rules import RULES_VERSION
from kabigate.services.gate import BuildFinding, GateResult
from kabigate.store import Store
from kabigate.vocabulary import GateClass

_PRIORITY = {GateClass.REGRESSION: 0, GateClass.STILL_FAILING: 1, GateClass.FIXED: 2, GateClass.NEW: 3,
             GateClass.UNAFFECTED: 4}


@dataclass(frozen=True)
class Confirmation:
    build: str  # the build's label
    stored_loads: bool  # kabigate's stored verdict on the candidate
    stored_reason: str | None
    kernel_loads: bool  # what the booted kernel did
    kernel_reason: str | None
    kernel_message: str | None

    @property
    def agrees(self) -> bool:
        return self.stored_loads == self.kernel_loads and self.stored_reason == self.kernel_reason

    def as_json(self) -> dict:
        return {"build": self.build, "agrees": self.agrees,
                "kabigate": {"loads": self.stored_loads, "first_reason": self.stored_reason},
                "kernel": {"loads": self.kernel_loads, "first_reason": self.kernel_reason,
                           "message": self.kernel_message}}


def confirm_in_qemu(store: Store, result: GateResult, count: int, *, timeout: float = 300) -> list[Confirmation]:
    """Boot the candidate (an image among its stored sources) with `count` gated builds."""
    sources = _paths(result.candidate.sources)
    image = _bootable_source(sources)
    findings = sorted(result.builds, key=lambda f: (_PRIORITY.get(f.klass, 9), f.build.driver, f.build.id))[:count]
    confirmations = []
    for group in _boots(findings):
        modules = {f.build.id: read_modules([f.build.source]) for f in group}
        booted = boot_check(image, sources, [m for f in group for m in modules[f.build.id]],
                            timeout=timeout)
        by_module = {id(entry.module): entry for entry in booted.entries}
        for finding in group:
            entries = [by_module[id(m)] for m in modules[finding.build.id]]
            # A build loads when all its modules do; its first refusal is its first refused module's.
            refused = next((e for e in entries if not e.accepted), None)
            said = None if refused is None else refused.kernel_reason  # set: the kernel refused it
            stored = _stored_first(store, finding, result.candidate.id)
            confirmations.append(Confirmation(
                finding.build.label, stored is None, stored, refused is None,
                None if said is None else said.code, None if said is None else said.message))
    return confirmations


def _stored_first(store: Store, finding: BuildFinding, kernel_id: int) -> str | None:
    cell = store.cells(RULES_VERSION, build_ids=[finding.build.id], kernel_ids=[kernel_id]).get(
        (finding.build.id, kernel_id))
    if cell is None:
        raise InputError(f"{finding.build.label}: no verdict on the candidate to confirm")
    return None if cell.loads else cell.first_reason


def _boots(findings: list[BuildFinding]) -> list[list[BuildFinding]]:
    """Findings grouped so that no two builds of a boot have a module of the same name."""
    boots: list[tuple[set[str], list[BuildFinding]]] = []
    for finding in findings:
        names = set(finding.build.modules)
        for used, group in boots:
            if not used & names:
                used |= names
                group.append(finding)
                break
        else:
            boots.append((names, [finding]))
    return [group for _, group in boots]


def _paths(sources: tuple[str, ...]) -> list[str]:
    """A kernel read from packages keeps one source naming them all, ", "-joined (PackageTree.label)."""
    paths = []
    for source in sources:
        parts = source.split(", ")
        paths += parts if all(is_url(p) or os.path.exists(p) for p in parts) else [source]
    return paths


def _bootable_source(sources: list[str]) -> str:
    with tempfile.TemporaryDirectory(prefix="kabigate-image-") as tmp:
        for source in sources:
            try:
                kernel_image(source, Path(tmp))
                return source
            except InputError:
                continue
    raise InputError(f"{', '.join(sources)}: no bootable kernel image among the candidate's sources "
                     "(give it as its kernel packages or with its vmlinuz)")
