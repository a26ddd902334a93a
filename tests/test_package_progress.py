"""A progress bar while kernel packages are read, on a terminal only (`kabigate check -k image.deb
-k headers.deb` takes seconds); none when stderr is a pipe."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

pytestmark = pytest.mark.realdata
RELEASE = "6.1.0-56-amd64"


def run_on_terminal(args: list[str]) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal; (exit status, what the terminal showed)."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal,
                          env=env) as process:
        os.close(terminal)
        shown = bytearray()
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        status = process.wait(timeout=600)
    os.close(controller)
    return status, shown.decode(errors="replace")


def test_check_shows_progress_reading_kernel_packages(testdata):
    debs = [str(testdata.root / deb) for deb in testdata.manifest["stream_kernels"][RELEASE]["debs"]]
    module = testdata.root / testdata.manifest["drivers"]["acpi-call"][RELEASE]["dir"] / "acpi_call.ko"
    args = [sys.executable, "-m", "kabigate", "check", "-k", debs[0], "-k", debs[1], str(module)]
    status, shown = run_on_terminal(args)
    assert status == 0
    assert "reading kernel packages" in shown and "2/2" in shown
    piped = subprocess.run(args, capture_output=True, text=True, check=False)
    assert piped.returncode == 0 and piped.stderr == ""
