"""Tables fitted to the terminal: on a real store, `drivers` and `matrix --packages` at a terminal
of a given width stay inside it (a build's module list cut to one line), and piped they are whole."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from support.realstore import build_store
from support.terminal import run_on_terminal

from kabigate.store import Store

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]


@pytest.fixture(scope="module")
def store(testdata, tmp_path_factory):
    return build_store(testdata, tmp_path_factory.mktemp("width") / "store.db")


def shown_lines(args: list[str], columns: int) -> list[str]:
    status, shown = run_on_terminal([*KABIGATE, *args], streams=("stdout",), columns=columns)
    assert status == 0, shown
    lines = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown).replace("\r", "").split("\n")
    return [line.rstrip() for line in lines if line.strip()]


def test_drivers_fit_the_terminal_one_line_a_build_and_are_whole_piped(store):
    with Store.open(store) as opened:
        builds = opened.driver_builds()
    dahdi = next(b for b in builds if b.driver == "dahdi")
    shown = shown_lines(["--db", store, "drivers"], 80)
    assert max(map(len, shown)) <= 80
    rows = [line for line in shown if re.match(r" ?(acpi-call|dahdi|jool|v4l2loopback|xtables-addons) ", line)]
    built = [line for line in rows if re.search(r"6\.1\.0-\d+-amd64\s+tree", line)]
    assert len(built) == len(builds)  # one line a build: 32 dahdi modules cut, not wrapped
    assert all(line.endswith("…") for line in built if line.lstrip().startswith("dahdi"))
    piped = subprocess.run([*KABIGATE, "--db", store, "drivers"], capture_output=True, text=True, check=True).stdout
    assert all(re.search(rf"\b{name}\b", piped) for name in dahdi.modules) and "…" not in piped


def test_the_package_matrix_fits_the_terminal_and_is_whole_piped(store):
    args = ["--db", store, "matrix", "--packages"]
    shown = shown_lines(args, 40)
    assert max(map(len, shown)) <= 40
    piped = subprocess.run([*KABIGATE, *args], capture_output=True, text=True, check=True).stdout
    assert max(map(len, piped.splitlines())) > 40 and "…" not in piped


def test_the_gate_summary_wraps_at_words_on_a_terminal_and_is_one_line_a_finding_piped(store, tmp_path):
    db = tmp_path / "store.db"
    shutil.copy(store, db)
    args = ["--db", str(db), "gate", "--candidate", "6.1.0-50-amd64", "--no-explain"]
    status, shown = run_on_terminal([*KABIGATE, *args], streams=("stdout",), columns=60)
    assert status == 1, shown
    lines = [line.rstrip() for line in re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown).replace("\r", "").split("\n")
             if line.strip()]
    assert max(map(len, lines)) <= 60
    piped = subprocess.run([*KABIGATE, *args], capture_output=True, text=True, check=False).stdout.splitlines()
    regression = next(line for line in piped if "NEEDS_INSPECTION" in line and "acpi-call" in line)
    assert len(regression) > 60  # whole on one line piped; at the terminal, its words in order on indented lines
    start = next(i for i, line in enumerate(lines) if line.startswith(regression[:30]))
    wrapped = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 4):
            break
        wrapped.append(line)
    assert len(wrapped) > 1 and " ".join(line.strip() for line in wrapped).split() == regression.split()
