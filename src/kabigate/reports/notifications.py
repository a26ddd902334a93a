"""Notifications as their receivers get them, from an event's stored payload (services/notify.py
makes it): the e-mail, the webhook's signed JSON, the Atom feeds of a package and of a stream, and
a subscription as the CLI and the API show it (its secret never)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
import xml.etree.ElementTree as ET
from email.message import EmailMessage
from email.utils import format_datetime

SIGNATURE_HEADER = "X-Kabigate-Signature"  # sha256=<hex HMAC-SHA256 of the body, keyed by the secret>
EVENT_HEADER = "X-Kabigate-Event"  # the event's kind
DELIVERY_HEADER = "X-Kabigate-Delivery"  # the event's id: the same event delivered twice has the same
ATOM = "http://www.w3.org/2005/Atom"
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def subscription_json(subscription) -> dict:
    """A subscription (store.Subscription) as `subscribe list --json` and /api/v1/subscriptions show it."""
    return {"id": subscription.id, "owner": subscription.owner, "target_kind": subscription.target_kind,
            "target": subscription.target, "channel": subscription.channel, "address": subscription.address or None,
            "has_secret": subscription.secret is not None, "created_at": subscription.created_at.isoformat()}


def webhook_body(payload: dict) -> bytes:
    """The POSTed JSON: the event's payload, keys sorted, so that the signature is over fixed bytes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """The signature header's value (GitHub's form): the receiver computes the same and compares."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def email_message(payload: dict, sender: str, to: str) -> EmailMessage:
    """The e-mail of an event; its Message-ID is the event's id, so a mail sent twice is one to a reader."""
    message = EmailMessage()
    message["Subject"] = f"[kabigate] {one_line(payload['summary'])}"
    message["From"] = sender
    message["To"] = to
    message["Message-ID"] = f"<{payload['id']}@kabigate>"
    message["Date"] = format_datetime(datetime.datetime.now(datetime.UTC))
    message[EVENT_HEADER] = payload["kind"]
    message.set_content(_body(payload))
    return message


def _body(payload: dict) -> str:
    """An event in words: its summary, then each of its fields that says something."""
    lines = [payload["summary"], "", *(f"{key}: {_text(value)}" for key, value in sorted(payload.items())
                                       if key not in ("summary", "id") and value not in (None, [], ""))]
    return "\n".join(lines) + "\n"


def one_line(text: str, limit: int = 200) -> str:
    """A header's or a title's text: one line (a build error quoted in a summary may hold several),
    without the control characters XML 1.0 forbids (a compiler's colours), shortened to `limit`."""
    text = " ".join(CONTROL.sub("", text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def atom_feed(title: str, feed_url: str, site_url: str, events) -> bytes:
    """An Atom feed (RFC 4287) of events (store.NotificationEvent), newest first: an entry each, its id
    the event's URN, linking to the gate run that saw it."""
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    ET.SubElement(feed, f"{{{ATOM}}}title").text = title
    ET.SubElement(feed, f"{{{ATOM}}}id").text = feed_url
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="self", href=feed_url)
    ET.SubElement(feed, f"{{{ATOM}}}link", rel="alternate", href=site_url)
    updated = max((e.created_at for e in events), default=datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC))
    ET.SubElement(feed, f"{{{ATOM}}}updated").text = _rfc3339(updated)
    ET.SubElement(ET.SubElement(feed, f"{{{ATOM}}}author"), f"{{{ATOM}}}name").text = "kabigate"
    for event in events:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        ET.SubElement(entry, f"{{{ATOM}}}id").text = f"urn:uuid:{event.uuid}"
        ET.SubElement(entry, f"{{{ATOM}}}title").text = one_line(event.payload["summary"])
        ET.SubElement(entry, f"{{{ATOM}}}updated").text = _rfc3339(event.created_at)
        ET.SubElement(entry, f"{{{ATOM}}}category", term=event.kind)
        if event.gate_run:
            ET.SubElement(entry, f"{{{ATOM}}}link", rel="alternate",
                          href=f"{site_url.rstrip('/')}/gate-runs/{event.gate_run}")
        ET.SubElement(entry, f"{{{ATOM}}}content", type="text").text = CONTROL.sub("", _body(event.payload))
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


def _rfc3339(moment: datetime.datetime) -> str:
    if moment.tzinfo is None:  # SQLite gives back the UTC it was given, without its zone
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
