"""Hostile HTTP servers on 127.0.0.1 against everything kabigate fetches (packages and repositories
in the CLI, `serve`'s URL ingests, workers' downloads) and ResultsDB publishing: endless and
trickling bodies, redirects to other schemes, origins and outside the allowed locations, answers
that would reveal what a fetch reached, and ResultsDB answers that redirect, nest or crawl."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import socket
import socketserver
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

import anyio.to_thread
import pytest
from support.hostile import rpm_with_files, run_cli
from support.tls import self_signed
from support.webdata import Serve, serving

from kabigate.errors import InputError
from kabigate.inputs import packages
from kabigate.reports import resultsdb
from kabigate.web import api, create_app
from kabigate.workers.config import Settings
from kabigate.workers.events import event_request

MiB = 1 << 20
TOKEN = "hostile-http-test-token"


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class _Routes(http.server.BaseHTTPRequestHandler):
    """Answers each path with its route (a function of the handler); records every request."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))  # a body left unread would reset the connection
        route = self.server.routes.get(self.path.split("?")[0])
        with contextlib.suppress(OSError):  # the client went away
            route(self) if route else answer(404, b"no such route")(self)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def serve():
    """serve(routes) -> the base URL of a server on 127.0.0.1 answering those paths (and its `seen` list)."""
    servers = []

    def start(routes: dict[str, Callable]) -> tuple[str, list]:
        server = _Server(("127.0.0.1", 0), _Routes)
        server.routes, server.seen = routes, []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", server.seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def answer(status: int, body: bytes, **headers) -> Callable:
    def route(handler) -> None:
        handler.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(body)
    return route


def redirect(location: str, status: int = 302) -> Callable:
    return answer(status, b"", Location=location)


def endless(handler) -> None:
    """200, no Content-Length, an RPM's magic and then data for as long as the client reads."""
    handler.send_response(200)
    handler.end_headers()
    chunk = b"\xed\xab\xee\xdb" * (MiB // 4)
    while True:
        handler.wfile.write(chunk)


class Trickle:
    """A body of a million bytes sent a byte at a time for at most `seconds` (then the connection is
    closed); counts the transfers started and those the client ended."""

    def __init__(self, seconds: float = 60, pause: float = 0.2):
        self.seconds, self.pause = seconds, pause
        self.started = 0
        self.client_left = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, handler) -> None:
        with self._lock:
            self.started += 1
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**6))
        handler.end_headers()
        ends = time.monotonic() + self.seconds
        try:
            while time.monotonic() < ends and not self.release.is_set():
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(self.pause)
        except OSError:
            self.client_left.set()


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    ends = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < ends, f"waited {timeout} s for {what}"
        time.sleep(0.05)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Listener:
    """A TCP port that counts the connections made to it and closes each at once."""

    def __init__(self, greeting: bytes = b""):
        self.accepted = 0
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.greeting = greeting
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            connection, _ = self.socket.accept()
            self.accepted += 1
            with connection:
                connection.recv(65536)
                connection.sendall(self.greeting)


def _fetch_error(url: str) -> str:
    with pytest.raises(InputError) as error:
        packages.Package(url)
    message = str(error.value)
    assert "\n" not in message and message
    return message


# -- 7: endless bodies go to a capped temporary file, not to memory --------------------------------------

def test_an_endless_body_ends_at_the_size_cap_in_bounded_memory(serve, tmp_path, monkeypatch):
    base, _ = serve({"/kernel.rpm": endless})
    monkeypatch.setenv("KABIGATE_FETCH_MAX", "64M")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    result = run_cli("check", "-k", f"{base}/kernel.rpm", f"{base}/kmod.rpm", address_space=1 << 30)
    assert result.returncode == 2, result
    assert result.stderr.strip() == f"kabigate: error: {base}/kernel.rpm: cannot fetch URL: larger than the " \
                                     "64 MiB limit ($KABIGATE_FETCH_MAX)", result
    assert result.peak < 150 * MiB, result
    assert os.listdir(tmp_path) == []  # the download was an unnamed file: nothing left behind


def test_a_bad_size_cap_or_deadline_setting_is_a_one_line_error(serve, monkeypatch):
    base, _ = serve({"/kernel.rpm": endless})
    for variable, value in (("KABIGATE_FETCH_MAX", "lots"), ("KABIGATE_FETCH_DEADLINE", "-1")):
        with monkeypatch.context() as context:
            context.setenv(variable, value)
            result = run_cli("check", "-k", f"{base}/kernel.rpm", f"{base}/kmod.rpm")
        assert result.returncode == 2 and result.stderr.startswith(f"kabigate: error: {variable}="), result


