"""Notifications: owners subscribe to a driver package or a stream; when a gate records a run
(services/gate.record_gate, the one place events are made) it notes what subscribers care about:
a new kernel breaks a package that worked on the kernel before it (`package-broken`), a rebuild
makes a package work on a kernel (`package-fixed`), a gate does not pass (`gate-blocked`).

Each event has a key (kind, package, stream, kernel): gating the same kernel again adds no event.
The event and a pending delivery to each subscription it concerns are written in the gate run's
transaction (an outbox); a sender (deliver_pending) then claims each delivery, sends it (SMTP, a
signed webhook POST, the bus), and marks it delivered in a transaction. A sender that stops midway
leaves the rest pending for the next one; a delivery that fails is tried again with exponential
back-off, a bounded number of times, each attempt within a deadline, so a hanging endpoint never
holds a gate. Every message carries the event's id (Message-ID, X-Kabigate-Delivery, the bus
message id): a sender killed between sending and marking sends that one again, and it is the same.
"""

from __future__ import annotations

import datetime
import os
import re
import smtplib
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from kabigate.errors import InputError
from kabigate.inputs import httpclient
from kabigate.reports.notifications import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    atom_feed,
    email_message,
    signature,
    webhook_body,
)
from kabigate.store import Delivery, NotificationEvent, Store, Subscription
from kabigate.vocabulary import ChannelKind, EventKind, SmtpSecurity, SubscriptionTarget

# A package or stream name as the store keeps them (no spaces, nothing a URL or a topic needs quoted
# but dots and pluses, which a bus topic gets replaced).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,199}")
# An address as SMTP carries it (RFC 5321's dot-atom local part, a domain of DNS labels); no quoting,
# no comments, no display name: one address.
ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                     r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
MIN_SECRET = 16
# What an event says beyond its gate, each key in every event (null when not the event's business):
# a package's category in the gate, its state on the kernel and the baseline, the modules of its best
# build that load, the symbols it trips over; a blocked gate's broken packages and regressed builds.
DETAILS: dict = {"category": None, "state": None, "state_before": None, "modules_loading": None, "symbols": [],
                 "broken_packages": [], "regressions": None}
MAX_ANSWER = 64 << 10  # a webhook's answer is read (and dropped) up to this


@dataclass(frozen=True)
class Event:
    """An event a gate saw, before it is recorded (store.NotificationEvent once it is)."""

    key: str
    kind: EventKind
    driver: str | None
    stream: str | None
    kernel_release: str
    payload: dict


def event_key(kind: EventKind, driver: str | None, stream: str | None, kernel_id: int) -> str:
    return f"{kind}|{driver or '*'}|{stream or '*'}|{kernel_id}"


def event_payload(kind: EventKind, summary: str, driver: str | None, gate: dict, details: dict) -> dict:
    """What every channel sends of an event (the id is added when it is recorded): the one shape.
    `gate`: the gate's stream, kernel, baseline, gate_run and gate_outcome."""
    assert details.keys() <= DETAILS.keys(), details.keys() - DETAILS.keys()
    return {"kind": kind, "summary": summary, "package": driver, **gate, **DETAILS, **details}


def record_events(store: Store, gate_run: str, events: list[Event]) -> list[NotificationEvent]:
    """Record the events not recorded yet (inside the caller's transaction); the new ones."""
    recorded = [store.record_event(e.key, e.kind, e.driver, e.stream, e.kernel_release, gate_run,
                                   dict(e.payload, gate_run=gate_run)) for e in events]
    return [e for e in recorded if e is not None]


FEED_ENTRIES = 50


def event_feed(store: Store, target_kind: SubscriptionTarget, name: str, feed_url: str, site_url: str) -> bytes:
    """The Atom feed of a package's or a stream's events, the newest FEED_ENTRIES."""
    if not NAME.fullmatch(name):
        raise InputError(f"{name[:80]!r}: not a package or stream name")
    if target_kind == SubscriptionTarget.PACKAGE:
        events = store.events_of(driver=name, limit=FEED_ENTRIES)
    else:
        events = store.events_of(stream=name, limit=FEED_ENTRIES)
    return atom_feed(f"kabigate: {target_kind} {name}", feed_url, site_url, events)


