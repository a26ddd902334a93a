"""The REST API, /api/v1: read the store (open to all), ingest and gate (bearer token, see app.WriteGuard).

Uploads are written to a private temporary folder under names checked here, then read by the same
readers as the CLI's, with the same hostile-input rules (an InputError is a 400, never a trace)."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Annotated

import pydantic_core
from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from kabigate.errors import InputError
from kabigate.formats.gatepolicy import DEFAULT_POLICY, parse_policy, parse_waivers
from kabigate.inputs import httpclient
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.packages import is_url
from kabigate.reports.gate import gate_json, waiver_json
from kabigate.reports.notifications import subscription_json
from kabigate.reports.tasks import task_json
from kabigate.reports.verdicts import build_record_json, cell_json, drivers_json, kernel_record_json
from kabigate.services.build import build_log_json
from kabigate.services.causes import with_causes
from kabigate.services.evidence import demand_json, symbol_demand
from kabigate.services.explanations import MAX_SYMBOLS, queue_explanation, run_explanation
from kabigate.services.gate import (
    add_waiver,
    kernel_story,
    previous_in_stream,
    record_gate,
    revoke_waiver,
    run_gate,
    stream_of,
)
from kabigate.services.ingest import ingest_driver_build, ingest_kernel, ingested_builds_json, read_driver_builds
from kabigate.services.matrix import (
    PAGE_SIZE,
    build_matrix,
    driver_history,
    history_json,
    matrix_page_json,
    package_matrix,
)
from kabigate.services.notify import channels_from_env, deliver_pending, subscribe, unsubscribe
from kabigate.services.overview import overview, overview_json
from kabigate.services.packages import PACKAGES_PAGE, package_matrix_json
from kabigate.services.symbols import search, search_json, symbol_story_json
from kabigate.store import KernelRecord, Store, TaskState
from kabigate.web import schemas
from kabigate.web.deps import Settings, request_store, settings_of
from kabigate.web.views import (
    ArchQuery,
    RowId,
    find_cell,
    find_gate_run,
    find_kernel,
    find_symbol,
    gate_run_json,
    story_json,
)

router = APIRouter()
StoreDep = Annotated[Store, Depends(request_store)]
SettingsDep = Annotated[Settings, Depends(settings_of)]
# The token is checked by app.WriteGuard before the body is read; declared here for the OpenAPI schema.
token_required = [Depends(HTTPBearer(auto_error=False, description="KABIGATE_API_TOKEN of the server"))]

# Upload names as packages and modules are named: no path, no leading dot, nothing a shell or a URL needs quoted.
_UPLOAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~%-]{0,254}")
MAX_TOML = 1024 * 1024
DISCONNECT_POLL = 0.5  # seconds between checks whether a URL ingest's client is still there
RETRY_AFTER = 30  # seconds a client is asked to wait when every URL ingest slot is taken


def url_ingest_slots() -> int:
    """URL ingests a server runs at once: $KABIGATE_URL_INGESTS, 4 by default."""
    text = os.environ.get("KABIGATE_URL_INGESTS", "").strip() or "4"
    if not re.fullmatch(r"[1-9][0-9]{0,2}", text):
        raise InputError(f"KABIGATE_URL_INGESTS={text[:40]!r}: not a number of ingests (1 to 999)")
    return int(text)


# Read when `serve` starts (create_app imports this module): a bad setting is an error then, not on an ingest.
URL_INGESTS = url_ingest_slots()
httpclient.max_download()
httpclient.download_deadline()


# -- what the routes answer: schemas.py's models, and the errors (app.py's handlers) ---------------

def _error(description: str) -> dict:
    return {"model": schemas.ErrorMessage, "description": description}


UNAVAILABLE: dict[int | str, dict] = {503: _error("the store is unavailable")}
READ_ERRORS = {**UNAVAILABLE, 400: _error("a parameter the store refuses (e.g. a stream it does not hold)"),
               422: {"model": schemas.ValidationErrors, "description": "parameters the route does not take"}}
NOT_FOUND = {**READ_ERRORS, 404: _error("no such record in the store")}
KERNEL_ERRORS = {**NOT_FOUND, 409: _error("several stored kernels have that release: add ?stream=NAME")}
WRITE_ERRORS = {**READ_ERRORS, 400: _error("input refused (unreadable, hostile or inconsistent)"),
                401: _error("no valid bearer token"), 403: _error("this server is read-only (no token set)"),
                413: _error("request body too large")}
INGEST_ERRORS = {**WRITE_ERRORS,
                 503: _error("the store is unavailable, or every URL ingest is running (see Retry-After)")}


def documented(model: type[BaseModel], *errors: dict, status: int = 200) -> dict:
    """`responses=` of a route whose reply is sent as built (as_built), described by `model`."""
    return {status: {"model": model}, **{code: e for table in errors for code, e in table.items()}}


def as_built(document: dict, status: int = 200) -> Response:
    """A reply sent as it was built, serialised by pydantic-core as FastAPI would, without being
    validated against its model again (a matrix page can be 200,000 cells): its model documents it
    (`responses=`); tests/test_web_schema.py and test_json_shapes.py hold the replies to it."""
    return Response(pydantic_core.to_json(document), status, media_type="application/json")


# -- reading ----------------------------------------------------------------------------------------

@router.get("/streams", summary="Kernel streams", response_model=schemas.Streams, responses=UNAVAILABLE)
def streams(store: StoreDep) -> dict:
    return {"streams": store.streams()}


@router.get("/kernels", summary="Stored kernels (a stream's in its order)", response_model=schemas.Kernels,
            responses=READ_ERRORS)
def kernels(store: StoreDep, stream: str | None = None, arch: ArchQuery = None) -> dict:
    return {"kernels": [kernel_record_json(k) for k in store.kernels(stream) if arch is None or k.machine == arch]}


@router.get("/kernels/{release}", summary="One kernel and its gate runs", response_model=schemas.KernelDetail,
            responses=KERNEL_ERRORS)
def kernel(store: StoreDep, release: str, stream: str | None = None) -> dict:
    record = find_kernel(store, release, stream)
    return {**kernel_record_json(record), "gate_runs": [r.uuid for r in store.gate_runs_of(record.id)]}


@router.get("/kernels/{release}/changes",
            summary="What the kernel broke and fixed relative to the kernel before it in its stream",
            responses=documented(schemas.KernelChanges, KERNEL_ERRORS))
def kernel_changes(store: StoreDep, settings: SettingsDep, release: str, stream: str | None = None) -> Response:
    record = find_kernel(store, release, stream)
    return as_built(story_json(kernel_story(store, record, stream, settings.stablelist)))


@router.get("/drivers", summary="Driver builds and recorded build failures",
            responses=documented(schemas.Drivers, READ_ERRORS))
def drivers(store: StoreDep, driver: Annotated[str | None, Query(description="shell pattern on the name")] = None,
            arch: ArchQuery = None) -> Response:
    return as_built(drivers_json([b for b in store.driver_builds(driver) if arch is None or b.machine == arch],
                                 store.build_failures(driver), store.driver_aliases()))


@router.get("/drivers/{name}/history",
            summary="Where each build of a driver stops loading along each stream, why, and what loads again",
            responses=documented(schemas.DriverHistory, NOT_FOUND))
def driver_history_endpoint(store: StoreDep, name: str, stream: str | None = None) -> Response:
    if not store.driver_builds(name):
        raise HTTPException(404, f"no driver named {name} in the store")
    return as_built(history_json(name, driver_history(store, name, stream)))


@router.get("/build-logs/{driver}/{version}/{kernel_release}",
            summary="A failed or excluded build's record and its stored log (bounded; null when none was kept)",
            response_model=schemas.BuildLog, responses=NOT_FOUND)
def build_log_endpoint(store: StoreDep, driver: str, version: str, kernel_release: str) -> dict:
    document = build_log_json(store, driver, version, kernel_release)
    if document is None:
        raise HTTPException(404, f"no failed or excluded build of {driver} {version} for {kernel_release}")
    return document


@router.get("/matrix", summary="Driver builds x kernels: each cell's verdict; more than per_page builds are paged "
                                "(`page`, `pages` in the reply; the summary counts the whole matrix)",
            responses=documented(schemas.MatrixPage, READ_ERRORS))
def matrix(store: StoreDep, stream: str | None = None, driver: str | None = None, since: str | None = None,
           page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
           per_page: Annotated[int, Query(ge=1, le=1000, description="driver builds a page")] = PAGE_SIZE,
           arch: ArchQuery = None) -> Response:
    return as_built(matrix_page_json(build_matrix(store, stream, driver, since, page=page, page_size=per_page,
                                                  arch=arch)))


@router.get("/packages", summary="Driver packages x kernels: does some build of each package load whole on each "
                                  "kernel (only the builds of the kernel's series count), and if not, how far and why; "
                                  "per_page packages a page (`page`, `pages` in the reply; the summary counts all)",
            responses=documented(schemas.PackagePage, READ_ERRORS))
def packages(store: StoreDep, stream: str | None = None,
             driver: Annotated[str | None, Query(description="shell pattern on the name")] = None,
             since: str | None = None, arch: ArchQuery = None,
             page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
             per_page: Annotated[int, Query(ge=1, le=1000, description="packages a page")] = PACKAGES_PAGE) -> Response:
    return as_built(package_matrix_json(package_matrix(store, stream, driver, since, arch, page=page,
                                                       page_size=per_page)))


@router.get("/verdicts/{build_id}/{kernel_id}", summary="One build on one kernel: each module's reasons",
            responses=documented(schemas.CellDetail, NOT_FOUND))
def verdict(store: StoreDep, build_id: RowId, kernel_id: RowId) -> Response:
    build, kernel_record, cell = find_cell(store, build_id, kernel_id)
    return as_built({
        "build": build_record_json(build), "kernel": kernel_record_json(kernel_record), "cell": cell_json(cell),
        "modules": with_causes(store, build, kernel_record, store.verdict_detail(build_id, kernel_id) or [])})


@router.get("/gate-runs", summary="Gate runs, newest first", response_model=schemas.GateRuns,
            responses=KERNEL_ERRORS)
def gate_runs(store: StoreDep, kernel: Annotated[str | None, Query(description="a kernel release")] = None,
              stream: str | None = None) -> dict:
    runs = store.gate_runs_of(find_kernel(store, kernel, stream).id) if kernel else store.gate_runs()
    kernels_by_id = {k.id: k for k in store.kernels()}
    return {"gate_runs": [gate_run_json(r, kernels_by_id) for r in runs]}


@router.get("/gate-runs/{run}", summary="One gate run and its report",
            responses=documented(schemas.GateRunDetail, NOT_FOUND))
def gate_run(store: StoreDep, run: str) -> Response:
    record = find_gate_run(store, run)
    kernels_by_id = {k.id: k for k in store.kernels()}
    return as_built({**gate_run_json(record, kernels_by_id), "report": store.gate_report(run)})


@router.get("/overview", summary="Per stream and machine: the newest kernel, its packages and gate outcome, what "
                                  "changed since the kernel before it, and a timeline",
            responses=documented(schemas.Overview, UNAVAILABLE))
def overview_endpoint(store: StoreDep, arch: ArchQuery = None) -> Response:
    return as_built(overview_json(overview(store, arch)))


@router.get("/symbols/{name}", summary="A symbol's CRC along each stream (where it changed, and why when cached), "
                                        "whether the server's stablelist lists it, which driver builds import it",
            responses=documented(schemas.Symbol, NOT_FOUND))
def symbol(store: StoreDep, settings: SettingsDep, name: str) -> Response:
    return as_built(symbol_story_json(find_symbol(store, name, settings.stablelist)))


@router.get("/search", summary="Drivers, kernels and symbols whose names contain q",
            response_model=schemas.SearchResults,
            responses=READ_ERRORS)
def search_endpoint(store: StoreDep, q: Annotated[str, Query(max_length=200)] = "") -> dict:
    return search_json(search(store, q))


@router.get("/demand", summary="Symbols the stored drivers import, against the server's stablelist",
            responses=documented(schemas.Demand, NOT_FOUND))
def demand(store: StoreDep, settings: SettingsDep, stream: str | None = None, driver: str | None = None,
           arch: ArchQuery = None) -> Response:
    if settings.stablelist is None:
        raise HTTPException(404, "this server has no stablelist (start it with kabigate serve --stablelist FILE)")
    return as_built(demand_json(symbol_demand(store, settings.stablelist, stream, driver, arch)))


# -- writing ----------------------------------------------------------------------------------------

@router.post("/kernels", status_code=201, dependencies=token_required,
             summary="Ingest one kernel from uploaded packages or files, or URLs of its packages",
             response_model=schemas.IngestedKernel, responses=INGEST_ERRORS)
async def ingest_kernel_endpoint(
        request: Request,
        store: StoreDep,
        stream: Annotated[str | None, Form()] = None,
        vermagic: Annotated[str | None, Form()] = None,
        files: Annotated[list[UploadFile] | None,
                         File(description="e.g. linux-image-*.deb, linux-headers-*.deb")] = None,
        urls: Annotated[list[str] | None, Form()] = None) -> dict:
    files, urls = files or [], urls or []

    def ingest() -> dict:
        with _upload_folder() as directory:
            saved = _save_uploads(files, urls, directory)
            kernel_read = load_kernel(saved + urls, vermagic)
            kernel_read = dataclasses.replace(kernel_read, sources=[_upload_source(p, directory) for p in saved] + urls)
        result = ingest_kernel(store, kernel_read, stream)
        return {"kernel": kernel_record_json(result.record), "created": result.created, "verdicts": result.verdicts}

    return await _run_ingest(request, ingest, urls)


@router.post("/drivers", status_code=201, dependencies=token_required,
             summary="Ingest driver builds: uploaded packages (each one build) or modules (together one build), "
                     "or URLs of packages and repositories",
             response_model=schemas.IngestedBuilds, responses=INGEST_ERRORS)
async def ingest_drivers_endpoint(
        request: Request,
        store: StoreDep,
        name: Annotated[str | None, Form(description="name of a build of loose modules")] = None,
        version: Annotated[str | None, Form(description="version of a build of loose modules")] = None,
        files: Annotated[list[UploadFile] | None, File()] = None,
        urls: Annotated[list[str] | None, Form()] = None) -> dict:
    files, urls = files or [], urls or []

    def ingest() -> dict:
        with _upload_folder() as directory:
            # Uploads are read as one folder: its loose modules are one build, each package one build.
            paths = [directory] if _save_uploads(files, urls, directory) else []
            builds = [dataclasses.replace(b, source=_upload_source(b.source, directory))
                      for b in read_driver_builds(paths + urls, name, version)]
        results = [ingest_driver_build(store, build) for build in builds]
        return ingested_builds_json(results)

    return await _run_ingest(request, ingest, urls)


async def _run_ingest(request: Request, ingest: Callable[[], dict], urls: list[str]) -> dict:
    """An ingest of uploads in the server's thread pool; one that fetches URLs in the URL ingests' own
    executor, so that slow or endless servers cannot take the threads every other request needs. A
    client that goes away cancels its transfers."""
    if not urls:
        return await run_in_threadpool(ingest)
    cancel = httpclient.Cancel()
    running = asyncio.wrap_future(_url_ingests(request.app).submit(ingest, cancel))
    try:
        while not running.done():
            await asyncio.wait([running], timeout=DISCONNECT_POLL)
            if not running.done() and await request.is_disconnected():
                cancel.set()
                break
        return await running
    except asyncio.CancelledError:  # the server stops: its thread must not go on up to the deadline
        cancel.set()
        raise


class UrlIngests:
    """A few threads for URL ingests (each holds one for up to its transfers' deadlines); when all are
    busy a request is refused at once (503, Retry-After), not queued behind servers that may never answer."""

    def __init__(self, size: int):
        self.size = size
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="kabigate-url-ingest")
        self._slots = threading.BoundedSemaphore(size)

    def submit(self, ingest: Callable[[], dict], cancel: httpclient.Cancel) -> Future:
        if not self._slots.acquire(blocking=False):
            raise HTTPException(503, f"all {self.size} URL ingests of this server are running; try again later",
                                headers={"Retry-After": str(RETRY_AFTER)})

        def run() -> dict:
            try:
                with httpclient.cancelled_by(cancel):
                    return ingest()
            finally:
                self._slots.release()

        return self._executor.submit(run)


def _url_ingests(app) -> UrlIngests:
    """The app's URL ingest threads, made on its first URL ingest (requests run on one event loop:
    no two make them at once)."""
    if not hasattr(app.state, "url_ingests"):
        app.state.url_ingests = UrlIngests(URL_INGESTS)
    return app.state.url_ingests


class GateRequest(BaseModel):
    candidate: str = Field(max_length=256, description="a stored kernel's release")
    stream: str | None = Field(None, max_length=256)
    baseline: str | None = Field(None, max_length=256, description="default: the kernel before the candidate")
    driver: str | None = Field(None, max_length=256, description="only the builds of drivers matching")
    policy: str | None = Field(None, max_length=MAX_TOML, description="gate policy, TOML (as --policy)")
    waivers: str | None = Field(None, max_length=MAX_TOML, description="[[waiver]] tables, TOML (as --waivers)")


@router.post("/gate", status_code=201, dependencies=token_required,
             summary="Gate a stored kernel and record the run; the report is the gate's JSON",
             responses=documented(schemas.RecordedGate, KERNEL_ERRORS, WRITE_ERRORS, status=201))
def gate(store: StoreDep, settings: SettingsDep, request: GateRequest, background: BackgroundTasks) -> Response:
    channels = channels_from_env()
    candidate = find_kernel(store, request.candidate, request.stream)
    baseline: KernelRecord | None
    if request.baseline is not None:
        baseline, stream = find_kernel(store, request.baseline), stream_of(candidate, request.stream)
    else:
        baseline, stream = previous_in_stream(store, candidate, request.stream)
    policy = parse_policy(request.policy.encode(), "policy") if request.policy else DEFAULT_POLICY
    waivers = tuple(parse_waivers(request.waivers.encode(), "waivers")) if request.waivers else ()
    result = run_gate(store, candidate, baseline, stream=stream, policy=policy, waivers=(*waivers, *store.waivers()),
                      stablelist=settings.stablelist, driver=request.driver)
    document = gate_json(result)
    run = record_gate(store, result, document)
    # its notifications go after the answer: an endpoint that is slow to take them holds no client
    background.add_task(deliver_pending, store, channels)
    return as_built(dict(document, run=run.uuid), 201)


@router.get("/waivers", summary="Stored waivers, oldest first (every gate applies them)",
            response_model=schemas.Waivers, responses=READ_ERRORS)
def waivers(store: StoreDep, include_revoked: Annotated[bool, Query(alias="all", description="revoked ones too")]
            = False) -> dict:
    return {"waivers": [waiver_json(w) for w in store.waivers(include_revoked=include_revoked)]}


class WaiverRequest(BaseModel):
    """A [[waiver]] table as JSON; checked by the waivers file's rules (a 400 names what is wrong)."""

    model_config = ConfigDict(extra="forbid")
    driver: str | None = Field(None, max_length=512, description="shell pattern; omitted: any")
    symbol: str | None = Field(None, max_length=512, description="shell pattern; omitted: any")
    kernel: str | None = Field(None, max_length=512, description="shell pattern on the release; omitted: any")
    reason: str | None = Field(None, max_length=4096, description="why (required)")
    who: str | None = Field(None, max_length=512, description="who decided (required)")
    expires: str | None = Field(None, max_length=32, description="YYYY-MM-DD, the last day it applies")


