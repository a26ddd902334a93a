"""Shared fixtures: the real Debian kernels and drivers that scripts/fetch-testdata caches."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
from support.pgserver import create_database, postgres_server
from support.resultsdb import waiverdb_server
from support.testdata import TestData, testdata_root

from kabigate.inputs.kernels import load_kernel


@pytest.fixture(scope="session")
def vmlinux_only(testdata):
    """6.1.0-47-amd64 as insmod sees it in a fresh boot: only vmlinux's exports, until modules
    are loaded by hand (the qemu tests insmod without modprobe)."""
    kernel = load_kernel([str(testdata.kernel_root("6.1.0-47-amd64"))])
    return dataclasses.replace(kernel, exports={n: e for n, e in kernel.exports.items() if e.owner == "vmlinux"})


@pytest.fixture(scope="session")
def testdata() -> TestData:
    root = testdata_root()
    manifest = root / "manifest.json"
    if not manifest.is_file():
        pytest.skip(f"no real test data in {root}: run scripts/fetch-testdata (scripts/test does)")
    return TestData(root, json.loads(manifest.read_text()))


@pytest.fixture(scope="session")
def synthetic_modules(testdata) -> dict[str, Path]:
    """tests/synthetic's modules built against TEST_KERNEL's headers: name -> .ko path.

    Cached in <testdata>/synthetic/<release>/, rebuilt when a file of tests/synthetic is newer."""
    from synthetic.build import TEST_KERNEL, build_cached

    return build_cached(testdata.headers(TEST_KERNEL), TEST_KERNEL, testdata.root / "synthetic" / TEST_KERNEL)


_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    """One private PostgreSQL server for the session (tests/support/pgserver.py); its URL."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def new_database(postgres):
    """Make another empty database on the session's server: new_database(prefix) -> its URL."""
    return lambda prefix: create_database(postgres, f"{prefix}{next(_databases)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A URL of a new, empty database, for each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("new_database")("test")


@pytest.fixture
def waiverdb():
    """A fresh WaiverDB-shaped endpoint's API URL (tests/support/resultsdb.py)."""
    with waiverdb_server() as url:
        yield url