# -- subscriptions --------------------------------------------------------------------------------

def subscribe(store: Store, owner: str, *, package: str | None = None, stream: str | None = None,
              email: str | None = None, webhook: str | None = None, secret: str | None = None,
              bus: bool = False) -> Subscription:
    """Subscribe `owner` to a package's or a stream's events, by one channel; checked as hostile input."""
    if (package is None) == (stream is None):
        raise InputError("subscribe to one package or one stream")
    target_kind, target = (SubscriptionTarget.PACKAGE, package) if package is not None \
        else (SubscriptionTarget.STREAM, stream)
    if sum((email is not None, webhook is not None, bus)) != 1:
        raise InputError("give one channel: an e-mail address, a webhook URL, or the bus")
    if not NAME.fullmatch(target or ""):
        raise InputError(f"{target_kind} {(target or '')[:80]!r}: not a package or stream name")
    if not owner or len(owner) > 200 or not owner.isprintable():
        raise InputError(f"owner {owner[:80]!r}: one printable line of at most 200 characters")
    if email is not None:
        channel, address = ChannelKind.EMAIL, check_email(email)
    elif webhook is not None:
        channel, address = ChannelKind.WEBHOOK, check_webhook(webhook)
        if secret is None or len(secret) < MIN_SECRET or len(secret) > 512 or not secret.isprintable():
            raise InputError(f"a webhook needs a secret of {MIN_SECRET} to 512 printable characters "
                             "(its messages are signed with it)")
    else:
        channel, address = ChannelKind.BUS, ""
    if secret is not None and channel != ChannelKind.WEBHOOK:
        raise InputError("only a webhook takes a secret")
    with store.transaction():
        return store.add_subscription(owner, target_kind, target or "", channel, address, secret)


def check_email(address: str) -> str:
    if len(address) > 254 or not ADDRESS.fullmatch(address):
        raise InputError(f"{address[:80]!r}: not an e-mail address (local@domain.example)")
    return address


def check_webhook(url: str) -> str:
    if len(url) > 2048 or not url.isprintable() or " " in url:
        raise InputError(f"{url[:80]!r}: not a webhook URL")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise InputError(f"{url[:80]}: not a webhook URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{url[:80]}: a webhook URL starts with http:// or https:// and names a host")
    if parts.username is not None or parts.password is not None:
        raise InputError(f"{parts.scheme}://...@{parts.hostname}: no credentials in a webhook URL (the secret "
                         "signs its messages)")
    return url


def unsubscribe(store: Store, subscription_id: int) -> Subscription:
    with store.transaction():
        return store.remove_subscription(subscription_id)


# -- delivery -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Channels:
    """How messages go out: the SMTP server, its security and login, the sender, and each attempt's bounds."""

    smtp_host: str | None = None  # None: e-mails wait (pending) until a sender knows a server
    smtp_port: int = 25
    mail_from: str = "kabigate@localhost"
    timeout: float = 10.0  # seconds one attempt may take, all told (a webhook that hangs is cut off)
    tries: int = 3  # attempts in one sender pass, with back-off between them
    backoff: float = 1.0  # seconds before the second attempt; doubled each time after
    max_attempts: int = 9  # then the delivery is failed for good
    budget: float = 120.0  # seconds one sender pass may start deliveries for; the rest wait for the next
    smtp_security: SmtpSecurity = SmtpSecurity.NONE
    smtp_user: str | None = None  # None: no AUTH
    smtp_password: str = field(default="", repr=False)


# The SMTP port of each security when $KABIGATE_SMTP names none (RFC 8314: submission 587, submissions 465).
SMTP_PORTS = {SmtpSecurity.NONE: 25, SmtpSecurity.STARTTLS: 587, SmtpSecurity.TLS: 465}
MAX_PASSWORD = 1024


