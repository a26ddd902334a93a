"""The gate's rebuilds (gate --rebuild, policy drivers.rebuild): before a candidate is judged, each
gating package that does not work on it is built again from the source its newest stored build was
made from (driver_build.built_from), against the candidate's build tree, as DKMS, akmods or a driver
repository would next; signed with the repository's key when one is given, and stored like
`kabigate build --db`: the package then loads after the rebuild, or its rebuild fails.

The build tree comes from the candidate's stored sources: a headers folder or package root, a
kernel-devel RPM, or Debian's linux-headers-RELEASE .deb with the packages it Depends on that make
the tree (its linux-headers-*-common and linux-kbuild-*), found beside it as apt would pick them
from a repository: the newest that satisfies the relation.
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kabigate.builder.buildtree import BuildTree, build_tree
from kabigate.builder.sandbox import Limits, check_sandbox
from kabigate.builder.source import Signing, build_source, is_build_source
from kabigate.errors import InputError
from kabigate.inputs.packages import Package
from kabigate.model import version_key
from kabigate.services.build import store_build
from kabigate.services.packages import package_verdicts
from kabigate.store import BuildRecord, KernelRecord, Store
from kabigate.vocabulary import BuildOutcome, PackageState

# a Depends entry: name, and optionally (relation version), as deb-control(5) writes it
DEPENDENCY = re.compile(r"\s*([a-z0-9][a-z0-9+.-]+)(?::\S+)?\s*(?:\(\s*(<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?\s*$")
TREE_PACKAGES = ("linux-headers-", "linux-kbuild-")  # what the build tree is made of; the rest is host tools


@dataclass(frozen=True)
class Rebuild:
    """One package's rebuild for the candidate: `outcome` None when it was not tried (`reason` says why)."""

    driver: str
    source: str | None
    outcome: BuildOutcome | None
    reason: str | None  # why it was not tried, or the build's error
    seconds: float = 0.0
    signer: str | None = None

    def json(self) -> dict:
        return {"driver": self.driver, "source": self.source, "outcome": self.outcome, "reason": self.reason,
                "seconds": round(self.seconds, 1), "signer": self.signer}

    @classmethod
    def from_json(cls, found: dict) -> Rebuild:
        """A rebuild as json() gave it (a build task's result)."""
        outcome = None if found["outcome"] is None else BuildOutcome(found["outcome"])
        return cls(found["driver"], found["source"], outcome, found["reason"], found["seconds"], found["signer"])


def needing_rebuild(store: Store, candidate: KernelRecord, driver: str | None, gating: tuple[str, ...]) -> list[str]:
    """The gating packages that do not work on the candidate and were not built for it yet (nor are
    excluded there). Among them those nothing is known of on the candidate (built only for another
    series, or their build for the baseline failed) whose source kabigate knows: dkms autoinstall
    builds every package for a new kernel, and a package that never built for the series is named so."""
    found = package_verdicts(store, [candidate], driver)
    judged = [name for name in found.drivers
              if not (verdict := found.verdict(name, candidate)).works and not verdict.rebuilt
              and verdict.state != PackageState.EXCLUDED]
    buildable = {b.driver for b in store.driver_builds(driver) if b.built_from} - set(found.drivers)
    return [name for name in sorted({*judged, *buildable}) if any(fnmatch.fnmatchcase(name, p) for p in gating)]


def newest_built(store: Store, driver: str) -> BuildRecord | None:
    """The newest build kabigate build made of `driver` (by version, then the last stored): its source is rebuilt."""
    built = [b for b in store.driver_builds(driver) if b.driver == driver and b.built_from]
    return max(built, key=lambda b: (version_key(b.version or ""), b.id)) if built else None


