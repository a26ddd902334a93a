"""The web app through FastAPI's TestClient, on a store of the real Debian kernels and drivers: every
page and API endpoint, the bearer token on writes, hostile and oversized uploads, and errors that
are JSON with a status, never a stack trace."""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from support.hostile import TAR_END, deb, tar_member
from support.realstore import DRIVERS, RELEASES, STREAM, build_store

from kabigate.services.causes import EXPLAIN_SYMBOLS
from kabigate.services.packages import package_verdicts
from kabigate.store import Store
from kabigate.web import create_app

pytestmark = pytest.mark.realdata
TOKEN = "correct-horse-battery-staple-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def web_db(testdata, tmp_path_factory):
    return build_store(testdata, tmp_path_factory.mktemp("web") / "store.db")


@pytest.fixture(scope="module")
def reader(web_db):
    """The app as `kabigate serve` starts it without KABIGATE_API_TOKEN: read-only."""
    with TestClient(create_app(web_db)) as client:
        yield client


@pytest.fixture
def writer(web_db, tmp_path):
    """An app with a token over a copy of the store (writes do not leak into other tests)."""
    copy = tmp_path / "store.db"
    shutil.copy(web_db, copy)
    with TestClient(create_app(str(copy), token=TOKEN, max_upload=8 * MiB)) as client:
        yield client


@pytest.fixture
def empty_writer(tmp_path):
    with TestClient(create_app(str(tmp_path / "empty.db"), token=TOKEN, max_upload=8 * MiB)) as client:
        yield client


def _rows(html: str) -> dict[str, bool]:
    """The matrix page's package rows: driver -> shown (a package is shown when one of its builds is)."""
    return {driver: not hidden for driver, hidden in re.findall(
        r'<tr class="package-row" data-driver="([^"]+)"[^>]*?( hidden)?>', html)}


# -- reading -----------------------------------------------------------------------------------------

def test_api_reads_streams_kernels_and_drivers(reader, testdata):
    assert reader.get("/api/v1/streams").json() == {"streams": [STREAM]}
    kernels = reader.get("/api/v1/kernels", params={"stream": STREAM}).json()["kernels"]
    assert [k["release"] for k in kernels] == list(RELEASES)
    assert kernels[1]["streams"] == [{"stream": STREAM, "position": 1}] and kernels[1]["exports"] > 20000
    one = reader.get("/api/v1/kernels/6.1.0-50-amd64").json()
    assert one["release"] == "6.1.0-50-amd64" and one["gate_runs"] == []
    drivers = reader.get("/api/v1/drivers").json()
    assert len(drivers["builds"]) == 2 * len(DRIVERS) and drivers["build_failures"] == []
    assert {b["driver"] for b in reader.get("/api/v1/drivers", params={"driver": "acpi*"}).json()["builds"]} == {
        "acpi-call"}


def test_api_matrix_and_a_cells_reasons(reader):
    matrix = reader.get("/api/v1/matrix", params={"stream": STREAM}).json()
    summary = matrix["summary"]
    assert summary["cells"] == summary["kernels"] * summary["driver_builds"] == 3 * len(matrix["builds"])
    kernel = {k["release"]: k["id"] for k in matrix["kernels"]}
    build = next(b for b in matrix["builds"] if b["driver"] == "acpi-call" and b["built_for"] == "6.1.0-47-amd64")
    cells = {(c["build_id"], c["kernel_id"]): c for c in matrix["cells"]}
    assert cells[(build["id"], kernel["6.1.0-47-amd64"])]["loads"]
    broken = cells[(build["id"], kernel["6.1.0-50-amd64"])]
    assert not broken["loads"] and broken["first_reason"] == "module-layout-mismatch"
    verdict = reader.get(f"/api/v1/verdicts/{build['id']}/{kernel['6.1.0-50-amd64']}").json()
    reasons = {r["symbol"]: r for m in verdict["modules"] for r in m["reasons"]}
    assert reasons["proc_create"]["code"] == "crc-mismatch"
    assert reasons["proc_create"]["module_crc"] != reasons["proc_create"]["kernel_crc"]


def test_api_kernel_changes_and_driver_history(reader):
    changes = reader.get("/api/v1/kernels/6.1.0-50-amd64/changes").json()
    assert changes["previous"]["release"] == "6.1.0-47-amd64" and changes["stream"] == STREAM
    regressed = {(r["build"]["driver"], r["build"]["built_for"]): r for r in changes["regressions"]}
    assert {"module_layout", "proc_create"} <= set(regressed[("acpi-call", "6.1.0-47-amd64")]["symbols"])
    assert changes["counts"]["regression"] == len(regressed) >= 4
    assert changes["export_changes"]["changed_unlisted"] > 18000  # Debian's ABI bump changes most CRCs
    first = reader.get("/api/v1/kernels/6.1.0-47-amd64/changes").json()
    assert first["previous"] is None and first["regressions"] == []

    history = reader.get("/api/v1/drivers/acpi-call/history").json()
    (stream,) = history["streams"]
    builds = {b["built_for"]: b for b in stream["builds"]}
    (brk,) = builds["6.1.0-47-amd64"]["breaks"]
    assert brk["kernel"] == "6.1.0-50-amd64" and brk["last_loading"] == "6.1.0-47-amd64"
    assert brk["reasons"]["crc-mismatch"] >= 1 and "proc_create" in brk["symbols"]
    assert builds["6.1.0-56-amd64"]["loads_on"] == ["6.1.0-56-amd64"]


