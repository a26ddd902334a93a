"""Serving the web app in tests: uvicorn in a thread, or `kabigate serve` in a process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn


@contextmanager
def serving(app) -> Iterator[str]:
    """The app served by uvicorn on a free port of 127.0.0.1, in a thread: its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


GUARD = 120  # seconds: a guard against a hang, never a measure


class Serve:
    """`kabigate serve` on a new store, on a free port of 127.0.0.1, allowed 600 open files; `env`
    besides the environment (less KABIGATE_API_TOKEN)."""

    def __init__(self, tmp_path: Path, *options: str, env: dict[str, str] | None = None):
        self.log = tmp_path / "serve.log"
        env = {**{k: v for k, v in os.environ.items() if k != "KABIGATE_API_TOKEN"}, **(env or {})}
        with open(self.log, "w") as output:
            self.process = subprocess.Popen(["prlimit", "--nofile=600:600", sys.executable, "-m", "kabigate", "serve",
                                             "--db", str(tmp_path / "store.db"), "--port", "0", *options],
                                            stdout=output, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + GUARD
        while not (found := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", self.log.read_text())):
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)
        self.port = int(found.group(1))

    def stop(self) -> list[str]:
        """Stop it; its log's lines."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=GUARD)
        return self.log.read_text().splitlines()