def channels_from_env() -> Channels:
    """$KABIGATE_SMTP (HOST[:PORT]), $KABIGATE_SMTP_SECURITY (none, starttls, tls), $KABIGATE_SMTP_USER
    with its password in $KABIGATE_SMTP_PASSWORD or the file $KABIGATE_SMTP_PASSWORD_FILE (never an
    option: a command line is visible to every user of the machine), and $KABIGATE_MAIL_FROM. A password
    is sent only over TLS; the server's certificate is checked against OpenSSL's default trust
    ($SSL_CERT_FILE)."""
    smtp = os.environ.get("KABIGATE_SMTP", "").strip()
    sender = os.environ.get("KABIGATE_MAIL_FROM", "").strip() or Channels.mail_from
    if sender != Channels.mail_from:
        check_email(sender)
    security_text = os.environ.get("KABIGATE_SMTP_SECURITY", "").strip() or SmtpSecurity.NONE
    if security_text not in set(SmtpSecurity):
        raise InputError(f"KABIGATE_SMTP_SECURITY={security_text[:40]!r}: one of {', '.join(SmtpSecurity)}")
    security = SmtpSecurity(security_text)
    user, password = _smtp_login(security)
    if not smtp:
        return Channels(mail_from=sender)
    default_port = str(SMTP_PORTS[security])
    host, _, port = smtp.rpartition(":") if re.fullmatch(r".+:[0-9]{1,5}", smtp) else (smtp, "", default_port)
    if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}|\[[0-9a-fA-F:.]+\]", host) or not 0 < int(port) < 65536:
        raise InputError(f"KABIGATE_SMTP={smtp[:80]!r}: HOST or HOST:PORT")
    return Channels(host.strip("[]"), int(port), sender, smtp_security=security, smtp_user=user,
                    smtp_password=password)


def _smtp_login(security: SmtpSecurity) -> tuple[str | None, str]:
    """($KABIGATE_SMTP_USER or None, its password), checked."""
    user = os.environ.get("KABIGATE_SMTP_USER", "").strip() or None
    password = os.environ.get("KABIGATE_SMTP_PASSWORD", "")
    path = os.environ.get("KABIGATE_SMTP_PASSWORD_FILE", "").strip()
    if password and path:
        raise InputError("KABIGATE_SMTP_PASSWORD and KABIGATE_SMTP_PASSWORD_FILE: give one")
    if path:
        try:
            with open(path, "rb") as file:
                raw = file.read(MAX_PASSWORD + 2)
        except OSError as error:
            raise InputError(f"KABIGATE_SMTP_PASSWORD_FILE={path[:200]}: {error.strerror or error}") from None
        lines = raw.splitlines() or [b""]
        if len(raw) > MAX_PASSWORD + 1 or len(lines) > 1:
            raise InputError(f"KABIGATE_SMTP_PASSWORD_FILE={path[:200]}: not one line of at most {MAX_PASSWORD} bytes")
        try:
            password = lines[0].decode()
        except UnicodeDecodeError:
            raise InputError(f"KABIGATE_SMTP_PASSWORD_FILE={path[:200]}: not UTF-8 text") from None
    if user is None:
        if password:
            raise InputError("an SMTP password without KABIGATE_SMTP_USER")
        return None, ""
    if not password or len(password) > MAX_PASSWORD or not password.isprintable():
        raise InputError("KABIGATE_SMTP_USER needs its password: KABIGATE_SMTP_PASSWORD or KABIGATE_SMTP_PASSWORD_FILE "
                         f"(one printable line of at most {MAX_PASSWORD} characters)")
    if len(user) > 254 or not user.isprintable():
        raise InputError(f"KABIGATE_SMTP_USER={user[:80]!r}: one printable line of at most 254 characters")
    if security == SmtpSecurity.NONE:
        raise InputError("KABIGATE_SMTP_USER: a password is sent only over TLS "
                         "(KABIGATE_SMTP_SECURITY=starttls or tls)")
    return user, password


@dataclass(frozen=True)
class DeliveryReport:
    delivered: int
    retrying: int  # failed this time, tried again later
    failed: int  # failed for good
    waiting: int  # no way to send them here (the bus outside a worker, e-mail without a server)


