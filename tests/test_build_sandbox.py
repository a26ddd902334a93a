"""The build sandbox against hostile sources: Makefiles that try the network, write outside their
folder, fork without end, never exit, print without end, eat memory. Each ends as a failed run
saying why, within its limits, and leaves nothing behind. Needs bubblewrap, no corpus."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kabigate.builder.buildlog import HEAD_BYTES, TAIL_BYTES, BoundedLog, first_error
from kabigate.builder.sandbox import NOBODY, Limits, Sandbox, check_sandbox, require
from kabigate.errors import InputError

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)")


QUICK = Limits(wall_seconds=60)


def make(tmp_path: Path, recipe: str, limits: Limits = QUICK):
    """`make` in the sandbox on a Makefile whose one target runs `recipe`."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "Makefile").write_text(f"all:\n\t{recipe}\n")
    return Sandbox(work, limits=limits).run(["make"])


# Durations no other run of these tests uses (several may run on one host, all as nobody).
TOKEN = f"{os.getpid() % 1000:03d}"


def left_behind(command: str) -> list[str]:
    """nobody's processes running `command` (other builds may run as nobody on this host)."""
    found = subprocess.run(["pgrep", "-U", str(NOBODY), "-f", command], check=False, capture_output=True, text=True)
    return found.stdout.split()


def test_a_build_runs_as_nobody_and_writes_its_work_folder(tmp_path):
    run = make(tmp_path, "id -u > uid; echo built > out.txt")
    assert run.ok, run.log.text()
    assert (tmp_path / "work/uid").read_text().strip() == str(NOBODY)
    assert (tmp_path / "work/out.txt").read_text() == "built\n"


def test_no_network(tmp_path):
    run = make(tmp_path, "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 80), timeout=5)\"")
    assert not run.ok
    assert "Network is unreachable" in run.log.text()


def test_nothing_outside_the_work_folder_is_writable_nor_the_host_secrets_readable(tmp_path):
    outside = tmp_path / "outside"
    run = make(tmp_path, "for f in /etc/evil /usr/evil /evil ../evil /kernel/evil " + str(outside)
               + "; do touch $$f 2>>denied || true; done; cat /etc/shadow 2>>denied; ls /root 2>>denied; true")
    assert run.ok, run.log.text()
    denied = (tmp_path / "work/denied").read_text()
    assert denied.count("Read-only file system") + denied.count("Permission denied") \
        + denied.count("No such file or directory") == 8, denied
    assert not outside.exists() and not Path("/etc/evil").exists() and not Path("/usr/evil").exists()


def test_a_fork_bomb_is_held_by_the_process_limit_and_killed_at_the_deadline(tmp_path):
    started = time.monotonic()
    run = make(tmp_path, f"bash -c 'bomb() {{ bomb | bomb & }}; bomb; sleep 61.{TOKEN}'",
               Limits(wall_seconds=5, processes=64))
    assert run.limit == "timed out after 5 s"
    assert run.status is None and time.monotonic() - started < 15
    assert left_behind("bomb") == left_behind(f"sleep 61.{TOKEN}") == []  # the PID namespace went with bwrap


def test_a_build_that_never_exits_is_killed_with_its_daemons(tmp_path):
    started = time.monotonic()
    run = make(tmp_path, f"setsid sleep 1001.{TOKEN} & sleep 1002.{TOKEN}", Limits(wall_seconds=2))
    assert run.limit == "timed out after 2 s"
    assert "kabigate: timed out after 2 s" in run.log.text()
    assert time.monotonic() - started < 10
    assert left_behind(f"sleep 100[12].{TOKEN}") == []


def test_a_daemon_left_by_a_finished_build_does_not_outlive_it(tmp_path):
    started = time.monotonic()
    run = make(tmp_path, f"(setsid sleep 1003.{TOKEN} >/dev/null 2>&1 &); echo done")
    assert run.ok and time.monotonic() - started < 10
    assert left_behind(f"sleep 1003.{TOKEN}") == []


def test_endless_output_is_cut_and_the_log_keeps_head_and_tail(tmp_path):
    run = make(tmp_path, "echo first line; yes 'a line of output'", Limits(wall_seconds=60, output_bytes=8 << 20))
    assert run.limit == "printed more than 8 MiB"
    text = run.log.text()
    assert text.startswith("echo first line")
    assert "bytes left out" in text and len(text) < HEAD_BYTES + TAIL_BYTES + 200
    assert text.rstrip().endswith("kabigate: printed more than 8 MiB")


def test_a_file_is_capped_in_size(tmp_path):
    run = make(tmp_path, "head -c 64M /dev/zero > big", Limits(wall_seconds=60, file_bytes=1 << 20))
    assert not run.ok
    assert os.path.getsize(tmp_path / "work/big") <= 1 << 20


def test_memory_is_capped(tmp_path):
    run = make(tmp_path, "python3 -c 'bytearray(2 << 30)'", Limits(wall_seconds=60, memory_bytes=512 << 20))
    assert not run.ok
    assert "MemoryError" in run.log.text()


def test_the_first_error_is_the_compilers():
    log = ("make -C /lib/modules/6.1/build M=/build/src\n"
           "/build/src/a.c:3:5: warning: unused variable\n"
           "/build/src/a.c:9:7: error: 'x' undeclared\n"
           "make[1]: *** Error 1\n"
           "ERROR: modpost: \"y\" undefined!\n")
    assert first_error(log, ("/build/src",)) == "a.c:9:7: error: 'x' undeclared"
    assert first_error("ERROR: modpost: \"y\" [/build/src/a.ko] undefined!\n") == \
        'ERROR: modpost: "y" [/build/src/a.ko] undefined!'
    assert first_error("make: *** No rule to make target\n") is None


def test_a_log_file_is_read_by_its_head_and_tail(tmp_path):
    big = tmp_path / "make.log"
    big.write_bytes(b"start\n" + b"x" * (8 << 20) + b"\nthe end\n")
    log = BoundedLog.of_file(big)
    text = log.text()
    assert log.total == big.stat().st_size and len(text) < HEAD_BYTES + TAIL_BYTES + 100
    assert text.startswith("start\n") and text.endswith("the end\n") and "bytes left out" in text
    small = tmp_path / "small.log"
    small.write_text("all of it\n")
    assert BoundedLog.of_file(small).text() == "all of it\n"


def test_a_host_that_cannot_sandbox_is_told_so(tmp_path, monkeypatch):
    check_sandbox(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InputError, match="building needs bubblewrap"):
        check_sandbox(tmp_path)


def test_a_missing_build_tool_is_the_hosts_fault_not_a_failed_build():
    with pytest.raises(InputError, match="this build needs no-such-tool: apt-get install some-package"):
        require("no-such-tool", "some-package")