def rebuild_packages(store: Store, candidate: KernelRecord, drivers: list[str], signing: Signing | None = None,
                     limits: Limits | None = None, tree: BuildTree | None = None) -> list[Rebuild]:
    """Rebuild `drivers` for the candidate, storing each outcome; what happened to each. `tree`: the
    candidate's build tree made already (a build worker keeps it for its next build for that kernel)."""
    limits = limits or Limits()
    newest = {name: newest_built(store, name) for name in drivers}
    sources = {name: build.built_from if build else None for name, build in newest.items()}
    missing = {name: _source_missing(source) for name, source in sources.items()}
    if all(missing.values()):
        return [Rebuild(name, sources[name], None, missing[name]) for name in drivers]
    with tempfile.TemporaryDirectory(prefix="kabigate-rebuild-") as work:
        try:
            check_sandbox(Path(work))
            tree = tree or candidate_tree(candidate, Path(work) / "tree")
        except InputError as error:
            return [Rebuild(name, sources[name], None, missing[name] or str(error)) for name in drivers]
        rebuilds = []
        for number, name in enumerate(drivers):
            build, source = newest[name], sources[name]
            if missing[name] or build is None or source is None:  # (the last two: when missing)
                rebuilds.append(Rebuild(name, source, None, missing[name]))
                continue
            started = time.monotonic()
            build_work = Path(work) / f"build-{number}"
            build_work.mkdir()
            result = build_source(Path(source), tree, build_work, limits, name, build.version, signing)
            store_build(store, result, source)
            rebuilds.append(Rebuild(name, source, result.outcome, result.error, time.monotonic() - started,
                                    result.signer))
    return rebuilds


def _source_missing(source: str | None) -> str | None:
    if source is None:
        return "no stored build of it was made by kabigate build: its source is unknown"
    if not os.path.exists(source) or not is_build_source(Path(source)):
        return f"its source {source} is gone"
    return None


def candidate_tree(kernel: KernelRecord, work: Path) -> BuildTree:
    """The kernel's build tree from its stored sources (the packages are extracted into `work`)."""
    work.mkdir()
    paths = [p for source in kernel.sources for p in source.split(", ")]
    for folder in (p for p in paths if os.path.isdir(p)):
        try:
            tree = build_tree([folder], work)
        except InputError:
            continue
        if tree.release == kernel.release:
            return tree
    files = [p for p in paths if os.path.isfile(p)]
    devel = [p for p in files if os.path.basename(p).startswith("kernel-devel-") and p.endswith(".rpm")]
    headers = [p for p in files if os.path.basename(p).startswith("linux-headers-") and p.endswith(".deb")]
    if not (devel or headers):
        raise InputError(f"the build tree of {kernel.release} is unknown: its stored sources hold no headers "
                         "folder, linux-headers .deb or kernel-devel RPM")
    packages = devel or headers + [p for h in headers for p in _tree_dependencies(h)]
    tree = build_tree(list(dict.fromkeys(packages)), work)
    if tree.release != kernel.release:
        raise InputError(f"the headers among {kernel.release}'s sources are {tree.release}'s")
    return tree


def _tree_dependencies(deb: str) -> list[str]:
    """The linux-headers-* and linux-kbuild-* packages `deb` Depends on, from its folder: for each, the
    newest .deb there that satisfies the relation (the first alternative found)."""
    found = []
    for entry in Package(deb).depends.split(","):
        alternatives = [m for m in map(DEPENDENCY.match, entry.split("|")) if m and m[1].startswith(TREE_PACKAGES)]
        if not alternatives:
            continue
        choice = next((c for m in alternatives if (c := _satisfying(Path(deb).parent, *m.groups()))), None)
        if choice is None:
            wanted = " | ".join(m[0].strip() for m in alternatives)
            raise InputError(f"the build tree of {os.path.basename(deb)} needs {wanted}, not found beside it")
        found.append(choice)
    return found


def _satisfying(folder: Path, name: str, relation: str | None, version: str | None) -> str | None:
    candidates = []
    for path in folder.glob(f"{name}_*.deb"):
        have = path.name.split("_")[1].replace("%3a", ":")  # Debian's file name: NAME_VERSION_ARCH.deb
        if relation is None or version is None or subprocess.run(
                ["dpkg", "--compare-versions", have, relation, version], check=False).returncode == 0:
            candidates.append((version_key(have), str(path)))
    return max(candidates)[1] if candidates else None
