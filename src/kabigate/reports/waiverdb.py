"""WaiverDB (API v1.0, as WaiverDB 1.4 serves it), where Fedora and CentOS CI keep the waivers
Greenwave applies: kabigate's waivers are posted there and read back from there.

A WaiverDB waiver forgives one testcase's result for one subject (a koji_build item: the kernel's
NVR), in a product version and optionally one scenario; a kabigate waiver forgives findings by
driver, symbol and kernel patterns. A waiver kabigate posts carries its patterns in its comment
(`[kabigate driver="jool" ...]`), so that another store imports it as it was; one written in
WaiverDB by hand forgives, as Greenwave applies it, every finding on the kernels of its item.

Calls go through the ResultsDB client's rules (httpclient: bounded answers, a deadline, no redirect
of a POST, the token only to its origin); answers are checked field by field."""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import TypeGuard

from kabigate.errors import InputError
from kabigate.formats.gatepolicy import Waiver
from kabigate.reports.resultsdb import MAX_ID, api_call, parse_answer

SERVICE = "WaiverDB"
SUBJECT_TYPE = "koji_build"  # the type kabigate's ResultsDB results give their item
PAGE = 100  # waivers asked for per page
MAX_PAGES = 50  # 5,000 waivers for one testcase and product version: more is not a WaiverDB kabigate reads
MAX_TEXT = 4096  # the longest comment, testcase or item kabigate keeps of an answer
_MARK = re.compile(r'\s*\[kabigate((?:\s+\w+="(?:[^"\\]|\\.)*")+)\]\s*$')
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*")')
MARKED = ("driver", "symbol", "kernel", "who", "expires")


@dataclass(frozen=True)
class RemoteWaiver:
    """A waiver as WaiverDB answered it, checked."""

    id: str
    subject_type: str
    subject_identifier: str
    testcase: str
    product_version: str
    scenario: str | None
    waived: bool
    comment: str
    username: str | None

    def patterns(self) -> dict[str, str] | None:
        """The kabigate waiver's fields its comment carries (one kabigate posted), else None."""
        match = _MARK.search(self.comment)
        if match is None:
            return None
        fields = {}
        for key, quoted in _FIELD.findall(match.group(1)):
            try:
                value = json.loads(quoted)
            except ValueError:
                return None
            if key in MARKED and isinstance(value, str):
                fields[key] = value
        return fields

    @property
    def reason(self) -> str:
        """Its comment without kabigate's mark."""
        return _MARK.sub("", self.comment).strip() or self.comment


def waiver_payload(waiver: Waiver, item: str, testcase: str, product_version: str, scenario: str | None) -> dict:
    """The WaiverDB waiver (POST /api/v1.0/waivers/) a kabigate waiver is for one item: its reason and,
    marked, its patterns in the comment."""
    marks = {"driver": waiver.driver, "symbol": waiver.symbol, "kernel": waiver.kernel, "who": waiver.who,
             **({"expires": waiver.expires.isoformat()} if waiver.expires else {})}
    comment = f"{waiver.reason} [kabigate " + " ".join(f"{k}={json.dumps(v)}" for k, v in marks.items()) + "]"
    payload = {"subject_type": SUBJECT_TYPE, "subject_identifier": item, "testcase": testcase,
               "product_version": product_version, "waived": True, "comment": comment}
    if scenario is not None:
        payload["scenario"] = scenario
    return payload


def revocation_payload(item: str, testcase: str, product_version: str, scenario: str | None,
                       comment: str) -> dict:
    """WaiverDB revokes by a newer waiver of the same subject and testcase with waived false."""
    payload = {"subject_type": SUBJECT_TYPE, "subject_identifier": item, "testcase": testcase,
               "product_version": product_version, "waived": False, "comment": comment}
    if scenario is not None:
        payload["scenario"] = scenario
    return payload


