"""A kernel's build tree (what /lib/modules/RELEASE/build points to) from what kabigate reads:

- a package root holding lib/modules/RELEASE/build (the headers, -common and linux-kbuild .debs
  extracted together, as the corpus keeps them);
- a headers folder: one installed on this host (/usr/src/linux-headers-RELEASE), or one that
  holds everything itself (a kernel-devel's /usr/src/kernels/RELEASE);
- Debian's .debs: linux-headers-RELEASE, its linux-headers-*-common and the linux-kbuild-* with
  the host tools, extracted (in the sandbox) into the build's work folder;
- a kernel-devel RPM, extracted the same way.

The tree is bound read-only at /kernel in the sandbox and /lib/modules/RELEASE/build links to it
there, where dkms and driver Makefiles look for it.

A tree of another architecture (its .config says which) is built for with a cross compiler, as
the kernel's Makefile takes one: ARCH and CROSS_COMPILE in make's environment (Debian's headers
set ARCH themselves in .kernelvariables, and CC = $(CROSS_COMPILE)gcc-12); the host tools under
scripts/ are the host's own (Debian's linux-kbuild of this host's architecture).
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from kabigate.builder.sandbox import KERNEL, PATH, WORK, Sandbox, require
from kabigate.errors import InputError, read_capped
from kabigate.formats.kconfig import machine_of_config, parse_kconfig

UTS_RELEASE = re.compile(rb'#define UTS_RELEASE "([^"\n]+)"')
TREE = "kernel-tree"  # where packages are extracted, in the work folder
MAX_CONFIG = 16 << 20
CROSS_BIN = "/cross"  # in the sandbox, first in PATH: the cross binutils under their plain names


@dataclass(frozen=True)
class Toolchain:
    """A cross compiler as the kernel's Makefile takes it: its ARCH, CROSS_COMPILE, Debian's package."""

    arch: str
    prefix: str
    package: str


# `uname -m` -> the toolchain building for it (Debian's cross compilers)
TOOLCHAINS = {
    "x86_64": Toolchain("x86", "x86_64-linux-gnu-", "gcc-x86-64-linux-gnu"),
    "aarch64": Toolchain("arm64", "aarch64-linux-gnu-", "gcc-aarch64-linux-gnu"),
    "ppc64le": Toolchain("powerpc", "powerpc64le-linux-gnu-", "gcc-powerpc64le-linux-gnu"),
    "ppc64": Toolchain("powerpc", "powerpc64-linux-gnu-", "gcc-powerpc64-linux-gnu"),
    "s390x": Toolchain("s390", "s390x-linux-gnu-", "gcc-s390x-linux-gnu"),
}


@dataclass(frozen=True)
class BuildTree:
    """`root` is bound at /kernel (None: the tree is the host's own, under /usr); `build` is the
    build folder's path inside the sandbox; `machine` the kernel's `uname -m`."""

    release: str
    root: Path | None
    build: str
    machine: str

    @property
    def toolchain(self) -> Toolchain | None:
        """The cross compiler a build for this kernel needs (None: this host's compiler)."""
        if self.machine == platform.machine():
            return None
        toolchain = TOOLCHAINS.get(self.machine)
        if toolchain is None:
            raise InputError(f"{self.release}: cannot build for {self.machine} kernels here "
                             f"(cross compilers known for {', '.join(sorted(TOOLCHAINS))})")
        require(f"{toolchain.prefix}gcc", toolchain.package)
        return toolchain

    def sandbox(self, work: Path, **kwargs) -> Sandbox:
        symlinks = [(self.build, f"/lib/modules/{self.release}/build")]
        env = {}
        if (toolchain := self.toolchain) is not None:
            # dkms strips what it keeps with `strip -g`: the target's strip
            symlinks.append((f"/usr/bin/{toolchain.prefix}strip", f"{CROSS_BIN}/strip"))
            env = {"ARCH": toolchain.arch, "CROSS_COMPILE": toolchain.prefix, "PATH": f"{CROSS_BIN}:{PATH}"}
        return Sandbox(work, kernel_root=self.root, symlinks=symlinks, env=env, **kwargs)


def build_tree(paths: list[str], work: Path) -> BuildTree:
    """The build tree of the kernel `paths` name: one folder, or packages to extract into `work`."""
    if not paths:
        raise InputError("--kernel: name a kernel's headers folder or its headers packages")
    if len(paths) == 1 and os.path.isdir(paths[0]):
        return _tree_of_folder(Path(paths[0]).resolve())
    for path in paths:
        if not os.path.isfile(path) or not path.endswith((".deb", ".rpm")):
            raise InputError(f"{path}: not a headers folder, .deb or .rpm")
    return _tree_of_packages([Path(p).resolve() for p in paths], work)


def _build_links(root: Path) -> list[Path]:
    """root/lib/modules/*/build, dangling or not (Debian's point to /usr/src until made relocatable)."""
    modules = root / "lib/modules"
    if not modules.is_dir():
        return []
    return sorted(d / "build" for d in modules.iterdir() if os.path.lexists(d / "build"))


def _release(headers: Path) -> str | None:
    try:
        match = UTS_RELEASE.search((headers / "include/generated/utsrelease.h").read_bytes())
    except OSError:
        return None
    return match[1].decode() if match else None


def _machine(headers: Path) -> str:
    """The kernel's architecture from its .config; this host's when the tree has none."""
    config = headers / ".config"
    if not config.is_file() or not config.resolve().is_relative_to(headers.resolve()):  # none, or a link out
        return platform.machine()
    text = read_capped(str(config), MAX_CONFIG, "larger than 16 MiB, not a kernel config").decode(errors="replace")
    return machine_of_config(parse_kconfig(text, str(config))) or platform.machine()


def _tree_of_folder(folder: Path) -> BuildTree:
    builds = _build_links(folder)
    if builds:  # a package root
        if len(builds) > 1:
            raise InputError(f"{folder}: holds the build trees of {len(builds)} kernels; name one's headers")
        link = builds[0]
        target = Path(os.readlink(link)) if link.is_symlink() else link.relative_to(folder)
        inside = (Path(KERNEL) / target.relative_to("/") if target.is_absolute()
                  else Path(KERNEL) / link.parent.relative_to(folder) / target)
        headers = folder / Path(os.path.normpath(inside)).relative_to(KERNEL)
        release = _release(headers)
        if release is None:
            raise InputError(f"{link}: not a kernel build tree (no include/generated/utsrelease.h)")
        return BuildTree(release, folder, os.path.normpath(inside), _machine(headers))
    release = _release(folder)
    if release is None or not (folder / "Makefile").is_file():
        raise InputError(f"{folder}: not a kernel's headers (no Makefile and include/generated/utsrelease.h)")
    if folder.is_relative_to("/usr"):  # installed here: seen at the same path in the sandbox
        return BuildTree(release, None, str(folder), _machine(folder))
    return BuildTree(release, folder, KERNEL, _machine(folder))


def _tree_of_packages(packages: list[Path], work: Path) -> BuildTree:
    """Extract the packages into work/TREE in the sandbox (an archive is input too), then point its
    absolute paths inside it, as make_relocatable says."""
    tree = work / TREE
    tree.mkdir()
    binds = [(p, f"/packages/{i}{p.suffix}") for i, p in enumerate(packages)]
    script = " && ".join(
        f"dpkg-deb -x {inside} {WORK}/{TREE}" if inside.endswith(".deb")
        else f"rpm2cpio {inside} | (cd {WORK}/{TREE} && cpio -idm --quiet --no-absolute-filenames)"
        for _host, inside in binds)
    run = Sandbox(work, binds=binds).run(["sh", "-c", script])
    if not run.ok:
        raise InputError(f"extracting the kernel packages failed: {run.limit or run.log.text().strip()[-300:]}")
    builds = _build_links(tree)
    if len(builds) == 1:
        make_relocatable(tree, builds[0].parent.name)
        return _tree_of_folder(tree)
    devel = sorted(p.parent for p in tree.glob("usr/src/kernels/*/Makefile"))
    if len(devel) == 1:  # kernel-devel: self-contained
        release = _release(devel[0])
        if release is not None:
            return BuildTree(release, devel[0], KERNEL, _machine(devel[0]))
    raise InputError("the packages hold no single kernel build tree (lib/modules/RELEASE/build or "
                     "usr/src/kernels/RELEASE)")


def make_relocatable(tree: Path, release: str) -> None:
    """Debian's headers assume installation at /: lib/modules/RELEASE/{build,source} are absolute
    links into /usr/src, and the flavour's Makefile includes the -common one by absolute path.
    Point them inside the tree, relative to themselves (the -common Makefile derives srctree from
    the path it was included by, so it resolves inside the tree too)."""
    inside = tree.resolve()
    for name in ("build", "source"):
        link = tree / "lib/modules" / release / name
        if not link.parent.resolve().is_relative_to(inside):  # the packages' own links lead out
            raise InputError(f"the kernel packages' lib/modules/{release} leads out of their tree")
        if link.is_symlink() and os.readlink(link).startswith("/"):
            target = tree / os.readlink(link).lstrip("/")
            link.unlink()
            link.symlink_to(os.path.relpath(target, link.parent))
    makefile = tree / "usr/src" / f"linux-headers-{release}" / "Makefile"
    if makefile.is_file() and not makefile.is_symlink() and makefile.resolve().is_relative_to(inside):
        here = "$(dir $(lastword $(MAKEFILE_LIST)))"
        text = re.sub(r"^include /usr/src/(\S+)$", lambda m: f"include {here}../{m[1]}", makefile.read_text(),
                      flags=re.MULTILINE)
        makefile.write_text(text)