@router.post("/waivers", status_code=201, dependencies=token_required,
             summary="Store a waiver; every later gate applies it until it expires or is revoked",
             response_model=schemas.StoredWaiver, responses=WRITE_ERRORS)
def add_waiver_endpoint(store: StoreDep, request: WaiverRequest) -> dict:
    return waiver_json(add_waiver(store, request.model_dump(exclude_none=True)))


@router.post("/waivers/{waiver_id}/revoke", dependencies=token_required,
             summary="Revoke a stored waiver (kept, listed as revoked, no longer applied)",
             response_model=schemas.StoredWaiver, responses={**NOT_FOUND, **WRITE_ERRORS})
def revoke_waiver_endpoint(store: StoreDep, waiver_id: RowId) -> dict:
    if not any(w.id == waiver_id for w in store.waivers(include_revoked=True)):
        raise HTTPException(404, f"no waiver {waiver_id} in the store")
    return waiver_json(revoke_waiver(store, waiver_id))


# -- subscriptions (services/notify.py) --------------------------------------------------------------

def token_to_read(request: Request, settings: SettingsDep) -> None:
    """Subscriptions name people's addresses: reading them takes the write token too (app.WriteGuard
    checks only writes)."""
    if settings.token is None:
        raise HTTPException(403, "this server is read-only (start it with KABIGATE_API_TOKEN set)")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})


