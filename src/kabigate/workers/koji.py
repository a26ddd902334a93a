"""Koji kmod builds: a completed build's RPMs, asked of Koji's XML-RPC hub, as a driver ingest.

A `buildsys.build.state.change` message names the build, not its RPMs. The hub answers
`getBuild(buildID)` (a map: id, name, version, release, state, volume_name, ...),
`listRPMs(buildID=..., arches=[...])` (maps: id, name, version, release, arch, build_id, ...)
and `getRPMDeps(rpmID, DEP_REQUIRE)` (maps: name, version, flags, type), as kojihub.py's
get_build(), list_rpms() and RootExports.getRPMDeps() do. Keyword arguments travel the way
koji.encode_args() sends them: a last struct marked `__starstar`. Packages are then at Koji's
pathinfo: topurl[/vol/VOLUME]/packages/NAME/VERSION/RELEASE/ARCH/N-V-R.ARCH.rpm (koji.PathInfo
build() and rpm()).

Answers are hostile like any input from outside: each call is bounded in time and size, and every
field used is type-checked; a component of a path must be an RPM name, version or release
(letters, digits, `._+~^-`, never `.` or `..`). The listener is one thread, and a kmod build with
`kmod_requires` takes up to MAX_RPMS + 2 calls: the calls about one build share a time budget too.
"""

from __future__ import annotations

import fnmatch
import http.client
import io
import math
import re
import socket
import time
import xmlrpc.client

from kabigate.errors import InputError
from kabigate.workers.config import Settings
from kabigate.workers.work import KOJI_COMPLETE, Request, ingest_drivers_request

DEP_REQUIRE = 0  # koji.DEP_REQUIRE
HUB_TIMEOUT = 30.0  # seconds one call may take in all: connecting, sending, the answer's headers and body
BUILD_BUDGET = 300.0  # seconds the calls about one build may take in all: MAX_RPMS + 2 calls at 0.6 s
MAX_RESPONSE = 16 << 20  # a kernel build's listRPMs is ~100 KB; a kmod's Requires ~30 KB
MAX_RPMS = 500  # a build's RPMs of the wanted arches (the kernel's: ~40)
_COMPONENT = re.compile(r"[A-Za-z0-9._+~^-]{1,255}")
# kmodtool (ELRepo, RHEL's kmod packaging) requires kernel(sym) = CRC; SUSE-style kmods ksym(sym)
_KABI_REQUIRE = re.compile(r"(kernel|ksym)\([^()]+\)")


class HubUnavailable(InputError):
    """The hub could not be reached or timed out: the message is given back, not dropped."""


def is_kmod_name(name: str, settings: Settings) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in settings.koji_kmod_packages)


def kmod_request(build_id: int, instance: str, name: str, settings: Settings) -> Request | None:
    """The driver ingest of completed Koji build `build_id` when it is a kmod build (its package
    name is one of koji.kmod_packages, or, with koji.kmod_requires, one of its RPMs requires
    kernel(sym) or ksym(sym)); None otherwise. InputError for an answer that cannot be trusted,
    HubUnavailable when the hub does not answer."""
    if settings.koji_hub is None or settings.koji_topurl is None:
        raise InputError("buildsys.build.state.change: koji.hub and koji.topurl are needed for kmod builds")
    hub = Hub(settings.koji_hub)
    build = hub.call("getBuild", build_id)
    if not isinstance(build, dict):
        raise InputError(f"koji getBuild({build_id}): not a build")
    fields = {key: build.get(key) for key in ("name", "version", "release")}
    for key, value in fields.items():
        _component(value, f"koji getBuild({build_id}) {key}")
    if build.get("id") != build_id or fields["name"] != name:
        raise InputError(f"koji getBuild({build_id}): the hub answered for another build")
    if build.get("state") != KOJI_COMPLETE:
        raise InputError(f"koji getBuild({build_id}): the build is not complete (state {build.get('state')!r:.20})")
    volume = build.get("volume_name")
    if volume not in (None, "DEFAULT"):
        _component(volume, f"koji getBuild({build_id}) volume_name")
    rpms = _rpms(hub, build_id, settings.koji_arches or (settings.koji_arch,))
    rpms = [rpm for rpm in rpms if not rpm["name"].endswith(("-debuginfo", "-debugsource"))]
    if not is_kmod_name(name, settings):
        if not settings.koji_kmod_requires:
            return None
        rpms = [rpm for rpm in rpms if _requires_kabi(hub, rpm["id"])]  # a hub call each: debuginfo left out first
    if not rpms:
        return None
    top = settings.koji_topurl.rstrip("/")
    if volume not in (None, "DEFAULT"):
        top = f"{top}/vol/{volume}"
    base = f"{top}/packages/{fields['name']}/{fields['version']}/{fields['release']}"
    paths = [f"{base}/{r['arch']}/{r['name']}-{r['version']}-{r['release']}.{r['arch']}.rpm" for r in rpms]
    return ingest_drivers_request(paths, build_id=f"koji:{instance}:{build_id}")


