"""`kabigate serve`'s HTTP server: uvicorn, with what it lacks against clients that connect and wait.

uvicorn (0.55, h11) closes a connection idle after an answer (`timeout_keep_alive`), and caps a
request head's size (16 KiB), but gives a connection that has not yet sent a whole request head
unlimited time, and counts connections only to answer 503 once a head has arrived
(`limit_concurrency`). Connections sending half a head pile up until accept() fails with EMFILE,
which asyncio logs with a traceback, up to `backlog` (2048) times for each time the listening
socket is readable: the dashboard stops answering and its log grows by megabytes a second.

Here, as nginx's client_header_timeout and connection limits do: a request head must arrive within
`header_timeout` of the connection or of the answer before it (so must the rest of a body the
answer did not need); past `max_connections` open connections, a new one takes the place of the
one that has waited longest for its request head (a request being answered is never cut off), so a
client sending a whole request gets in however many are waiting; the open-file limit is raised to
hold them; and the messages about refused connections and failed accepts are logged once in
LOG_INTERVAL, with a count of the others.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from kabigate.errors import InputError

MAX_CONNECTIONS = 1000  # the default
LOG_INTERVAL = 10.0  # seconds between two log lines about refused connections or failed accepts
# asyncio accepts up to `backlog` connections each time the listening socket is readable, before the
# protocol sees any: uvicorn's 2048 let a burst take 2048 files past max_connections.
BACKLOG = 128
# A stopping server lets requests in progress finish for this long, then cancels them (a URL ingest's
# transfer with its request: uvicorn would otherwise wait for it up to the download deadline).
SHUTDOWN_GRACE = 10
SPARE_FILES = 256  # open files besides the connections: the store, uploads, static files, packages read

log = logging.getLogger("uvicorn.error")  # the server's own log, as uvicorn writes it
EVICTED = "closed the connection waiting longest for its request head"
REFUSED = "refused a connection"
SLOW_HEAD = "closed a connection that sent no whole request head in"


def serve(app, host: str, port: int, *, max_connections: int, header_timeout: float) -> None:
    """Run the server (blocks) with the guards above (max_connections: fit_open_file_limit()'s)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="info", backlog=BACKLOG,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE,
                            http=GuardedH11Protocol.limited(max_connections, header_timeout))
    once_an_interval = RateLimit(LOG_INTERVAL, (EVICTED, REFUSED, SLOW_HEAD, "Invalid HTTP request received",
                                                "socket.accept() out of system resource"))
    for name in ("uvicorn.error", "asyncio"):  # after uvicorn.Config, which configures logging
        logging.getLogger(name).addFilter(once_an_interval)
    uvicorn.Server(config).run()


def fit_open_file_limit(max_connections: int | None) -> int:
    """max_connections (by default MAX_CONNECTIONS, or fewer if the hard open-file limit holds fewer),
    the soft limit raised to hold them, a burst just accepted and the connections it replaces
    (closed on the loop's next turn)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = math.inf if hard == resource.RLIM_INFINITY else hard - 2 * BACKLOG - SPARE_FILES
    if max_connections is None:
        max_connections = int(min(MAX_CONNECTIONS, room))
    if not 0 < max_connections <= room:
        raise InputError(f"--max-connections {max_connections}: the open-file limit (ulimit -Hn) is {hard}, and "
                         f"serving takes {2 * BACKLOG + SPARE_FILES} besides the connections")
    needed = max_connections + 2 * BACKLOG + SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return max_connections


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a time limit on request heads and a cap on open connections.
    `limited()` makes the class a server uses: its settings, and its connections waiting for a
    request head (oldest first, each with the timer that closes it)."""

    max_connections: int
    header_timeout: float
    waiting: dict[GuardedH11Protocol, asyncio.TimerHandle]

    @classmethod
    def limited(cls, max_connections: int, header_timeout: float) -> type[GuardedH11Protocol]:
        return type(cls.__name__, (cls,), {"max_connections": max_connections, "header_timeout": header_timeout,
                                           "waiting": {}})

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            if not self.waiting:  # every connection has a request in progress
                log.warning("%s: %d open, each with a request in progress (--max-connections)", REFUSED,
                            len(self.connections) - 1)
                self.transport.close()
                return
            log.warning("%s: %d open (--max-connections)", EVICTED, len(self.connections) - 1)
            next(iter(self.waiting))._close_waiting()
        self._wait_for_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._answering():  # a whole head arrived
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start on a pipelined request
        if not self.transport.is_closing() and not self._answering():
            self._wait_for_head()  # the next request's, or the rest of a body the answer did not need

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def connection_lost(self, exc) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _wait_for_head(self) -> None:
        self._stop_waiting()
        self.waiting[self] = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _stop_waiting(self) -> None:
        timer = self.waiting.pop(self, None)
        if timer is not None:
            timer.cancel()

    def _head_too_slow(self) -> None:
        log.warning("%s %g s (--header-timeout)", SLOW_HEAD, self.header_timeout)
        self._close_waiting()

    def _close_waiting(self) -> None:
        self._stop_waiting()
        self.transport.close()


class RateLimit(logging.Filter):
    """Lets one record through in `interval` seconds for each message (by how it starts) in
    `messages`, on one line without its traceback, saying how many it held back since the last."""

    def __init__(self, interval: float, messages: tuple[str, ...]):
        super().__init__()
        self.interval, self.messages = interval, messages
        self.last: dict[str, float] = {}
        self.held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        message = next((m for m in self.messages if text.startswith(m)), None)
        if message is None:
            return True
        now = time.monotonic()
        if now - self.last.get(message, -math.inf) < self.interval:
            self.held[message] = self.held.get(message, 0) + 1
            return False
        self.last[message] = now
        text = text.splitlines()[0]
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {record.exc_info[1]}"
        held = self.held.pop(message, 0)
        if held:
            text += f" (and {held} more since the last such line)"
        record.msg, record.args, record.exc_info, record.exc_text = text, None, None, None
        return True