def test_pages_render_the_store(reader):
    matrix = reader.get("/matrix")
    assert matrix.status_code == 200 and matrix.headers["content-type"].startswith("text/html")
    assert "Driver builds x kernels: debian-6.1" in matrix.text and '<script src="/static/matrix.js">' in matrix.text
    assert all(_rows(matrix.text).values()) and "acpi-call" in _rows(matrix.text)
    for path in ("/static/kabigate.css", "/static/matrix.js"):
        assert reader.get(path).status_code == 200

    kernel = reader.get("/kernels/6.1.0-50-amd64").text
    assert "Previous kernel: " in kernel and "6.1.0-47-amd64" in kernel and "What it broke" in kernel
    assert "<code>proc_create</code>" in kernel
    assert "6.1.0-56-amd64" in reader.get("/kernels").text
    driver = reader.get("/drivers/acpi-call").text
    assert "first fails on" in driver and "6.1.0-50-amd64" in driver and "crc-mismatch" in driver
    assert 'href="/drivers/acpi-call"' in reader.get("/drivers").text
    assert "No gate runs yet" in reader.get("/gate-runs").text


def test_overview_says_what_works_on_each_streams_newest_kernel(reader, web_db):
    (stream,) = reader.get("/api/v1/overview").json()["streams"]
    assert (stream["stream"], stream["machine"], stream["kernel"]["release"]) == (STREAM, "x86_64", RELEASES[2])
    assert stream["previous"] == RELEASES[1] and stream["gate"] is None and stream["packages"] == len(DRIVERS)
    # 56 has a build made for it of every driver: four load whole, dahdi's loads 31 of its 32 modules
    assert stream["counts"] == {"working": 0, "working_after_rebuild": 4, "broken": 1, "excluded": 0}
    assert stream["broke"] == []
    assert sorted(v["driver"] for v in stream["fixed"]) == sorted(set(DRIVERS) - {"dahdi"})
    assert all(v["state"] == "loads-after-rebuild" for v in stream["fixed"])
    timeline = stream["timeline"]
    assert [p["kernel"] for p in timeline] == list(RELEASES) and [p["working"] for p in timeline] == [4, 0, 4]
    # Debian's ABI bumps: most exports' CRCs change, and module_layout with them
    assert timeline[0]["exports_changed"] is None and all(p["exports_changed"] > 18000 for p in timeline[1:])
    assert [p["abi_bump"] for p in timeline] == [p["module_layout_changed"] for p in timeline] == [False, True, True]
    # the timeline counts working packages from the loading cells alone: as the package verdicts do
    with Store.open(web_db) as store:
        kernels = store.kernels(STREAM)
        packages = package_verdicts(store, kernels)
        assert [p["working"] for p in timeline] == [len(packages.working(k)) for k in kernels]

    page = reader.get("/")
    assert page.status_code == 200 and page.url.path == "/"
    html = page.text
    assert f"Newest kernel: <a href=\"/kernels/{RELEASES[2]}?stream={STREAM}\">" in html and "not gated" in html
    assert "<b>4</b> working after rebuild" in html and "<b>1</b> broken" in html
    assert re.search(r"<b class=\"fixed\">Fixed</b> \(4\)", html) and "dahdi_echocan_oslec" in html
    svg = re.search(r"<svg class=\"timeline\".*?</svg>", html, re.S)[0]
    assert svg.count('class="column"') == 3 and svg.count('class="layout"') == 2 and svg.count('class="abi"') == 2
    assert f"<title>{RELEASES[1]}: 0 of 5 packages work; ABI bump (" in svg and "http" not in svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


def test_matrix_cells_in_words_with_a_legend_and_partial_loads(reader):
    html = reader.get("/matrix").text
    legend = re.search(r'<div class="legend matrix-legend" id="legend">.*?</div>', html, re.S)[0]
    assert "loads whole" in legend and "partial load" in legend and "not judged" in legend
    # the reason names of this matrix's failing cells, as the CLI abbreviates them
    assert "<dt>layout</dt><dd>module-layout-mismatch</dd>" in legend
    acpi = re.search(r'<tr class="build-row" data-driver="acpi-call".*?</tr>', html, re.S)[0]  # built for 47
    assert re.search(r">layout \d+</a></td>", acpi) and not re.search(r'<a href="/verdicts/\d+/\d+">\d+</a>', html)
    # dahdi's build for 47 loads all its modules but dahdi_echocan_oslec there: partial, not plain red
    dahdi = re.search(r'<tr class="build-row" data-driver="dahdi".*?</tr>', html, re.S)[0]
    (cell,) = re.findall(r'<td class="cell fails partial".*?</td>', dahdi, re.S)
    assert f'title="partial load on {RELEASES[0]}: 31/32 modules; fails: dahdi_echocan_oslec (' in cell
    assert ">31/32 <small>dahdi_echocan_oslec</small></a>" in cell
    # a row a package above its builds (folded): its state on each kernel, as `matrix --packages` says it
    packages = dict(re.findall(r'<tbody class="package folded" id="package-\d+">\s*<tr class="package-row" '
                               r'data-driver="([^"]+)".*?</tr>(.*?)</tbody>', html, re.S))
    assert sorted(packages) == sorted(DRIVERS)
    states = {name: re.findall(r'data-state="([a-z-]+)"', row) for name, row in re.findall(
        r'<tr class="package-row" data-driver="([^"]+)"(.*?)</tr>', html, re.S)}
    assert states["acpi-call"] == ["loads-after-rebuild", "broken", "loads-after-rebuild"]
    assert states["dahdi"][0] == "partial" and all(len(re.findall(r'class="build-row"', rows)) == 2
                                                   for rows in packages.values())


