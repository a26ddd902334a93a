"""Readers and a writer at once: 20 clients read the matrix from `kabigate serve`'s app (uvicorn,
SQLite in WAL mode) while a kernel is ingested through the API. No request fails, and no read is
torn: every matrix has a verdict for each of its builds on each of its kernels."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest
from support.realstore import DRIVERS, STREAM, build_store
from support.webdata import serving

from kabigate.web import create_app

pytestmark = pytest.mark.realdata
TOKEN = "concurrency-test-token"
READERS = 20


@pytest.fixture
def served(testdata, tmp_path):
    db = build_store(testdata, tmp_path / "store.db", ("6.1.0-47-amd64", "6.1.0-50-amd64"))
    with serving(create_app(db, token=TOKEN)) as url:
        yield url


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "kabigate-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
              f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n"
              for name, (filename, data) in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_readers_see_whole_matrices_while_a_kernel_is_ingested(served, testdata):
    writing = threading.Event()
    written = threading.Event()
    failures: list[str] = []
    kernel_counts: set[int] = set()

    def read() -> None:
        reads = 0
        while not written.is_set() or reads < 5:
            try:
                with urllib.request.urlopen(f"{served}/api/v1/matrix?stream={STREAM}", timeout=60) as response:
                    matrix = json.load(response)
                summary = matrix["summary"]
                if summary["cells"] != summary["kernels"] * summary["driver_builds"]:
                    failures.append(f"torn read: {summary}")
                kernel_counts.add(summary["kernels"])
                urllib.request.urlopen(f"{served}/matrix?stream={STREAM}", timeout=60).close()
            except Exception as error:  # noqa: BLE001 (every failure is the finding)
                body = error.read()[:500] if hasattr(error, "read") else b""
                failures.append(repr(error) + repr(getattr(error, "url", "")) + repr(body))
            reads += 1
            writing.set()

    readers = [threading.Thread(target=read) for _ in range(READERS)]
    for reader in readers:
        reader.start()
    writing.wait(timeout=60)
    symvers = (testdata.headers("6.1.0-56-amd64") / "Module.symvers").read_bytes()
    vermagic = "6.1.0-56-amd64 SMP preempt mod_unload modversions "
    body, content_type = _multipart({"stream": STREAM, "vermagic": vermagic},
                                    {"files": ("Module.symvers", symvers)})
    request = urllib.request.Request(f"{served}/api/v1/kernels", data=body, method="POST", headers={
        "Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            ingested = json.load(response)
    finally:
        written.set()
        for reader in readers:
            reader.join(timeout=300)
    assert ingested["created"] and ingested["verdicts"] == 2 * len(DRIVERS)
    assert failures == []
    assert kernel_counts == {2, 3}  # reads before the ingest and after it
