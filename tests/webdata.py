"""The store the web tests serve: the real kernels 6.1.0-47/50/56 in stream debian-6.1 and every
driver of the test data (built for 47 and for 56), as tests/test_gate.py's gate_db builds it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from kabigate.kernels import load_kernel
from kabigate.services.ingest import ingest_driver_build, ingest_kernel, read_driver_builds
from kabigate.store import Store

RELEASES = ("6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64")
STREAM = "debian-6.1"


def build_store(testdata, path: Path, releases: tuple[str, ...] = RELEASES) -> str:
    with Store.open(str(path)) as store:
        for release in releases:
            ingest_kernel(store, load_kernel([str(testdata.kernel_root(release))]), STREAM)
        for driver, builds in testdata.manifest["drivers"].items():
            for entry in builds.values():
                for build in read_driver_builds([str(testdata.root / entry["dir"])], driver, entry["version"]):
                    ingest_driver_build(store, build)
    return str(path)


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
