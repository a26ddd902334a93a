"""kabigate's one HTTP client: packages, repository metadata and indexes are downloaded to a bounded
temporary file, and ResultsDB's API is called, through it.

Every transfer is bounded in size ($KABIGATE_FETCH_MAX for downloads), in time (a deadline for the
whole transfer, connection, TLS handshake and headers included: $KABIGATE_FETCH_DEADLINE; and a
timeout per read) and in where it goes: http(s) only, at most MAX_REDIRECTS redirects, each target
checked by the same rules before it is opened (its scheme, the caller's allow-list); a request with
a body is never redirected, nor one with credentials to another origin. A transfer started under a
Cancel stops when it is cancelled. Errors name the URL and a class of reason, never what the server
sent: an error must not turn a fetch into a way to read or scan hosts the fetching server reaches.
"""

from __future__ import annotations

import contextvars
import http
import http.client
import os
import re
import socket
import ssl
import string
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO, TypeVar

from kabigate.errors import InputError

MAX_REDIRECTS = 5
READ_TIMEOUT = 60  # seconds one read (or the TCP connect) may wait
DEFAULT_DEADLINE = 600.0  # seconds one download may take: a 100 MB kernel package at ~170 KB/s
DEFAULT_MAX_DOWNLOAD = "2G"  # the largest package kabigate reads (linux-image, kernel-devel) is ~120 MB
CHUNK = 1 << 20

_cancel: contextvars.ContextVar[Cancel | None] = contextvars.ContextVar("kabigate_cancel", default=None)
_allowed: contextvars.ContextVar[tuple[Callable[[str], bool], str] | None] = \
    contextvars.ContextVar("kabigate_allowed", default=None)


# -- settings ---------------------------------------------------------------------------------------

def max_download() -> int:
    """The most bytes one download may hold: $KABIGATE_FETCH_MAX (bytes, or a number with K, M, G or T:
    binary units, as $KABIGATE_CACHE_MAX), 2 GiB by default."""
    text = os.environ.get("KABIGATE_FETCH_MAX", "").strip() or DEFAULT_MAX_DOWNLOAD
    match = re.fullmatch(r"(\d{1,15})\s*([KMGT]?)i?B?", text, re.IGNORECASE)
    if match is None or int(match.group(1)) == 0:
        raise InputError(f"KABIGATE_FETCH_MAX={text[:40]!r}: not a size (bytes, or a number with K, M, G or T)")
    return int(match.group(1)) << 10 * " KMGT".index(match.group(2).upper() or " ")


def download_deadline() -> float:
    """Seconds one download may take, all told: $KABIGATE_FETCH_DEADLINE, 600 by default."""
    text = os.environ.get("KABIGATE_FETCH_DEADLINE", "").strip()
    if not text:
        return DEFAULT_DEADLINE
    if not re.fullmatch(r"\d{1,7}(\.\d{1,3})?", text) or float(text) == 0:
        raise InputError(f"KABIGATE_FETCH_DEADLINE={text[:40]!r}: not a number of seconds")
    return float(text)


# -- what may stop a transfer, and where it may go ----------------------------------------------------

