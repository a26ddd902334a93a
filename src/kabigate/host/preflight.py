"""Before a kernel update is installed: which installed out-of-tree modules will load on it, which
will not and why, and which stored driver build would.

The installed modules are every kernel's own out-of-tree modules (extra/ from kmod packages,
updates/ and DKMS's updates/dkms/) and what weak-updates/ links to. Each module name is judged the
way `kabigate weak-modules --add-kernel` will judge it once the kernel is installed (the latest
build that loads, the builds taken as one set, so one module's exports serve another): the answer
is what the machine will have after the reboot, before the reboot.

DKMS rebuilds its modules for a new kernel (autoinstall) rather than reusing them, so a DKMS module
that would not load as it is gets a warning, not a failure: the rebuild decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kabigate.errors import InputError
from kabigate.host import weakmodules as wm
from kabigate.model import Kernel
from kabigate.rules import check_modules


@dataclass
class Finding:
    name: str
    module: str  # the build judged (as seen in the root)
    built_for: str
    dkms: bool
    loads: bool
    reasons: list[dict] = field(default_factory=list)
    shadowed_by: str | None = None  # the new kernel ships its own module of this name
    available: list[str] = field(default_factory=list)  # stored builds that load on the kernel

    def to_json(self) -> dict:
        return {"name": self.name, "module": self.module, "built_for": self.built_for, "dkms": self.dkms,
                "loads": self.loads, "reasons": self.reasons, "shadowed_by": self.shadowed_by,
                "available": self.available}


@dataclass
class Preflight:
    kernel: str
    findings: list[Finding]
    messages: list[str]

    @property
    def breaks(self) -> list[Finding]:
        """What stops loading for good: not DKMS (rebuilt), not replaced by the kernel's own module."""
        return [f for f in self.findings if not f.loads and not f.dkms and f.shadowed_by is None]

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "modules": [f.to_json() for f in self.findings],
                "breaks": len(self.breaks)}


def installed_modules(root: wm.Root, exclude: str) -> list[str]:
    """Out-of-tree modules of every installed kernel but `exclude`, older kernels first, as seen
    in the root: their own (extra/, updates/, DKMS) and the targets of their weak-updates/ links."""
    found: dict[str, None] = {}
    for krel in root.kernels():
        if krel == exclude:
            continue
        for path in root.module_files(krel):
            found[root.inside(path)] = None
        for target in root.links(krel).values():
            if root.host(target).is_file():
                found[target] = None
    return list(found)


@dataclass
class AptKernel:
    release: str  # as the package names it
    image: str  # linux-image-<release>[-unsigned] .deb
    headers: str  # linux-headers-<release> .deb: Module.symvers


# The fields of a package action line (apt.conf(5), Pre-Install-Pkgs): name, old version, direction,
# new version, action (VERSION 2); each version followed by its architecture and Multi-Arch type (3).
# The action, last, is the .deb's file name, which may hold spaces.
_APT_ACTION_FIELDS = {"2": 5, "3": 9}


def apt_kernels(listing: str) -> list[AptKernel]:
    """The Debian kernels an APT run unpacks, from what DPkg::Pre-Install-Pkgs writes to its hook:
    a .deb file per line (protocol 1), or `VERSION 2|3`, the configuration up to a blank line and a
    package action line per package. Names are compared as strings, never made into patterns.
    A kernel whose linux-headers package (Module.symvers) is not in the run cannot be judged: an
    input error, before any kernel is read."""
    lines = listing.split("\n")  # one line per file: a name may hold any other character
    debs: dict[str, str] = {}  # package -> .deb file
    if lines[0].startswith("VERSION "):
        version = lines[0].removeprefix("VERSION ")
        if version not in _APT_ACTION_FIELDS:
            raise InputError(f"APT hook protocol {lines[0]!r}: kabigate reads versions 1, 2 and 3")
        if "" not in lines:
            raise InputError("APT hook input: the configuration section has no end (a blank line)")
        for line in lines[lines.index("") + 1:]:
            fields = line.split(" ", _APT_ACTION_FIELDS[version] - 1)
            if len(fields) == _APT_ACTION_FIELDS[version] and fields[-1].endswith(".deb"):
                debs[fields[0]] = fields[-1]
    else:
        for line in lines:
            name = line.rsplit("/", 1)[-1]
            if name.endswith(".deb"):  # the archive's <package>_<version>_<arch>.deb
                debs[name.split("_", 1)[0]] = line
    kernels: dict[str, AptKernel] = {}
    for package, image in debs.items():
        release = package.removeprefix("linux-image-").removesuffix("-unsigned")
        # linux-image-amd64 is a metapackage, linux-image-<release>-dbg debug information only
        if release == package or not release[:1].isdigit() or release.endswith("-dbg"):
            continue
        headers = debs.get(f"linux-headers-{release}")
        if headers is None:
            raise InputError(f"{image}: linux-headers-{release} is not in this run: cannot judge the installed "
                             f"modules on {release} without its Module.symvers")
        kernels[release] = AptKernel(release, image, headers)
    return list(kernels.values())


def preflight(root: wm.Root, release: str, kernel: Kernel, store=None) -> Preflight:
    runner = wm.WeakModules(root)
    runner.use_kernel(release, kernel)
    candidates = installed_modules(root, release)
    plan = runner.plan_kernel(release, candidates)
    findings = []
    for target in plan.after.values():
        if target in candidates:
            findings.append(Finding(wm.module_name(target), target, runner.krel_of_module(target), _dkms(target), True))
    for refusal in plan.refused:
        findings.append(Finding(wm.module_name(refusal.module), refusal.module, refusal.module_kernel,
                                _dkms(refusal.module), False,
                                [{"code": r.code, "message": r.message, "symbol": r.symbol} for r in refusal.reasons]))
    for module, by in plan.shadowed:
        if not any(f.name == wm.module_name(module) for f in findings):
            findings.append(Finding(wm.module_name(module), module, runner.krel_of_module(module), _dkms(module),
                                    False, shadowed_by=by))
    findings.sort(key=lambda f: f.name)
    if store is not None:
        _available(store, kernel, [f for f in findings if not f.loads])
    return Preflight(release, findings, runner.messages)


def _dkms(path: str) -> bool:
    return "/updates/dkms/" in path


def _available(store, kernel: Kernel, failing: list[Finding]) -> None:
    """Stored driver builds with a module of the failing name whose whole set loads on `kernel`."""
    wanted = {f.name for f in failing}
    builds = [b for b in store.driver_builds() if wanted & set(b.modules)]
    if not builds:
        return
    modules = store.load_builds([b.id for b in builds])
    for build in builds:
        if all(v.loads for v in check_modules(modules[build.id], kernel)):
            for finding in failing:
                if finding.name in build.modules:
                    finding.available.append(f"{build.label}: {build.package or build.source}")