def deliver_pending(store: Store, channels: Channels, publish: Callable[[NotificationEvent], None] | None = None
                    ) -> DeliveryReport:
    """Send the pending deliveries that are due: each claimed (another sender skips it), sent, and
    marked in a transaction. `publish` puts an event on the bus (a worker's); without it, bus
    deliveries wait for one."""
    started = time.monotonic()
    lease = datetime.timedelta(seconds=channels.tries * (channels.timeout + channels.backoff * 2 ** channels.tries)
                               + 60)
    counts = {"delivered": 0, "retrying": 0, "failed": 0, "waiting": 0}
    for delivery in store.due_deliveries(_now()):
        if time.monotonic() - started > channels.budget:
            break
        send = _sender(delivery, channels, publish)
        if send is None:
            counts["waiting"] += 1
            continue
        with store.transaction():
            if not store.claim_delivery(delivery.id, _now(), _now() + lease):
                continue
        error = None
        tries = max(1, min(channels.tries, channels.max_attempts - delivery.attempts))
        for attempt in range(tries):
            try:
                send()
                error = None
                break
            except (InputError, OSError, smtplib.SMTPException) as failure:
                error = _one_line(failure)
                if attempt + 1 < tries:
                    time.sleep(channels.backoff * 2 ** attempt)
        attempts = delivery.attempts + (attempt + 1)
        give_up = error is not None and attempts >= channels.max_attempts
        with store.transaction():
            store.finish_delivery(delivery.id, attempts, delivered=error is None, error=error, give_up=give_up,
                                  next_attempt_at=_now() + datetime.timedelta(seconds=channels.backoff * 2 ** attempts))
        counts["delivered" if error is None else "failed" if give_up else "retrying"] += 1
    return DeliveryReport(**counts)


def _sender(delivery: Delivery, channels: Channels, publish) -> Callable[[], None] | None:
    subscription, event = delivery.subscription, delivery.event
    if subscription.channel == ChannelKind.EMAIL:
        if channels.smtp_host is None:
            return None
        return lambda: _send_email(channels, event.payload, subscription.address)
    if subscription.channel == ChannelKind.WEBHOOK:
        return lambda: _post_webhook(channels, event.payload, subscription.address, subscription.secret or "")
    return None if publish is None else lambda: publish(event)


def _send_email(channels: Channels, payload: dict, to: str) -> None:
    """One message by SMTP: over TLS or STARTTLS (the certificate checked: a failure is a failed
    attempt, never a message in clear), logged in when a user is set (AUTH PLAIN or LOGIN, as offered)."""
    assert channels.smtp_host is not None  # (_sender sends none without it)
    host, port, timeout = channels.smtp_host, channels.smtp_port, channels.timeout
    context = ssl.create_default_context() if channels.smtp_security != SmtpSecurity.NONE else None
    client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context) \
        if channels.smtp_security == SmtpSecurity.TLS else smtplib.SMTP(host, port, timeout=timeout)
    with client as smtp:
        if channels.smtp_security == SmtpSecurity.STARTTLS:
            smtp.starttls(context=context)  # SMTPNotSupportedError when the server does not offer it
        if channels.smtp_user is not None:
            smtp.login(channels.smtp_user, channels.smtp_password)
        smtp.send_message(email_message(payload, channels.mail_from, to))


def _post_webhook(channels: Channels, payload: dict, url: str, secret: str) -> None:
    body = webhook_body(payload)
    headers = {"Content-Type": "application/json", "User-Agent": "kabigate", EVENT_HEADER: payload["kind"],
               DELIVERY_HEADER: payload["id"], SIGNATURE_HEADER: signature(secret, body)}
    status, _answer = httpclient.exchange(url, f"{url}: webhook not delivered", data=body, headers=headers,
                                          limit=MAX_ANSWER, deadline=channels.timeout)
    if not 200 <= status < 300:
        raise InputError(f"{url}: webhook not delivered: HTTP {status}")


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
