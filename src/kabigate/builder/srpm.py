"""A kmod source RPM rebuilt as its maintainers document it: ELRepo's and the Kmods SIG's
`rpmbuild --rebuild --define 'kmod_kernel_version RELEASE' kmod-NAME.src.rpm`, the spec building
against %{_usrsrc}/kernels/RELEASE (a kernel-devel's place, linked to the build tree here).
--nodeps: the BuildRequires (kernel-devel = RELEASE, redhat-rpm-config...) are RPM packages this
host's rpm database does not hold; the build tree stands for kernel-devel."""

from __future__ import annotations

import platform
from pathlib import Path

from kabigate.builder.buildlog import first_error
from kabigate.builder.buildtree import BuildTree
from kabigate.builder.result import BuildResult
from kabigate.builder.sandbox import KERNEL, WORK, Limits, require, written_by_build
from kabigate.errors import InputError
from kabigate.vocabulary import BuildOutcome

TOP = "rpmbuild"  # %{_topdir}, in the work folder
OUT = "installed"  # the built binary RPMs' payloads, extracted
# rpmbuild's refusal of a spec's ExclusiveArch/ExcludeArch: the kmod's own exclusion
EXCLUDED_ARCH = "Architecture is not included"


def is_source_rpm(path: Path) -> bool:
    return path.is_file() and path.name.endswith(".src.rpm")


def build(source: Path, tree: BuildTree, work: Path, limits: Limits) -> BuildResult:
    require("rpmbuild", "rpm")
    if tree.root is None:
        raise InputError("a source RPM builds against a kernel-devel tree: name the kernel by its packages or a "
                         "package root, not a headers folder of this host")
    if tree.machine != platform.machine():
        raise InputError(f"{tree.release} ({tree.machine}): a source RPM is rebuilt for this host's architecture "
                         f"({platform.machine()}) only")
    sandbox = tree.sandbox(work, limits=limits, binds=[(source, "/source.src.rpm")])
    sandbox.symlinks.append((tree.build, f"/usr/src/kernels/{tree.release}"))
    query = sandbox.run(["rpm", "-qp", "--nosignature", "--qf", "%{NAME}\\n%{VERSION}-%{RELEASE}\\n",
                         "/source.src.rpm"])
    fields = query.log.text().splitlines()
    if not query.ok or len(fields) != 2:
        raise InputError(f"{source}: not a readable source RPM")
    name, version = fields
    run = sandbox.run(["rpmbuild", "--rebuild", "--nodeps", "--define", f"_topdir {WORK}/{TOP}",
                       "--define", f"kmod_kernel_version {tree.release}", "/source.src.rpm"])
    log = run.log.text()
    result = BuildResult(BuildOutcome.FAILED, name, version, tree.release, "rpmbuild", query.seconds + run.seconds, log)
    rpms = sorted(p for p in (work / TOP / "RPMS").glob(f"*/*.{platform.machine()}.rpm") if written_by_build(p, work))
    if run.ok and rpms:
        result.modules = _modules_of(rpms, work, sandbox)
        if result.modules:
            result.outcome = BuildOutcome.BUILT
            return result
        result.error = "the built packages hold no kernel module"
    elif EXCLUDED_ARCH in log:
        result.outcome = BuildOutcome.EXCLUDED
        result.error = next(line for line in log.splitlines() if EXCLUDED_ARCH in line).strip()
    else:
        builds = [f"{WORK}/{TOP}/BUILD/{p.name}" for p in (work / TOP / "BUILD").glob("*")]
        result.limit = run.limit
        result.error = run.limit or first_error(log, (*builds, KERNEL)) or f"rpmbuild exit status {run.status}"
    return result


def _modules_of(rpms: list[Path], work: Path, sandbox) -> list[Path]:
    """The .ko files the built packages install, extracted in the sandbox."""
    (work / OUT).mkdir()
    script = " && ".join(f"rpm2cpio {WORK}/{p.relative_to(work)} | cpio -idm --quiet --no-absolute-filenames"
                         for p in rpms)
    run = sandbox.run(["sh", "-c", script], cwd=f"{WORK}/{OUT}")
    if not run.ok:
        raise InputError(f"extracting the built packages failed: {run.limit or run.log.text().strip()[-300:]}")
    return sorted(p for p in (work / OUT).rglob("*.ko*") if written_by_build(p, work))
