"""The fuzz harness's CI slice (fixed seed, fixed number of inputs per target: deterministic),
and the harness's own guarantees. Longer runs: scripts/fuzz (README)."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kabigate.formats.stream import ChunkReader
from kabigate.formats.tar import iter_tar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fuzz import run, targets

SLICE_SEED, SLICE_INPUTS = 1, 300


def test_ci_slice_of_every_target_finds_nothing(tmp_path):
    """Each target fed SLICE_INPUTS mutated inputs in a child capped at 2 GiB of address space;
    any exception but a one-line InputError, an input over 5 s or a hang fails."""
    result = subprocess.run([sys.executable, str(REPO / "tests" / "fuzz" / "run.py"), "--seed", str(SLICE_SEED),
                             "--iterations", str(SLICE_INPUTS), "--slow", "5", "--hang", "30", "--memory", "2048"],
                            capture_output=True, text=True, timeout=1200, check=False,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    for name in targets.TARGETS:
        assert f"{name:<16} {SLICE_INPUTS:>7} inputs" in result.stdout, result.stdout


def test_inputs_are_reproducible_from_their_numbers():
    for name, target in targets.TARGETS.items():
        for iteration in (0, 17, 250):
            assert run.generate(target, 5, iteration) == run.generate(target, 5, iteration), name


def test_the_harness_reports_what_it_is_meant_to_find():
    target = targets.Target("t", lambda: [b""], lambda data: int("x"))
    assert "ValueError" in run.run_one(target, b"")
    multi_line = targets.Target("t", lambda: [b""], lambda data: (_ for _ in ()).throw(
        __import__("kabigate.errors").errors.InputError("a\nb")))
    assert run.run_one(multi_line, b"") is None  # InputError escapes line breaks itself


@pytest.mark.parametrize("archive_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_reader_reads_what_tarfile_reads(archive_format):
    """formats/tar.py replaces tarfile: on valid archives both give the same members."""
    rng = random.Random(archive_format)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=archive_format) as archive:
        for index in range(60):
            depth = rng.choice((1, 3, 30 if archive_format != tarfile.USTAR_FORMAT else 3))
            name = "./" + "/".join(f"d{rng.randrange(5)}é" for _ in range(depth)) + f"/f{index}.ko"
            info = tarfile.TarInfo(name)
            kind = rng.choice((tarfile.REGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE))
            info.type = kind
            data = rng.randbytes(rng.choice((0, 1, 511, 512, 513, 5000))) if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = "../" * rng.randrange(3) + "target" * rng.choice(
                    (1, 30 if archive_format != tarfile.USTAR_FORMAT else 2))
            if archive_format == tarfile.PAX_FORMAT and rng.random() < 0.3:
                info.pax_headers = {"comment": "x" * rng.randrange(300)}
            archive.addfile(info, io.BytesIO(data))
    raw = buffer.getvalue()
    expected = []
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as archive:
        for info in archive:
            kind = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
                    tarfile.LNKTYPE: "hardlink"}[info.type]
            data = archive.extractfile(info).read() if info.isreg() else None
            expected.append((info.name, kind, info.size, info.linkname, data))
    read = []
    for entry, reader in iter_tar(ChunkReader(iter([raw[i:i + 700] for i in range(0, len(raw), 700)])), "t"):
        read.append((entry.name, entry.kind, entry.size, entry.link, reader.read(entry.size) if entry.kind == "file"
                     else None))
    assert read == expected
