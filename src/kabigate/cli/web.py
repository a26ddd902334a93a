"""`kabigate serve`: the web dashboard and REST API over the store."""

from __future__ import annotations

import os

import click

from kabigate.cli.shared import err
from kabigate.store import default_url


@click.command()
@click.option("--db", "db", metavar="PATH_OR_URL", envvar="KABIGATE_DB",
              help=f"SQLite file or postgresql:// URL (default: $KABIGATE_DB, else {default_url()}).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--stablelist", "stablelist_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="The kABI stablelist for the demand page and gates (a plain, RHEL, GKI or Module.kabi list).")
@click.option("--max-upload", default=512, show_default=True, type=click.IntRange(1), metavar="MIB",
              help="Largest write request body (uploaded packages) in MiB.")
@click.option("--max-connections", type=click.IntRange(1), metavar="N",
              help="Open connections; past it a new one replaces the one waiting longest for its request head "
                   "(default: 1000, or fewer if the open-file limit holds fewer).")
@click.option("--header-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="Time a client has to send a request's head (line and headers).")
def serve(db: str | None, host: str, port: int, stablelist_path: str | None, max_upload: int,
          max_connections: int | None, header_timeout: float) -> None:
    """Serve the dashboard (matrix, kernels, drivers, gate runs, stablelist demand) and the REST API
    (/api/v1, schema at /api/v1/openapi.json). Writes (ingest, gate) need `Authorization: Bearer
    $KABIGATE_API_TOKEN`; without that variable set the server is read-only.

    \b
    Example:
      kabigate serve --host 0.0.0.0 --port 8080
    """
    from kabigate.explain.cache import cache_max
    from kabigate.web import create_app
    from kabigate.web.server import fit_open_file_limit
    from kabigate.web.server import serve as run_server

    cache_max()  # a bad $KABIGATE_CACHE_MAX is an error now, not on the first verdict page that writes causes
    max_connections = fit_open_file_limit(max_connections)
    token = os.environ.get("KABIGATE_API_TOKEN") or None
    app = create_app(db, token=token, stablelist_path=stablelist_path, max_upload=max_upload * 1024 * 1024)
    err.print(f"kabigate: serving {app.state.settings.store_url} on http://{host}:{port}/ "
              f"({'writes need the API token' if token else 'read-only: KABIGATE_API_TOKEN is not set'})",
              markup=False)
    run_server(app, host, port, max_connections=max_connections, header_timeout=header_timeout)