def test_a_build_that_failed_is_in_the_column_of_its_kernel(writer, testdata, tmp_path):
    """openrazer-driver's real DKMS build for 6.1.0-56-amd64 failed: the matrix shows it in that column."""
    failure = testdata.manifest["driver_failures"]["openrazer-driver"]["6.1.0-56-amd64"]
    with Store.open(str(tmp_path / "store.db")) as store, store.transaction():
        store.record_build_failure("openrazer-driver", failure["version"], "6.1.0-56-amd64", failure["error"],
                                   log=(testdata.root / failure["log"]).read_text(errors="replace"))
    page = writer.get("/matrix").text
    body = re.search(r'<tbody class="build-failures" id="build-failures">.*?</tbody>', page, re.S)[0]
    (row,) = re.findall(r"<tr data-driver=.*?</tr>", body, re.S)
    assert row.startswith('<tr data-driver="openrazer-driver" data-reasons="" data-build-failed>')
    cells = re.findall(r"<td[^>]*>.*?</td>", row, re.S)
    column = RELEASES.index("6.1.0-56-amd64")
    assert len(cells) == len(RELEASES) and ">build failed</a></td>" in cells[column]
    assert [c for i, c in enumerate(cells) if i != column] == ['<td class="cell"></td>'] * (len(RELEASES) - 1)
    log = writer.get(html.unescape(re.search(r'href="(/api/v1/build-logs/[^"]+)"', cells[column])[1]))
    assert log.status_code == 200 and failure["error"][:30] in log.text
    assert "Builds that failed" not in page.split("</table>")[1]  # placed in the grid, not listed apart
    # the filters treat it as a failing row without a loader reason
    def hidden(**params) -> bool:
        html_page = writer.get("/matrix", params=params).text
        return " hidden" in re.search(r'<tr data-driver="openrazer-driver"[^>]*>', html_page)[0]

    assert not hidden(failing="true") and not hidden(driver="razer")
    assert hidden(driver="acpi") and hidden(reason="module-layout-mismatch")


def test_a_symbols_crc_along_the_stream_and_who_imports_it(reader, web_db, tmp_path):
    story = reader.get("/api/v1/symbols/proc_create").json()
    assert story["symbol"] == "proc_create" and story["stablelisted"] is None
    (stream,) = story["streams"]
    kernels = stream["kernels"]
    assert [k["kernel"] for k in kernels] == list(RELEASES) and all(k["owner"] == "vmlinux" for k in kernels)
    assert [k["changed"] for k in kernels] == [False, True, True] and len({k["crc"] for k in kernels}) == 3
    for after in kernels[1:]:  # a change has its cause, or the command that finds it
        assert (after["cause"] is None) == (after["explain"] is not None)
        if after["explain"]:
            assert after["explain"].startswith("kabigate explain --from ") and after["explain"].endswith(" proc_create")
    # acpi-call's builds import it with the CRC of the kernel each was built for
    crc_on = {k["kernel"]: k["crc"] for k in kernels}
    acpi = [i for i in story["importers"] if i["build"]["driver"] == "acpi-call"]
    assert len(acpi) == 2 and all(i["crcs"] == [crc_on[i["build"]["built_for"]]] for i in acpi)
    assert acpi[0]["modules"] == ["acpi_call.ko"]

    page = reader.get("/symbols/proc_create").text
    assert page.count('<tr class="changed">') == 2 and "Imported by" in page and "acpi-call" in page
    assert "This server has no stablelist" in page
    missing = reader.get("/symbols/no_such_symbol_anywhere")
    assert missing.status_code == 404 and "no stored kernel exports no_such_symbol_anywhere" in missing.text
    assert reader.get("/api/v1/symbols/no_such_symbol_anywhere").status_code == 404
    stablelist = tmp_path / "stablelist"
    stablelist.write_text("proc_create\n")
    with TestClient(create_app(web_db, stablelist_path=str(stablelist))) as listed:
        assert listed.get("/api/v1/symbols/proc_create").json()["stablelisted"] is True
        assert "On the stablelist" in listed.get("/symbols/proc_create").text


