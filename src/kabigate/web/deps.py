"""What the app, the API and the pages share: the server's settings, the request dependencies
that give a route its Store and settings, and the page templates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

from kabigate import __version__
from kabigate.formats.stablelist import Stablelist
from kabigate.store import Store

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.globals["version"] = __version__


@dataclass(frozen=True)
class Settings:
    store_url: str  # as shown: without a password
    token: str | None  # None: the server is read-only
    stablelist: Stablelist | None
    max_upload: int


def request_store(request: Request) -> Store:
    """A Store for one request over the app's engine: a Store keeps its open transaction on itself,
    so concurrent requests must not share one."""
    return Store(request.app.state.engine)


def settings_of(request: Request) -> Settings:
    return request.app.state.settings
