"""Continuous mode: find the kernels a repository offers that the store has not gated yet.

Kernels are found in yum/dnf repositories (kernel-core + kernel-devel [+ kernel-modules] of one
version-release-arch; SUSE's kernel-<flavor> + kernel-<flavor>-devel) and in Debian-style
repositories (a folder of .debs, or a flat repository with a Packages index:
linux-image-<kver>[-unsigned] + linux-headers-<kver>). A kernel counts as done once a gate run of
it is stored (and published, when publishing); anything less is done again, so a watcher killed
mid-way picks up where it stopped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from kabigate.errors import InputError
from kabigate.formats.debindex import parse_packages_index
from kabigate.inputs.packages import Package, fetch, is_repository, is_url, open_repository
from kabigate.model import version_key
from kabigate.store import Store

MAX_PACKAGES_INDEX = 256 << 20
_RPM_KERNEL = re.compile(r"^kernel(-rt|-64k|-debug|-default|-azure|-rt-debug)?(-core|-modules|-devel)?$")
_DEB_IMAGE = re.compile(r"^linux-image-(\d+\.\d+\S*?)(-unsigned)?$")
_DEB_HEADERS = re.compile(r"^linux-headers-(\d+\.\d+\S*)$")


@dataclass(frozen=True)
class OfferedKernel:
    label: str  # what to call it before it is read (the packages' release and arch)
    version: str  # package version(-release): the stream order
    paths: tuple[str, ...]  # package files or URLs, as load_kernel() takes them

    @property
    def source(self) -> str:
        """How a kernel read from these packages names its source (KernelRecord.sources)."""
        return ", ".join(self.paths)


def offered_kernels(location: str) -> list[OfferedKernel]:
    """The kernels a repository offers, oldest first."""
    if is_url(location) and not location.endswith("/Packages") and not location.endswith(("Packages.gz",
                                                                                           "Packages.xz")):
        try:
            return _from_yum(location)
        except InputError:
            return _from_debian_index(location.rstrip("/") + "/Packages.xz")
    if os.path.isdir(location) and is_repository(location):
        return _from_yum(location)
    if os.path.isdir(location):
        return _from_deb_folder(location)
    if os.path.isfile(location) or is_url(location):
        return _from_debian_index(location)
    raise InputError(f"{location}: not a repository (no repodata/, .debs or Packages index)")


def _from_yum(location: str) -> list[OfferedKernel]:
    repository = open_repository(location)
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for package in repository.packages:
        match = _RPM_KERNEL.match(package.name)
        if match is None or package.arch == "src":
            continue
        flavor, part = match.group(1) or "", match.group(2)
        if part is None and flavor in ("", "-rt"):
            continue  # RHEL's `kernel` and `kernel-rt` are meta-packages; SUSE's kernel-<flavor> is the kernel
        groups.setdefault((flavor, package.version, package.release, package.arch), []).append(
            repository._join(package.href))
    kernels = [OfferedKernel(f"kernel{flavor}-{version}-{release}.{arch}", f"{version}-{release}", tuple(sorted(paths)))
               for (flavor, version, release, arch), paths in groups.items()]
    return sorted(kernels, key=lambda k: version_key(k.version))


def _pair_debian(packages: list[tuple[str, str, str]]) -> list[OfferedKernel]:
    """(name, version, path) of Debian packages -> kernels with an image and headers of one release."""
    images: dict[str, tuple[bool, str, str]] = {}
    headers: dict[str, str] = {}
    for name, version, path in packages:
        if (image := _DEB_IMAGE.match(name)) and not name.endswith("-dbg"):
            release, unsigned = image.group(1), image.group(2) is not None
            if release not in images or unsigned:  # the image as built: its modules carry the build key
                images[release] = (unsigned, version, path)
        elif header := _DEB_HEADERS.match(name):
            headers[header.group(1)] = path
    kernels = [OfferedKernel(release, version, (path, headers[release]))
               for release, (_unsigned, version, path) in images.items() if release in headers]
    return sorted(kernels, key=lambda k: (version_key(k.version), k.label))


def _from_deb_folder(folder: str) -> list[OfferedKernel]:
    packages = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".deb") or not name.startswith(("linux-image-", "linux-headers-")):
            continue
        path = os.path.join(folder, name)
        package = Package(path)
        packages.append((package.name, package.version, path))
        package.close()
    return _pair_debian(packages)


def _from_debian_index(location: str) -> list[OfferedKernel]:
    """A flat repository's Packages index: Filename paths are relative to the index's folder."""
    stanzas = parse_packages_index(bytes(fetch(location, location, MAX_PACKAGES_INDEX)), location)
    base = location.rsplit("/", 1)[0]
    packages = []
    for stanza in stanzas:
        filename = stanza.get("Filename", "")
        if not filename or filename.startswith("/") or ".." in filename.split("/") or "://" in filename:
            raise InputError(f"{location}: package {stanza['Package'][:80]} has no usable Filename")
        path = f"{base}/{filename}" if is_url(location) else os.path.join(base, *filename.split("/"))
        packages.append((stanza["Package"], stanza.get("Version", ""), path))
    return _pair_debian(packages)


def kernels_to_gate(store: Store, offered: list[OfferedKernel], publishing_to: str | None) -> list[OfferedKernel]:
    """Those not stored yet, or stored without a gate run (published to `publishing_to`, if given)."""
    stored = {source: record for record in store.kernels() for source in record.sources}
    pending = []
    for kernel in offered:
        record = stored.get(kernel.source)
        runs = store.gate_runs_of(record.id) if record is not None else []
        if not any(publishing_to is None or run.published_to == publishing_to for run in runs):
            pending.append(kernel)
    return pending
