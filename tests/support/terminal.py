"""Running kabigate as a user at a terminal sees it: chosen output streams on a pseudo-terminal of
a given width, the others on a pipe or nowhere."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios


def run_on_terminal(args: list[str], *, streams: tuple[str, ...] = ("stderr",), columns: int = 120,
                    env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run with `streams` (stdout, stderr) on one pseudo-terminal `columns` wide, any other output
    thrown away; (exit status, what the terminal showed)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, **(env or {}), "TERM": "xterm", "COLUMNS": str(columns)}
    where = {name: terminal if name in streams else subprocess.DEVNULL for name in ("stdout", "stderr")}
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, env=env, **where) as process:
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
