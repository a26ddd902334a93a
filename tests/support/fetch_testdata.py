"""Fetch real Debian kernels and build real DKMS drivers as kabigate test data.

Everything comes from the Debian archive through ``apt-get download`` and is
unpacked with ``dpkg-deb -x``; nothing is installed on the host.

The cache root is $KABIGATE_TESTDATA if set, else
``${XDG_CACHE_HOME:-$HOME/.cache}/kabigate/testdata``: outside the clone, so a
fresh clone (CI clones anew each time) reuses what was fetched and built, and a
fresh machine fills it (support.testdata.testdata_root, which the tests, scripts/ingest-corpus
and the bench scripts use too).  A run on that root makes ``<repo>/.testdata`` a symlink to it
(unless it is a directory of its own), so ``.testdata/kernels/...`` works from
the clone.  ``<root>/manifest.json`` describes everything below with paths
relative to ``<root>``; a "version"/"package_version" is a Debian package version.

What a run provides, by manifest key:

kernels
    Each release in KERNELS: the image (vmlinuz, config, in-tree .ko files),
    the headers and linux-kbuild merged into one filesystem root
    ``kernels/<kver>/``, fixed up so that an external-module build works there.
foreign_kernels
    FOREIGN_KERNELS (arm64, s390x, ppc64el): real modules of other
    architectures, big-endian s390x among them (see below).
streams, stream_kernels
    Two kernel streams in release order (STREAMS): debian-6.1 (6.1.0-N-amd64)
    and debian-6.12 (6.12.N+deb12-amd64).  Of each stream kernel only
    linux-image-<kver>-unsigned and linux-headers-<kver> are downloaded, into
    ``debs/``; kabigate reads .debs directly (``kabigate check -k IMAGE.deb -k
    HEADERS.deb MODULES``: the flavour headers hold Module.symvers and .config).
    "streams" is {stream: [kver, ...]} in release order; "stream_kernels" is
    {kver: {"stream", "position" (0-based, in its stream), "package_version",
    "debs": ["debs/<image>.deb", "debs/<headers>.deb"]}}.
foreign_busybox
    {Debian architecture: "debs/busybox-static_<version>_<arch>.deb"}: the static busybox
    of each FOREIGN_BUSYBOX architecture (at the amd64 package's version), which the
    qemu tests of those architectures put in their initramfs (0.8 MiB each).
flavor_images
    FLAVOR_IMAGES: the rt and cloud images of the 6.12 series (the 6.1 ones are in
    KERNELS), only the linux-image-<kver>-unsigned .deb, into ``debs/``: the qemu tests
    boot them and read the kernel from the image package alone, as ``kabigate
    boot-check --image`` does.  {kver: {"package_version", "debs": ["debs/<image>.deb"]}}.
gate tree debs
    GATE_TREE_DEBS (the -common of 6.1.0-53, the -common and linux-kbuild of 6.12.111), into
    ``debs/`` beside the stream kernels' .debs, where ``gate --rebuild`` looks for a kernel's build tree packages.
build_kernels
    The kernels drivers are built against: {kver: {"root", "release",
    "build_dir", "headers_dir", "symvers", "config", "package_version"}}.  One
    in KERNELS uses its tree there; any other gets its headers, common headers
    and linux-kbuild only, in ``build-kernels/<kver>/``, fixed up the same way.
drivers, driver_failures
    The DKMS packages in DRIVERS, built by dkms (see below) against the build
    kernels of the corpus, into ``drivers/<driver>/<kver>/*.ko``:
    drivers[driver][kver] = {"dir", "modules", "source_package", "version"}.
    A build that dkms does not complete (BUILD_EXCLUSIVE, make fails, a module
    is missing) is real data, recorded and not fatal:
    driver_failures[driver][kver] = {"error" (one line), "log", "version",
    "source_package"}; it is retried only when the package version changes.
    Each build's output is in ``logs/<driver>-<kver>.log``.
foreign_drivers, foreign_driver_failures
    Full corpus only: FOREIGN_DRIVERS cross-built (kabigate build: ARCH and CROSS_COMPILE from the
    headers' .config; the cross gcc-12 of Debian; the host tools of the amd64 linux-kbuild-6.1) against
    the FOREIGN_BUILD_KERNELS, from their headers .deb, the -common .deb of their ABI and linux-kbuild-6.1,
    into ``drivers/<driver>/<kver>/``; entries shaped as drivers and driver_failures, kept apart so
    that what reads every amd64 build does not meet them (test_foreign_builds_qemu.py insmods them).
    36 builds: 26 built, tp-smapi fails everywhere (x86's asm/mc146818rtc.h, its registers in asm)
    and dkms excludes acpi-call on s390x and ppc64el (no CONFIG_ACPI); about 9 minutes on 2 shared cores.

Corpora (--corpus) differ only in driver builds; the kernels, foreign kernels,
all twelve stream kernels and the flavor images are in both:

default
    CORE_DRIVERS against BUILD_KERNELS (6.1.0-47 and 6.1.0-56: the tests rely
    on them) and DEFAULT_DRIVERS, those built in seconds, against
    DEFAULT_BUILD_KERNELS (6.1.0-47, 6.1.0-56, 6.12.107+deb12).  Along the
    streams, the 6.1.0-47 builds meet the ABI changes of 50 to 57, the 56 ones
    load on 55 to 57 but not before, and the 6.12.107 ones meet those of every
    later 6.12; most of Debian 12's DKMS packages do not build for 6.12 at all,
    and two stop building within 6.1 (recorded failures).  GATE_DRIVERS are
    also built against 6.1.0-50, the baseline of the gate of 6.1.0-53.  24
    drivers with builds, 55 builds, 18 failures; about 5 minutes cold on 2 idle
    cores, 27 on 2 cores shared with other work (load average 10 to 13).
full
    Every driver in DRIVERS against FULL_BUILD_KERNELS (6.1.0-47, -53, -56,
    -57, 6.12.107, 6.12.117), GATE_DRIVERS against 6.1.0-50, and the foreign
    drivers (FOREIGN_DRIVERS against FOREIGN_BUILD_KERNELS): 118 builds
    of 29 drivers, 56 failures (measured without the 6.1.0-50 builds); 40
    minutes cold on 2 cores shared with other work, 50 CPU-minutes, more than
    half of them openafs-modules' (its configure probes the kernel's API by
    building test modules, for each kernel).

A corpus only adds to the cache: the default corpus after the full one does
nothing.

Drivers are built by kabigate itself, as `kabigate build -k <kernel tree> <package>.deb` builds
them (kabigate.builder): the real ``dkms build`` of Debian 12 (dkms 3.0.10), with a private dkms
tree, in its bubblewrap sandbox, where the extracted kernel tree is seen read-only at
/lib/modules/<kver>/build; the modules dkms keeps are the build's (stripped as dkms strips them),
its first compiler error line a failure's "error", and an exclusion by BUILD_EXCLUSIVE_* a failure
whose error says "dkms excludes <kver>: ...".  NOT_BUILT lists the packages left out.

The FOREIGN_KERNELS' image and headers packages are downloaded with urllib
(apt only knows the host's architecture and we do not change its
configuration: no ``dpkg --add-architecture``) from the mirror and pool
directory apt uses for the amd64 packages of the same release (one upload of
the linux source package builds every architecture, at one version).  Each .deb
is checked against the SHA256 in the architecture's Packages index, itself
checked against the suite's InRelease, whose signature gpgv verifies with the
Debian archive keyring.  Only the config, the headers' Module.symvers, .config
and utsrelease.h, and the in-tree modules under FOREIGN_MODULE_DIRS are
unpacked, into ``foreign-kernels/<kver>/``, with the Debian architecture as
"arch" in the manifest.

Work runs in parallel: downloads (two at a time) overlap the unpacking and the
builds, which run JOBS at a time, each with dkms's ``make -j<number of CPUs>``.
Every cache entry is assembled in a temporary directory inside the root and
renamed into place only when complete, and recorded in the manifest after
that; an entry counts as present only if it is both on disk and in the
manifest.  A rerun with everything present does no network or build work
(with build failures recorded, it asks apt-cache for the drivers' versions).
Any error other than a driver's build failure stops the run with one line on
stderr and exit status 2.

Host packages needed (Debian 12; scripts/bootstrap installs them), besides
apt, dpkg, tar and gpgv:
    dkms bubblewrap make gcc-12 binutils libelf1 dwarves pkg-config libxtables-dev
dkms and bubblewrap (bwrap) run the builds, from the host's /usr; gcc-12 is
the compiler the Debian 6.1 and 6.12 kernels were built with; the kbuild
host tools (modpost, objtool...) come prebuilt in linux-kbuild-* and only
need libelf1 at run time; dwarves has pahole, which kbuild runs on every
module built for the 6.12 kernels (CONFIG_DEBUG_INFO_BTF_MODULES);
iptables-netflow-dkms depends on pkg-config and libxtables-dev for its
configure.  They are checked before any work is done.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes.util
import fcntl
import hashlib
import itertools
import json
import lzma
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from kabigate.builder.buildtree import build_tree as kernel_build_tree
from kabigate.builder.sandbox import Limits, check_sandbox
from kabigate.builder.source import build_source
from kabigate.errors import InputError
from kabigate.vocabulary import BuildOutcome
from support.testdata import testdata_root

KERNELS = (
    "6.1.0-47-amd64",
    "6.1.0-56-amd64",
    "6.1.0-47-rt-amd64",
    "6.1.0-47-cloud-amd64",
    "6.1.0-50-amd64",
)
# 47 is an old minor release and 56 a newer one: drivers built against each
# let tests check kABI compatibility in both directions.
BUILD_KERNELS = ("6.1.0-47-amd64", "6.1.0-56-amd64")
# Kernel streams, each in release order: every Debian 12 ABI the archive still has.
STREAMS = {
    "debian-6.1": tuple(f"6.1.0-{abi}-amd64" for abi in (47, 50, 53, 54, 55, 56, 57)),
    "debian-6.12": tuple(f"6.12.{sub}+deb12-amd64" for sub in (107, 111, 113, 115, 117)),
}
STREAM_OF = {kver: stream for stream, kvers in STREAMS.items() for kver in kvers}
# The 6.12 rt and cloud flavors, booted by the qemu tests with builds of other flavors and series.
FLAVOR_IMAGES = ("6.12.117+deb12-rt-amd64", "6.12.117+deb12-cloud-amd64")
# Kernels of other architectures: kver -> (Debian architecture, image package).
# Debian has Secure Boot signed arm64 images (linux-signed-arm64), so the image as
# built is the -unsigned package there; s390x and ppc64el have no signed images and
# no -unsigned package.  (Modules carry the build-time key's signature on all three.)
FOREIGN_KERNELS = {
    "6.1.0-47-arm64": ("arm64", "linux-image-6.1.0-47-arm64-unsigned"),
    # beside 6.1.0-56-amd64 in one stream: a gate of 6.1.0-56 covers both architectures (test_architectures.py)
    "6.1.0-56-arm64": ("arm64", "linux-image-6.1.0-56-arm64-unsigned"),
    # the ABIs around 6.1.0-56 (module_layout unchanged): the drivers cross-built for -56 insmodded into
    # them (test_foreign_builds_qemu.py) load on -57 and meet -54's CRC changes
    "6.1.0-54-arm64": ("arm64", "linux-image-6.1.0-54-arm64-unsigned"),
    "6.1.0-57-arm64": ("arm64", "linux-image-6.1.0-57-arm64-unsigned"),
    "6.1.0-47-s390x": ("s390x", "linux-image-6.1.0-47-s390x"),
    "6.1.0-47-powerpc64le": ("ppc64el", "linux-image-6.1.0-47-powerpc64le"),
    # a second ABI of each (bookworm-security, where 6.1.0-56 is, carries no s390x): drivers cross-built
    # for one insmodded into the other (test_foreign_builds_qemu.py)
    "6.1.0-50-s390x": ("s390x", "linux-image-6.1.0-50-s390x"),
    "6.1.0-50-powerpc64le": ("ppc64el", "linux-image-6.1.0-50-powerpc64le"),
    # module_elf_check_arch() (6.2+) refuses an ELF ABI v1 module (test_foreign_builds_qemu.py)
    "6.12.107+deb12-powerpc64le": ("ppc64el", "linux-image-6.12.107+deb12-powerpc64le"),
}
# Architectures whose kernels the qemu tests boot (test_foreign_qemu.py): their busybox-static.
FOREIGN_BUSYBOX = ("arm64", "ppc64el", "s390x")
# The in-tree modules unpacked from a foreign image (under lib/modules/<kver>/kernel/):
# about 45 a kernel, exporting to each other (media, usb-storage with its USB_STORAGE
# symbol namespace, fat) and present on all three architectures.
FOREIGN_MODULE_DIRS = (
    "drivers/media/mc",
    "drivers/media/v4l2-core",
    "drivers/media/common",
    "drivers/media/dvb-core",
    "drivers/media/usb/uvc",
    "drivers/usb/storage",
    "fs/fat",
    "net/key",
)
# What the foreign headers package contributes (under usr/src/linux-headers-<kver>/).
FOREIGN_HEADERS_FILES = ("Module.symvers", ".config", "include/generated/utsrelease.h")
# The Signed-By keyring of Debian's apt sources.
ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# driver name -> Debian package with the DKMS tree: every *-dkms package of Debian 12
# (apt-cache search --names-only -- '-dkms$') but dh-dkms and those in NOT_BUILT.
DRIVERS = {
    name: f"{name}-dkms"
    for name in (
        "acpi-call", "adv-17v35x", "apfs", "bbswitch", "dahdi", "ddcci", "digimend", "dm-writeboost",
        "dpdk-kmods", "evdi", "falcosecurity-scap", "gost-crypto", "iptables-netflow", "jool",
        "langford", "librem-ec-acpi", "lime-forensics", "lttng-modules", "nat-rtsp", "openafs-modules",
        "openrazer-driver", "openvpn-dco", "rapiddisk", "rtpengine-kernel", "tp-smapi", "v4l2loopback",
        "vpoll", "xtables-addons", "xtrx",
    )
}
NOT_BUILT = {
    "dh-dkms": "debhelper add-on, not a driver",
    "west-chamber-dkms": "its dkms.conf builds in /usr/src and /var/lib/dkms, outside any private tree",
}
# The drivers the tests rely on, built against BUILD_KERNELS in every corpus.
CORE_DRIVERS = ("v4l2loopback", "acpi-call", "jool", "xtables-addons", "dahdi")
# Built in seconds each (on 2 cores, against 6.1): the default corpus builds them against
# DEFAULT_BUILD_KERNELS.  Left for the full corpus: lttng-modules and openafs-modules (minutes),
# apfs, evdi and iptables-netflow (configure; 20 s or more each).
DEFAULT_DRIVERS = (
    "acpi-call", "adv-17v35x", "bbswitch", "ddcci", "digimend", "dm-writeboost", "dpdk-kmods",
    "falcosecurity-scap", "gost-crypto", "langford", "librem-ec-acpi", "lime-forensics", "nat-rtsp",
    "openrazer-driver", "openvpn-dco", "rapiddisk", "rtpengine-kernel", "tp-smapi", "v4l2loopback", "vpoll",
    "xtrx",
)
DEFAULT_BUILD_KERNELS = ("6.1.0-47-amd64", "6.1.0-56-amd64", "6.12.107+deb12-amd64")
FULL_BUILD_KERNELS = ("6.1.0-47-amd64", "6.1.0-53-amd64", "6.1.0-56-amd64", "6.1.0-57-amd64",
                      "6.12.107+deb12-amd64", "6.12.117+deb12-amd64")
# Quick drivers also built against 6.1.0-50: gating 6.1.0-53 against 50 then has builds that load on
# the baseline, so the gate shows real regressions (skb_copy_bits, __pci_register_driver, proc_create).
GATE_DRIVERS = ("acpi-call", "adv-17v35x", "dpdk-kmods", "nat-rtsp")
GATE_BUILD_KERNELS = ("6.1.0-50-amd64",)
# What gate --rebuild needs beside a stream kernel's linux-headers .deb to build for 6.1.0-53 (the
# linux-kbuild-6.1 of the build kernels satisfies its >= relation) and for 6.12.111 (each 6.12 release
# has a linux-kbuild of its own): test_gate_rebuild.py.
GATE_TREE_DEBS = ("linux-headers-6.1.0-53-common", "linux-headers-6.12.111+deb12-common",
                  "linux-kbuild-6.12.111+deb12")
# Cross-built for other architectures in the full corpus: drivers that build in seconds and need no
# module outside FOREIGN_MODULE_DIRS to load (v4l2loopback: videodev), and two that dkms or the compiler
# refuse on some (acpi-call: BUILD_EXCLUSIVE_CONFIG=CONFIG_ACPI; tp-smapi: x86's port I/O).
FOREIGN_DRIVERS = ("vpoll", "gost-crypto", "lime-forensics", "v4l2loopback", "acpi-call", "tp-smapi")
FOREIGN_BUILD_KERNELS = ("6.1.0-47-arm64", "6.1.0-56-arm64", "6.1.0-47-s390x", "6.1.0-50-s390x",
                         "6.1.0-47-powerpc64le", "6.1.0-50-powerpc64le")
# corpus -> its cross builds: the default one carries arm64's two ABIs of the drivers the qemu
# insmod test loads (a fresh cache: ~2 min), so CI proves one architecture besides x86_64 on a booted kernel
FOREIGN_CORPORA = {"default": tuple((d, k) for k in ("6.1.0-47-arm64", "6.1.0-56-arm64")
                                    for d in ("vpoll", "gost-crypto", "v4l2loopback")),
                   "full": tuple((d, k) for k in FOREIGN_BUILD_KERNELS for d in FOREIGN_DRIVERS)}
# corpus -> ((drivers, build kernels), ...): its driver builds; the full corpus holds the default one
CORPORA = {
    "default": ((CORE_DRIVERS, BUILD_KERNELS), (DEFAULT_DRIVERS, DEFAULT_BUILD_KERNELS),
                (GATE_DRIVERS, GATE_BUILD_KERNELS)),
    "full": ((tuple(DRIVERS), FULL_BUILD_KERNELS), (GATE_DRIVERS, GATE_BUILD_KERNELS)),
}
# Builds known to take long (a minute or more): started first, so the other core is not left idle at the end.
SLOW_DRIVERS = ("lttng-modules", "openafs-modules", "dahdi", "jool", "xtables-addons")
# executable -> apt package providing it, checked before any work is done
REQUIRED_TOOLS = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "bash": "bash",
    "dkms": "dkms",
    "bwrap": "bubblewrap",
    "make": "make",
    "gcc-12": "gcc-12",
    "ld": "binutils",
    "tar": "tar",
    "gpgv": "gpgv",
    "pahole": "dwarves",

    "pkg-config": "pkg-config",
}
# header -> apt package: what a DKMS package needs to build, besides the compiler and make
# (iptables-netflow's configure asks pkg-config for libxtables).
REQUIRED_HEADERS = {"xtables.h": "libxtables-dev"}
JOBS = 2
# A build's time limit in the sandbox: the packages are known ones, and a build that hits the limit stops
# the run instead of being recorded as a failure; openafs-modules takes many minutes on a busy machine.
BUILD_SECONDS = 4 * 3600.0

REPO = Path(__file__).resolve().parents[2]
QUIET = False
# Set when the run gives up (an error, or the main thread is interrupted): queued jobs do
# not start, downloads stop, and nothing more is published.
STOP = threading.Event()


class FetchError(Exception):
    """A failure reported to the user as one line, without a traceback."""


def progress(message: str) -> None:
    if not QUIET:
        # One write, so lines from worker threads do not interleave.
        sys.stderr.write(f"fetch-testdata: {message}\n")
        sys.stderr.flush()


def run(cmd: list[str], *, cwd: Path | None = None, what: str) -> str:
    """Run cmd and return its stdout; raise FetchError naming `what` if it fails."""
    proc = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise FetchError(f"{what} failed: {detail}")
    return proc.stdout


# --- cache bookkeeping -------------------------------------------------------


def lock_cache(root: Path) -> TextIO:
    """Hold an exclusive lock on the cache so concurrent runs cannot interleave."""
    handle = open(root / ".lock", "w")  # noqa: SIM115 - held until the caller's with-block ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        progress(f"waiting for another run holding {root / '.lock'}")
        fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


CACHE_DIRS = ("debs", "kernels", "foreign-kernels", "build-kernels", "drivers", "logs")


def remove_stale_temp_dirs(root: Path) -> None:
    """Drop half-built entries left by an interrupted run (we hold the lock)."""
    for parent in CACHE_DIRS:
        for stale in (root / parent).glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)


def load_manifest(root: Path) -> dict:
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except FileNotFoundError:
        manifest = {}
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot read {root / 'manifest.json'}: {exc}") from None
    for key in ("kernels", "drivers", "foreign_kernels", "streams", "stream_kernels", "flavor_images",
                "build_kernels", "driver_failures", "foreign_busybox", "foreign_drivers",
                "foreign_driver_failures"):
        manifest.setdefault(key, {})
    return manifest


def save_manifest(root: Path, manifest: dict) -> None:
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(root / "manifest.json")


def publish(tmp: Path, final: Path) -> None:
    """Atomically move a completed entry into place, replacing a stale one."""
    if STOP.is_set():  # the main thread gave up and may have released the cache lock
        raise FetchError("interrupted")
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(final)


def kernel_present(root: Path, manifest: dict, kver: str) -> bool:
    return kver in manifest["kernels"] and (root / "kernels" / kver).is_dir()


def foreign_kernel_present(root: Path, manifest: dict, kver: str) -> bool:
    return kver in manifest["foreign_kernels"] and (root / "foreign-kernels" / kver).is_dir()


def stream_kernel_present(root: Path, manifest: dict, kver: str) -> bool:
    entry = manifest["stream_kernels"].get(kver)
    return entry is not None and all((root / deb).is_file() for deb in entry["debs"])


def flavor_image_present(root: Path, manifest: dict, kver: str) -> bool:
    entry = manifest["flavor_images"].get(kver)
    return entry is not None and all((root / deb).is_file() for deb in entry["debs"])


def build_kernel_present(root: Path, manifest: dict, kver: str) -> bool:
    if kver in KERNELS:
        return kernel_present(root, manifest, kver) and kver in manifest["build_kernels"]
    return kver in manifest["build_kernels"] and (root / "build-kernels" / kver).is_dir()


def driver_present(root: Path, manifest: dict, driver: str, kver: str, kind: str = "drivers") -> bool:
    return (
        kver in manifest[kind].get(driver, {})
        and (root / "drivers" / driver / kver).is_dir()
    )


def failure_current(manifest: dict, driver: str, kver: str, versions: dict[str, str],
                    kind: str = "driver_failures") -> bool:
    """A recorded build failure of the package version apt offers (or of one apt no longer knows)."""
    failure = manifest[kind].get(driver, {}).get(kver)
    return failure is not None and versions.get(DRIVERS[driver], failure["version"]) == failure["version"]


# --- host checks -------------------------------------------------------------


def check_host_tools(root: Path) -> None:
    missing = {pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None}
    missing.update(pkg for header, pkg in REQUIRED_HEADERS.items() if not Path("/usr/include", header).is_file())
    if ctypes.util.find_library("elf") is None:
        missing.add("libelf1")  # the prebuilt kbuild tools link against it
    if missing:
        raise FetchError(f"missing build tools; run: apt-get install {' '.join(sorted(missing))}")
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=root / "drivers") as work:
        try:
            check_sandbox(Path(work))
        except InputError as exc:
            raise FetchError(str(exc)) from None


# --- Debian archive ----------------------------------------------------------


class Archive:
    """apt-cache lookups (refreshing the package lists once if needed) and downloads."""

    def __init__(self, debs: Path):
        self.debs = debs
        self.updated = False
        self.stanzas: dict[str, dict[str, str]] = {}

    def show(self, packages: list[str]) -> None:
        """Cache the candidate stanza of each package."""
        wanted = [p for p in packages if p not in self.stanzas]
        if not wanted:
            return
        cmd = ["apt-cache", "show", "--no-all-versions", *wanted]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0 and not self.updated:
            progress("apt-cache does not know all packages; running apt-get update")
            run(["apt-get", "update"], what="apt-get update")
            self.updated = True
            proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FetchError(f"apt-cache show {' '.join(wanted)} failed: {proc.stderr.strip()}")
        for stanza in parse_stanzas(proc.stdout):
            self.stanzas[stanza["Package"]] = stanza

    def field(self, package: str, name: str) -> str:
        self.show([package])
        return self.stanzas[package].get(name, "")

    def depends(self, package: str) -> list[str]:
        """Names of the packages `package` depends on (first alternative, no versions)."""
        deps = self.field(package, "Depends")
        return [re.split(r"[\s(|]", d.strip(), maxsplit=1)[0] for d in deps.split(",") if d.strip()]

    def known_versions(self, packages: list[str]) -> dict[str, str]:
        """Candidate versions of those packages apt knows, without refreshing its lists."""
        proc = subprocess.run(["apt-cache", "show", "--no-all-versions", *packages], check=False,
                              capture_output=True, text=True)
        return {s["Package"]: s.get("Version", "") for s in parse_stanzas(proc.stdout)}

    def deb_path(self, package: str) -> Path:
        """Where apt-get download stores the candidate version ("1:2.0" -> "1%3a2.0")."""
        version = self.field(package, "Version").replace(":", "%3a")
        return self.debs / f"{package}_{version}_{self.field(package, 'Architecture')}.deb"

    def download(self, packages: list[str]) -> None:
        self.show(packages)
        missing = sorted({p for p in packages if not self.deb_path(p).exists()})
        if not missing:
            return
        progress(f"downloading {' '.join(missing)}")
        # Download into a temp dir so an interrupted download never looks complete.
        self.debs.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.debs))
        try:
            run(["apt-get", "download", *missing], cwd=tmp, what="apt-get download")
            for deb in tmp.glob("*.deb"):
                deb.rename(self.debs / deb.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for package in missing:
            if not self.deb_path(package).exists():
                raise FetchError(f"apt-get download did not produce {self.deb_path(package).name}")


class Downloads:
    """Each package downloaded once, in a worker pool: request() returns the futures to wait for.

    The packages of one request not requested before go into one apt-get call.
    Archive.show() must have been called for them first (in the main thread).
    """

    def __init__(self, archive: Archive, pool: Pool):
        self.archive = archive
        self.pool = pool
        self.futures: dict[str, concurrent.futures.Future] = {}
        self.lock = threading.Lock()

    def request(self, packages: list[str]) -> list[concurrent.futures.Future]:
        with self.lock:
            new = [p for p in dict.fromkeys(packages) if p not in self.futures]
            if new:
                future = self.pool.submit(self.archive.download, new)
                self.futures.update(dict.fromkeys(new, future))
            return list({id(self.futures[p]): self.futures[p] for p in packages}.values())


def parse_stanzas(text: str) -> list[dict[str, str]]:
    stanzas = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            stanzas.append(fields)
    return stanzas


def extract_deb(deb: Path, dest: Path) -> None:
    run(["dpkg-deb", "-x", str(deb), str(dest)], what=f"extracting {deb.name}")


def extract_deb_members(deb: Path, dest: Path, patterns: list[str]) -> None:
    """Unpack only the members matching the tar wildcards (`*` matches `/` too).

    tar fails if a pattern matches nothing, so a moved file is an error, not a gap.
    """
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        tar = subprocess.run(["tar", "-x", "-C", str(dest), "--wildcards", *patterns],
                             check=False, stdin=dpkg.stdout, capture_output=True, text=True)
    finally:
        dpkg.stdout.close()
        dpkg_error = dpkg.stderr.read().decode(errors="replace").strip()
        dpkg.stderr.close()
        dpkg.wait()
    if tar.returncode != 0:
        lines = tar.stderr.strip().splitlines()
        raise FetchError(f"extracting {deb.name} failed: {lines[-1] if lines else f'tar exit {tar.returncode}'}")
    if dpkg.returncode != 0:
        raise FetchError(f"extracting {deb.name} failed: {dpkg_error or f'dpkg-deb exit {dpkg.returncode}'}")


# --- other architectures ------------------------------------------------------


def http_get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"downloading {url} failed: {exc}") from None


class ForeignArchive:
    """Downloads .debs of other architectures from the mirror apt uses, checked like apt would.

    The mirror, suite and pool directory are those of the amd64 package of the
    same release (`apt-cache madison` and its Filename); the SHA256 of each .deb
    comes from the architecture's Packages index, checked against the suite's
    InRelease, whose signature gpgv checks.  Indexes are fetched only when a .deb
    is missing, at most once per suite and architecture.

    download() may run in several threads once origin() has been called for its
    amd64 package (apt-cache, and apt-get update, run in the calling thread).
    """

    def __init__(self, archive: Archive):
        self.archive = archive
        self.origins: dict[str, tuple[str, str, str, str, str]] = {}
        self.releases: dict[tuple[str, str], str] = {}
        self.indexes: dict[tuple[str, str, str, str], bytes] = {}
        self.index_lock = threading.Lock()

    def origin(self, amd64_package: str) -> tuple[str, str, str, str, str]:
        """(mirror URI, suite, component, pool directory, version) of an amd64 package's candidate."""
        if amd64_package not in self.origins:
            self.origins[amd64_package] = self._origin(amd64_package)
        return self.origins[amd64_package]

    def _origin(self, amd64_package: str) -> tuple[str, str, str, str, str]:
        version = self.archive.field(amd64_package, "Version")
        filename = self.archive.field(amd64_package, "Filename")
        out = run(["apt-cache", "madison", amd64_package], what=f"apt-cache madison {amd64_package}")
        for line in out.splitlines():
            fields = [f.strip() for f in line.split("|")]
            # "pkg | 6.1.170-3 | http://deb.debian.org/debian bookworm/main amd64 Packages"
            if len(fields) == 3 and fields[1] == version and fields[2].endswith(" Packages"):
                uri, dist, _arch, _ = fields[2].split()
                suite, _, component = dist.partition("/")
                return uri.rstrip("/"), suite, component, os.path.dirname(filename), version
        raise FetchError(f"apt-cache madison {amd64_package}: no archive offers version {version}")

    def deb_path(self, package: str, version: str, arch: str) -> Path:
        return self.archive.debs / f"{package}_{version.replace(':', '%3a')}_{arch}.deb"

    def download(self, packages: list[str], arch: str, amd64_package: str) -> tuple[list[Path], str]:
        """The .debs of `packages` for `arch` at the version of `amd64_package`, and that version."""
        uri, suite, component, pool, version = self.origin(amd64_package)
        paths = [self.deb_path(p, version, arch) for p in packages]
        missing = [(p, path) for p, path in zip(packages, paths) if not path.exists()]
        if missing:
            progress(f"downloading {' '.join(p for p, _ in missing)} ({arch})")
            index = self.packages_index(uri, suite, component, arch)
        for package, path in missing:
            url_path = f"{pool}/{package}_{version.split(':', 1)[-1]}_{arch}.deb"  # pool names carry no epoch
            stanza = find_stanza(index, package)
            if stanza is None or stanza.get("Version") != version or stanza.get("Filename") != url_path:
                found = f"{stanza.get('Filename')}" if stanza else "nothing"
                raise FetchError(f"{suite} {arch} Packages: expected {url_path} for {package}, found {found}")
            download_checked(f"{uri}/{url_path}", path, stanza["SHA256"], int(stanza["Size"]))
        return paths, version

    def packages_index(self, uri: str, suite: str, component: str, arch: str) -> bytes:
        with self.index_lock:
            return self._packages_index(uri, suite, component, arch)

    def _packages_index(self, uri: str, suite: str, component: str, arch: str) -> bytes:
        key = (uri, suite, component, arch)
        if key not in self.indexes:
            name = f"{component}/binary-{arch}/Packages.xz"
            expected = self.release_hashes(uri, suite).get(name)
            if expected is None:
                raise FetchError(f"{uri}/dists/{suite}/InRelease lists no {name}")
            data = http_get(f"{uri}/dists/{suite}/{name}")
            if (hashlib.sha256(data).hexdigest(), len(data)) != expected:
                raise FetchError(f"{uri}/dists/{suite}/{name}: SHA256 or size differs from InRelease")
            self.indexes[key] = lzma.decompress(data)
        return self.indexes[key]

    def release_hashes(self, uri: str, suite: str) -> dict[str, tuple[str, int]]:
        """path -> (SHA256, size) from the suite's InRelease, after gpgv checked its signature."""
        if (uri, suite) not in self.releases:
            with tempfile.TemporaryDirectory(prefix=".tmp-", dir=self.archive.debs) as tmp:
                signed = Path(tmp) / "InRelease"
                signed.write_bytes(http_get(f"{uri}/dists/{suite}/InRelease"))
                self.releases[(uri, suite)] = run(
                    ["gpgv", "--quiet", "--keyring", ARCHIVE_KEYRING, "--output", "-", str(signed)],
                    what=f"checking the signature of {uri}/dists/{suite}/InRelease",
                )
        hashes = {}
        section = ""
        for line in self.releases[(uri, suite)].splitlines():
            if not line[:1].isspace():
                section = line.rstrip(":")
            elif section == "SHA256" and len(parts := line.split()) == 3:
                hashes[parts[2]] = (parts[0], int(parts[1]))
        return hashes


