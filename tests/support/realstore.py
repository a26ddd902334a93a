"""The store most store-level tests read: the real kernels 6.1.0-47/50/56 in stream debian-6.1
and five real DKMS drivers built for 47 and for 56."""

from __future__ import annotations

from pathlib import Path

from kabigate.inputs.kernels import load_kernel
from kabigate.services.ingest import ingest_driver_build, ingest_kernel, read_driver_builds
from kabigate.store import Store

RELEASES = ("6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64")
STREAM = "debian-6.1"
# The drivers every corpus builds against 6.1.0-47 and -56 (fetch-testdata's CORE_DRIVERS): the
# tests' expectations are about these, whatever else a larger corpus holds.
DRIVERS = ("acpi-call", "dahdi", "jool", "v4l2loopback", "xtables-addons")


def build_store(testdata, path: Path, releases: tuple[str, ...] = RELEASES) -> str:
    """Ingest `releases` (in stream debian-6.1) and the DRIVERS built for 6.1.0-47 and -56 into a new
    SQLite store at `path`; its path."""
    with Store.open(str(path)) as store:
        for release in releases:
            ingest_kernel(store, load_kernel([str(testdata.kernel_root(release))]), STREAM)
        for driver in DRIVERS:
            for entry in (testdata.manifest["drivers"][driver][built_for] for built_for in (RELEASES[0], RELEASES[2])):
                for build in read_driver_builds([str(testdata.root / entry["dir"])], driver, entry["version"]):
                    ingest_driver_build(store, build)
    return str(path)
