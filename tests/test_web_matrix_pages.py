"""The matrix page and API cut into pages when the store holds more driver builds than a page (100;
3 here, over the real test store's 10 builds): totals count the whole matrix, a page reads its own
cells, the page's filters apply to every page, and page links keep them."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from support.realstore import STREAM, build_store

from kabigate.services.matrix import package_matrix
from kabigate.services.packages import package_matrix_json
from kabigate.store import Store
from kabigate.web import create_app

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def db(testdata, tmp_path_factory):
    return build_store(testdata, tmp_path_factory.mktemp("pages") / "store.db")


@pytest.fixture(scope="module")
def client(db):
    with TestClient(create_app(db)) as client:
        yield client


def _drivers(html: str) -> list[str]:
    """The build rows' drivers (each folded under its package's row)."""
    return re.findall(r'<tr class="build-row" data-driver="([^"]+)"', html)


def test_api_pages(client):
    whole = client.get("/api/v1/matrix", params={"stream": STREAM}).json()
    assert whole["page"] == whole["pages"] == 1
    builds = len(whole["builds"])
    seen, cells = [], 0
    for page in range(1, 5):
        part = client.get("/api/v1/matrix", params={"stream": STREAM, "per_page": 3, "page": page}).json()
        assert part["pages"] == -(-builds // 3) and part["page"] == min(page, part["pages"])
        assert part["summary"] == whole["summary"]  # the whole matrix's counts on every page
        ids = {b["id"] for b in part["builds"]}
        assert {c["build_id"] for c in part["cells"]} == ids
        seen += [b["id"] for b in part["builds"]]
        cells += len(part["cells"])
    assert seen == [b["id"] for b in whole["builds"]] and cells == len(whole["cells"])
    assert client.get("/api/v1/matrix", params={"per_page": 0}).status_code == 422


def test_package_pages(client, db):
    """/api/v1/packages reads one page of packages (2 here, over the real store's 5): the pages together
    are `matrix --packages --json`'s packages, each verdict as it says it; the summary counts them all."""
    with Store.open(str(db)) as store:
        whole = package_matrix_json(package_matrix(store, STREAM))
    assert whole["summary"]["packages"] == 5 and "pages" not in whole  # the CLI's: every package, a count per state
    seen = []
    for page in range(1, 5):
        part = client.get("/api/v1/packages", params={"stream": STREAM, "per_page": 2, "page": page}).json()
        assert part["pages"] == 3 and part["page"] == min(page, 3)
        assert part["summary"] == {"kernels": 3, "packages": 5}
        assert part["kernels"] == whole["kernels"]
        seen += part["packages"] if page <= 3 else []
    assert seen == whole["packages"]
    assert client.get("/api/v1/packages", params={"driver": "dahdi*"}).json()["summary"]["packages"] == 1
    assert client.get("/api/v1/packages", params={"per_page": 1001}).status_code == 422


def test_page_links_and_server_side_filters(client, monkeypatch):
    monkeypatch.setattr("kabigate.web.pages.PAGE_SIZE", 3)
    first = client.get("/matrix").text
    assert "Page 1 of 4" in first and len(_drivers(first)) == 3 and 'data-paged="true"' in first
    assert 'href="/matrix?stream=debian-6.1&amp;page=2"' in first
    assert "hidden" not in re.findall(r'<tr class="build-row" data-driver[^>]*>', first)[0]
    last = client.get("/matrix", params={"page": 4}).text
    assert len(_drivers(last)) == 10 - 9 and 'rel="prev"' in last and 'rel="next"' not in last
    acpi = client.get("/matrix", params={"driver": "ACPI"}).text  # 2 builds: one page, filtered by the server
    assert _drivers(acpi) == ["acpi-call", "acpi-call"] and "Page " not in acpi
    assert re.findall(r'<tr class="package-row" data-driver="([^"]+)"', acpi) == ["acpi-call"]  # its builds under it
    failing = client.get("/matrix", params={"reason": "module-layout-mismatch", "page": 1}).text
    assert _drivers(failing) and "acpi-call" in _drivers(failing)
    rows = re.findall(r'<tr class="[a-z-]+" data-driver[^>]*>', failing)  # packages' and builds'
    assert all(re.search(r'module-layout-mismatch', row) for row in rows)
    kept = client.get("/matrix", params={"failing": "true"}).text
    assert "failing=true&amp;page=2" in kept