def _rpms(hub: Hub, build_id: int, arches: tuple[str, ...]) -> list[dict]:
    rpms = hub.call("listRPMs", {"buildID": build_id, "arches": list(arches), "__starstar": True})
    where = f"koji listRPMs(buildID={build_id})"
    if not isinstance(rpms, list) or not all(isinstance(rpm, dict) for rpm in rpms):
        raise InputError(f"{where}: not a list of RPMs")
    if len(rpms) > MAX_RPMS:
        raise InputError(f"{where}: more than {MAX_RPMS} RPMs")
    for rpm in rpms:
        for key in ("name", "version", "release", "arch"):
            _component(rpm.get(key), f"{where} {key}")
        if rpm.get("build_id") != build_id or rpm["arch"] not in arches:
            raise InputError(f"{where}: {rpm['name']}.{rpm['arch']} is not of this build and arches")
        if type(rpm.get("id")) is not int:
            raise InputError(f"{where}: {rpm['name']} has no RPM id")
    return rpms


def _requires_kabi(hub: Hub, rpm_id: int) -> bool:
    deps = hub.call("getRPMDeps", rpm_id, DEP_REQUIRE)
    if not isinstance(deps, list) or not all(isinstance(dep, dict) and isinstance(dep.get("name"), str)
                                             for dep in deps):
        raise InputError(f"koji getRPMDeps({rpm_id}): not a list of dependencies")
    return any(dep.get("type", DEP_REQUIRE) == DEP_REQUIRE and _KABI_REQUIRE.fullmatch(dep["name"]) for dep in deps)


def _component(value, what: str) -> str:
    if not isinstance(value, str) or not _COMPONENT.fullmatch(value) or value in (".", ".."):
        raise InputError(f"{what}: {str(value)[:100]!r} is not an RPM name, version or release")
    return value


class Hub:
    """Koji's hub over XML-RPC (python's xmlrpc.client, as koji's own ClientSession encodes calls).
    A call ends within HUB_TIMEOUT, from connecting to the answer's last byte, and the calls one Hub
    makes (those about one build) within BUILD_BUDGET; an answer is read up to MAX_RESPONSE."""

    def __init__(self, url: str):
        if not url.startswith(("http://", "https://")):
            raise InputError(f"{url[:200]}: koji.hub is an http(s) URL")
        self.url = url
        self.transport = _BoundedSafeTransport() if url.startswith("https://") else _BoundedTransport()
        self.proxy = xmlrpc.client.ServerProxy(url, transport=self.transport, allow_none=True)
        self.budget_end = time.monotonic() + BUILD_BUDGET

    def call(self, method: str, *args):
        where = f"koji {method}"
        # A build whose calls take longer than its budget would take as long again if given back:
        # it is dropped (an input error), where a call that times out is given back (HubUnavailable).
        over_budget = InputError(f"{where}: {self.url}: the calls about one build took more than {BUILD_BUDGET:g} s")
        now = time.monotonic()
        if now >= self.budget_end:
            raise over_budget
        self.transport.deadline = min(now + HUB_TIMEOUT, self.budget_end)
        try:
            try:
                return getattr(self.proxy, method)(*args)
            except BaseException:
                self.proxy("close")()  # an answer left half-read must not be read as the next one
                raise
        except xmlrpc.client.Fault as fault:
            text = str(fault.faultString).strip().splitlines()
            raise InputError(f"{where}: fault {fault.faultCode!s:.20}: {text[0][:300] if text else ''}") from None
        except xmlrpc.client.ProtocolError as error:
            reason = f"{where}: {self.url}: HTTP {error.errcode} {str(error.errmsg)[:100]}"
            raise (HubUnavailable if error.errcode in (502, 503, 504) else InputError)(reason) from None
        except TimeoutError:
            if self.transport.deadline == self.budget_end:
                raise over_budget from None
            raise HubUnavailable(f"{where}: {self.url}: the hub does not answer: no whole answer in "
                                 f"{HUB_TIMEOUT:g} s") from None
        except (ConnectionError, socket.gaierror) as error:
            raise HubUnavailable(f"{where}: {self.url}: {error or type(error).__name__}") from None
        except _Refused as error:
            raise InputError(f"{where}: {self.url}: bad answer: {error}") from None
        except Exception as error:  # noqa: BLE001  reading the answer failed, so the answer is bad:
            # xmlrpc.client's unmarshaller meets malformed XML-RPC with ExpatError, IndexError (a struct
            # member without <name> or <value>), KeyError, TypeError, ValueError (10,000-digit ints) ...
            text = str(error).strip().splitlines()
            detail = f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__
            raise InputError(f"{where}: {self.url}: bad answer: {detail}") from None


