"""The dashboard's pages: server-rendered HTML, each at a URL that can be pasted into a bug.

Filters are query parameters (the matrix's driver and reason filters too), so a filtered view is a
link; the matrix's script only applies the same filters as one types, and keeps the URL in step."""

from __future__ import annotations

import datetime
import glob
import re
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from kabigate.errors import InputError
from kabigate.reports.gate import gate_builds_csv, gate_json
from kabigate.reports.verdicts import SHORT_REASONS, cell_text
from kabigate.services.causes import with_causes
from kabigate.services.evidence import demand_csv, symbol_demand
from kabigate.services.gate import gate_run_causes, kernel_story, story_causes
from kabigate.services.matrix import (
    PAGE_SIZE,
    MatrixFilter,
    build_matrix,
    driver_history,
    matrix_csv,
    page_packages,
    partial_loads,
    whole_matrix_csv,
)
from kabigate.services.notify import event_feed
from kabigate.services.overview import overview
from kabigate.services.packages import why_not
from kabigate.services.symbols import SEARCH_LIMIT, search
from kabigate.store import Cell, Store
from kabigate.vocabulary import SubscriptionTarget
from kabigate.web.deps import Settings, request_store, settings_of, templates
from kabigate.web.views import (
    ArchQuery,
    RowId,
    find_cell,
    find_gate_run,
    find_kernel,
    find_symbol,
    pick_architecture,
)

router = APIRouter(include_in_schema=False)
StoreDep = Annotated[Store, Depends(request_store)]
SettingsDep = Annotated[Settings, Depends(settings_of)]
# Demand rows on one page: the ranking puts what matters first; the API and the CSV have them all.
DEMAND_ROWS = 100


def heat(cell: Cell) -> str:
    """A failing matrix cell's shade: darker the more symbols are at fault (as in the CLI's matrix.html);
    a function, not a template macro: a page of the 1,000 x 200 store has 40,000 cells."""
    return f"hsl(0, 70%, {max(58 - cell.failing_symbols * 2, 28)}%)"


def _page(request: Request, template: str, **context):
    context["has_stablelist"] = request.app.state.settings.stablelist is not None
    context["has_token"] = request.app.state.settings.token is not None  # writes: explain.js's buttons
    return templates.TemplateResponse(request, template, context)


@router.get("/")
def overview_page(request: Request, store: StoreDep, arch: ArchQuery = None):
    """What a maintainer opens first: each stream's newest kernel, its packages, what changed, a timeline;
    a section per stream and architecture (`arch`: that architecture's only)."""
    architectures, _ = pick_architecture(store, None, arch)
    return _page(request, "overview.html", streams=overview(store, arch), why_not=why_not,
                 architectures=architectures, arch=arch)


@router.get("/matrix")
def matrix_page(request: Request, store: StoreDep, stream: str | None = None, arch: ArchQuery = None,
                driver: str = "", reason: str = "", failing: bool = False,
                page: Annotated[int, Query(ge=1, le=1_000_000)] = 1):
    """The heat map. A store of more than PAGE_SIZE builds is paged: the filters are applied by the
    server (then matrix.js narrows one page as one types); a smaller one is one page that matrix.js filters.
    A stream of several architectures is shown one architecture at a time (`arch`; the first by default)."""
    streams = store.streams()
    stream = stream or (streams[0] if streams else None)
    architectures, arch = pick_architecture(store, stream, arch)
    where = MatrixFilter(driver, reason, failing)
    matrix = build_matrix(store, stream, page=page, page_size=PAGE_SIZE, where=where, arch=arch)
    rows = []
    for build in matrix.builds:
        cells = [matrix.cell(build, kernel) for kernel in matrix.kernels]
        rows.append((build, cells, where.keeps(build, matrix.failing_reasons(build))))
    # a row a package, its verdict on each kernel, and its builds (this page's) folded underneath
    packages = page_packages(store, matrix)
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row[0].driver, []).append(row)
    package_rows = [(name, [packages.verdict(name, k) for k in matrix.kernels], builds,
                     " ".join(sorted(set().union(*(matrix.failing_reasons(b) for b, _, _ in builds)))),
                     any(shown for _, _, shown in builds)) for name, builds in groups.items()]
    placed, elsewhere = matrix.placed_failures()
    # a build that failed, in the column of the kernel it was built for: on the first page of a paged matrix
    failed = [(f, where.keeps_failure(f)) for f in placed] if matrix.page == 1 else []
    query = {key: value for key, value in (("stream", stream), ("arch", arch), ("driver", driver), ("reason", reason),
                                           ("failing", "true" if failing else "")) if value}
    return _page(request, "matrix.html", matrix=matrix, streams=streams, stream=stream, rows=rows,
                 package_rows=package_rows,
                 architectures=architectures, arch=arch, failed=failed, failures_elsewhere=elsewhere,
                 summary=matrix.summary(), reason_codes=matrix.reasons(), driver=driver, reason=reason,
                 failing=failing, page_query=urlencode(query), partial=partial_loads(store, matrix),
                 cell_text=cell_text, heat=heat, short_reasons=SHORT_REASONS)