def test_search_over_drivers_kernels_and_symbols(reader):
    assert reader.get("/api/v1/search", params={"q": "ACPI"}).json()["drivers"] == ["acpi-call"]
    kernels = reader.get("/api/v1/search", params={"q": "6.1.0-5"}).json()["kernels"]
    assert [k["release"] for k in kernels] == list(RELEASES[1:])
    symbols = reader.get("/api/v1/search", params={"q": "proc_cre"}).json()["symbols"]
    assert symbols[0] == "proc_create" and all(s.startswith("proc_cre") for s in symbols[:3])
    assert all("proc_cre" in s.lower() for s in symbols)
    assert reader.get("/api/v1/search", params={"q": "%"}).json()["symbols"] == []  # LIKE's wildcards are text
    page = reader.get("/search", params={"q": "jool"}).text
    assert '<a href="/drivers/jool">jool</a>' in page and '<a href="/symbols/' in page  # jool's own exports
    exact = reader.get("/search", params={"q": "proc_create"})
    assert exact.url.path == "/symbols/proc_create"  # a symbol's exact name leads to its page
    assert "Nothing in the store" in reader.get("/search", params={"q": "zzzz-nothing"}).text
    assert 'action="/search"' in reader.get("/matrix").text  # every page's navigation has the box


def test_matrix_csv_is_every_page_filtered_as_the_page(reader, monkeypatch):
    monkeypatch.setattr("kabigate.web.pages.PAGE_SIZE", 3)  # the page is cut in pages; the CSV is whole
    assert 'href="/matrix.csv?stream=debian-6.1" id="matrix-csv" download' in reader.get("/matrix").text
    whole = reader.get("/matrix.csv")
    assert whole.headers["content-disposition"] == 'attachment; filename="matrix-debian-6.1.csv"'
    rows = list(csv.reader(io.StringIO(whole.text)))
    assert rows[0] == ["driver", "version", "built_for", *RELEASES] and len(rows) == 1 + 2 * len(DRIVERS)
    acpi = next(r for r in rows if r[0] == "acpi-call" and r[2] == RELEASES[0])
    assert acpi[3] == "loads" and acpi[4].startswith("fails:module-layout-mismatch:")
    failing = list(csv.reader(io.StringIO(reader.get("/matrix.csv", params={"driver": "acpi"}).text)))
    assert [r[0] for r in failing[1:]] == ["acpi-call", "acpi-call"]


def test_matrix_filters_are_in_the_url(reader):
    by_name = _rows(reader.get("/matrix", params={"driver": "ACPI"}).text)
    assert by_name["acpi-call"] and not any(shown for driver, shown in by_name.items() if driver != "acpi-call")
    # dahdi never loads (a staging module Debian does not build), for another reason than the ABI bump
    by_reason = _rows(reader.get("/matrix", params={"reason": "crc-mismatch"}).text)
    other = _rows(reader.get("/matrix", params={"reason": "module-layout-mismatch"}).text)
    assert by_reason != other and other["acpi-call"]
    assert all(_rows(reader.get("/matrix", params={"failing": "true"}).text).values())


def test_a_failing_cell_links_to_its_reasons(reader):
    page = reader.get("/matrix").text
    links = re.findall(r'<td class="cell fails"[^>]*><a href="(/verdicts/\d+/\d+)">', page)
    assert links
    verdict = reader.get(links[0])
    assert verdict.status_code == 200 and "does not load" in verdict.text and "kernel says" in verdict.text


def test_unknown_names_are_404_as_json_or_a_page(reader):
    for path in ("/api/v1/kernels/6.6.6", "/api/v1/drivers/nothing/history", "/api/v1/verdicts/999/1",
                 "/api/v1/gate-runs/not-a-run", "/api/v1/demand"):
        response = reader.get(path)
        assert response.status_code == 404 and response.headers["content-type"] == "application/json", path
        assert set(response.json()) == {"detail"}
    page = reader.get("/kernels/6.6.6")
    assert page.status_code == 404 and "no kernel 6.6.6 in the store" in page.text and "<nav>" in page.text
    assert reader.get("/api/v1/kernels", params={"stream": "nope"}).status_code == 400
    assert reader.get("/api/v1/verdicts/x/1").status_code == 422


def test_openapi_schema_is_served_and_no_cdn_page(reader):
    schema = reader.get("/api/v1/openapi.json").json()
    paths = schema["paths"]
    for path in ("/api/v1/kernels", "/api/v1/kernels/{release}", "/api/v1/kernels/{release}/changes",
                 "/api/v1/drivers", "/api/v1/drivers/{name}/history", "/api/v1/matrix",
                 "/api/v1/verdicts/{build_id}/{kernel_id}", "/api/v1/gate-runs", "/api/v1/gate-runs/{run}",
                 "/api/v1/demand", "/api/v1/gate", "/api/v1/streams"):
        assert path in paths, path
    assert paths["/api/v1/gate"]["post"]["security"] and paths["/api/v1/kernels"]["post"]["security"]
    assert "/matrix" not in paths  # pages are not API
    assert reader.get("/docs").status_code == 404  # Swagger's page would load scripts from a CDN