@router.get("/subscriptions", dependencies=[*token_required, Depends(token_to_read)],
            summary="The subscriptions, oldest first (bearer token; webhook secrets are never shown)",
            response_model=schemas.Subscriptions, responses=WRITE_ERRORS)
def subscriptions(store: StoreDep) -> dict:
    return {"subscriptions": [subscription_json(s) for s in store.subscriptions()]}


class SubscriptionRequest(BaseModel):
    """One package or one stream, by one channel (as `kabigate subscribe add`); a 400 says what is wrong."""

    model_config = ConfigDict(extra="forbid")
    owner: str = Field(min_length=1, max_length=200)
    package: str | None = Field(None, max_length=200)
    stream: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=254)
    webhook: str | None = Field(None, max_length=2048)
    secret: str | None = Field(None, max_length=512, description="the webhook's HMAC-SHA256 key")
    bus: bool = False


@router.post("/subscriptions", status_code=201, dependencies=token_required,
             summary="Subscribe an owner to a package's or a stream's notifications",
             response_model=schemas.Subscription, responses=WRITE_ERRORS)
def add_subscription(store: StoreDep, request: SubscriptionRequest) -> dict:
    return subscription_json(subscribe(store, **request.model_dump()))


@router.delete("/subscriptions/{subscription_id}", dependencies=token_required,
               summary="Remove a subscription (what it was not sent yet is dropped)",
               response_model=schemas.Subscription, responses={**NOT_FOUND, **WRITE_ERRORS})