@router.get("/matrix.csv")
def matrix_csv_download(store: StoreDep, stream: str | None = None, arch: ArchQuery = None, driver: str = "",
                        reason: str = "", failing: bool = False) -> Response:
    """The whole matrix of a stream (every page) and architecture, filtered as the page is; sent as it is written."""
    streams = store.streams()
    stream = stream or (streams[0] if streams else None)
    _architectures, arch = pick_architecture(store, stream, arch)
    where = MatrixFilter(driver, reason, failing)
    return _csv(whole_matrix_csv(store, stream, arch, where if where != MatrixFilter() else None),
                f"matrix-{stream or 'all'}" + (f"-{arch}" if arch else ""))


def _csv(text: str | Iterator[str], name: str) -> Response:
    safe = re.sub(r"[^A-Za-z0-9._+-]", "_", name)  # a stream's name, made a file name
    headers = {"Content-Disposition": f'attachment; filename="{safe}.csv"'}
    if isinstance(text, str):
        return Response(text, media_type="text/csv; charset=utf-8", headers=headers)
    return StreamingResponse(text, media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/verdicts/{build_id}/{kernel_id}")
def verdict_page(request: Request, store: StoreDep, build_id: RowId, kernel_id: RowId):
    build, kernel, cell = find_cell(store, build_id, kernel_id)
    return _page(request, "verdict.html", build=build, kernel=kernel, cell=cell,
                 modules=with_causes(store, build, kernel, store.verdict_detail(build_id, kernel_id) or []))


@router.get("/kernels")
def kernels_page(request: Request, store: StoreDep):
    groups: dict[str, list] = {}
    for kernel in store.kernels():
        for name in [s for s, _ in kernel.streams] or ["(no stream)"]:
            groups.setdefault(name, []).append(kernel)
    return _page(request, "kernels.html", groups=groups)


@router.get("/kernels/{release}")
def kernel_page(request: Request, store: StoreDep, settings: SettingsDep, release: str, stream: str | None = None):
    story = kernel_story(store, find_kernel(store, release, stream), stream, settings.stablelist)
    return _page(request, "kernel.html", story=story, result=story.result, causes=story_causes(store, story))


@router.get("/kernels/{release}/builds.csv")
def kernel_builds_csv(store: StoreDep, settings: SettingsDep, release: str, stream: str | None = None) -> Response:
    """The kernel page's comparison with the kernel before it: each build's class, as a gate run's download."""
    story = kernel_story(store, find_kernel(store, release, stream), stream, settings.stablelist)
    if story.result is None:
        raise HTTPException(404, f"{release} has no kernel before it{' in ' + story.stream if story.stream else ''}: "
                                 "nothing compared")
    return _csv(gate_builds_csv(gate_json(story.result)), f"{release}-{story.stream}-builds")


@router.get("/drivers")
def drivers_page(request: Request, store: StoreDep):
    drivers: dict[str, list] = {}
    for build in store.driver_builds():
        drivers.setdefault(build.driver, []).append(build)
    return _page(request, "drivers.html", drivers=drivers, failures=store.build_failures())


@router.get("/drivers/{name}")
def driver_page(request: Request, store: StoreDep, name: str, stream: str | None = None):
    if not store.driver_builds(name):
        raise HTTPException(404, f"no driver named {name} in the store")
    return _page(request, "driver.html", name=name, histories=driver_history(store, name, stream),
                 failures=store.build_failures(name))


@router.get("/drivers/{name}/matrix.csv")
def driver_matrix_csv(store: StoreDep, name: str, stream: str | None = None) -> Response:
    """The driver's builds on a stream's kernels (the first stream by default), as /matrix.csv gives them."""
    if not store.driver_builds(glob.escape(name)):
        raise HTTPException(404, f"no driver named {name} in the store")
    streams = store.streams()
    stream = stream or (streams[0] if streams else None)
    return _csv(matrix_csv(build_matrix(store, stream, driver=glob.escape(name))), f"{name}-{stream or 'all'}")


@router.get("/gate-runs")
def gate_runs_page(request: Request, store: StoreDep):
    kernels = {k.id: k for k in store.kernels()}
    return _page(request, "gate_runs.html", runs=store.gate_runs(), kernels=kernels)


@router.get("/gate-runs/{run}")
def gate_run_page(request: Request, store: StoreDep, run: str):
    record = find_gate_run(store, run)
    report = store.gate_report(run)
    return _page(request, "gate_run.html", run=record, report=report, causes=gate_run_causes(store, record, report))


@router.get("/gate-runs/{run}/builds.csv")
def gate_run_csv(store: StoreDep, run: str) -> Response:
    find_gate_run(store, run)
    return _csv(gate_builds_csv(store.gate_report(run)), f"gate-{run}-builds")


@router.get("/waivers")
def waivers_page(request: Request, store: StoreDep):
    return _page(request, "waivers.html", waivers=store.waivers(include_revoked=True), today=datetime.date.today())


@router.get("/symbols/{name}")
def symbol_page(request: Request, store: StoreDep, settings: SettingsDep, name: str):
    return _page(request, "symbol.html", story=find_symbol(store, name, settings.stablelist))


@router.get("/search")
def search_page(request: Request, store: StoreDep, q: Annotated[str, Query(max_length=200)] = ""):
    found = search(store, q)
    if found.symbols and found.symbols[0] == found.query and not found.drivers and not found.kernels:
        return RedirectResponse(f"/symbols/{quote(found.query)}", 302)  # a symbol's exact name: its page
    return _page(request, "search.html", found=found, limit=SEARCH_LIMIT)


def _demand(store: Store, settings: Settings, stream: str | None, driver: str | None, q: str):
    if settings.stablelist is None:
        raise HTTPException(404, "this server has no stablelist: start it with kabigate serve --stablelist FILE")
    streams = store.streams()
    demand = symbol_demand(store, settings.stablelist, stream or (streams[0] if streams else None), driver)
    return demand, streams, [d for d in demand.symbols if q.lower() in d.symbol.lower()]


@router.get("/demand")
def demand_page(request: Request, store: StoreDep, settings: SettingsDep, stream: str | None = None,
                driver: str | None = None, q: Annotated[str, Query(max_length=200)] = "",
                page: Annotated[int, Query(ge=1, le=1_000_000)] = 1):
    """The ranking, DEMAND_ROWS a page; `q`: symbols whose name contains it."""
    demand, streams, symbols = _demand(store, settings, stream, driver, q)
    pages = max(1, -(-len(symbols) // DEMAND_ROWS))
    page = min(page, pages)
    query = {key: value for key, value in (("stream", demand.stream), ("driver", driver), ("q", q)) if value}
    return _page(request, "demand.html", demand=demand, shown=len(symbols), page=page, pages=pages,
                 symbols=symbols[(page - 1) * DEMAND_ROWS:page * DEMAND_ROWS], streams=streams, driver=driver or "",
                 q=q, page_query=urlencode(query))


@router.get("/demand.csv")
def demand_csv_download(store: StoreDep, settings: SettingsDep, stream: str | None = None,
                        driver: str | None = None, q: Annotated[str, Query(max_length=200)] = "") -> Response:
    """Every symbol of the ranking the page shows (all its pages)."""
    demand, _streams, symbols = _demand(store, settings, stream, driver, q)
    return _csv(demand_csv(symbols), f"demand-{demand.stream}")


@router.get("/feeds/packages/{name}.atom")
def package_feed(request: Request, store: StoreDep, name: str) -> Response:
    """A package's notification events (a kernel breaks it, a rebuild fixes it), newest first."""
    return _feed(request, store, SubscriptionTarget.PACKAGE, name)


@router.get("/feeds/streams/{name}.atom")
def stream_feed(request: Request, store: StoreDep, name: str) -> Response:
    """A stream's notification events: its packages' and its blocked gates."""
    return _feed(request, store, SubscriptionTarget.STREAM, name)


def _feed(request: Request, store: Store, kind: SubscriptionTarget, name: str) -> Response:
    try:
        feed = event_feed(store, kind, name, str(request.url), str(request.base_url))
    except InputError as error:
        raise HTTPException(404, str(error)) from None
    return Response(feed, media_type="application/atom+xml; charset=utf-8")