def find_stanza(index: bytes, package: str) -> dict[str, str] | None:
    """The stanza of `package` in a Packages index, without parsing the other ~60,000."""
    match = re.search(rb"^Package: " + re.escape(package.encode()) + rb"\n", index, flags=re.MULTILINE)
    if match is None:
        return None
    end = index.find(b"\n\n", match.start())
    stanzas = parse_stanzas(index[match.start():end if end >= 0 else len(index)].decode())
    return stanzas[0] if stanzas else None


def download_checked(url: str, dest: Path, sha256: str, size: int) -> None:
    """Download into a temp dir, check size and SHA256, then rename into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as response, (tmp / dest.name).open("wb") as out:
                while chunk := response.read(1 << 20):
                    if STOP.is_set():
                        raise FetchError("interrupted")
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError) as exc:
            raise FetchError(f"downloading {url} failed: {exc}") from None
        if (digest.hexdigest(), (tmp / dest.name).stat().st_size) != (sha256, size):
            raise FetchError(f"{url}: SHA256 or size differs from the Packages index")
        (tmp / dest.name).rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- kernels -----------------------------------------------------------------


def kernel_packages(archive: Archive, kver: str) -> list[str]:
    """The image, headers, shared headers and kbuild packages for one release.

    The shared headers package (-common, or -common-rt for rt) and the kbuild
    package are taken from the headers package's dependencies.  The archive
    keeps only the newest linux-kbuild-6.1 (6.1.192-2 while the 47 headers are
    6.1.170-3); its prebuilt host tools (modpost, objtool...) build correct
    modules for every 6.1 ABI: vermagic and symbol CRCs match the kernel's.
    Each 6.12.N+deb12 release has a kbuild package of its own.
    """
    headers = f"linux-headers-{kver}"
    deps = archive.depends(headers)
    common = [d for d in deps if re.fullmatch(r"linux-headers-.*-common(-rt)?", d)]
    kbuild = [d for d in deps if d.startswith("linux-kbuild-")]
    if len(common) != 1 or len(kbuild) != 1:
        raise FetchError(f"cannot tell the common headers and kbuild packages of {headers} from: {deps}")
    return [f"linux-image-{kver}-unsigned", headers, common[0], kbuild[0]]


def make_headers_relocatable(tree: Path, kver: str) -> None:
    """Make the extracted headers build external modules from where they are.

    Debian's headers assume installation at /: the flavour Makefile includes
    the shared Makefile by absolute path, and lib/modules/<kver>/{build,source}
    are absolute symlinks into /usr/src.  We point these inside the tree, with
    paths relative to the file itself so the tree still works after the
    temporary directory is renamed into the cache (or the cache is moved).
    Everything else (scripts -> ../../lib/linux-kbuild-6.1/scripts...) is
    already relative.  The 6.12 headers have the same layout, with a
    linux-kbuild-6.12.N+deb12 of their own, and a vmlinux for the BTF of modules.
    """
    for name in ("build", "source"):
        link = tree / "lib/modules" / kver / name
        target = os.readlink(link)
        if not target.startswith("/"):
            raise FetchError(f"{link} -> {target} is not absolute; headers layout changed?")
        link.unlink()
        link.symlink_to(os.path.relpath(tree / target.lstrip("/"), link.parent))

    makefile = tree / "usr/src" / f"linux-headers-{kver}" / "Makefile"
    # `include /usr/src/linux-headers-X-common/Makefile` -> a path relative to
    # this Makefile.  The shared Makefile derives srctree from the path it was
    # included by, so srctree then resolves inside the tree as well.
    here = "$(dir $(lastword $(MAKEFILE_LIST)))"
    text, count = re.subn(
        r"^include /usr/src/(\S+)$",
        lambda m: f"include {here}../{m.group(1)}",
        makefile.read_text(),
        flags=re.MULTILINE,
    )
    if count == 0:
        raise FetchError(f"{makefile} has no absolute include to rewrite; headers layout changed?")
    makefile.write_text(text)


def kernel_entry(kver: str, version: str) -> dict:
    base = f"kernels/{kver}"
    headers = f"{base}/usr/src/linux-headers-{kver}"
    return {
        "root": base,
        "release": kver,
        "vmlinuz": f"{base}/boot/vmlinuz-{kver}",
        "modules_dir": f"{base}/lib/modules/{kver}",
        "headers_dir": headers,
        "symvers": f"{headers}/Module.symvers",
        "config": f"{base}/boot/config-{kver}",
        "package_version": version,
    }


def fetch_kernel(root: Path, archive: Archive, kver: str) -> dict:
    packages = kernel_packages(archive, kver)
    archive.download(packages)
    progress(f"kernel {kver}: extracting {len(packages)} packages")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root / "kernels"))
    try:
        for package in packages:
            extract_deb(archive.deb_path(package), tmp)
        make_headers_relocatable(tmp, kver)
        entry = kernel_entry(kver, archive.field(packages[0], "Version"))
        for key in ("vmlinuz", "modules_dir", "symvers", "config"):
            path = tmp / Path(entry[key]).relative_to(entry["root"])
            if not path.exists():
                raise FetchError(f"kernel {kver}: {path.relative_to(tmp)} missing after extraction")
        publish(tmp, root / "kernels" / kver)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def foreign_kernel_entry(kver: str, arch: str, version: str) -> dict:
    base = f"foreign-kernels/{kver}"
    headers = f"{base}/usr/src/linux-headers-{kver}"
    return {
        "root": base,
        "release": kver,
        "arch": arch,
        "modules_dir": f"{base}/lib/modules/{kver}",
        "headers_dir": headers,
        "symvers": f"{headers}/Module.symvers",
        "config": f"{base}/boot/config-{kver}",
        "package_version": version,
    }


def amd64_counterpart(kver: str) -> str:
    """The amd64 package of the same release: "6.1.0-47-arm64" -> linux-headers-6.1.0-47-amd64."""
    return f"linux-headers-{kver.rsplit('-', 1)[0]}-amd64"


def download_foreign_kernel(foreign: ForeignArchive, kver: str) -> tuple[list[Path], str]:
    """The image and headers .debs of a kernel of another architecture, and their version."""
    arch, image = FOREIGN_KERNELS[kver]
    return foreign.download([image, f"linux-headers-{kver}"], arch, amd64_counterpart(kver))


def download_foreign_busybox(foreign: ForeignArchive, arch: str) -> str:
    """busybox-static of another architecture, kept as its .deb (the tests unpack /bin/busybox)."""
    [deb], _version = foreign.download(["busybox-static"], arch, "busybox-static")
    return f"debs/{deb.name}"


def extract_foreign_kernel(root: Path, kver: str, downloaded: concurrent.futures.Future) -> dict:
    """Config, symvers and a few dozen in-tree modules of a kernel of another architecture."""
    arch, _image = FOREIGN_KERNELS[kver]
    (image_deb, headers_deb), version = downloaded.result()
    progress(f"kernel {kver}: extracting config, symvers and {len(FOREIGN_MODULE_DIRS)} module dirs")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root / "foreign-kernels"))
    try:
        extract_deb_members(image_deb, tmp, [
            f"./boot/config-{kver}",
            *(f"./lib/modules/{kver}/kernel/{d}/*" for d in FOREIGN_MODULE_DIRS),
        ])
        extract_deb_members(headers_deb, tmp, [f"./usr/src/linux-headers-{kver}/{f}" for f in FOREIGN_HEADERS_FILES])
        entry = foreign_kernel_entry(kver, arch, version)
        for key in ("modules_dir", "symvers", "config"):
            path = tmp / Path(entry[key]).relative_to(entry["root"])
            if not path.exists():
                raise FetchError(f"kernel {kver}: {path.relative_to(tmp)} missing after extraction")
        publish(tmp, root / "foreign-kernels" / kver)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def build_kernel_entry(kver: str, version: str, base: str) -> dict:
    headers = f"{base}/usr/src/linux-headers-{kver}"
    return {
        "root": base,
        "release": kver,
        # dkms builds against /lib/modules/<kver>/build: the same symlink, in the tree
        "build_dir": f"{base}/lib/modules/{kver}/build",
        "headers_dir": headers,
        "symvers": f"{headers}/Module.symvers",
        "config": f"{headers}/.config",
        "package_version": version,
    }


def fetch_build_kernel(root: Path, archive: Archive, kver: str) -> dict:
    """A tree to build drivers against, for a kernel not in KERNELS: headers and kbuild only."""
    packages = kernel_packages(archive, kver)[1:]
    archive.download(packages)
    progress(f"build kernel {kver}: extracting {len(packages)} packages")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root / "build-kernels"))
    try:
        for package in packages:
            extract_deb(archive.deb_path(package), tmp)
        make_headers_relocatable(tmp, kver)
        base = f"build-kernels/{kver}"
        entry = build_kernel_entry(kver, archive.field(packages[0], "Version"), base)
        for key in ("build_dir", "symvers", "config"):
            path = tmp / Path(entry[key]).relative_to(base)
            if not path.exists():
                raise FetchError(f"kernel {kver}: {path.relative_to(tmp)} missing after extraction")
        publish(tmp, root / base)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def stream_packages(kver: str) -> list[str]:
    """What a stream kernel is read from: the image as built, then the flavour headers."""
    return [f"linux-image-{kver}-unsigned", f"linux-headers-{kver}"]


def stream_kernel_entry(root: Path, archive: Archive, kver: str) -> dict:
    packages = stream_packages(kver)
    archive.download(packages)
    stream = STREAM_OF[kver]
    return {
        "stream": stream,
        "position": STREAMS[stream].index(kver),
        "package_version": archive.field(packages[0], "Version"),
        "debs": [archive.deb_path(p).relative_to(root).as_posix() for p in packages],
    }


def flavor_image_entry(root: Path, archive: Archive, kver: str) -> dict:
    package = f"linux-image-{kver}-unsigned"
    archive.download([package])
    return {"package_version": archive.field(package, "Version"),
            "debs": [archive.deb_path(package).relative_to(root).as_posix()]}


# --- drivers -----------------------------------------------------------------


def build_driver(root: Path, archive: Archive, driver: str, kver: str, tree: list[Path]) -> tuple[str, dict]:
    """Build one driver against one kernel tree (its folder, or its packages) with `kabigate build`'s
    builder (the real dkms, in its sandbox): ("built", drivers entry) or ("failed", driver_failures
    entry: failed or excluded)."""
    package = DRIVERS[driver]
    archive.download([package])
    version = archive.field(package, "Version")
    deb = archive.deb_path(package)
    log = root / "logs" / f"{driver}-{kver}.log"
    progress(f"driver {driver}: building against {kver}")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root / "drivers"))
    try:
        (tmp / "work").mkdir()
        try:
            result = build_source(deb, kernel_build_tree([str(p) for p in tree], tmp), tmp / "work",
                                  Limits(wall_seconds=BUILD_SECONDS))
        except InputError as exc:
            raise FetchError(f"building {deb.name} against {kver}: {exc}") from None
        log.parent.mkdir(exist_ok=True)
        with log.open("w") as out:
            out.write(f"# {driver} ({deb.name}) against {kver}: kabigate build ({result.method}), "
                      f"{result.outcome} after {result.seconds:.1f}s\n{result.log}")
        if result.limit is not None:  # this machine's state, not the package's: not recorded (the log stays)
            raise FetchError(f"building {deb.name} against {kver}: {result.limit}")
        if result.outcome != BuildOutcome.BUILT:
            # the words the corpus has always recorded for an exclusion
            error = f"dkms excludes {kver}: {result.error}" if result.outcome == BuildOutcome.EXCLUDED else result.error
            with log.open("a") as out:
                out.write(f"\n# {result.outcome}: {error}\n")
            progress(f"driver {driver}: does not build against {kver}: {error}")
            return "failed", {
                "error": error,
                "log": log.relative_to(root).as_posix(),
                "source_package": package,
                "version": version,
            }
        (tmp / "out").mkdir()
        for module in result.modules:
            shutil.copy2(module, tmp / "out" / module.name)
        publish(tmp / "out", root / "drivers" / driver / kver)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"driver {driver}: built against {kver} in {result.seconds:.1f}s")
    return "built", {
        "dir": f"drivers/{driver}/{kver}",
        "modules": sorted(m.name for m in result.modules),
        "source_package": package,
        "version": version,
    }


# --- scheduling --------------------------------------------------------------


class Pool:
    """Worker threads running jobs lowest priority first (then in submission order), each
    once the futures it needs are done.

    A job whose needs failed fails with the same exception; once STOP is set, a queued
    job fails with "interrupted" instead of starting.  Daemon threads: an interrupted
    run does not wait for them.
    """

    def __init__(self, workers: int):
        self.queue: queue.PriorityQueue = queue.PriorityQueue()
        self.order = itertools.count()
        for _ in range(workers):
            threading.Thread(target=self._work, daemon=True).start()

    def _work(self) -> None:
        while True:
            _priority, _order, future, fn, args = self.queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            if STOP.is_set():
                future.set_exception(FetchError("interrupted"))
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the future
                future.set_exception(exc)

    def submit(self, fn: Callable, *args, needs: list[concurrent.futures.Future] = (),
               priority: int = 0) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        needs = list(needs)
        order = next(self.order)
        remaining = [len(needs)]
        lock = threading.Lock()

        def need_done(_done: concurrent.futures.Future) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            failed = next((n.exception() for n in needs if n.exception() is not None), None)
            if failed is not None:
                future.set_exception(failed)
            else:
                self.queue.put((priority, order, future, fn, args))

        if not needs:
            self.queue.put((priority, order, future, fn, args))
        for need in needs:
            need.add_done_callback(need_done)
        return future


# --- main --------------------------------------------------------------------


def corpus_builds(corpus: str) -> list[tuple[str, str]]:
    """(driver, build kernel) pairs of a corpus, build kernel by build kernel."""
    pairs = [(driver, kver) for drivers, kvers in CORPORA[corpus] for kver in kvers for driver in drivers]
    return sorted(dict.fromkeys(pairs), key=lambda pair: ALL_BUILD_KERNELS.index(pair[1]))


ALL_BUILD_KERNELS = tuple(dict.fromkeys(k for corpus in CORPORA.values() for _, kvers in corpus for k in kvers))
ALL_KERNELS = tuple(dict.fromkeys([*KERNELS, *FOREIGN_KERNELS, *STREAM_OF, *ALL_BUILD_KERNELS]))


def foreign_tree_packages(archive: Archive, kver: str) -> list[str]:
    """The amd64 archive's packages a foreign kernel's build tree takes besides its own headers .deb:
    the -common headers of its ABI and linux-kbuild-6.1 (the amd64 headers' dependencies)."""
    return kernel_packages(archive, f"{kver.rsplit('-', 1)[0]}-amd64")[2:]


def build_foreign_driver(root: Path, archive: Archive, foreign: ForeignArchive, driver: str,
                         kver: str) -> tuple[str, dict]:
    """A driver cross-built against a foreign kernel's headers, -common and linux-kbuild .debs."""
    (_image, headers), _version = download_foreign_kernel(foreign, kver)
    return build_driver(root, archive, driver, kver,
                        [headers, *(archive.deb_path(p) for p in foreign_tree_packages(archive, kver))])


def build_tree(kver: str) -> dict:
    """Where a build kernel's tree is: its full tree if it is in KERNELS."""
    base = f"kernels/{kver}" if kver in KERNELS else f"build-kernels/{kver}"
    return {"root": base, "build_dir": f"{base}/lib/modules/{kver}/build"}


def update_derived(manifest: dict) -> None:
    """The manifest keys that follow from others: streams, build_kernels of the KERNELS."""
    manifest["streams"] = {
        stream: [k for k in kvers if k in manifest["stream_kernels"]]
        for stream, kvers in STREAMS.items()
        if any(k in manifest["stream_kernels"] for k in kvers)
    }
    for kver in ALL_BUILD_KERNELS:
        if kver in KERNELS and kver in manifest["kernels"]:
            entry = manifest["kernels"][kver]
            manifest["build_kernels"][kver] = build_kernel_entry(kver, entry["package_version"], entry["root"])


# the kind of a driver job -> its manifest keys (builds, failures)
DRIVER_KINDS = {"driver": ("drivers", "driver_failures"),
                "foreign_driver": ("foreign_drivers", "foreign_driver_failures")}


def record(manifest: dict, kind: str, key, result) -> None:
    if kind in DRIVER_KINDS:
        driver, kver = key
        status, entry = result
        builds, failures = (manifest[k] for k in DRIVER_KINDS[kind])
        if status == "built":
            builds.setdefault(driver, {})[kver] = entry
            if kver in failures.get(driver, {}):
                del failures[driver][kver]
                if not failures[driver]:
                    del failures[driver]
        else:
            failures.setdefault(driver, {})[kver] = entry
            if kver in builds.get(driver, {}):  # its build vanished from disk and failed again
                del builds[driver][kver]
                if not builds[driver]:
                    del builds[driver]
    else:
        manifest[kind][key] = result
    update_derived(manifest)


def fetch_testdata(root: Path, corpus: str, only: set[str] | None) -> None:
    remove_stale_temp_dirs(root)
    manifest = load_manifest(root)

    def wanted(kver: str) -> bool:
        return only is None or kver in only

    builds = [(d, k) for d, k in corpus_builds(corpus) if wanted(k)]
    build_kvers = list(dict.fromkeys(k for _, k in builds))
    kernels = [k for k in KERNELS if wanted(k) and not kernel_present(root, manifest, k)]
    foreign = [k for k in FOREIGN_KERNELS if wanted(k) and not foreign_kernel_present(root, manifest, k)]
    busyboxes = [a for a in FOREIGN_BUSYBOX if only is None and not (
        a in manifest["foreign_busybox"] and (root / manifest["foreign_busybox"][a]).is_file())]
    streams = [k for k in STREAM_OF if wanted(k) and not stream_kernel_present(root, manifest, k)]
    flavors = [k for k in FLAVOR_IMAGES if wanted(k) and not flavor_image_present(root, manifest, k)]
    trees = [k for k in build_kvers if k not in KERNELS and not build_kernel_present(root, manifest, k)]
    builds = [(d, k) for d, k in builds if not driver_present(root, manifest, d, k)]
    cross = [(d, k) for d, k in FOREIGN_CORPORA[corpus]
             if wanted(k) and not driver_present(root, manifest, d, k, "foreign_drivers")]
    archive = Archive(root / "debs")
    if any(k in manifest["driver_failures"].get(d, {}) for d, k in builds) or any(
            k in manifest["foreign_driver_failures"].get(d, {}) for d, k in cross):
        versions = archive.known_versions(sorted({DRIVERS[d] for d, _ in [*builds, *cross]}))
        builds = [(d, k) for d, k in builds if not failure_current(manifest, d, k, versions)]
        cross = [(d, k) for d, k in cross
                 if not failure_current(manifest, d, k, versions, "foreign_driver_failures")]
    tree_debs = [p for p in GATE_TREE_DEBS if only is None and not any((root / "debs").glob(f"{p}_*.deb"))]
    cross_kvers = list(dict.fromkeys(k for _, k in cross))
    if not (kernels or foreign or busyboxes or streams or flavors or trees or builds or tree_debs or cross):
        before = json.dumps(manifest, sort_keys=True)
        update_derived(manifest)
        if json.dumps(manifest, sort_keys=True) != before:
            save_manifest(root, manifest)
        progress(f"everything present in {root}")
        return

    check_host_tools(root)
    # apt-cache, in this thread: every package of the run, then the kernels' dependencies.
    archive.show([
        *sorted({DRIVERS[d] for d, _ in [*builds, *cross]}),
        *(f"linux-headers-{k}" for k in [*kernels, *trees]),
        *(f"linux-image-{k}-unsigned" for k in kernels),
        *(p for k in streams for p in stream_packages(k)),
        *(f"linux-image-{k}-unsigned" for k in flavors),
        *(amd64_counterpart(k) for k in [*foreign, *cross_kvers]),
        *(["busybox-static"] if busyboxes else []),
        *tree_debs,
    ])
    archive.download(tree_debs)
    packages = {k: kernel_packages(archive, k) for k in [*kernels, *trees]}
    cross_packages = {k: foreign_tree_packages(archive, k) for k in cross_kvers}
    archive.show([p for names in [*packages.values(), *cross_packages.values()] for p in names])
    foreign_archive = ForeignArchive(archive)
    for kver in dict.fromkeys([*foreign, *cross_kvers]):
        foreign_archive.origin(amd64_counterpart(kver))
    if busyboxes:
        foreign_archive.origin("busybox-static")

    # Downloads two at a time, in the order the work needs them: the drivers, the kernels
    # drivers are built against, the other kernels, then the stream kernels.  Unpacking
    # and builds JOBS at a time: the build trees first, long builds before short ones.
    downloads_pool, cpu = Pool(2), Pool(JOBS)
    downloads = Downloads(archive, downloads_pool)
    jobs: dict[concurrent.futures.Future, tuple[str, object]] = {}
    driver_debs = downloads.request(sorted({DRIVERS[d] for d, _ in [*builds, *cross]}))
    ready: dict[str, concurrent.futures.Future] = {}  # build kernel -> its tree being fetched
    for kver in sorted([*kernels, *trees], key=lambda k: k not in build_kvers):
        if kver in KERNELS:
            job = cpu.submit(fetch_kernel, root, archive, kver, needs=downloads.request(packages[kver]),
                             priority=0 if kver in build_kvers else 3)
            jobs[job] = ("kernels", kver)
        else:
            job = cpu.submit(fetch_build_kernel, root, archive, kver, needs=downloads.request(packages[kver][1:]))
            jobs[job] = ("build_kernels", kver)
        if kver in build_kvers:
            ready[kver] = job
    foreign_downloads = {}  # foreign kernel -> its .debs being downloaded
    for kver in foreign:
        downloaded = foreign_downloads[kver] = downloads_pool.submit(download_foreign_kernel, foreign_archive, kver)
        jobs[cpu.submit(extract_foreign_kernel, root, kver, downloaded, needs=[downloaded], priority=3)] = (
            "foreign_kernels", kver)
    for arch in busyboxes:
        jobs[downloads_pool.submit(download_foreign_busybox, foreign_archive, arch)] = ("foreign_busybox", arch)
    for driver, kver in sorted(builds, key=lambda b: b[0] not in SLOW_DRIVERS):
        job = cpu.submit(build_driver, root, archive, driver, kver, [root / build_tree(kver)["root"]],
                         needs=driver_debs + ([ready[kver]] if kver in ready else []),
                         priority=1 if driver in SLOW_DRIVERS else 2)
        jobs[job] = ("driver", (driver, kver))
    for driver, kver in cross:  # once the foreign kernel's .debs are here (its headers .deb is the tree's)
        job = cpu.submit(build_foreign_driver, root, archive, foreign_archive, driver, kver,
                         needs=driver_debs + downloads.request(cross_packages[kver])
                         + ([foreign_downloads[kver]] if kver in foreign_downloads else []), priority=4)
        jobs[job] = ("foreign_driver", (driver, kver))
    for kver in streams:
        job = downloads_pool.submit(stream_kernel_entry, root, archive, kver,
                                    needs=downloads.request(stream_packages(kver)))
        jobs[job] = ("stream_kernels", kver)
    for kver in flavors:
        job = downloads_pool.submit(flavor_image_entry, root, archive, kver,
                                    needs=downloads.request([f"linux-image-{kver}-unsigned"]))
        jobs[job] = ("flavor_images", kver)

    # Each result is recorded as it comes; the first error stops what has not started and is
    # raised once the rest has ended.
    errors: list[Exception] = []
    try:
        for job in concurrent.futures.as_completed(jobs):
            kind, key = jobs[job]
            try:
                result = job.result()
            except (FetchError, OSError) as exc:
                STOP.set()
                errors.append(exc)
                continue
            record(manifest, kind, key, result)
            save_manifest(root, manifest)
    except BaseException:  # KeyboardInterrupt, or a bug in a job
        STOP.set()
        raise
    if errors:
        raise errors[0]
    built = sum(len(b) for key in ("drivers", "foreign_drivers") for b in manifest[key].values())
    failed = sum(len(f) for key in ("driver_failures", "foreign_driver_failures") for f in manifest[key].values())
    progress(f"done: {root / 'manifest.json'} ({built} driver builds, {failed} build failures recorded)")


def link_testdata(root: Path) -> None:
    """Make <repo>/.testdata a symlink to the default cache root, unless it is a directory of its own."""
    link = REPO / ".testdata"
    if root != testdata_root().resolve():
        return
    if link.is_symlink():
        if Path(os.readlink(link)) == root:
            return
        link.unlink()
    elif link.exists():
        return
    link.symlink_to(root, target_is_directory=True)
    gitignore = REPO / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    if not {".testdata", "/.testdata"} & set(lines):
        gitignore.write_text("\n".join([*lines, ".testdata"]) + "\n")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=testdata_root(), help="cache root (default: %(default)s)")
    parser.add_argument("--corpus", choices=tuple(CORPORA), default="default",
                        help="which driver builds (default: %(default)s; see tests/support/fetch_testdata.py)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument(
        "--only-kernel", action="append", choices=ALL_KERNELS, metavar="KVER",
        help="fetch only this kernel (repeatable: amd64, foreign, stream or build kernel); drivers are "
             "built only against selected kernels",
    )
    return parser.parse_args()


def main() -> int:
    global QUIET
    args = parse_args()
    QUIET = args.quiet
    root = args.root.resolve()
    started = time.monotonic()
    try:
        for sub in CACHE_DIRS:
            (root / sub).mkdir(parents=True, exist_ok=True)
        link_testdata(root)
        with lock_cache(root):
            fetch_testdata(root, args.corpus, set(args.only_kernel) if args.only_kernel else None)
    except (FetchError, OSError) as exc:
        print(f"fetch-testdata: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        STOP.set()
        print("fetch-testdata: interrupted", file=sys.stderr)
        return 130
    progress(f"finished in {time.monotonic() - started:.1f}s")
    return 0