def test_demand_needs_a_stablelist_and_ranks_symbols(web_db, tmp_path):
    stablelist = tmp_path / "stablelist"
    stablelist.write_text("# promised\nproc_create\nkmalloc_caches\n")
    with TestClient(create_app(web_db, stablelist_path=str(stablelist))) as client:
        demand = client.get("/api/v1/demand").json()
        symbols = {d["symbol"]: d for d in demand["symbols"]}
        assert demand["stream"] == STREAM and symbols["proc_create"]["stablelisted"]
        # Every cell proc_create fails in is refused for module_layout first: it decides none of them.
        assert symbols["proc_create"]["failures"] == 0 and "acpi-call" in symbols["proc_create"]["drivers"]
        assert symbols["oslec_create"]["failures"] == 2  # dahdi_echocan_oslec's first reason
        assert [c["kernel"] for c in symbols["proc_create"]["crc_changed_in"]] == ["6.1.0-50-amd64", "6.1.0-56-amd64"]
        assert not symbols["remove_proc_entry"]["stablelisted"]
        page = client.get("/demand").text
        assert 'href="/demand"' in page and 'href="/demand.csv?stream=debian-6.1" download' in page
        # paged (100 rows) and filtered by the symbol's name, the CSV holding every page of the same filter
        ranked = [d["symbol"] for d in demand["symbols"]]
        assert len(ranked) > 100 and "Page 1 of" in page
        assert len(re.findall(r'<tr[^>]*>\s*<td><a href="/symbols/', page)) == 100
        last = client.get("/demand", params={"page": 99}).text  # beyond the last page: the last
        assert ranked[-1] in last and f"Page {-(-len(ranked) // 100)} of" in last
        proc = client.get("/demand", params={"q": "PROC_"}).text
        assert '<a href="/symbols/proc_create"><code>proc_create</code></a>' in proc and "kmalloc" not in proc
        assert 'href="/demand.csv?stream=debian-6.1&amp;q=PROC_"' in proc
        rows = list(csv.reader(io.StringIO(client.get("/demand.csv").text)))
        assert rows[0][:3] == ["symbol", "stablelisted", "drivers"] and [r[0] for r in rows[1:]] == ranked
        one = client.get("/demand.csv", params={"q": "proc_create"})
        assert one.headers["content-type"].startswith("text/csv")
        assert one.headers["content-disposition"] == 'attachment; filename="demand-debian-6.1.csv"'
        assert {r[0] for r in list(csv.reader(io.StringIO(one.text)))[1:]} == {s for s in ranked if "proc_create" in s}
        changes = client.get("/api/v1/kernels/6.1.0-50-amd64/changes").json()
        assert changes["export_changes"]["changed_stablelisted"] >= 1


# -- writing: the token ------------------------------------------------------------------------------

def test_a_server_without_token_is_read_only(reader):
    for path in ("/api/v1/gate", "/api/v1/kernels", "/api/v1/drivers"):
        response = reader.post(path, json={"candidate": "6.1.0-50-amd64"}, headers=AUTH)
        assert response.status_code == 403 and "read-only" in response.json()["detail"]


def test_writes_need_the_token_which_is_never_logged(writer, caplog):
    caplog.set_level(logging.DEBUG)
    body = {"candidate": "6.1.0-50-amd64"}
    refused = [writer.post("/api/v1/gate", json=body),
               writer.post("/api/v1/gate", json=body, headers={"Authorization": f"Bearer {TOKEN[:-1]}"}),
               writer.post("/api/v1/gate", json=body, headers={"Authorization": f"Bearer {TOKEN}x"}),
               writer.post("/api/v1/gate", json=body, headers={"Authorization": f"Basic {TOKEN}"}),
               writer.post("/api/v1/gate", json=body, headers={"Authorization": TOKEN}),
               writer.post("/api/v1/gate", params={"token": TOKEN}, json=body)]
    for response in refused:
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert writer.get("/api/v1/gate-runs").json() == {"gate_runs": []}
    ran = writer.post("/api/v1/gate", json=body, headers=AUTH)
    assert ran.status_code == 201, ran.text
    # The server's own loggers: the test client's (httpx) logs the URLs it was asked to send.
    server_log = "\n".join(r.getMessage() for r in caplog.records
                           if r.name.split(".")[0] in ("kabigate", "uvicorn", "starlette", "fastapi"))
    assert TOKEN not in server_log


def test_gate_is_recorded_and_shown(writer):
    report = writer.post("/api/v1/gate", json={"candidate": "6.1.0-50-amd64"}, headers=AUTH).json()
    assert report["outcome"] == "NEEDS_INSPECTION" and report["baseline"]["release"] == "6.1.0-47-amd64"
    runs = writer.get("/api/v1/gate-runs", params={"kernel": "6.1.0-50-amd64"}).json()["gate_runs"]
    assert [r["uuid"] for r in runs] == [report["run"]] and runs[0]["baseline"] == "6.1.0-47-amd64"
    stored = writer.get(f"/api/v1/gate-runs/{report['run']}").json()
    assert stored["report"]["counts"] == report["counts"]
    page = writer.get(f"/gate-runs/{report['run']}").text
    assert "NEEDS_INSPECTION" in page and "Regressions" in page and "<code>proc_create</code>" in page
    assert report["run"][:8] in writer.get("/gate-runs").text
    assert report["run"][:8] in writer.get("/kernels/6.1.0-50-amd64").text
    (stream,) = writer.get("/api/v1/overview").json()["streams"]
    assert stream["timeline"][1]["gate"] == {"uuid": report["run"], "outcome": "NEEDS_INSPECTION"}
    assert 'class="gate needs_inspection"' in writer.get("/").text