class Cancel:
    """Stops the transfers started under it (`cancelled_by`) when set, from any thread: their sockets
    are shut down at once, and a transfer started after it is set is refused."""

    def __init__(self):
        self._lock = threading.Lock()
        self._set = False
        self._watches: set[_Watch] = set()

    def set(self) -> None:
        with self._lock:
            self._set = True
            watches = list(self._watches)
        for watch in watches:
            watch.stop("cancelled")

    def _add(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.add(watch)
            cancelled = self._set
        if cancelled:
            watch.stop("cancelled")

    def _discard(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.discard(watch)


@contextmanager
def cancelled_by(cancel: Cancel) -> Iterator[None]:
    """Transfers in this context (this thread) stop when `cancel` is set."""
    token = _cancel.set(cancel)
    try:
        yield
    finally:
        _cancel.reset(token)


@contextmanager
def only_under(allowed: Callable[[str], bool], setting: str) -> Iterator[None]:
    """Downloads in this context may only fetch locations `allowed` accepts (the first URL and every
    redirect); `setting` names the list in errors."""
    token = _allowed.set((allowed, setting))
    try:
        yield
    finally:
        _allowed.reset(token)


class _Refused(Exception):
    """A URL or redirect the rules refuse, or a transfer ended early; its text is the reason."""


_Socket = TypeVar("_Socket", bound=socket.socket)  # a plain or a TLS socket, tracked as it is


class _Watch:
    """Ends a transfer when its deadline passes or it is cancelled, by shutting its sockets down: a
    read blocked in the kernel cannot be interrupted otherwise, and a server sending a byte now and
    then passes every per-read timeout."""

    def __init__(self, seconds: float, cancel: Cancel | None):
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.stopped: str | None = None  # "deadline" or "cancelled"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.stop, ("deadline",))
        self._timer.daemon = True
        self._timer.start()
        self._cancel = cancel
        if cancel is not None:
            cancel._add(self)

    def track(self, sock: _Socket) -> _Socket:
        with self._lock:
            self._sockets.append(sock)
            if self.stopped:
                _shutdown(sock)
        return sock

    def stop(self, why: str) -> None:
        with self._lock:
            if self.stopped is None:
                self.stopped = why
            for sock in self._sockets:
                _shutdown(sock)

    def close(self) -> None:
        self._timer.cancel()
        if self._cancel is not None:
            self._cancel._discard(self)

    def over(self) -> bool:
        """Stopped, or past the deadline (a connect or read timeout set to the time left ends at it too)."""
        return self.stopped is not None or time.monotonic() >= self.ends

    def reason(self) -> str:
        if self.stopped == "cancelled":
            return "cancelled"
        return f"not finished within its {self.seconds:g} s deadline"


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the file descriptor's, also under TLS


def _check_url(url: str, allowed: tuple[Callable[[str], bool], str] | None, first: bool) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises)
    except ValueError:  # the port, a broken IPv6 address
        raise _Refused("not a usable URL" if first else "redirected to an unusable URL: not followed") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _Refused("not an http(s) URL" if first else "redirected to a URL that is not http(s): not followed")
    if allowed is not None and not allowed[0](url):
        raise _Refused(f"not under {allowed[1]}" if first else f"redirected outside {allowed[1]}: not followed")


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(scheme)


class _Redirects(urllib.request.BaseHandler):
    """Follows a GET's redirects, each target checked before it is opened, at most MAX_REDIRECTS; a
    request with a body is not redirected (urllib would resend a POST as a GET without it), nor one with
    credentials to another origin. The redirect's body is not read (it may be endless), and its target is
    not named in errors (it is what the server sent)."""

    def __init__(self, allowed):
        self.allowed = allowed
        self.followed = 0

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("Location")
        if location is None:
            return None  # an error like any other status
        fp.close()
        if req.get_method() not in ("GET", "HEAD"):
            raise _Refused(f"the server answered the {req.get_method()} with a redirect (HTTP {code}): not followed")
        self.followed += 1
        if self.followed > MAX_REDIRECTS:
            raise _Refused(f"more than {MAX_REDIRECTS} redirects")
        # As urllib does: Location is decoded as ISO-8859-1 by http.client; its bytes are %-escaped.
        target = urllib.parse.urljoin(req.full_url, urllib.parse.quote(location, encoding="iso-8859-1",
                                                                       safe=string.punctuation))
        _check_url(target, self.allowed, first=False)
        if req.has_header("Authorization") and _origin(target) != _origin(req.full_url):
            raise _Refused("redirected to another origin: not followed with the credentials")
        new = urllib.request.Request(target, headers={k: v for k, v in req.headers.items()
                                                      if k.lower() not in ("content-length", "content-type")},
                                     method=req.get_method())
        return self.parent.open(new, timeout=req.timeout)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _watched(connection_class, watch: _Watch):
    """`connection_class` whose sockets the watch tracks from the moment they connect (before a TLS
    handshake or a proxy tunnel, which a slow server could otherwise draw out)."""

    class Watched(connection_class):
        sock: socket.socket  # the base is a parameter: mypy cannot see its attributes

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = lambda *a, **k: watch.track(socket.create_connection(*a, **k))

        if issubclass(connection_class, http.client.HTTPSConnection):
            def connect(self) -> None:  # HTTPSConnection.connect, with the TLS socket tracked before its handshake
                http.client.HTTPConnection.connect(self)
                tls = watch.track(self._context.wrap_socket(
                    self.sock, server_hostname=self._tunnel_host or self.host, do_handshake_on_connect=False))
                self.sock = tls
                tls.do_handshake()

    return Watched


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: _Watch):
        super().__init__()
        self.watch = watch

    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, self.watch), req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: _Watch):
        super().__init__()
        self.watch = watch

    def https_open(self, req):
        # HTTPSHandler.__init__ keeps its context there; typeshed does not declare it
        context = self._context  # type: ignore[attr-defined]
        return self.do_open(_watched(http.client.HTTPSConnection, self.watch), req, context=context)


# -- transfers ----------------------------------------------------------------------------------------

