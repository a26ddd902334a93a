"""The dashboard in a real browser: `kabigate serve` (uvicorn on 127.0.0.1) over a store of the real
Debian kernels and drivers, driven by Playwright with Debian's own headless Chromium. Loads the
matrix, unfolds a package's builds, filters it, opens a failing cell and reaches its reasons; the overview,
the legend, a partial load, search, a symbol's page and a CSV download; with the write token, the
explain button of a kernel page; screenshots are kept."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.realstore import STREAM, build_store

pytestmark = pytest.mark.realdata
CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/bootstrap); Playwright downloads no browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-write-token"
EXPLAIN_DEADLINE = 600  # seconds: the server reads both kernels' types (and modules') into an empty cache


def _keep(page, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot; with KABIGATE_SCREENSHOTS=DIR, kept there too (docs: the README's)."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if folder := os.environ.get("KABIGATE_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(path.read_bytes())
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def browser_db(testdata, tmp_path_factory):
    return build_store(testdata, tmp_path_factory.mktemp("browser") / "store.db")


@contextlib.contextmanager
def _serving(db: str, env: dict[str, str], log: Path) -> Iterator[str]:
    """`kabigate serve` of `db` on a free port with `env`, until the block ends: its URL."""
    port = _free_port()
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "kabigate", "serve", "--db", db, "--port", str(port)],
                                   stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/api/v1/streams", timeout=5).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"kabigate serve did not start:\n{log.read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(browser_db, tmp_path_factory):
    """`kabigate serve`, read-only (no KABIGATE_API_TOKEN), until the module's tests end."""
    env = {k: v for k, v in os.environ.items() if k != "KABIGATE_API_TOKEN"}
    with _serving(str(browser_db), env, tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


@pytest.fixture
def writing_server(browser_db, tmp_path):
    """`kabigate serve` with a write token over a copy of the store, and an empty explain cache of its
    own: no CRC change's cause is known to it."""
    shutil.copy(browser_db, tmp_path / "store.db")
    env = dict(os.environ, KABIGATE_API_TOKEN=TOKEN, KABIGATE_CACHE=str(tmp_path / "cache"))
    with _serving(str(tmp_path / "store.db"), env, tmp_path / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM} (Debian's chromium package)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_serve_is_read_only_without_a_token(server):
    streams = json.load(urllib.request.urlopen(server + "/api/v1/streams", timeout=10))
    assert streams == {"streams": [STREAM]}
    request = urllib.request.Request(server + "/api/v1/gate", data=b'{"candidate": "6.1.0-50-amd64"}', method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


def test_matrix_filter_and_a_failing_cells_reasons_in_chromium(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requested, errors = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(server + "/matrix")
    assert f"Driver builds x kernels: {STREAM}" in page.inner_text("h1")
    rows = page.locator("#matrix tbody tr")
    all_rows = rows.count()
    assert all_rows >= 10

    # a row a package, its builds folded under it: unfolded by its button, in the page (no request)
    assert page.locator("#matrix tr.package-row:visible").count() == 5
    assert page.locator("#matrix tr.build-row:visible").count() == 0
    page.fill("#driver-filter", "acpi")  # filtered as one types, by matrix.js
    visible = page.locator("#matrix tbody tr:visible")
    assert visible.count() == 1 < all_rows and visible.first.get_attribute("data-driver") == "acpi-call"
    before = len(requested)
    fold = page.locator("#matrix tr.package-row:visible button.fold")
    fold.click()
    assert fold.get_attribute("aria-expanded") == "true" and len(requested) == before
    builds = page.locator("#matrix tr.build-row:visible")
    assert builds.count() == 2 and {builds.nth(i).get_attribute("data-driver") for i in range(2)} == {"acpi-call"}
    page.select_option("#reason-filter", "module-layout-mismatch")
    assert "driver=acpi" in page.url and "reason=module-layout-mismatch" in page.url
    shown = page.locator("#matrix tbody tr:visible").count()
    assert shown >= 2
    matrix_png = tmp_path / "matrix.png"
    page.screenshot(path=str(matrix_png), full_page=True)

    page.goto(page.url)  # the filtered view is a link: the server renders the same rows (folded again)
    page.locator("#matrix tr.package-row:visible button.fold").click()
    assert page.locator("#matrix tbody tr:visible").count() == shown
    assert page.input_value("#driver-filter") == "acpi"

    page.locator("#matrix tr.build-row:visible td.fails a").first.click()
    page.wait_for_url("**/verdicts/**")
    assert "does not load" in page.inner_text("h1")
    reasons = page.inner_text("table.reasons")
    assert "module-layout-mismatch" in reasons and "crc-mismatch" in reasons and "proc_create" in reasons
    verdict_png = tmp_path / "verdict.png"
    page.screenshot(path=str(verdict_png), full_page=True)
    print(f"\nscreenshots: {matrix_png} {verdict_png}")

    assert matrix_png.stat().st_size > 10_000 and verdict_png.stat().st_size > 5_000
    assert errors == []
    assert all(url.startswith(server) for url in requested), "the pages fetch only from the app"
    page.close()


def test_overview_timeline_and_the_matrix_legend_in_chromium(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requested, errors = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(server + "/")
    assert page.inner_text("h1") == "Overview" and STREAM in page.inner_text("section.stream h2")
    assert "working after rebuild" in page.inner_text("p.counts")
    columns = page.locator("svg.timeline a.column")
    assert columns.count() == 3 and page.locator("svg.timeline rect.working").first.bounding_box()["height"] > 10
    overview_png = _keep(page, tmp_path, "dashboard-overview.png")
    columns.nth(1).click()  # a column is its kernel's page
    page.wait_for_url("**/kernels/6.1.0-50-amd64?stream=*")

    page.goto(server + "/matrix")
    assert page.locator("#legend").is_visible() and "partial load" in page.inner_text("#legend")
    partial = page.locator("td.partial").first
    assert partial.is_visible() and partial.inner_text().startswith("31/32")
    page.locator("#matrix tr.package-row[data-driver=dahdi] button.fold").click()  # a package's builds unfolded
    matrix_png = _keep(page, tmp_path, "dashboard-matrix.png")
    print(f"\nscreenshots: {overview_png} {matrix_png}")
    assert errors == [] and all(url.startswith(server) for url in requested)
    page.close()


def test_search_a_symbols_page_and_a_csv_download_in_chromium(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    requested, errors = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(server + "/matrix")
    page.fill("form.search input[name=q]", "acpi")  # every page's search box
    page.press("form.search input[name=q]", "Enter")
    page.wait_for_url("**/search?q=acpi")
    page.click("ul.results a[href='/drivers/acpi-call']")
    page.wait_for_url("**/drivers/acpi-call")

    page.fill("form.search input[name=q]", "proc_create")  # a symbol's exact name: its page
    page.press("form.search input[name=q]", "Enter")
    page.wait_for_url("**/symbols/proc_create")
    assert page.inner_text("h1") == "Symbol proc_create"
    history = page.locator("table.symbol-history tr.changed")
    assert history.count() == 2 and "acpi-call" in page.inner_text("main")
    symbol_png = _keep(page, tmp_path, "dashboard-symbol.png")

    page.goto(server + "/matrix?driver=dahdi")
    with page.expect_download() as download:
        page.click("#matrix-csv")
    assert download.value.suggested_filename == f"matrix-{STREAM}.csv"
    rows = Path(download.value.path()).read_text().splitlines()
    assert rows[0].startswith("driver,version,built_for,6.1.0-47-amd64") and len(rows) == 3
    assert all(row.startswith("dahdi,") for row in rows[1:])
    print(f"\nscreenshot: {symbol_png}")
    assert errors == [] and all(url.startswith(server) for url in requested)
    page.close()


def test_the_explain_button_queues_the_explanation_and_the_causes_appear_in_chromium(writing_server, browser,
                                                                                     tmp_path):
    """A kernel page whose CRC changes have no cached cause offers the explanation; with the write token
    typed in, its button queues the task (explain.js), follows it to its end, and the reloaded page
    names each change's cause."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requested, errors = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))

    def cause_of_proc_create() -> str:
        """Its row's cause cell: among the changes used by fewer builds, folded (unfolded first)."""
        page.click("#changes-in-use details summary")
        return page.inner_text("#changes-in-use tr:has(a[href='/symbols/proc_create']) td:last-child")

    page.goto(writing_server + f"/kernels/6.1.0-50-amd64?stream={STREAM}")
    assert cause_of_proc_create() == "not known: how to find it"
    form = page.locator("form.explain-queue")
    symbols = form.get_attribute("data-symbols").split(" ")
    assert "proc_create" in symbols and form.get_attribute("data-old") == "6.1.0-47-amd64"
    page.fill("form.explain-queue input[name=token]", TOKEN)
    with page.expect_response("**/api/v1/explanations") as answer:
        form.locator("button[type=submit]").click()
    queued = answer.value.json()
    assert answer.value.status == 202 and queued["state"] == "queued" and queued["args"]["symbols"] == sorted(symbols)
    # lasting states only: the task done (explain.js says so, the API too), then the causes on the page
    page.locator("output.explain-state", has_text="explained ").wait_for(timeout=EXPLAIN_DEADLINE * 1000)
    task = json.load(urllib.request.urlopen(f"{writing_server}/api/v1/tasks/{queued['key']}", timeout=10))
    assert task["state"] == "done" and task["result"]["explained"] > 0
    assert page.inner_text("output.explain-state") == (
        f"explained {task['result']['explained']} of {len(symbols)}: reload to see the causes")
    _keep(page, tmp_path, "dashboard-explained.png")
    page.click("output.explain-state a")
    page.wait_for_load_state()
    assert cause_of_proc_create().startswith("most likely struct ")
    assert page.locator("form.explain-queue").count() == (1 if task["result"]["unexplained"] else 0)
    assert errors == [] and all(url.startswith(writing_server) for url in requested)
    page.close()


def test_serve_refuses_a_bad_cache_size_before_serving(tmp_path):
    env = dict(os.environ, KABIGATE_CACHE_MAX="lots")
    result = subprocess.run([sys.executable, "-m", "kabigate", "serve", "--db", f"sqlite:///{tmp_path / 'k.db'}"],
                            check=False, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "kabigate: error: KABIGATE_CACHE_MAX='lots': not a size (bytes, or a number with K, M, G or T)"]
