"""The dashboard and REST API as one ASGI app: `create_app()` opens the store and wires the routers.

Reading is open to anyone who reaches the server; writing (ingest, gate) needs the bearer token the
server was started with, and is refused outright when it was started without one.
"""

from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from kabigate import __version__
from kabigate.errors import InputError
from kabigate.inputs.stablelists import read_stablelist
from kabigate.store import Store, StoreError
from kabigate.web import api, pages
from kabigate.web.deps import HERE, Settings, templates

API_PREFIX = "/api/v1"
# A kernel's image and headers packages together are ~80 MB (Debian 6.1); a repository is given by URL.
DEFAULT_MAX_UPLOAD = 512 * 1024 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

log = logging.getLogger("kabigate.web")


def create_app(store_url: str | None = None, *, token: str | None = None, stablelist_path: str | None = None,
               max_upload: int = DEFAULT_MAX_UPLOAD) -> FastAPI:
    """The app over the store at `store_url` (created when new, refused when its schema is older)."""
    stablelist = read_stablelist(stablelist_path)
    store = Store.open(store_url)  # checks the schema once; requests share its engine
    settings = Settings(store.url, token or None, stablelist, max_upload)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        store.close()

    # No /docs: FastAPI's Swagger page loads its scripts from a CDN. The schema is served as JSON.
    app = FastAPI(title="kabigate", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=f"{API_PREFIX}/openapi.json")
    app.state.settings = settings
    app.state.engine = store.engine
    app.add_middleware(WriteGuard, token=settings.token, max_body=max_upload)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(api.router, prefix=API_PREFIX)
    app.include_router(pages.router)
    _add_error_handlers(app)
    return app


# -- writes: the token, and the size of what is sent --------------------------------------------

class WriteGuard:
    """Checks every write request before its body is read: a server without a token refuses
    writes (403), a wrong or missing token is refused (401), and bodies above `max_body` (declared
    or counted as they arrive) are refused (413). The token is compared in constant time and never
    logged."""

    def __init__(self, app, token: str | None, max_body: int):
        self.app = app
        self.token = None if token is None else token.encode()
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = self._refusal(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, f"request body larger than {self.max_body} bytes")
            return message

        await self.app(scope, counted_receive, send)

    def _refusal(self, headers: dict[bytes, bytes]) -> JSONResponse | None:
        if self.token is None:
            return JSONResponse({"detail": "this server is read-only (start it with KABIGATE_API_TOKEN set)"}, 403)
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
            return JSONResponse({"detail": "a valid bearer token is required"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return JSONResponse({"detail": "bad Content-Length"}, 400)
            if int(length) > self.max_body:
                return JSONResponse({"detail": f"request body larger than {self.max_body} bytes"}, 413)
        return None


# -- errors: JSON for the API, a page for people, never a stack trace ---------------------------

def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(request: Request, status: int, message: str, headers: dict | None = None):
    if _wants_json(request):
        return JSONResponse({"detail": message}, status, headers=headers)
    return templates.TemplateResponse(request, "error.html", {"status": status, "message": message},
                                      status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoreError)
    async def store_unavailable(request: Request, error: StoreError):
        return error_response(request, 503, str(error))

    @app.exception_handler(InputError)
    async def bad_input(request: Request, error: InputError):
        return error_response(request, 400, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return error_response(request, error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        if _wants_json(request):
            # The errors without the input they quote (it may be a large or hostile upload).
            return JSONResponse({"detail": [{"loc": e.get("loc"), "msg": e.get("msg"), "type": e.get("type")}
                                            for e in error.errors()]}, 422)
        return error_response(request, 422, "; ".join(str(e.get("msg")) for e in error.errors()))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        if _wants_json(request):
            return JSONResponse({"detail": "internal server error"}, 500)
        return HTMLResponse("<h1>500</h1><p>internal server error</p>", 500)
