"""ELRepo's kmod history: one row per revision of a package spec (commit, date, spec path, kmod name,
version, release, the kernel it targets, commit subject), as derived from elrepo/packages."""

from __future__ import annotations

import csv
import io
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
    lines = text_lines(data, what)
    rows = csv.reader(io.StringIO("\n".join(lines)), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, None)
    if header is None or tuple(header[:len(COLUMNS)]) != COLUMNS:
        raise InputError(f"{what}: not an ELRepo spec history (header {COLUMNS!r} expected)")
    revisions = []
    for number, row in enumerate(rows, 2):
        if not row:
            continue
        if len(row) < len(COLUMNS):
            raise InputError(f"{what}:{number}: {len(row)} columns, {len(COLUMNS)} expected")
        revisions.append(SpecRevision(row[0], row[1], row[2], row[3], row[6]))
    return revisions