def post_waivers(api_url: str, payloads: list[dict], token: str | None) -> list[RemoteWaiver]:
    """POST the waivers at once (WaiverDB creates a list in one transaction); the waivers created."""
    url = api_url.rstrip("/") + "/waivers/"
    status, body = api_call(url, token, json.dumps(payloads).encode(), service=SERVICE)
    if status not in (200, 201):
        raise InputError(f"{url}: WaiverDB answered HTTP {status}, not 201 Created: the waivers are not posted")
    document = parse_answer(body, url, SERVICE)
    if not isinstance(document, list) or len(document) != len(payloads):
        raise InputError(f"{url}: WaiverDB's answer is not the list of the {len(payloads)} waivers created")
    return [remote_waiver(entry, url) for entry in document]


def fetch_waivers(api_url: str, testcase: str, product_version: str | None, token: str | None) -> list[RemoteWaiver]:
    """The current waivers of `testcase` (in `product_version`): WaiverDB leaves out those a newer one
    of the same subject, testcase, user and product version made obsolete, a revocation included."""
    found: list[RemoteWaiver] = []
    for page in range(1, MAX_PAGES + 1):
        query = {"testcase": testcase, **({"product_version": product_version} if product_version else {}),
                 "page": page, "limit": PAGE}
        url = api_url.rstrip("/") + "/waivers/?" + urllib.parse.urlencode(query)
        status, body = api_call(url, token, service=SERVICE)
        if status != 200:
            raise InputError(f"{url}: WaiverDB answered HTTP {status}, not 200 OK")
        document = parse_answer(body, url, SERVICE)
        entries = document.get("data") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise InputError(f"{url}: WaiverDB's answer has no waiver list")
        found.extend(remote_waiver(entry, url) for entry in entries)
        if not entries or document.get("next") is None:
            return found
    raise InputError(f"{api_url}: more than {MAX_PAGES * PAGE} waivers of {testcase}: not read")


def remote_waiver(entry, url: str) -> RemoteWaiver:
    """A waiver of an answer, checked: WaiverDB 1.4's subject_type/subject_identifier, or the older
    subject {type, item}."""
    if not isinstance(entry, dict):
        raise InputError(f"{url}: WaiverDB's answer has a waiver that is not an object")
    subject = entry["subject"] if isinstance(entry.get("subject"), dict) else {}
    waiver_id = entry.get("id")
    if not (isinstance(waiver_id, int) and not isinstance(waiver_id, bool) and 0 <= waiver_id < 10**MAX_ID):
        raise InputError(f"{url}: WaiverDB's answer has a waiver without a usable id")
    comment = entry.get("comment")
    if isinstance(comment, str):  # a comment written in WaiverDB's form may span lines: kept on one
        comment = " ".join(comment.split())
    text: dict[str, str] = {}
    for key, value in {"subject_type": entry.get("subject_type") or subject.get("type"),
                       "subject_identifier": entry.get("subject_identifier") or subject.get("item"),
                       "testcase": entry.get("testcase"), "product_version": entry.get("product_version"),
                       "comment": comment}.items():
        if not _text(value):
            raise InputError(f"{url}: WaiverDB's waiver {waiver_id} has no usable {key}")
        text[key] = value
    optional: dict[str, str | None] = {}
    for key in ("scenario", "username"):
        value = entry.get(key)
        if value is not None and not _text(value):
            raise InputError(f"{url}: WaiverDB's waiver {waiver_id} has an unusable {key}")
        optional[key] = value
    if not isinstance(entry.get("waived"), bool):
        raise InputError(f"{url}: WaiverDB's waiver {waiver_id} does not say whether it waives (waived)")
    return RemoteWaiver(str(waiver_id), text["subject_type"], text["subject_identifier"], text["testcase"],
                        text["product_version"], optional["scenario"], entry["waived"], text["comment"],
                        optional["username"])


def _text(value) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value.strip()) <= MAX_TEXT and value.isprintable()
