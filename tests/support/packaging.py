"""Real RPMs built with rpmbuild from the real Debian kernels and drivers of the test data, laid
out as RHEL and ELRepo lay theirs out, and a yum repository of them made with createrepo_c.

    kernel-core-<kver>     /lib/modules/<kver>/{kernel/**.ko.xz, symvers.gz, config, build ->},
                           /boot/symvers-<kver>.gz; Provides: kernel(sym) = 0x<crc> (vmlinux);
                           xz payload, multi-threaded (several xz blocks)
    kernel-modules-<kver>  more /lib/modules/<kver>/kernel/**.ko.xz; zstd payload
    kernel-devel-<kver>    /usr/src/kernels/<kver>/{Module.symvers, .config, include/generated/...};
                           zstd payload
    kmod-<driver>          /lib/modules/<kver>/extra/<driver>/*.ko.xz,
                           /usr/share/doc/kmod-<driver>-<ver>/greylist.txt;
                           Requires: kernel(sym) = 0x<crc> (ELRepo's kmodtool); xz payload
    kernel-abi-stablelists /lib/modules/kabi-rhel90/kabi_stablelist_x86_64, kabi-current ->

Built once into <testdata>/packages/<key>/ (key: a hash of this file and the inputs' names),
atomically (a temporary folder renamed into place).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from kabigate.formats.module import read_module
from kabigate.formats.symvers import parse_symvers

KERNEL_SUBDIRS_CORE = ("kernel/fs", "kernel/crypto")  # ~250 modules
KERNEL_SUBDIRS_MODULES = ("kernel/net/netfilter", "kernel/lib")
KABI_SOURCE = Path(__file__).parent.parent / "data" / "kabi" / "rhel-9.3-Module.kabi_x86_64"


def available() -> bool:
    return shutil.which("rpmbuild") is not None and shutil.which("createrepo_c") is not None


def build_packages(testdata, release: str, drivers: dict[str, str]) -> Path:
    """Packages of kernel `release` and kmods of `drivers` ({driver: built_for release}); returns
    the folder, holding kernel/*.rpm, kmods/*.rpm (a createrepo_c repository) and kabi/*.rpm."""
    key_text = Path(__file__).read_text() + release + repr(sorted(drivers.items()))
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    final = (testdata.root / "packages" / f"{release}-{key}").resolve()
    if (final / ".complete").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=final.parent))
    try:
        _build_all(testdata, release, drivers, work)
        (work / ".complete").write_text("")
        try:
            os.rename(work, final)
        except OSError:
            if not (final / ".complete").is_file():  # another builder won the race: use theirs
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _build_all(testdata, release: str, drivers: dict[str, str], out: Path) -> None:
    kernel_root = testdata.kernel_root(release)
    modules_dir = testdata.modules_dir(release)
    headers = testdata.headers(release)
    symvers = parse_symvers((headers / "Module.symvers").read_bytes(), "Module.symvers")
    version = release.split("-")[0]  # "6.1.0"
    rel = release.split("-", 1)[1].replace("-", "_")  # "47_amd64"
    for directory in ("kernel", "kmods", "kabi"):
        (out / directory).mkdir()

    # kernel-core: xz-compressed modules, gzip symvers, config, build link, kernel(sym) Provides.
    root = out / "stage" / "kernel-core"
    target = root / "lib" / "modules" / release
    _copy_modules(modules_dir, KERNEL_SUBDIRS_CORE, target, compress=True)
    (target / "symvers.gz").write_bytes(gzip.compress((headers / "Module.symvers").read_bytes(), mtime=0))
    (root / "boot").mkdir(parents=True)
    shutil.copy(target / "symvers.gz", root / "boot" / f"symvers-{release}.gz")
    shutil.copy(kernel_root / "boot" / f"config-{release}", target / "config")
    os.symlink(f"/usr/src/kernels/{release}", target / "build")
    provides = [f"kernel({e.name}) = 0x{e.crc:08x}" for e in symvers.values() if e.owner == "vmlinux"]
    _rpmbuild(out / "kernel", "kernel-core", version, rel, root, provides=provides, requires=[],
              payload="w6T2.xzdio")

    root = out / "stage" / "kernel-modules"
    _copy_modules(modules_dir, KERNEL_SUBDIRS_MODULES, root / "lib" / "modules" / release, compress=True)
    _rpmbuild(out / "kernel", "kernel-modules", version, rel, root, provides=[], requires=[],
              payload="w19.zstdio")

    root = out / "stage" / "kernel-devel"
    devel = root / "usr" / "src" / "kernels" / release
    for relative in ("Module.symvers", ".config", "include/generated/utsrelease.h",
                     "include/config/auto.conf"):
        if (headers / relative).is_file():
            (devel / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(headers / relative, devel / relative)
    _rpmbuild(out / "kernel", "kernel-devel", version, rel, root, provides=[], requires=[],
              payload="w19.zstdio")

    # kmods as ELRepo builds them (kmodtool): extra/<name>/, greylist.txt, kernel(sym) Requires.
    stablelist = set(parse_symvers(KABI_SOURCE.read_bytes(), "kabi"))
    for driver, built_for in drivers.items():
        source = testdata.driver_dir(driver, built_for)
        root = out / "stage" / f"kmod-{driver}-{built_for}"
        extra = root / "lib" / "modules" / built_for / "extra" / driver
        extra.mkdir(parents=True)
        modules = [read_module(str(p)) for p in sorted(source.glob("*.ko"))]
        own_exports = {e.name for m in modules for e in m.exports}
        requires, greylist = set(), set()
        for path in sorted(source.glob("*.ko")):
            (extra / (path.name + ".xz")).write_bytes(lzma.compress(path.read_bytes(), preset=6))
        for module in modules:
            for version_record in module.versions or ():
                if version_record.name in own_exports:
                    continue
                requires.add(f"kernel({version_record.name}) = 0x{version_record.crc:08x}")
                if version_record.name not in stablelist and version_record.name != "module_layout":
                    greylist.add(version_record.name)
        doc = root / "usr" / "share" / "doc" / f"kmod-{driver}-1.0"
        doc.mkdir(parents=True)
        (doc / "greylist.txt").write_text(
            "The following kernel symbols are not guaranteed to remain compatible with\n"
            "future kernel updates:\n\n" + "".join(f"\t{s}\n" for s in sorted(greylist)))
        built_rel = built_for.split("-", 1)[1].replace("-", "_")
        _rpmbuild(out / "kmods", f"kmod-{driver}", "1.0", f"1.{built_rel}", root, provides=[],
                  requires=sorted(requires), payload="w6.xzdio")
    subprocess.run(["createrepo_c", "--quiet", "--no-database", str(out / "kmods")], check=True)

    # kernel-abi-stablelists
    root = out / "stage" / "kabi"
    kabi = root / "lib" / "modules" / "kabi-rhel93"
    kabi.mkdir(parents=True)
    (kabi / "kabi_stablelist_x86_64").write_text(
        "[rhel9_x86_64_stablelist]\n" + "".join(f"\t{s}\n" for s in sorted(stablelist)))
    (kabi / "kabi_stablelist_aarch64").write_text("[rhel9_aarch64_stablelist]\n\tprintk\n")
    os.symlink("kabi-rhel93", root / "lib" / "modules" / "kabi-current")
    _rpmbuild(out / "kabi", "kernel-abi-stablelists", version, rel, root, provides=[], requires=[],
              payload="w9.gzdio", arch="noarch")
    shutil.rmtree(out / "stage")


def _copy_modules(modules_dir: Path, subdirs: tuple[str, ...], target: Path, compress: bool) -> None:
    for subdir in subdirs:
        for path in sorted((modules_dir / subdir).rglob("*.ko")):
            destination = target / path.relative_to(modules_dir)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if compress:
                # RHEL compresses modules with xz --check=crc32 (kmod's decompressor wants crc32).
                destination.with_name(path.name + ".xz").write_bytes(
                    lzma.compress(path.read_bytes(), check=lzma.CHECK_CRC32, preset=3))
            else:
                shutil.copy(path, destination)


def _rpmbuild(out: Path, name: str, version: str, release: str, root: Path, provides: list[str],
              requires: list[str], payload: str, arch: str = "x86_64") -> Path:
    top = out.parent / "rpmbuild" / name
    for directory in ("SPECS", "RPMS", "BUILD", "BUILDROOT", "SOURCES", "SRPMS"):
        (top / directory).mkdir(parents=True, exist_ok=True)
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        files.append('"/' + str(path.relative_to(root)) + '"')
    spec = "\n".join([
        f"Name: {name}", f"Version: {version}", f"Release: {release}", "Summary: kabigate test package",
        "License: GPL-2.0-only", f"BuildArch: {arch}", "AutoReqProv: no",
        *(f"Provides: {p}" for p in provides), *(f"Requires: {r}" for r in requires),
        "%description", "Built by kabigate's tests from real Debian kernel files.",
        "%install", f"cp -a {root}/. %{{buildroot}}/",
        "%files", *files, ""])
    spec_path = top / "SPECS" / f"{name}.spec"
    spec_path.write_text(spec)
    built = subprocess.run(["rpmbuild", "-bb", "--quiet", "--nodeps", "--target", arch,
                    "--define", f"_topdir {top}", "--define", f"_binary_payload {payload}",
                    "--define", "__os_install_post %{nil}", "--define", "debug_package %{nil}",
                    "--define", "_build_id_links none", "--define", "__spec_install_post %{nil}",
                    str(spec_path)], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise RuntimeError(f"rpmbuild {name} failed:\n{built.stderr[-3000:]}")
    package = next((top / "RPMS").rglob("*.rpm"))
    final = out / package.name
    shutil.move(package, final)
    shutil.rmtree(top)
    return final