class _Refused(Exception):
    """An answer refused unread: too large, or in an encoding not asked for."""


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the call's time is up")
    return remaining


class _HubConnection(http.client.HTTPConnection):
    """http.client's connection, each step of which waits only until the call's deadline: a socket
    timeout alone bounds one read, and headers sent a byte a second never meet it."""

    deadline = math.inf  # the transport's, set for each call

    def connect(self):
        self.timeout = _remaining(self.deadline)
        super().connect()
        self.sock.settimeout(_remaining(self.deadline))  # HTTPS: the TLS handshake that follows, in all

    def send(self, data):
        if self.sock is not None:
            self.sock.settimeout(_remaining(self.deadline))  # sendall(): one timeout for all the data
        super().send(data)

    # http.client makes each answer by calling this; typeshed declares it a class, not any callable
    def response_class(self, sock, *args, **kwargs):  # type: ignore[override]
        return _HubResponse(sock, self.deadline, *args, **kwargs)


class _HubHTTPSConnection(http.client.HTTPSConnection, _HubConnection):
    pass


class _HubResponse(http.client.HTTPResponse):
    """An answer whose status line, headers and body are all read by the deadline."""

    def __init__(self, sock, deadline: float, *args, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline))


class _DeadlineReader(io.RawIOBase):
    """sock.makefile()'s raw reader (which keeps the socket open while the answer is read, though
    its connection is closed), each read given the time left until the deadline."""

    def __init__(self, raw: io.RawIOBase, sock, deadline: float):
        self.raw, self.sock, self.deadline = raw, sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        self.sock.settimeout(_remaining(self.deadline))
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()


class _Bounded(xmlrpc.client.Transport):
    """xmlrpc.client's Transport over _HubConnection, with a size cap on the answer (xmlrpc.client
    reads until the server stops, however large). Answers are asked uncompressed: xmlrpc.client
    inflates a gzip answer whole, unbounded."""

    accept_gzip_encoding = False
    deadline = math.inf  # the Hub's, set for each call

    def make_connection(self, host):
        connection = self._connection[1]
        if not (isinstance(connection, _HubConnection) and host == self._connection[0]):  # else the kept-alive one
            chost, self._extra_headers, _x509 = self.get_host_info(host)
            connection = self.new_connection(chost)
            self._connection = host, connection
        connection.deadline = self.deadline
        return connection

    def new_connection(self, host: str) -> _HubConnection:
        raise NotImplementedError

    def parse_response(self, response):
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE:
            raise _Refused(f"an answer of more than {MAX_RESPONSE >> 20} MiB ({declared} bytes)")
        if response.getheader("Content-Encoding", "identity") != "identity":
            raise _Refused(f"an answer in {response.getheader('Content-Encoding')[:50]} encoding, not asked for")
        parser, unmarshaller = self.getparser()
        received = 0
        while data := response.read(1 << 16):
            received += len(data)
            if received > MAX_RESPONSE:
                raise _Refused(f"an answer of more than {MAX_RESPONSE >> 20} MiB")
            parser.feed(data)
        parser.close()
        return unmarshaller.close()


class _BoundedTransport(_Bounded):
    def new_connection(self, host: str) -> _HubConnection:
        return _HubConnection(host)


class _BoundedSafeTransport(_Bounded, xmlrpc.client.SafeTransport):
    def new_connection(self, host: str) -> _HubConnection:
        # SafeTransport.__init__ keeps its context; typeshed does not declare the attribute
        return _HubHTTPSConnection(host, context=self.context)  # type: ignore[attr-defined]
