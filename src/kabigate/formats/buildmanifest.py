"""A manifest of driver builds to ingest in one run (`kabigate ingest drivers --manifest FILE`):
TOML with a `[[build]]` table per module tree or package and a `[[failure]]` table per build that
did not complete.

    [[build]]
    path = "drivers/jool/6.1.0-47-amd64"   # relative to the manifest's folder, or absolute, or a URL
    name = "jool"                          # optional for packages (they name themselves)
    version = "4.1.9-1"                    # optional: the modules' modinfo version

    [[failure]]
    name = "jool"
    version = "4.1.9-1"
    kernel = "6.12.107+deb12-amd64"
    error = "jool/src/mod/common/nl/nl_core.c:42:9: error: implicit declaration of function ..."
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kabigate.errors import InputError
from kabigate.formats.toml import parse_toml

MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class BuildEntry:
    path: str
    name: str | None
    version: str | None


@dataclass(frozen=True)
class FailureEntry:
    name: str
    version: str
    kernel: str
    error: str


@dataclass(frozen=True)
class BuildManifest:
    builds: list[BuildEntry]
    failures: list[FailureEntry]


def parse_build_manifest(data: bytes, what: str) -> BuildManifest:
    document = parse_toml(data, what)
    unknown = sorted(set(document) - {"build", "failure"})
    if unknown:
        raise InputError(f"{what}: unknown table {unknown[0]!r} (a manifest has [[build]] and [[failure]] tables)")
    builds = [BuildEntry(**_fields(entry, f"{what}: build #{i + 1}", required={"path"}, optional={"name", "version"}))
              for i, entry in enumerate(_array(document, "build", what))]
    failures = [FailureEntry(**_fields(entry, f"{what}: failure #{i + 1}",
                                       required={"name", "version", "kernel", "error"}, optional=set()))
                for i, entry in enumerate(_array(document, "failure", what))]
    if not builds and not failures:
        raise InputError(f"{what}: no [[build]] or [[failure]] table")
    return BuildManifest(builds, failures)


def _array(document: dict, key: str, what: str) -> list:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise InputError(f"{what}: {key!r} must be an array of tables ([[{key}]])")
    if len(value) > MAX_ENTRIES:
        raise InputError(f"{what}: more than {MAX_ENTRIES} [[{key}]] tables")
    return value


def _fields(entry: dict, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    """The entry's fields, each a checked string (a required one always; None: an optional one not given)."""
    unknown = sorted(set(entry) - required - optional)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}")
    missing = sorted(required - set(entry))
    if missing:
        raise InputError(f"{where}: no {missing[0]!r}")
    for key, value in entry.items():
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise InputError(f"{where}: {key!r} must be a non-empty string")
    return {key: entry.get(key) for key in required | optional}
