"""The real corpus that scripts/fetch-testdata caches: where it is, and its manifest's paths."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def testdata_root() -> Path:
    """The cache root: $KABIGATE_TESTDATA, else ${XDG_CACHE_HOME:-$HOME/.cache}/kabigate/testdata."""
    if os.environ.get("KABIGATE_TESTDATA"):
        return Path(os.environ["KABIGATE_TESTDATA"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kabigate" / "testdata"


@dataclass(frozen=True)
class TestData:
    root: Path
    manifest: dict

    def kernel_root(self, release: str) -> Path:
        return self.root / self.manifest["kernels"][release]["root"]

    def headers(self, release: str) -> Path:
        return self.root / self.manifest["kernels"][release]["headers_dir"]

    def modules_dir(self, release: str) -> Path:
        return self.root / self.manifest["kernels"][release]["modules_dir"]

    def in_tree(self, release: str, relative: str) -> Path:
        """An in-tree module, e.g. in_tree("6.1.0-47-amd64", "drivers/media/mc/mc.ko")."""
        return self.modules_dir(release) / "kernel" / relative

    def driver_dir(self, driver: str, built_for: str) -> Path:
        return self.root / self.manifest["drivers"][driver][built_for]["dir"]