def test_a_package_downloaded_through_a_redirect_is_read_from_its_file(serve):
    package = rpm_with_files([("./lib/modules/6.1.0-1-amd64/extra/a.ko", b"\x7fELF")])
    base, _ = serve({"/moved.rpm": redirect("/real/evil.rpm"), "/real/evil.rpm": answer(200, package)})
    opened = packages.Package(f"{base}/moved.rpm")
    try:
        assert opened.name == "evil"
        assert [m.path for m, _ in opened.members()] == ["/lib/modules/6.1.0-1-amd64/extra/a.ko"]
    finally:
        opened.close()


# -- 8: transfer deadlines in minutes, a setting ------------------------------------------------------

def test_the_transfer_deadline_is_a_setting_and_ends_a_trickle(serve, monkeypatch):
    trickle = Trickle(seconds=30, pause=0.5)
    base, _ = serve({"/kernel.rpm": trickle})
    monkeypatch.setenv("KABIGATE_FETCH_DEADLINE", "2")
    result = run_cli("check", "-k", f"{base}/kernel.rpm", f"{base}/kmod.rpm")
    assert result.returncode == 2, result
    assert result.stderr.strip().endswith("cannot fetch URL: not finished within its 2 s deadline"), result


def test_https_downloads_are_verified_and_a_stalled_tls_handshake_meets_the_deadline(tmp_path, monkeypatch):
    import ssl

    certificate, key = self_signed(tmp_path)
    package = rpm_with_files([("./lib/modules/6.1.0-1-amd64/extra/a.ko", b"\x7fELF")])
    server = _Server(("127.0.0.1", 0), _Routes)
    server.routes, server.seen = {"/evil.rpm": answer(200, package)}, []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/evil.rpm"
    try:
        assert _fetch_error(url) == f"{url}: cannot fetch URL: TLS certificate not trusted"
        monkeypatch.setenv("SSL_CERT_FILE", certificate)  # OpenSSL's default trust, read per connection
        opened = packages.Package(url)
        assert opened.name == "evil"
        opened.close()
    finally:
        server.shutdown()
        server.server_close()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never says a word
    monkeypatch.setenv("KABIGATE_FETCH_DEADLINE", "2")
    try:
        url = f"https://127.0.0.1:{silent.getsockname()[1]}/p.rpm"
        assert _fetch_error(url) == f"{url}: cannot fetch URL: not finished within its 2 s deadline"
    finally:
        silent.close()


# -- 8: serve's URL ingests: their own few threads, 503 when all are busy, cancelled with their client --------

def _few_threads(app, threads: int):
    """The app with the server's thread pool (anyio's, 40 threads) cut to `threads`: what 40 slow URL
    ingests did to it, here with a few."""
    async def limited(scope, receive, send):
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        await app(scope, receive, send)
    return limited


