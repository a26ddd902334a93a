"""The store most store-level tests read: the real kernels 6.1.0-47/50/56 in stream debian-6.1
and five real DKMS drivers built for 47 and for 56."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import sqlite3
import tempfile
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
    """A new SQLite store at `path` holding `releases` (in stream debian-6.1) and the DRIVERS built
    for 6.1.0-47 and -56; its path. Ingested once per test process and copied after that: a dozen
    test files each want their own store to write to, and each ingest takes 5-25 s."""
    template = _templates.get(releases)
    if template is None:
        folder = tempfile.mkdtemp(prefix="kabigate-realstore-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = Path(folder) / "store.db"
        _ingest(testdata, template, releases)
        _templates[releases] = template
    with contextlib.closing(sqlite3.connect(template)) as source, contextlib.closing(sqlite3.connect(path)) as copy:
        source.backup(copy)  # page by page, WAL included: a plain file copy could miss the -wal file
    return str(path)


_templates: dict[tuple[str, ...], Path] = {}


def _ingest(testdata, path: Path, releases: tuple[str, ...]) -> None:
    with Store.open(str(path)) as store:
        for release in releases:
            ingest_kernel(store, load_kernel([str(testdata.kernel_root(release))]), STREAM)
        for driver in DRIVERS:
            for entry in (testdata.manifest["drivers"][driver][built_for] for built_for in (RELEASES[0], RELEASES[2])):
                for build in read_driver_builds([str(testdata.root / entry["dir"])], driver, entry["version"]):
                    ingest_driver_build(store, build)
