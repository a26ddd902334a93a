"""Notifications on the real store: gates of real kernels make the events (6.1.0-50 breaks the
packages built for -47; -56's own builds fix them), a real SMTP server (aiosmtpd; also with STARTTLS
or implicit TLS and a login) and a real HTTP receiver get them, the receiver checks each HMAC
signature, each event arrives once across senders (a new process after the first), a webhook
answering 500 or hanging is retried a bounded number of times within its deadline, and the Atom
feeds parse as Atom."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from fastapi.testclient import TestClient
from support.realstore import RELEASES, STREAM, build_store
from support.tls import self_signed

from kabigate.errors import InputError
from kabigate.reports.notifications import atom_feed, email_message, subscription_json
from kabigate.services.gate import record_gate, resolve_kernel, run_gate
from kabigate.services.ingest import ingest_driver_build, read_driver_builds
from kabigate.services.notify import Channels, channels_from_env, deliver_pending, subscribe
from kabigate.store import NotificationEvent, Store
from kabigate.vocabulary import ChannelKind, DeliveryState, EventKind
from kabigate.web import create_app

pytestmark = pytest.mark.realdata
SECRET = "a-webhook-secret-of-some-length"
TOKEN = "notify-token-5d1e"
ATOM = "{http://www.w3.org/2005/Atom}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Inbox:
    """aiosmtpd's handler: keeps each message as it arrived."""

    def __init__(self):
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture(scope="module")
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook endpoint: checks the signature over the exact body; `mode` says how it answers."""

    mode = "ok"  # "ok", "fail" (HTTP 500), "hang" (answers after HANG seconds)
    received: list[dict] = []
    bad_signatures = 0
    HANG = 5.0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.mode == "hang":
            time.sleep(self.HANG)
        if self.mode != "ok":
            self.send_response(500)
            self.end_headers()
            return
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(self.headers["X-Kabigate-Signature"] or "", expected):
            type(self).bad_signatures += 1
            self.send_response(401)
            self.end_headers()
            return
        event = json.loads(body)
        assert self.headers["X-Kabigate-Delivery"] == event["id"]
        self.received.append(event)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def webhook():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def gated(testdata, tmp_path_factory, smtp, webhook):
    """The real store with subscriptions, gated at 6.1.0-50 (twice) and at -56; its path."""
    path = build_store(testdata, tmp_path_factory.mktemp("notify") / "store.db")
    with Store.open(path) as store:
        subscribe(store, "me", package="acpi-call", email="me@example.org")
        subscribe(store, "ci", stream=STREAM, webhook=webhook, secret=SECRET)
        subscribe(store, "bus", package="jool", bus=True)
        for release in RELEASES[1:]:
            candidate = resolve_kernel(store, release, STREAM)
            baseline = resolve_kernel(store, RELEASES[RELEASES.index(release) - 1], STREAM)
            result = run_gate(store, candidate, baseline, stream=STREAM)
            for _run in range(2):  # a gate recorded again (a worker redelivered it) makes no event again
                record_gate(store, result, {"outcome": result.outcome})
    return path


def _channels(smtp, **bounds) -> Channels:
    controller, _inbox = smtp
    return Channels(controller.hostname, controller.port, "kabigate@example.org", **bounds)


def test_a_gate_records_each_event_once(gated):
    with Store.open(gated) as store:
        events = store.events()
    kinds = sorted((e.kind, e.driver or "", e.kernel_release) for e in events)
    broken = [(EventKind.PACKAGE_BROKEN, d, RELEASES[1]) for d in
              ("acpi-call", "dahdi", "jool", "v4l2loopback", "xtables-addons")]
    assert [k for k in kinds if k[0] == EventKind.PACKAGE_BROKEN] == broken
    # -56's own builds load there, where nothing loaded on -50: fixed by a rebuild; dahdi's loads 31 of
    # its 32 modules (dahdi_echocan_oslec needs oslec_*): not fixed
    assert {k[1] for k in kinds if k[0] == EventKind.PACKAGE_FIXED} == {"acpi-call", "jool", "v4l2loopback",
                                                                           "xtables-addons"}
    assert (EventKind.GATE_BLOCKED, "", RELEASES[1]) in kinds
    assert len(kinds) == len(set(kinds))  # the second gate of -50 added nothing
    blocked = next(e for e in events if e.kind == EventKind.GATE_BLOCKED)
    assert blocked.payload["broken_packages"] == [b[1] for b in broken]
    assert blocked.payload["gate_outcome"] in ("FAILED", "NEEDS_INSPECTION")


def test_each_event_is_delivered_once_across_senders(gated, smtp, webhook):
    _controller, inbox = smtp
    Receiver.mode = "fail"  # the first sender meets a webhook answering 500: e-mail goes, webhooks wait
    with Store.open(gated) as store:
        report = deliver_pending(store, _channels(smtp, tries=2, backoff=0.01))
        assert report.delivered == 2 and report.retrying == 10  # acpi-call's 2 e-mails; the stream's 10 events
        assert report.waiting == 2  # jool's 2 events on the bus: no broker outside a worker
        failing = store.deliveries(DeliveryState.PENDING)
        assert {d.attempts for d in failing if d.subscription.channel == ChannelKind.WEBHOOK} == {2}
        assert all("HTTP 500" in d.error for d in failing if d.subscription.channel == ChannelKind.WEBHOOK)
    assert Receiver.received == []
    # "a restart": a new process, its own Store, picks up what is pending once it is due
    Receiver.mode = "ok"
    time.sleep(0.1)  # back-off: 0.01 s doubled per attempt so far
    controller, _ = smtp
    env = dict(os.environ, KABIGATE_SMTP=f"{controller.hostname}:{controller.port}",
               KABIGATE_MAIL_FROM="kabigate@example.org")
    done = subprocess.run([sys.executable, "-m", "kabigate", "subscribe", "deliver", "--db", gated], env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.startswith("10 delivered, 0 to retry, 0 failed, 2 waiting")
    with Store.open(gated) as store:  # and a third sender finds nothing left to send
        assert deliver_pending(store, _channels(smtp)).delivered == 0
    assert Receiver.bad_signatures == 0
    ids = [e["id"] for e in Receiver.received]
    assert len(ids) == len(set(ids)) == 10
    assert {e["kind"] for e in Receiver.received} == set(EventKind)
    mails = [m for m in inbox.messages]
    assert len(mails) == 2 and all(m.rcpt_tos == ["me@example.org"] for m in mails)
    text = mails[0].content.decode()
    assert "Subject: [kabigate] " in text and "acpi-call" in text and "Message-ID: <" in text
    with Store.open(gated) as store:
        left = store.deliveries(DeliveryState.PENDING)
        assert [d.subscription.channel for d in left] == [ChannelKind.BUS] * 2
        # the bus: a worker's publisher (workers.messaging.publish_notification) takes each event once;
        # its body is the message's, valid against kabigate.notification's schema
        from kabigate_messages import NotificationV1
        published = []

        def publish(event):
            jsonschema.validate(event.payload, NotificationV1.body_schema)
            published.append(event)

        assert deliver_pending(store, _channels(smtp), publish).delivered == 2
        assert deliver_pending(store, _channels(smtp), publish).delivered == 0
    assert sorted(e.kind for e in published) == [EventKind.PACKAGE_BROKEN, EventKind.PACKAGE_FIXED]


def test_a_hanging_or_failing_webhook_is_bounded(testdata, tmp_path, webhook, smtp):
    path = build_store(testdata, tmp_path / "store.db")
    with Store.open(path) as store:
        subscribe(store, "ci", package="jool", webhook=webhook, secret=SECRET)
        candidate, baseline = (resolve_kernel(store, r, STREAM) for r in RELEASES[:2][::-1])
        result = run_gate(store, candidate, baseline, stream=STREAM, driver="jool")
        record_gate(store, result, {"outcome": result.outcome})
        Receiver.mode = "hang"
        try:
            started = time.monotonic()
            report = deliver_pending(store, _channels(smtp, timeout=0.5, tries=2, backoff=0.05, max_attempts=4))
            took = time.monotonic() - started
            assert report.retrying == 1 and took < 0.5 * 2 + 1.5  # jool broken: two attempts of 0.5 s
            time.sleep(0.3)
            Receiver.mode = "fail"
            report = deliver_pending(store, _channels(smtp, timeout=0.5, tries=2, backoff=0.05, max_attempts=4))
            assert report.failed == 1  # 4 attempts: given up, never tried again
            assert deliver_pending(store, _channels(smtp)).delivered == 0
            failed = store.deliveries(DeliveryState.FAILED)
            assert [d.attempts for d in failed] == [4] and all("HTTP 500" in d.error for d in failed)
        finally:
            Receiver.mode = "ok"


def test_subscribe_refuses_hostile_input_in_one_line(gated):
    with Store.open(gated) as store:
        for channel in ({"package": "jool", "email": "me@example.org\r\nBcc: x@evil.example"},
                        {"package": "jool", "email": "not an address"},
                        {"package": "jool", "webhook": "file:///etc/passwd", "secret": SECRET},
                        {"package": "jool", "webhook": "http://user:pw@example.org/", "secret": SECRET},
                        {"package": "jool", "webhook": "http://example.org:99999/", "secret": SECRET},
                        {"package": "jool", "webhook": "http://example.org/hook"},  # no secret
                        {"package": "jool", "email": "me@example.org", "secret": SECRET},
                        {"package": "../x", "bus": True}, {"package": "jool", "stream": STREAM, "bus": True}):
            with pytest.raises(InputError) as refused:
                subscribe(store, "o", **channel)
            assert "\n" not in str(refused.value) and "pw" not in str(refused.value)
        listed = [subscription_json(s) for s in store.subscriptions()]
    assert [s["owner"] for s in listed] == ["me", "ci", "bus"]
    assert SECRET not in json.dumps(listed) and listed[1]["has_secret"] is True
    # the command line: exit 2, one line
    done = subprocess.run([sys.executable, "-m", "kabigate", "subscribe", "add", "--db", gated, "--owner", "o",
                           "--package", "jool", "--email", "not an address"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == "kabigate: error: 'not an address': not an e-mail address " \
                                                   "(local@domain.example)\n"


def test_the_api_and_the_feeds(gated):
    with TestClient(create_app(gated, token=TOKEN)) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/v1/subscriptions").status_code == 401  # addresses are not for everyone
        assert len(client.get("/api/v1/subscriptions", headers=auth).json()["subscriptions"]) == 3
        wanted = {"owner": "api", "stream": STREAM, "email": "ops@example.org"}
        assert client.post("/api/v1/subscriptions", json=wanted).status_code == 401
        assert client.post("/api/v1/subscriptions", json=dict(wanted, email="x@"), headers=auth).status_code == 400
        added = client.post("/api/v1/subscriptions", json=wanted, headers=auth)
        assert added.status_code == 201 and added.json()["address"] == "ops@example.org"
        assert client.post("/api/v1/subscriptions", json=wanted, headers=auth).status_code == 400  # twice
        assert client.delete(f"/api/v1/subscriptions/{added.json()['id']}", headers=auth).status_code == 200
        assert client.delete(f"/api/v1/subscriptions/{added.json()['id']}", headers=auth).status_code == 404

        answer = client.get("/feeds/packages/acpi-call.atom")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/atom+xml")
        feed = ET.fromstring(answer.content)
        assert feed.tag == f"{ATOM}feed" and feed.findtext(f"{ATOM}id") == str(answer.url)
        assert feed.find(f"{ATOM}author/{ATOM}name") is not None and feed.findtext(f"{ATOM}updated").endswith("Z")
        entries = feed.findall(f"{ATOM}entry")
        assert [e.find(f"{ATOM}category").get("term") for e in entries] == [EventKind.PACKAGE_FIXED,
                                                                            EventKind.PACKAGE_BROKEN]
        for entry in entries:  # RFC 4287: each entry has an id, a title and an updated date
            assert entry.findtext(f"{ATOM}id").startswith("urn:uuid:") and entry.findtext(f"{ATOM}title")
            assert entry.findtext(f"{ATOM}updated").endswith("Z")
            assert entry.find(f"{ATOM}link").get("href").startswith("http://testserver/gate-runs/")
        page = client.get("/drivers/acpi-call").text  # the driver's page names its feed
        assert page.count('href="/feeds/packages/acpi-call.atom"') == 2
        stream = ET.fromstring(client.get(f"/feeds/streams/{STREAM}.atom").content)
        assert len(stream.findall(f"{ATOM}entry")) == 10
        assert client.get("/feeds/packages/%2E%2E.atom").status_code == 404
        empty = ET.fromstring(client.get("/feeds/packages/no-such-driver.atom").content)
        assert empty.findall(f"{ATOM}entry") == []


def test_a_build_error_quoted_in_an_event_stays_one_subject_line_and_valid_xml():
    """A summary quotes a build's error (services.packages.why_not): compiler colours and several lines."""
    payload = {"id": "0c4b5e4e-1111-4222-8333-944445555666", "kind": EventKind.PACKAGE_BROKEN, "gate_run": None,
               "summary": "6.1.0-50-amd64 breaks jool: \x1b[01;31merror:\x1b[m 'x' undeclared\nmake: *** Error 2"}
    message = email_message(payload, "kabigate@example.org", "me@example.org")
    assert "\n" not in message["Subject"] and "\x1b" not in message["Subject"]
    event = NotificationEvent(1, payload["id"], EventKind.PACKAGE_BROKEN, "jool", STREAM, RELEASES[1], None, payload,
                              datetime.datetime(2026, 12, 7, 12, 0))
    feed = ET.fromstring(atom_feed("kabigate: package jool", "http://h/feeds/packages/jool.atom", "http://h/", [event]))
    (entry,) = feed.findall(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}title").startswith("6.1.0-50-amd64 breaks jool: [01;31merror:")
    assert entry.findtext(f"{ATOM}updated") == "2026-12-07T12:00:00Z"


def test_a_rebuild_stored_after_the_break_is_reported_fixed_at_the_next_gate(testdata, tmp_path):
    """acpi-call built for -47 only: -56 breaks it; its build for -56 is stored (what a driver
    repository's rebuild makes), the kernel is gated again: fixed, once."""
    path = build_store(testdata, tmp_path / "store.db")
    entries = testdata.manifest["drivers"]["acpi-call"]
    with Store.open(path) as store:
        with store.transaction():
            store.remove_builds("acpi-call")
        for built_for in (RELEASES[0], RELEASES[2]):
            for build in read_driver_builds([str(testdata.root / entries[built_for]["dir"])], "acpi-call",
                                            entries[built_for]["version"]):
                ingest_driver_build(store, build)
            candidate, baseline = (resolve_kernel(store, r, STREAM) for r in (RELEASES[2], RELEASES[0]))
            result = run_gate(store, candidate, baseline, stream=STREAM, driver="acpi-call")
            record_gate(store, result, {"outcome": result.outcome})
        kinds = [(e.kind, e.driver) for e in store.events()]
    assert kinds == [(EventKind.PACKAGE_FIXED, "acpi-call"), (EventKind.GATE_BLOCKED, None),
                     (EventKind.PACKAGE_BROKEN, "acpi-call")]


# -- SMTP with TLS and a login: a real aiosmtpd server with a self-signed certificate ------------------

SMTP_USER, SMTP_PASSWORD = "kabigate", "an smtp password 4f1e"


class SecureInbox(Inbox):
    """Keeps each message with how its session was: over TLS, logged in as whom."""

    async def handle_DATA(self, server, session, envelope):
        over_tls = server.transport.get_extra_info("ssl_object") is not None
        self.messages.append((envelope, over_tls, session.authenticated and session.auth_data))
        return "250 OK"


def _login(server, session, envelope, mechanism, auth_data):
    """aiosmtpd's authenticator: the one user and password (auth_data: what the client sent); a refusal
    is answered by aiosmtpd (handled=False: 535)."""
    return AuthResult(success=auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode(),
                      handled=False, auth_data=auth_data)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


@contextlib.contextmanager
def _secure_smtp(certificate: tuple[str, str], implicit: bool):
    """aiosmtpd requiring a login over TLS: STARTTLS on a plain port, or TLS from the first byte (where
    aiosmtpd 1.4 offers AUTH only when not told to require TLS: it knows only STARTTLS as TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    inbox = SecureInbox()
    tls = {"ssl_context": context, "auth_require_tls": False} if implicit else \
        {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port(), authenticator=_login, auth_required=True,
                            **tls)
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def one_mail(testdata, tmp_path_factory):
    """A store with one pending e-mail: acpi-call's owner told that 6.1.0-50 breaks it."""
    path = build_store(testdata, tmp_path_factory.mktemp("mail") / "store.db")
    with Store.open(path) as store:
        subscribe(store, "me", package="acpi-call", email="me@example.org")
        candidate, baseline = (resolve_kernel(store, r, STREAM) for r in RELEASES[:2][::-1])
        result = run_gate(store, candidate, baseline, stream=STREAM, driver="acpi-call")
        record_gate(store, result, {"outcome": result.outcome})
        assert len(store.deliveries(DeliveryState.PENDING)) == 1
    return path


def _smtp_env(controller, security: str, certificate: tuple[str, str], password_file) -> dict[str, str]:
    return {"KABIGATE_SMTP": f"{controller.hostname}:{controller.port}", "KABIGATE_SMTP_SECURITY": security,
            "KABIGATE_SMTP_USER": SMTP_USER, "KABIGATE_SMTP_PASSWORD_FILE": str(password_file),
            "KABIGATE_MAIL_FROM": "kabigate@example.org", "SSL_CERT_FILE": certificate[0]}


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_goes_over_tls_with_a_login(one_mail, certificate, tmp_path, security):
    """`subscribe deliver` with $KABIGATE_SMTP_SECURITY and a login whose password is in a file: the
    server (its certificate trusted through $SSL_CERT_FILE) takes the message over TLS, logged in."""
    store_path = tmp_path / "store.db"
    shutil.copy(one_mail, store_path)
    (tmp_path / "password").write_text(SMTP_PASSWORD + "\n")
    with _secure_smtp(certificate, implicit=security == "tls") as (controller, inbox):
        env = dict(os.environ, **_smtp_env(controller, security, certificate, tmp_path / "password"))
        done = subprocess.run([sys.executable, "-m", "kabigate", "subscribe", "deliver", "--db", str(store_path)],
                              env=env, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("1 delivered, 0 to retry, 0 failed"), done.stdout
    ((envelope, over_tls, login),) = inbox.messages
    assert over_tls and login.login == SMTP_USER.encode() and envelope.rcpt_tos == ["me@example.org"]
    assert "acpi-call" in envelope.content.decode() and SMTP_PASSWORD not in done.stdout + done.stderr


def test_a_refused_login_or_an_untrusted_certificate_is_a_failed_delivery_retried(one_mail, certificate, tmp_path,
                                                                                   monkeypatch):
    store_path = tmp_path / "store.db"
    shutil.copy(one_mail, store_path)
    (tmp_path / "password").write_text("not the password")
    with _secure_smtp(certificate, implicit=False) as (controller, inbox), Store.open(str(store_path)) as store:
        for name, value in _smtp_env(controller, "starttls", certificate, tmp_path / "password").items():
            monkeypatch.setenv(name, value)
        bounds = {"tries": 2, "backoff": 0.01, "max_attempts": 5}
        report = deliver_pending(store, dataclasses.replace(channels_from_env(), **bounds))
        assert (report.delivered, report.retrying, report.failed) == (0, 1, 0)  # recorded, to be tried again
        (pending,) = store.deliveries(DeliveryState.PENDING)
        assert pending.attempts == 2 and pending.error.startswith("(535, b'5.7.8 Authentication credentials invalid')")
        monkeypatch.delenv("SSL_CERT_FILE")  # the system's trust: the self-signed certificate is not trusted
        (tmp_path / "password").write_text(SMTP_PASSWORD)
        time.sleep(0.1)  # its back-off
        report = deliver_pending(store, dataclasses.replace(channels_from_env(), **bounds))
        (pending,) = store.deliveries(DeliveryState.PENDING)
        assert report.retrying == 1 and "CERTIFICATE_VERIFY_FAILED" in pending.error and pending.attempts == 4
        assert inbox.messages == []  # nothing went in clear meanwhile
        monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
        time.sleep(0.2)
        assert deliver_pending(store, dataclasses.replace(channels_from_env(), **bounds)).delivered == 1
        assert len(inbox.messages) == 1 and store.deliveries(DeliveryState.PENDING) == []


@pytest.mark.parametrize(("settings", "error"), [
    ({"KABIGATE_SMTP_SECURITY": "ssl"}, "KABIGATE_SMTP_SECURITY='ssl': one of none, starttls, tls"),
    ({"KABIGATE_SMTP_USER": SMTP_USER, "KABIGATE_SMTP_PASSWORD": SMTP_PASSWORD},
     "KABIGATE_SMTP_USER: a password is sent only over TLS (KABIGATE_SMTP_SECURITY=starttls or tls)"),
    ({"KABIGATE_SMTP_SECURITY": "tls", "KABIGATE_SMTP_USER": SMTP_USER},
     "KABIGATE_SMTP_USER needs its password: KABIGATE_SMTP_PASSWORD or KABIGATE_SMTP_PASSWORD_FILE (one printable "
     "line of at most 1024 characters)"),
    ({"KABIGATE_SMTP_PASSWORD": SMTP_PASSWORD}, "an SMTP password without KABIGATE_SMTP_USER"),
    ({"KABIGATE_SMTP_PASSWORD": "x", "KABIGATE_SMTP_PASSWORD_FILE": "/etc/hostname"},
     "KABIGATE_SMTP_PASSWORD and KABIGATE_SMTP_PASSWORD_FILE: give one"),
    ({"KABIGATE_SMTP_SECURITY": "tls", "KABIGATE_SMTP_USER": SMTP_USER, "KABIGATE_SMTP_PASSWORD_FILE": "/nonexistent"},
     "KABIGATE_SMTP_PASSWORD_FILE=/nonexistent: No such file or directory"),
])
def test_smtp_settings_are_checked_in_one_line(one_mail, tmp_path, settings, error):
    store = shutil.copy(one_mail, tmp_path / "store.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KABIGATE_SMTP")}
    done = subprocess.run([sys.executable, "-m", "kabigate", "subscribe", "deliver", "--db", str(store)],
                          env={**env, "KABIGATE_SMTP": "127.0.0.1:1", **settings}, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == f"kabigate: error: {error}\n"
    assert SMTP_PASSWORD not in done.stderr
