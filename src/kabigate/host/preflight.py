"""Before a kernel update is installed: which installed out-of-tree modules will load on it, which
will not and why, and which stored driver build would.

The installed modules are every kernel's own out-of-tree modules (extra/ from kmod packages,
updates/ and DKMS's updates/dkms/) and what weak-updates/ links to. Each module name is judged the
way `kabigate weak-modules --add-kernel` will judge it once the kernel is installed (the latest
build that loads, the builds taken as one set, so one module's exports serve another): the answer
is what the machine will have after the reboot, before the reboot.

DKMS rebuilds its modules for a new kernel (autoinstall) rather than reusing them, so a DKMS module
that would not load as it is gets a warning, not a failure: the rebuild decides. With --build the
rebuild is done before the reboot: each DKMS package registered on the system built by dkms
against the new kernel's headers in kabigate build's sandbox, signed with the host's MOK key when
one is configured, and its modules judged on the new kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kabigate.builder.buildtree import BuildTree
from kabigate.builder.result import BuildResult
from kabigate.builder.sandbox import Limits
from kabigate.builder.source import Signing, build_source
from kabigate.errors import InputError
from kabigate.host import weakmodules as wm
from kabigate.inputs.modules import read_modules
from kabigate.model import Kernel
from kabigate.reports.verdicts import verdict_report
from kabigate.rules import LoadOptions, check_modules
from kabigate.signing.verify import TrustedCert, verify_file
from kabigate.vocabulary import BuildOutcome

DKMS_TREE = "var/lib/dkms"  # dkms's default dkms_tree, in the root
# Debian's dkms (3.0.10, framework.conf's mok_signing_key / mok_certificate defaults): the key it
# makes once and signs every module it builds with, the certificate the user enrolls with mokutil.
MOK_KEY = "var/lib/dkms/mok.key"
MOK_CERT = "var/lib/dkms/mok.pub"


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


@dataclass(frozen=True)
class DkmsPackage:
    """A package dkms knows on the system (`dkms add` made /var/lib/dkms/NAME/VERSION/source)."""

    name: str
    version: str
    source: Path  # its source tree with dkms.conf, on the host (inside the root)


@dataclass
class PackageBuild:
    """A DKMS package built for the new kernel and its modules judged there."""

    package: DkmsPackage
    result: BuildResult
    verdicts: list[dict] = field(default_factory=list)  # each built module's, as check --json reports it

    @property
    def works(self) -> bool:
        """The new kernel will have working modules: built and every one loads, or dkms excludes the
        kernel by design (BUILD_EXCLUSIVE: the package is not meant for it)."""
        if self.result.outcome == BuildOutcome.EXCLUDED:
            return True
        return self.result.outcome == BuildOutcome.BUILT and all(v["verdict"] == "loads" for v in self.verdicts)

    def to_json(self) -> dict:
        return {"name": self.package.name, "version": self.package.version, "source": str(self.package.source),
                "works": self.works, "build": self.result.json(), "modules": self.verdicts}


@dataclass
class Preflight:
    kernel: str
    findings: list[Finding]
    messages: list[str]
    builds: list[PackageBuild] | None = None  # with --build: the DKMS packages built for the kernel

    @property
    def breaks(self) -> list[Finding]:
        """What stops loading for good: not DKMS (rebuilt), not replaced by the kernel's own module."""
        return [f for f in self.findings if not f.loads and not f.dkms and f.shadowed_by is None]

    @property
    def broken_packages(self) -> list[PackageBuild]:
        return [b for b in self.builds or [] if not b.works]

    def to_json(self) -> dict:
        document = {"kernel": self.kernel, "modules": [f.to_json() for f in self.findings], "breaks": len(self.breaks)}
        if self.builds is not None:
            document["packages"] = [b.to_json() for b in self.builds]
            document["broken_packages"] = len(self.broken_packages)
        return document


def dkms_packages(root: wm.Root) -> list[DkmsPackage]:
    """The DKMS packages registered under the root, by name and version: /var/lib/dkms/NAME/VERSION
    whose `source` (an absolute link, to /usr/src/NAME-VERSION, read as in the root) holds a
    dkms.conf. A link leading out of the root is an input error."""
    tree = root.base / DKMS_TREE
    found = []
    for name_dir in sorted(tree.iterdir()) if tree.is_dir() else []:
        if not name_dir.is_dir() or name_dir.is_symlink():
            continue
        for version_dir in sorted(name_dir.iterdir()):
            link = version_dir / "source"
            if not os.path.lexists(link):
                continue
            target = os.readlink(link) if link.is_symlink() else str(link)
            source = (root.base / target.lstrip("/") if target.startswith("/") else version_dir / target).resolve()
            if not source.is_relative_to(root.base):
                raise InputError(f"{link}: a symbolic link to {target}, which leads out of {root.base}")
            if (source / "dkms.conf").is_file():
                found.append(DkmsPackage(name_dir.name, version_dir.name, source))
    return found


