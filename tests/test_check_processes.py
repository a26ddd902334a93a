"""A tree judged by this process and a forked child (issue 23: both cores for the whole-tree check)
gives the verdicts one process gives: the same reasons in the same order, the failures carried
through the set (dependency-fails) alike, on real trees and kernels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kabigate.errors import InputError
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import read_modules
from kabigate.model import ReasonCode
from kabigate.processes import map_in_processes
from kabigate.rules import LoadOptions, check_modules

TREE = "6.1.0-56-amd64"


@pytest.fixture(scope="module")
def tree_modules(testdata):
    return read_modules([str(testdata.modules_dir(TREE) / "kernel")])


def _shared_out(indexes, judge):
    """map_in_processes(), each result with the pid of the process that judged it."""
    return map_in_processes(indexes, lambda index: (judge(index), os.getpid()))


@pytest.mark.parametrize("kernel_release", [TREE, "6.1.0-47-amd64"])
def test_a_tree_judged_by_two_processes_is_judged_as_by_one(tree_modules, testdata, kernel_release, monkeypatch):
    """On its own kernel every module loads; on 6.1.0-47's most fail for CRCs and the rest for the
    providers that fail (dependency-fails, inserted where the kernel meets the symbol)."""
    monkeypatch.setenv("KABIGATE_JOBS", "2")
    kernel = load_kernel([str(testdata.modules_dir(kernel_release))])
    alone = check_modules(tree_modules, kernel)
    pids: set[int] = set()

    def recorded(indexes, judge):
        judged = _shared_out(indexes, judge)
        pids.update(pid for _result, pid in judged)
        return [result for result, _pid in judged]

    assert check_modules(tree_modules, kernel, LoadOptions(), recorded) == alone
    assert len(pids) == 2  # a forked child judged part of the tree
    failing = [v for v in alone if not v.loads]
    if kernel_release == TREE:
        assert not failing
    else:
        assert len(failing) == len(tree_modules)
        assert sum(any(r.code == ReasonCode.DEPENDENCY_FAILS for r in v.reasons) for v in failing) > 1000


def test_check_of_a_tree_prints_the_same_report_with_one_or_two_processes(testdata, tmp_path):
    tree = testdata.modules_dir(TREE)
    kernel = testdata.modules_dir("6.1.0-47-amd64")
    reports = []
    for jobs in ("1", "2"):
        done = subprocess.run([sys.executable, "-m", "kabigate", "check", "--json", "-k", str(kernel),
                               str(tree / "kernel")], capture_output=True, text=True,
                              env={**os.environ, "KABIGATE_JOBS": jobs})
        assert done.returncode == 1, done.stderr
        reports.append(json.loads(done.stdout))
    assert reports[0] == reports[1]
    assert len(reports[0]["modules"]) > 4000


@pytest.mark.parametrize("jobs", ["0", "two", "-1"])
def test_a_number_of_processes_that_is_not_one_is_refused(jobs, monkeypatch):
    monkeypatch.setenv("KABIGATE_JOBS", jobs)
    with pytest.raises(InputError, match="KABIGATE_JOBS"):
        map_in_processes(list(range(100)), str)


def test_one_process_maps_in_this_process(monkeypatch):
    monkeypatch.setenv("KABIGATE_JOBS", "1")
    assert set(map_in_processes(list(range(100)), lambda _item: os.getpid())) == {os.getpid()}


def test_a_child_that_dies_or_breaks_is_an_error_not_a_hang_or_a_short_list(monkeypatch):
    """A child killed in the middle of its runs (the kernel's OOM killer), or whose mapping raises
    something other than an InputError (a bug), fails the mapping; results are never missing."""
    monkeypatch.setenv("KABIGATE_JOBS", "2")
    parent = os.getpid()
    items = list(range(640))  # ten runs, this process slow at each: the child takes some

    def mapped(failure):
        def each(item: int) -> int:
            if os.getpid() == parent:
                time.sleep(0.002)
            else:
                failure(item)
            return item * 2
        return each

    def dies(_item):
        os.kill(os.getpid(), signal.SIGKILL)

    def breaks(item):
        raise KeyError(item)

    with pytest.raises(RuntimeError, match="mapping process failed: exit status -9"):
        map_in_processes(items, mapped(dies))
    with pytest.raises(RuntimeError, match="KeyError"):
        map_in_processes(items, mapped(breaks))
    assert map_in_processes(items, mapped(lambda _item: None), then=lambda item, result: result + item) == \
        [item * 3 for item in items]
