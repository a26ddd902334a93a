"""ELRepo's kmod history: one row per revision of a package spec (commit, date, spec path, kmod name,
version, release, the kernel it targets, commit subject), as derived from elrepo/packages."""

from __future__ import annotations

from dataclasses import dataclass

from kabigate.errors import InputError
from kabigate.formats.compression import text_lines

COLUMNS = ("commit", "date", "spec_path", "kmod_name", "version", "release", "target_kernel", "subject")


@dataclass(frozen=True)
class SpecRevision:
    commit: str
    date: str
    spec: str
    kmod: str
    target_kernel: str


def parse_spec_history(data: bytes, what: str) -> list[SpecRevision]:
    """Tab-separated, no quoting (fields never hold a tab or a newline), a header line first."""
    lines = text_lines(data, what)
    if not lines or tuple(lines[0].split("\t")[:len(COLUMNS)]) != COLUMNS:
        raise InputError(f"{what}: not an ELRepo spec history (header {' '.join(COLUMNS)} expected)")
    revisions = []
    for number, line in enumerate(lines[1:], 2):
        if not line:
            continue
        row = line.split("\t")
        if len(row) < len(COLUMNS):
            raise InputError(f"{what}:{number}: {len(row)} columns, {len(COLUMNS)} expected")
        revisions.append(SpecRevision(row[0], row[1], row[2], row[3], row[6]))
    return revisions