def remove_subscription(store: StoreDep, subscription_id: RowId) -> dict:
    if not any(s.id == subscription_id for s in store.subscriptions()):
        raise HTTPException(404, f"no subscription {subscription_id} in the store")
    return subscription_json(unsubscribe(store, subscription_id))


class ExplanationRequest(BaseModel):
    """CRC changes to explain: what a page without their causes offers (its `kabigate explain` command's)."""

    model_config = ConfigDict(extra="forbid")
    old: str = Field(max_length=256, description="the stored kernel the CRCs changed from (its release)")
    new: str = Field(max_length=256, description="the stored kernel they changed to")
    stream: str | None = Field(None, max_length=256, description="tells apart two stored kernels of one release")
    symbols: list[Annotated[str, Field(max_length=512)]] = Field(min_length=1, max_length=MAX_SYMBOLS)


@router.post("/explanations", status_code=202, dependencies=token_required,
             summary="Queue the explanation of CRC changes between two stored kernels: the server reads their "
                     "types and caches the causes, which every page then shows; the task says how far it is",
             response_model=schemas.Task, responses={**KERNEL_ERRORS, **WRITE_ERRORS})
def explanation_endpoint(request: Request, store: StoreDep, body: ExplanationRequest) -> dict:
    old, new = find_kernel(store, body.old, body.stream), find_kernel(store, body.new, body.stream)
    task = queue_explanation(store, old, new, body.symbols)
    if task.state == TaskState.QUEUED:
        _explainer(request.app).submit(run_explanation, Store(request.app.state.engine), task.key)
    return task_json(task)


