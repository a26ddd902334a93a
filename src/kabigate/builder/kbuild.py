"""A plain Kbuild folder (a Kbuild or Makefile with obj-m) built as the kernel documents external
modules are built (Documentation/kbuild/modules.rst): `make -C KDIR M=DIR modules`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kabigate.builder.buildlog import first_error
from kabigate.builder.buildtree import BuildTree
from kabigate.builder.result import BuildResult
from kabigate.builder.sandbox import KERNEL, WORK, Limits, require, written_by_build
from kabigate.vocabulary import BuildOutcome

SOURCE = "src"


def is_kbuild_source(path: Path) -> bool:
    return path.is_dir() and ((path / "Kbuild").is_file() or (path / "Makefile").is_file())


def build(source: Path, tree: BuildTree, work: Path, limits: Limits, name: str | None = None,
          version: str | None = None) -> BuildResult:
    require("make", "make")
    shutil.copytree(source, work / SOURCE, symlinks=True)
    run = tree.sandbox(work, limits=limits).run(
        ["make", f"-j{os.cpu_count() or 1}", "-C", f"/lib/modules/{tree.release}/build", f"M={WORK}/{SOURCE}",
         "modules"])
    log = run.log.text()
    result = BuildResult(BuildOutcome.FAILED, name or source.name, version, tree.release, "kbuild", run.seconds, log)
    modules = sorted(p for p in (work / SOURCE).rglob("*.ko") if written_by_build(p, work))
    if run.ok and modules:
        result.outcome, result.modules = BuildOutcome.BUILT, modules
    else:
        result.limit = run.limit
        result.error = (run.limit or first_error(log, (f"{WORK}/{SOURCE}", KERNEL))
                        or (f"make exit status {run.status}" if run.status else "no module was built"))
    return result
