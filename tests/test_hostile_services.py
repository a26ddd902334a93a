"""The services against hostile peers, on real servers on 127.0.0.1: a Koji hub whose answers are
malformed or sent a byte at a time (the listener's callback, Hub.call), and clients holding
`kabigate serve`'s connections open with half a request."""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import xmlrpc.client
from pathlib import Path

import pytest
from support.kojihub import KojiHub, RawXML
from support.webdata import Serve

from kabigate.errors import InputError
from kabigate.workers import koji
from kabigate.workers.config import Settings

KOJI = "org.fedoraproject.prod.buildsys.build.state.change"
KMOD_BUILD = {"build_id": 3001, "name": "kmod-acpi-call", "version": "1.0", "release": "1.el9", "new": 1,
              "old": 0, "attribute": "state", "instance": "primary", "owner": "kmods-sig", "epoch": None}
GUARD = 120  # seconds: a guard against a hang, never a measure


# -- Koji's hub: malformed answers ------------------------------------------------------------------

@pytest.fixture
def hub(tmp_path):
    """tests/support/kojihub.py's hub, with no builds of its own: each test gives it the answer it sends."""
    with KojiHub(tmp_path, {}) as server:
        yield server


@pytest.mark.parametrize("answer", [
    "<value><struct><member><name>id</name></member></struct></value>",  # no <value>
    "<value><struct><member><value><int>3001</int></value></member></struct></value>",  # no <name>
    "<value><struct><member><name>id</name><value><i4>1</i4></value><value><i4>2</i4></value></member></struct></value>",
    "<value><array><data><value><struct><member><name>x</name></member></struct></value></data></array></value>",
], ids=["no value", "no name", "two values", "in an array"])
def test_a_malformed_hub_answer_is_a_message_dropped_in_one_line_by_the_listeners_callback(hub, answer, caplog):
    from fedora_messaging.exceptions import Drop
    from fedora_messaging.message import Message

    from kabigate.workers.listener import EventConsumer

    hub.hostile[3001] = {"getBuild": lambda: RawXML(answer)}
    settings = Settings(koji_topurl="http://127.0.0.1:9/koji", koji_hub=hub.url)
    with caplog.at_level(logging.INFO, logger="kabigate.workers"), pytest.raises(Drop):
        EventConsumer(settings)(Message(topic=KOJI, body=KMOD_BUILD))
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "internal error" not in record.getMessage()
    assert re.fullmatch(r"dropped message \S+: koji getBuild: http://127\.0\.0\.1:\d+/kojihub: bad answer: "
                        r"IndexError: list index out of range", record.getMessage()), record.getMessage()


def test_any_unexpected_exception_in_the_listeners_callback_drops_the_message_in_one_line(monkeypatch, caplog):
    from fedora_messaging.exceptions import Drop
    from fedora_messaging.message import Message

    from kabigate.workers import listener
    from kabigate.workers.listener import EventConsumer

    def a_bug(topic, body, settings):  # stands in for a defect no test has found yet
        raise RuntimeError("a bug\nits second line")

    monkeypatch.setattr(listener, "event_request", a_bug)
    with caplog.at_level(logging.INFO, logger="kabigate.workers"), pytest.raises(Drop):
        EventConsumer(Settings())(Message(topic=KOJI, body=KMOD_BUILD))
    (record,) = caplog.records
    assert record.levelname == "ERROR" and record.exc_info is None
    assert record.getMessage().endswith("internal error: RuntimeError: a bug\\nits second line"), record.getMessage()


# -- Koji's hub: answers sent a byte at a time --------------------------------------------------------

ANSWER = xmlrpc.client.dumps(({"id": 3001, "name": "kmod-acpi-call", "version": "1.0", "release": "1.el9",
                               "state": 1, "volume_name": "DEFAULT"},), methodresponse=True).encode()