def _explainer(app) -> ThreadPoolExecutor:
    """The app's one thread for explanations (made on the first): each reads kernels' types, seconds of
    CPU; one after the other, they leave the server's threads to its readers."""
    if not hasattr(app.state, "explainer"):
        app.state.explainer = ThreadPoolExecutor(1, thread_name_prefix="kabigate-explain")
    return app.state.explainer


@router.get("/tasks/{key}", summary="A task the server or its workers run (an explanation, an ingest, a gate)",
            response_model=schemas.Task, responses=NOT_FOUND)
def task_endpoint(store: StoreDep, key: Annotated[str, PathParam(max_length=200)]) -> dict:
    try:
        return task_json(store.task(key))
    except InputError:
        raise HTTPException(404, f"no task {key} in the store") from None


@contextmanager
def _upload_folder() -> Iterator[str]:
    """A private temporary folder for a request's uploads; errors name the uploads as the client did."""
    with tempfile.TemporaryDirectory(prefix="kabigate-upload-") as directory:
        try:
            yield directory
        except InputError as error:
            raise InputError(str(error).replace(directory + os.sep, "upload:").replace(directory, "upload")) from None


def _save_uploads(files: list[UploadFile], urls: list[str], directory: str) -> list[str]:
    """Check what a write request names and save its uploads in `directory`: their paths."""
    if not files and not urls:
        raise InputError("nothing to ingest: upload files or give urls")
    for url in urls:
        if not is_url(url):
            raise InputError(f"{url[:200]}: not an http(s) URL")
    paths = []
    for upload in files:
        name = upload.filename or ""
        if not _UPLOAD_NAME.fullmatch(name):
            raise InputError(f"{name[:200]!r}: not a usable file name (letters, digits, ._+~%-; no path)")
        path = os.path.join(directory, name)
        if os.path.exists(path):
            raise InputError(f"{name}: uploaded twice")
        with open(path, "xb") as file:
            shutil.copyfileobj(upload.file, file, 1024 * 1024)
        paths.append(path)
    return paths


def _upload_source(source: str, directory: str) -> str:
    """Where a build came from, without the temporary folder it was read in."""
    if source == directory:
        return "upload"
    if source.startswith(directory + os.sep):
        return "upload:" + source[len(directory) + 1:]
    return source