@contextmanager
def _open(url: str, failure: str, deadline: float, *, data: bytes | None = None, headers: dict[str, str] | None = None,
          allowed=None, errors_answer: bool = False
          ) -> Iterator[tuple[http.client.HTTPResponse | urllib.error.HTTPError, _Watch]]:
    """(response, watch) of a GET, or a POST of `data`; errors are InputError("<failure>: <reason>").
    With `errors_answer`, an HTTP error status is an answer like any other (its body is the caller's)."""
    try:
        _check_url(url, allowed, first=True)
    except _Refused as refused:
        raise InputError(f"{failure}: {refused}") from None
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="GET" if data is None else "POST")
    watch = _Watch(deadline, _cancel.get())
    # Only these handlers: build_opener() would add ftp:, file: and data: ones, and urllib's redirects.
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), _WatchedHTTPHandler(watch),
                    _WatchedHTTPSHandler(watch), urllib.request.HTTPDefaultErrorHandler(), _Redirects(allowed),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    try:
        try:
            response = opener.open(request, timeout=min(READ_TIMEOUT, deadline))
        except urllib.error.HTTPError as error:
            if not errors_answer or error.fp is None:
                raise
            response = error
        with response:
            yield response, watch
    except _Refused as refused:
        raise InputError(f"{failure}: {refused}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        raise InputError(f"{failure}: {watch.reason() if watch.over() else _reason(error)}") from None
    finally:
        watch.close()


def _reason(error: BaseException) -> str:
    """A class of reason, not the error's text: "connection refused" and "not an HTTP answer (SSH-2.0...)"
    would tell which ports of an internal host answer."""
    if isinstance(error, urllib.error.HTTPError):
        phrase = http.HTTPStatus(error.code).phrase if error.code in http.HTTPStatus._value2member_map_ else ""
        return f"HTTP {error.code} {phrase}".rstrip()
    reason = getattr(error, "reason", error)
    if isinstance(reason, http.client.InvalidURL):
        return "not a usable URL"
    if isinstance(reason, socket.gaierror):
        return "host name not found"
    if isinstance(reason, TimeoutError):
        return f"no answer within {READ_TIMEOUT} s"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return "TLS certificate not trusted"
    return "no valid HTTP answer"


def _body(response, watch: _Watch, limit: int, write: Callable[[bytes], object], too_large: str) -> int:
    """Copy the body to `write` as it comes (a missing Content-Length does not make it reserve `limit`
    bytes), checking between reads whether the transfer was stopped; the bytes copied."""
    declared = response.headers.get("Content-Length")
    declared = int(declared) if declared is not None and re.fullmatch(r"[0-9]{1,20}", declared) else None
    if declared is not None and declared > limit:
        raise _Refused(too_large)
    received = 0
    while not watch.stopped and (chunk := response.read1(CHUNK)):
        received += len(chunk)
        if received > limit:
            raise _Refused(too_large)
        write(chunk)
    if watch.stopped:
        raise _Refused(watch.reason())
    if declared is not None and received < declared:
        raise _Refused(f"connection closed after {received} of {declared} bytes")
    return received


def download(location: str, what: str, limit: int | None = None) -> BinaryIO:
    """The body at an http(s) URL, in an unnamed temporary file (in $TMPDIR, read from its start, gone
    once closed): at most `limit` bytes and $KABIGATE_FETCH_MAX, within $KABIGATE_FETCH_DEADLINE."""
    setting = max_download()
    cap = setting if limit is None else min(limit, setting)
    too_large = f"larger than the {cap >> 20} MiB limit" + (" ($KABIGATE_FETCH_MAX)" if cap == setting else "")
    failure = f"{location}: cannot fetch URL" if what == location else f"{what}: {location}: cannot fetch URL"
    deadline = download_deadline()
    file = tempfile.TemporaryFile(prefix="kabigate-download-")  # noqa: SIM115 (the caller closes it)
    try:
        with _open(location, failure, deadline, allowed=_allowed.get()) as (response, watch):
            _body(response, watch, cap, lambda chunk: _write(file, chunk, failure), too_large)
        file.seek(0)
        return file
    except BaseException:
        file.close()
        raise


def _write(file, chunk: bytes, failure: str) -> None:
    try:
        file.write(chunk)
    except OSError as error:  # not the server's doing: said as it is
        raise InputError(f"{failure}: cannot keep the download in {tempfile.gettempdir()}: "
                         f"{error.strerror}") from None


def exchange(url: str, failure: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
             limit: int, deadline: float) -> tuple[int, bytes]:
    """One API call (a POST when there is `data`): the answer's status and body (at most `limit`
    bytes), error statuses included; the whole call within `deadline` seconds. Errors are
    InputError("<failure>: <reason>")."""
    received = bytearray()
    with _open(url, failure, deadline, data=data, headers=headers, errors_answer=True) as (response, watch):
        _body(response, watch, limit, received.extend, f"answer larger than {limit >> 10} KiB")
        status = response.code if isinstance(response, urllib.error.HTTPError) else response.status
        return status, bytes(received)