def host_signing(root: wm.Root, key: str | None, cert: str | None, passphrase: bytes | None) -> Signing | None:
    """The key dkms signs its modules with: the one given, else Debian's /var/lib/dkms/mok.key and
    mok.pub under the root when both are there (none: the built modules stay unsigned, as dkms leaves them)."""
    from kabigate.signing.keys import load_signing_key

    if (key is None) != (cert is None):
        raise InputError("--mok-key and --mok-cert go together")
    if key is None or cert is None:
        key, cert = str(root.base / MOK_KEY), str(root.base / MOK_CERT)
        if not (os.path.isfile(key) and os.path.isfile(cert)):
            return None
    return Signing(load_signing_key(key, cert, passphrase))


def build_packages(packages: list[DkmsPackage], tree: BuildTree, kernel: Kernel, work: Path, limits: Limits,
                   signing: Signing | None, trust: list[TrustedCert] | None = None) -> list[PackageBuild]:
    """Each package built by dkms against `tree` (the new kernel's headers) in the sandbox, as dkms
    autoinstall will build it at the kernel's installation, signed with `signing`, and its modules
    judged together on `kernel`; with `trust` (Secure Boot: the keys the kernel trusts) as
    module_sig_check() judges with signatures enforced, each module's signature verified."""
    results = []
    for index, package in enumerate(packages):
        folder = work / str(index)
        folder.mkdir()
        result = build_source(package.source, tree, folder, limits, package.name, package.version, signing)
        built = PackageBuild(package, result)
        if result.modules:
            modules = read_modules([str(m) for m in result.modules])
            options = LoadOptions() if trust is None else LoadOptions(
                require_signature=True, signature_checks={m.path: verify_file(m.path, trust) for m in modules})
            built.verdicts = [dict(verdict_report(v), path=Path(v.module.path).name)  # the work folder goes
                              for v in check_modules(modules, kernel, options)]
        results.append(built)
    return results


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
    common: tuple[str, ...] = ()  # the run's linux-headers-<abi>-common[-rt] .debs
    kbuild: str | None = None  # the run's linux-kbuild-<version> .deb (modpost, objtool)

    def build_tree_debs(self) -> list[str]:
        """The packages that make this kernel's build tree (preflight --apt --build)."""
        if not self.common or self.kbuild is None:
            missing = " and ".join(what for what, absent in (("its linux-headers-*-common", not self.common),
                                                            ("the linux-kbuild-*", self.kbuild is None)) if absent)
            raise InputError(f"{self.headers}: {missing} of {self.release} not in this run: cannot build the DKMS "
                             "packages for it (run `kabigate preflight --build --headers ...` yourself)")
        return [self.headers, *self.common, self.kbuild]


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
        kernels[release] = AptKernel(release, image, headers, *_build_support(debs, release))
    return list(kernels.values())


def _build_support(debs: dict[str, str], release: str) -> tuple[tuple[str, ...], str | None]:
    """The run's packages that complete linux-headers-<release> into a build tree, by Debian's names:
    linux-headers-<abi>-common (and -common-rt; the flavour's Makefile includes the one it needs) for
    an ABI the release starts with, and the linux-kbuild-<version> of the release's longest version."""
    common = []
    for package, deb in debs.items():
        abi, common_part, variant = package.removeprefix("linux-headers-").partition("-common")
        if package.startswith("linux-headers-") and common_part and variant in ("", "-rt") \
                and release.startswith(f"{abi}-"):
            common.append(deb)
    kbuild = sorted((package for package in debs if package.startswith("linux-kbuild-")
                     and _version_prefix(package.removeprefix("linux-kbuild-"), release)), key=len)
    return tuple(common), debs[kbuild[-1]] if kbuild else None


def _version_prefix(version: str, release: str) -> bool:
    """6.1 is a prefix of 6.1.0-57-amd64's version, not of 6.12.107+deb12-amd64's."""
    return release.startswith(version) and not release[len(version):len(version) + 1].isdigit()


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