class SlowHub:
    """A hub on 127.0.0.1 that answers each call with ANSWER, sending the bytes of `slow` (its
    headers, or its body) one at a time, `pause` seconds apart; over TLS with a `tls` context."""

    def __init__(self, slow: str, pause: float, tls: ssl.SSLContext | None = None):
        self.slow, self.pause, self.tls = slow, pause, tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http{'s' if tls else ''}://127.0.0.1:{self.listener.getsockname()[1]}/kojihub"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed: the test is over
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nX-Padding: " + b"." * 40 +
                b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(ANSWER))
        request = b""
        with connection:
            try:
                if self.tls:
                    connection = self.tls.wrap_socket(connection, server_side=True)
                while b"</methodCall>" not in request and len(request) < 1 << 20:
                    request += connection.recv(65536) or b"</methodCall>"
                for part, data in (("headers", head), ("body", ANSWER)):
                    if part != self.slow:
                        connection.sendall(data)
                        continue
                    for byte in data:
                        connection.sendall(bytes([byte]))
                        time.sleep(self.pause)
            except OSError:  # the client gave up
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> tuple[ssl.SSLContext, Path]:
    """A TLS server context for 127.0.0.1, and its self-signed certificate (PEM) for clients to trust."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kojihub.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context, folder / "cert.pem"


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("slow", ["headers", "body"])
def test_a_hub_sending_its_answer_a_byte_at_a_time_does_not_answer_within_the_calls_deadline(
        monkeypatch, tls_server, slow, scheme):
    monkeypatch.setattr(koji, "HUB_TIMEOUT", 1.0)  # the answer takes ~5 s (headers) or ~15 s (body)
    context, certificate = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # what the hub's default TLS context trusts
    server = SlowHub(slow, pause=0.1, tls=context if scheme == "https" else None)
    try:
        with pytest.raises(koji.HubUnavailable, match=r"koji getBuild: .*: the hub does not answer: no whole "
                                                       r"answer in 1 s$"):
            koji.Hub(server.url).call("getBuild", 3001)
    finally:
        server.close()


def test_the_calls_about_one_build_share_a_time_budget_and_the_build_is_dropped_past_it(monkeypatch):
    monkeypatch.setattr(koji, "BUILD_BUDGET", 1.0)  # each call takes ~0.3 s: within its own HUB_TIMEOUT
    server = SlowHub("headers", pause=0.005)
    try:
        hub = koji.Hub(server.url)
        assert hub.call("getBuild", 3001)["name"] == "kmod-acpi-call"
        with pytest.raises(InputError, match=r"the calls about one build took more than 1 s$") as raised:
            for _ in range(30):
                hub.call("getRPMDeps", 1, 0)
        assert not isinstance(raised.value, koji.HubUnavailable)  # dropped: given back, it would take as long
    finally:
        server.close()


# -- kabigate serve: connections held open with half a request ---------------------------------------

def _closed_by_the_server(connection: socket.socket) -> None:
    """Read until the server closes (what it answered, then EOF or a reset)."""
    try:
        while connection.recv(65536):
            pass
    except ConnectionResetError:
        pass


def test_half_open_connections_neither_silence_kabigate_serve_nor_flood_its_log(tmp_path):
    """700 connections that send half a request head and wait, against a server allowed 600 open
    files: uvicorn alone accepts until accept() fails (EMFILE), logging a traceback each time."""
    server = Serve(tmp_path, "--max-connections", "50", "--header-timeout", "3")
    attackers: list[socket.socket] = []
    try:
        for _ in range(700):
            attacker = socket.create_connection(("127.0.0.1", server.port), timeout=GUARD)
            attacker.sendall(b"GET /api/v1/kernels HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            attackers.append(attacker)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/api/v1/kernels", timeout=GUARD) as response:
            assert response.status == 200 and response.read() == b'{"kernels":[]}'
        for attacker in attackers:  # each closed: the oldest for a newcomer, the others in 3 s
            _closed_by_the_server(attacker)
    finally:
        for attacker in attackers:
            attacker.close()
        lines = server.stop()
    assert any("closed the connection waiting longest for its request head" in line for line in lines), lines
    assert any("sent no whole request head in 3 s" in line for line in lines), lines
    assert len(lines) < 25, lines  # startup, one access line, each kind of closing once in 10 s, shutdown


def test_a_body_sent_a_byte_at_a_time_after_its_answer_does_not_hold_the_connection(tmp_path):
    server = Serve(tmp_path, "--header-timeout", "1")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=GUARD) as client:
            client.sendall(b"GET /api/v1/kernels HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")  # answered without the body
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                for _ in range(300):  # a minute of it: uvicorn's keep-alive timer restarts with each byte
                    client.sendall(b"x")
                    time.sleep(0.2)
    finally:
        server.stop()


def test_more_connections_than_the_open_file_limit_holds_is_a_one_line_error_before_serving(tmp_path):
    result = subprocess.run(["prlimit", "--nofile=600:600", sys.executable, "-m", "kabigate", "serve", "--db",
                             str(tmp_path / "store.db"), "--port", "0", "--max-connections", "1000"],
                            check=False, capture_output=True, text=True, timeout=GUARD)
    (line,) = result.stderr.splitlines()
    assert result.returncode == 2 and line == ("kabigate: error: --max-connections 1000: the open-file limit "
                                               "(ulimit -Hn) is 600, and serving takes 512 besides the connections")