def _post_urls(base: str, url: str, outcomes: list) -> None:
    request = urllib.request.Request(f"{base}/api/v1/kernels", data=urllib.parse.urlencode({"urls": url}).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            outcomes.append((response.status, None))
    except urllib.error.HTTPError as error:
        outcomes.append((error.code, error.headers.get("Retry-After")))


def test_slow_url_ingests_leave_reads_answerable_and_extra_ones_are_503_at_once(serve, tmp_path, monkeypatch):
    trickle = Trickle()
    package_server, _ = serve({"/kernel.rpm": trickle})
    monkeypatch.setattr(api, "URL_INGESTS", 2, raising=False)
    app = create_app(str(tmp_path / "store.db"), token=TOKEN)
    outcomes: list = []
    with serving(_few_threads(app, 4)) as base:
        posts = [threading.Thread(target=_post_urls, args=(base, f"{package_server}/kernel.rpm", outcomes))
                 for _ in range(4)]
        try:
            for post in posts:
                post.start()
            _wait_for(lambda: trickle.started >= 2, "two transfers")
            _wait_for(lambda: len(outcomes) >= 2, "the ingests beyond the two slots to be refused")
            assert outcomes == [(503, "30"), (503, "30")] and trickle.started == 2
            with urllib.request.urlopen(f"{base}/api/v1/kernels", timeout=60) as response:
                assert response.status == 200 and json.load(response) == {"kernels": []}
        finally:
            trickle.release.set()
            for post in posts:
                post.join(timeout=120)
    assert sorted(status for status, _ in outcomes) == [400, 400, 503, 503]


def test_a_client_that_goes_away_stops_its_url_ingests_transfer(serve, tmp_path):
    trickle = Trickle(seconds=120)
    package_server, _ = serve({"/kernel.rpm": trickle})
    app = create_app(str(tmp_path / "store.db"), token=TOKEN)
    with serving(app) as base:
        body = urllib.parse.urlencode({"urls": f"{package_server}/kernel.rpm"}).encode()
        client = socket.create_connection(("127.0.0.1", urllib.parse.urlsplit(base).port))
        try:
            client.sendall(b"POST /api/v1/kernels HTTP/1.1\r\nHost: kabigate\r\nAuthorization: Bearer " + TOKEN.encode()
                           + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
                           % len(body) + body)
            _wait_for(lambda: trickle.started == 1, "the transfer")
        finally:
            client.close()
        try:
            assert trickle.client_left.wait(60), "the transfer went on after its client left"
        finally:
            trickle.release.set()



def test_a_server_stopping_cancels_its_url_ingests_transfers(serve, tmp_path):
    """SIGTERM to `kabigate serve` during a URL ingest from a server that never finishes: requests in
    progress get a grace period, then the ingest's transfer is cancelled with its request (before,
    uvicorn waited for it up to the download deadline and the process did not end)."""
    trickle = Trickle(seconds=600)
    package_server, _ = serve({"/kernel.rpm": trickle})
    server = Serve(tmp_path, env={"KABIGATE_API_TOKEN": TOKEN})
    body = urllib.parse.urlencode({"urls": f"{package_server}/kernel.rpm"}).encode()
    client = socket.create_connection(("127.0.0.1", server.port))
    try:
        client.sendall(b"POST /api/v1/kernels HTTP/1.1\r\nHost: kabigate\r\nAuthorization: Bearer " + TOKEN.encode()
                       + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
                       % len(body) + body)
        _wait_for(lambda: trickle.started == 1, "the transfer")
        server.stop()  # waits for the process to end (a guard of minutes, far below the deadline)
        assert trickle.client_left.wait(60), "the transfer went on after the server stopped"
    finally:
        client.close()
        trickle.release.set()


# -- 11: redirects and errors ---------------------------------------------------------------------------

def test_a_redirect_to_another_scheme_is_refused_without_opening_it(serve):
    ftp = _Listener(b"220 ftp ready\r\n")
    base, _ = serve({"/ftp.rpm": redirect(f"ftp://127.0.0.1:{ftp.port}/x.rpm"),
                     "/file.rpm": redirect("file:///etc/passwd", 301), "/data.rpm": redirect("data:,hello", 307)})
    for path in ("/ftp.rpm", "/file.rpm", "/data.rpm"):
        message = _fetch_error(base + path)
        assert message == f"{base}{path}: cannot fetch URL: redirected to a URL that is not http(s): not followed"
    assert ftp.accepted == 0


def test_redirects_are_capped(serve):
    base, seen = serve({"/loop.rpm": redirect("/loop.rpm?again"), "/hop.rpm": redirect("/loop.rpm")})
    assert _fetch_error(f"{base}/hop.rpm").endswith("cannot fetch URL: more than 5 redirects")
    assert len(seen) == 6


def test_errors_show_no_content_and_do_not_tell_ports_apart(serve):
    secret = b"SECRET-K" + b"internal data" * 10
    base, _ = serve({"/secret.rpm": answer(200, secret),
                     "/banner.rpm": lambda h: h.wfile.write(b"HTTP/1.0 404 db-01.internal says hi\r\n\r\n")})
    message = _fetch_error(f"{base}/secret.rpm")
    assert "SECRET" not in message and secret[:8].hex() not in message and secret[:4].hex() not in message
    assert _fetch_error(f"{base}/banner.rpm") == f"{base}/banner.rpm: cannot fetch URL: HTTP 404 Not Found"
    ssh = _Listener(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    closed = _closed_port()
    answers = {re.sub(r":\d+/", ":PORT/", _fetch_error(f"http://127.0.0.1:{port}/p.rpm"))
               for port in (ssh.port, closed)}
    assert answers == {"http://127.0.0.1:PORT/p.rpm: cannot fetch URL: no valid HTTP answer"}
    for unusable in ("http://[::1/p.rpm", "http://127.0.0.1:99999/p.rpm", "http://127.0.0.1:1/a b.rpm"):
        assert _fetch_error(unusable) == f"{unusable}: cannot fetch URL: not a usable URL"


@pytest.mark.parametrize(("location", "allowed"), [
    ("/srv/builds/kmod-x.rpm", True),
    ("/srv/builds/../../etc/shadow", False),
    ("/srv/builds-evil/x.rpm", False),
    ("srv/builds/x.rpm", False),
    ("https://host/x.rpm", True),
    ("HTTPS://HOST:443/x.rpm", True),
    ("https://host.evil/x.rpm", False),
    ("https://host@evil.example/x.rpm", False),
    ("https://host:8443/x.rpm", False),
    ("http://host/x.rpm", False),
    ("https://koji/packages/kernel/x.rpm", True),
    ("https://koji/packages/../etc/x.rpm", False),
    ("https://koji/packages/%2e%2e/etc/x.rpm", False),
    ("https://koji/packages-evil/x.rpm", False),
])
def test_allowed_locations_are_compared_normalised(location, allowed):
    settings = Settings(allow=("/srv/builds/", "https://host", "https://koji/packages/"))
    assert settings.allowed(location) is allowed


def test_a_build_event_pointing_out_of_the_allowed_folder_is_refused():
    settings = Settings(allow=("/srv/builds/",))
    with pytest.raises(InputError, match="not under an allowed location"):
        event_request("org.fedoraproject.prod.kabigate.build.complete",
                      {"kind": "kernel", "files": ["/srv/builds/../../etc/shadow"]}, settings)


def test_a_workers_download_is_not_redirected_outside_the_allowed_locations(serve):
    from kabigate.inputs.httpclient import only_under

    elsewhere, elsewhere_seen = serve({"/x.rpm": answer(200, b"x")})
    base, _ = serve({"/x.rpm": redirect(f"{elsewhere}/x.rpm"), "/inside.rpm": redirect("/x.rpm")})
    settings = Settings(allow=(f"{base}/",))
    with only_under(settings.may_fetch, "listen.allow"):
        assert _fetch_error(f"{base}/x.rpm").endswith("cannot fetch URL: redirected outside listen.allow: not followed")
        assert _fetch_error(f"{elsewhere}/x.rpm").endswith("cannot fetch URL: not under listen.allow")
        assert _fetch_error(f"{base}/inside.rpm").endswith("redirected outside listen.allow: not followed")
    assert elsewhere_seen == []


# -- 12: ResultsDB ------------------------------------------------------------------------------------------

PAYLOAD = {"outcome": "PASSED", "testcase": {"name": "kabigate.kernel-gate.functional"}, "data": {"item": "k"}}


def test_resultsdb_post_is_not_redirected_and_the_token_stays_home(serve):
    elsewhere, elsewhere_seen = serve({"/api/v2.0/results": answer(200, b'{"id": 42, "data": [{"id": 42}]}')})
    base, seen = serve({"/api/v2.0/results": redirect(f"{elsewhere}/api/v2.0/results")})
    with pytest.raises(InputError, match=r"answered the POST with a redirect \(HTTP 302\): not followed"):
        resultsdb.publish_result(f"{base}/api/v2.0", PAYLOAD, "secret-token")
    with pytest.raises(InputError, match="redirected to another origin: not followed with the credentials"):
        resultsdb.find_result(f"{base}/api/v2.0", "t", {"item": "k"}, "secret-token")
    assert elsewhere_seen == [] and [method for method, _, _ in seen] == ["POST", "GET"]


def test_resultsdb_get_follows_a_redirect_within_its_origin(serve):
    base, seen = serve({"/api/v2.0/results": redirect("/api/v2.0/results/", 308),
                        "/api/v2.0/results/": answer(200, b'{"data": [{"id": 7}]}')})
    assert resultsdb.find_result(f"{base}/api/v2.0", "t", {"item": "k"}, "secret-token") == "7"
    assert [token for _, _, token in seen] == ["Bearer secret-token"] * 2


def test_resultsdb_publishes_only_on_a_created_result_with_an_id(serve):
    base, _ = serve({"/accepted/results": answer(202, b'{"id": 42}'), "/no-id/results": answer(201, b'{"id": []}')})
    with pytest.raises(InputError, match="answered HTTP 202, not 201 Created"):
        resultsdb.publish_result(f"{base}/accepted", PAYLOAD)
    with pytest.raises(InputError, match="has no result id"):
        resultsdb.publish_result(f"{base}/no-id", PAYLOAD)


def test_a_deeply_nested_resultsdb_answer_is_a_one_line_error(serve):
    base, _ = serve({"/api/v2.0/results": answer(201, b"[" * 200_000)})
    with pytest.raises(InputError, match="nested too deeply"):
        resultsdb.publish_result(f"{base}/api/v2.0", PAYLOAD)


def test_a_crawling_resultsdb_answer_meets_the_whole_call_deadline(serve, monkeypatch):
    base, _ = serve({"/api/v2.0/results": Trickle(seconds=30, pause=0.5)})
    monkeypatch.setattr(resultsdb, "DEADLINE", 2.0, raising=False)
    with pytest.raises(InputError, match="cannot reach ResultsDB: not finished within its 2 s deadline"):
        resultsdb.publish_result(f"{base}/api/v2.0", PAYLOAD)