def test_gate_run_and_kernel_pages_give_each_crc_change_its_cause_or_the_command(writer, tmp_path, monkeypatch):
    """A CRC change the gate run or the kernel page shows names its cause (stored by the gate with
    --explain, or held by the explain cache), and where none is known the page gives the exact
    `kabigate explain` command: run as given, it makes the causes known to both pages."""
    monkeypatch.setenv("KABIGATE_CACHE", str(tmp_path / "cache"))  # empty: no cause known yet
    plain = writer.post("/api/v1/gate", json={"candidate": "6.1.0-50-amd64"}, headers=AUTH).json()
    crc = {c["symbol"] for c in plain["changed_exports_in_use"] if c["change"] == "crc"}
    assert "proc_create" in crc and not any(c["cause"] for c in plain["changed_exports_in_use"])

    def cause_of(page: str, symbol: str) -> str:
        row = re.search(rf'<tr><td><a href="/symbols/{symbol}"><code>{symbol}</code></a>.*?</tr>', page, re.S)[0]
        return " ".join(re.sub(r"<[^>]+>", " ", row.split("<td>")[-1]).split())

    def command_of(page: str) -> str | None:
        found = re.search(r'<p class="explain" id="explain">(.*?)<code class="command">(.*?)</code>', page, re.S)
        return found and html.unescape(found[2])

    run_page, kernel_page = (writer.get(f"/gate-runs/{plain['run']}").text, writer.get("/kernels/6.1.0-50-amd64").text)
    for page in (run_page, kernel_page):
        assert cause_of(page, "proc_create") == "not known: how to find it"
        assert f"{len(crc)} CRC changes from 6.1.0-47-amd64 to 6.1.0-50-amd64 without a known cause" in page
    command = command_of(run_page)
    assert command == command_of(kernel_page)
    args = shlex.split(command)
    with Store.open(str(tmp_path / "store.db")) as store:
        old, new = (store.find_kernels(r)[0] for r in ("6.1.0-47-amd64", "6.1.0-50-amd64"))
    assert len(crc) > EXPLAIN_SYMBOLS  # too many to name: the command explains every changed export
    assert args == ["kabigate", "explain", *[a for s in old.sources for p in s.split(", ") for a in ("--from", p)],
                    *[a for s in new.sources for p in s.split(", ") for a in ("--to", p)]]
    done = subprocess.run([sys.executable, "-m", "kabigate", *args[1:]], capture_output=True, text=True, check=False,
                          env={**os.environ, "KABIGATE_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 1, done.stderr  # CRCs changed
    # the cache holds both kernels' types now: both pages name every cause, and give no command
    for page in (writer.get(f"/gate-runs/{plain['run']}").text, writer.get("/kernels/6.1.0-50-amd64").text):
        assert cause_of(page, "proc_create").startswith("most likely struct ") and command_of(page) is None
        regressions = re.search(r"<h[23]>(Regressions|What it broke).*?</table>", page, re.S)[0]
        assert re.search(r'<small class="cause">CRC changes most likely from\s+<code>struct \w+</code> \(\d+\)',
                         regressions)
    # a gate with --explain stores its causes: its page shows them with an empty cache too
    explained = subprocess.run([sys.executable, "-m", "kabigate", "gate", "--db", str(tmp_path / "store.db"),
                                "--candidate", "6.1.0-50-amd64", "--explain", "--json"], capture_output=True, text=True,
                               check=False, env={**os.environ, "KABIGATE_CACHE": str(tmp_path / "cache")})
    report = json.loads(explained.stdout)
    stored = {c["symbol"]: c["cause"] for c in report["changed_exports_in_use"] if c["change"] == "crc"}
    monkeypatch.setenv("KABIGATE_CACHE", str(tmp_path / "another-cache"))
    page = writer.get(f"/gate-runs/{report['run']}").text
    assert command_of(page) is None
    assert cause_of(page, "proc_create").startswith(f"most likely {stored['proc_create']['most_likely']['type']} ")
    assert command_of(writer.get(f"/gate-runs/{plain['run']}").text) == command  # nothing cached here


def test_a_crc_change_is_explained_on_request_with_the_write_token(writer, reader, tmp_path, monkeypatch):
    """Where the cache has no cause of a CRC change, the page offers the explanation beside its command:
    POST /api/v1/explanations (the token's) records a task the server runs; then the page names the cause."""
    monkeypatch.setenv("KABIGATE_CACHE", str(tmp_path / "cache"))  # empty: no cause known yet
    page = writer.get("/symbols/proc_create").text
    (form,) = re.findall(r'<form class="explain-queue"[^>]*>', page)[:1]
    assert f'data-old="{RELEASES[0]}" data-new="{RELEASES[1]}" data-stream="{STREAM}" ' \
           'data-symbols="proc_create"' in form
    assert 'src="/static/explain.js"' in page and "explain-queue" not in reader.get("/symbols/proc_create").text
    body = {"old": RELEASES[0], "new": RELEASES[1], "stream": STREAM, "symbols": ["proc_create"]}
    assert writer.post("/api/v1/explanations", json=body).status_code == 401
    assert writer.post("/api/v1/explanations", json={**body, "new": "6.6.6"}, headers=AUTH).status_code == 404
    assert writer.post("/api/v1/explanations", json={**body, "new": RELEASES[0]}, headers=AUTH).status_code == 400
    queued = writer.post("/api/v1/explanations", json=body, headers=AUTH)
    assert queued.status_code == 202 and queued.json()["key"].startswith("explain:")
    assert queued.json()["kind"] == "explain" and queued.json()["args"]["symbols"] == ["proc_create"]
    deadline = time.monotonic() + 300
    while (task := writer.get(f"/api/v1/tasks/{queued.json()['key']}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, task
        time.sleep(0.2)
    assert task["state"] == "done" and task["result"] == {"explained": 1, "unexplained": 0}
    story = writer.get("/api/v1/symbols/proc_create").json()
    change = story["streams"][0]["kernels"][1]  # 47 -> 50
    assert change["cause"]["most_likely"] and change["explain"] is None
    again = writer.post("/api/v1/explanations", json=body, headers=AUTH).json()  # the same request: done once
    assert again["key"] == task["key"] and again["state"] == "done" and again["attempts"] == 1
    assert writer.get("/api/v1/tasks/explain:nothing").status_code == 404


def test_gate_run_kernel_and_driver_pages_link_their_downloads(writer):
    report = writer.post("/api/v1/gate", json={"candidate": "6.1.0-50-amd64"}, headers=AUTH).json()

    def links(url: str) -> tuple[str, str]:
        page = writer.get(url).text
        return (html.unescape(re.search(r'<a href="([^"]+)" (?:id|class)="download-csv" download>CSV</a>', page)[1]),
                html.unescape(re.search(r'<a href="([^"]+)" (?:id|class)="download-json">JSON</a>', page)[1]))

    def classes(rows: list[dict]) -> list[tuple]:
        return [(r["driver"], r["built_for"] or "", r["class"], r["outcome"]) for r in rows]

    # the gate run: a row a build, as its report says
    csv_url, json_url = links(f"/gate-runs/{report['run']}")
    download = writer.get(csv_url)
    assert f'filename="gate-{report["run"]}-builds.csv"' in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert classes(rows) == classes(report["builds"])
    acpi = next(r for r in rows if r["driver"] == "acpi-call" and r["class"] == "regression")
    assert "proc_create" in acpi["symbols"].split()
    assert writer.get(json_url).json()["report"]["counts"] == report["counts"]
    # the kernel page compares with the kernel before it: the gate's baseline, so the same classes
    csv_url, json_url = links("/kernels/6.1.0-50-amd64")
    assert classes(list(csv.DictReader(io.StringIO(writer.get(csv_url).text)))) == classes(rows)
    assert writer.get(json_url).json()["counts"] == report["counts"]
    first = writer.get(f"/kernels/{RELEASES[0]}/builds.csv")
    assert first.status_code == 404 and "has no kernel before it in debian-6.1" in first.text
    # the driver page: its builds on the stream's kernels, and its history
    csv_url, json_url = links("/drivers/dahdi")
    table = list(csv.reader(io.StringIO(writer.get(csv_url).text)))
    assert table[0] == ["driver", "version", "built_for", *RELEASES] and {row[0] for row in table[1:]} == {"dahdi"}
    whole = list(csv.reader(io.StringIO(writer.get("/matrix.csv").text)))
    assert table[1:] == [row for row in whole if row[0] == "dahdi"] and len(table) == 3  # its two builds, as there
    assert writer.get(json_url).json()["driver"] == "dahdi"
    assert writer.get("/drivers/no-such-driver/matrix.csv").status_code == 404


def test_gate_with_waivers_and_policy(writer):
    waivers = ('[[waiver]]\ndriver = "acpi-call"\nkernel = "6.1.0-5*"\nreason = "rebuilt for every ABI"\n'
               'who = "jane@example.org"\nexpires = 2099-01-31\n')
    report = writer.post("/api/v1/gate", headers=AUTH, json={
        "candidate": "6.1.0-50-amd64", "waivers": waivers, "driver": "acpi-call"}).json()
    (regression,) = [b for b in report["builds"] if b["class"] == "regression"]
    assert regression["outcome"] == "INFO" and regression["waivers"][0]["who"] == "jane@example.org"
    assert "waiver waivers#1" in writer.get(f"/gate-runs/{report['run']}").text
    # the store holds no build for 50: the packages that loaded on 47 break there, and none works on it
    policy = ('[outcomes]\nregression_unlisted = "PASSED"\npackage_not_rebuilt = "PASSED"\n'
              '[coverage]\nrequire_working_packages = false\n')
    assert writer.post("/api/v1/gate", headers=AUTH, json={"candidate": "6.1.0-50-amd64", "policy": policy}
                       ).json()["outcome"] in ("PASSED", "INFO")
    bad = writer.post("/api/v1/gate", headers=AUTH, json={"candidate": "6.1.0-50-amd64", "waivers": "[[waiver"})
    assert bad.status_code == 400 and "waivers" in bad.json()["detail"]
    assert writer.post("/api/v1/gate", headers=AUTH, json={"candidate": "9.9.9"}).status_code == 404
    assert writer.post("/api/v1/gate", headers=AUTH, json={}).status_code == 422


# -- writing: ingest ---------------------------------------------------------------------------------

def test_ingest_a_kernel_and_a_driver_by_upload(empty_writer, testdata):
    symvers = testdata.headers("6.1.0-56-amd64") / "Module.symvers"
    kernel = empty_writer.post("/api/v1/kernels", headers=AUTH,
                               data={"stream": "uploads",
                                     "vermagic": "6.1.0-56-amd64 SMP preempt mod_unload modversions "},
                               files=[("files", ("Module.symvers", symvers.read_bytes()))])
    assert kernel.status_code == 201, kernel.text
    assert kernel.json()["kernel"]["release"] == "6.1.0-56-amd64" and kernel.json()["created"]
    assert kernel.json()["kernel"]["sources"] == ["upload:Module.symvers"]
    module = testdata.driver_dir("acpi-call", "6.1.0-47-amd64") / "acpi_call.ko"
    driver = empty_writer.post("/api/v1/drivers", headers=AUTH, data={"name": "acpi-call", "version": "1.2.2"},
                               files=[("files", ("acpi_call.ko", module.read_bytes()))])
    assert driver.status_code == 201, driver.text
    (build,) = driver.json()["builds"]
    assert build["driver"] == "acpi-call" and build["verdicts"] == 1 and build["source"] == "upload"
    matrix = empty_writer.get("/api/v1/matrix").json()
    (cell,) = matrix["cells"]
    assert not cell["loads"] and cell["first_reason"] == "module-layout-mismatch"
    again = empty_writer.post("/api/v1/drivers", headers=AUTH, data={"name": "acpi-call", "version": "1.2.2"},
                              files=[("files", ("acpi_call.ko", module.read_bytes()))])
    assert again.json()["builds"][0]["created"] is False


def _refused(response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert fragment in str(detail) and "Traceback" not in response.text and "/tmp/" not in response.text


def test_hostile_uploads_are_refused_with_json_errors(empty_writer):
    post = empty_writer.post
    _refused(post("/api/v1/drivers", headers=AUTH, files=[("files", ("../escape.ko", b"x"))]), 400, "file name")
    _refused(post("/api/v1/drivers", headers=AUTH, files=[("files", (".hidden.ko", b"x"))]), 400, "file name")
    _refused(post("/api/v1/drivers", headers=AUTH, files=[("files", ("a.ko", b"x")), ("files", ("a.ko", b"y"))]),
             400, "uploaded twice")
    _refused(post("/api/v1/drivers", headers=AUTH, files=[("files", ("a.ko", b"\x7fELF" + bytes(60)))]), 400,
             "upload:a.ko")
    _refused(post("/api/v1/drivers", headers=AUTH, data={"name": "x"}), 400, "nothing to ingest")
    _refused(post("/api/v1/drivers", headers=AUTH, data={"urls": "file:///etc/passwd"}), 400, "not an http(s) URL")
    _refused(post("/api/v1/kernels", headers=AUTH, files=[("files", ("k.rpm", b"\xed\xab\xee\xdb" + bytes(200)))]),
             400)
    escape = deb(gzip.compress(tar_member(b"../../lib/modules/x/escape.ko", b"\x7fELF") + TAR_END, mtime=0))
    _refused(post("/api/v1/drivers", headers=AUTH, files=[("files", ("evil_1_amd64.deb", escape))]), 400)
    bomb = deb(gzip.compress(tar_member(b"./zero.ko", bytes(200 * MiB)) + TAR_END, compresslevel=9, mtime=0))
    assert len(bomb) < MiB
    _refused(post("/api/v1/drivers", headers=AUTH, files=[("files", ("bomb_1_amd64.deb", bomb))]), 400)
    assert empty_writer.get("/api/v1/drivers").json()["builds"] == []


def test_oversized_bodies_are_refused_before_they_are_read(empty_writer):
    big = bytes(9 * MiB)
    _refused(empty_writer.post("/api/v1/drivers", headers=AUTH, files=[("files", ("big.ko", big))]), 413, "larger")

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(9):
            yield bytes(MiB)
    _refused(empty_writer.post("/api/v1/drivers", headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"},
                               content=chunks()), 413, "larger")


def test_unexpected_errors_are_json_500_without_details(web_db, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("secret internals /etc/shadow")
    monkeypatch.setattr("kabigate.web.api.build_matrix", broken)
    monkeypatch.setattr("kabigate.web.pages.build_matrix", broken)
    with TestClient(create_app(web_db), raise_server_exceptions=False) as client:
        api = client.get("/api/v1/matrix")
        assert api.status_code == 500 and api.json() == {"detail": "internal server error"}
        page = client.get("/matrix")
        assert page.status_code == 500 and "secret" not in page.text and "Traceback" not in page.text


def test_row_ids_beyond_64_bits_are_422_not_500(reader):
    huge = 3994962390526432113351645227646976  # found by schemathesis: an OverflowError in SQLite
    for path in (f"/api/v1/verdicts/{huge}/1", f"/api/v1/verdicts/1/{huge}", f"/verdicts/{huge}/1"):
        assert reader.get(path).status_code == 422
