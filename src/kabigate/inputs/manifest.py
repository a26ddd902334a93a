"""A build manifest named on the command line, read and its paths made absolute."""

from __future__ import annotations

import dataclasses
import os

from kabigate.errors import read_capped
from kabigate.formats.buildmanifest import BuildManifest, parse_build_manifest

MAX_MANIFEST = 16 << 20


def read_build_manifest(path: str) -> BuildManifest:
    """The manifest at `path`, each build's path relative to the manifest's folder made absolute."""
    manifest = parse_build_manifest(read_capped(path, MAX_MANIFEST, "too large for a build manifest"), path)
    folder = os.path.dirname(os.path.abspath(path))
    builds = [dataclasses.replace(entry, path=entry.path if "://" in entry.path else os.path.join(folder, entry.path))
              for entry in manifest.builds]
    return dataclasses.replace(manifest, builds=builds)
