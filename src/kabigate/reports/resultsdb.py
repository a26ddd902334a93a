"""Publishing to ResultsDB (v2.0 API), where Fedora and CentOS CI keep test results and
Greenwave reads them to gate builds.

Calls go through httpclient: the POST is never redirected (urllib would resend it as a GET without
its body, and a 30x would look published), a GET only within ResultsDB's origin (the bearer token
goes nowhere else); each call has a deadline as a whole, and answers are parsed bounded."""

from __future__ import annotations

import json
import urllib.parse

from kabigate.errors import InputError
from kabigate.inputs import httpclient

# A ResultsDB answer is the created result, a few KiB; anything larger is not one.
MAX_RESPONSE = 1 << 20
DEADLINE = 60.0  # seconds one call may take, all told (a server answering a byte a second passes any read timeout)
MAX_ID = 64  # the store's gate_run.resultsdb_id column


def publish_result(api_url: str, payload: dict, token: str | None = None) -> str:
    """POST the result to <api_url>/results; returns the id ResultsDB gave it."""
    url = api_url.rstrip("/") + "/results"
    status, body = _call(url, token, json.dumps(payload).encode())
    if status not in (200, 201):
        raise InputError(f"{url}: ResultsDB answered HTTP {status}, not 201 Created: the result is not published")
    return created_id(parse_answer(body, url), url)


def find_result(api_url: str, testcase: str, data: dict[str, str], token: str | None = None) -> str | None:
    """The id of a result of `testcase` whose data has these values, if ResultsDB has one (so that a
    result is never published twice: a restarted publisher asks before it posts)."""
    query = urllib.parse.urlencode({"testcases": testcase, **data, "limit": 1})
    url = api_url.rstrip("/") + "/results?" + query
    status, body = _call(url, token)
    if status != 200:
        raise InputError(f"{url}: ResultsDB answered HTTP {status}, not 200 OK")
    return found_id(parse_answer(body, url), url)


def _call(url: str, token: str | None, data: bytes | None = None) -> tuple[int, bytes]:
    return api_call(url, token, data, service="ResultsDB")


def api_call(url: str, token: str | None, data: bytes | None = None, *, service: str) -> tuple[int, bytes]:
    """(status, body) of a call to ResultsDB or WaiverDB (`service`); an error status is an InputError
    with the service's message."""
    if not url.startswith(("http://", "https://")):
        raise InputError(f"{url}: a {service} API URL starts with http:// or https://")
    headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {}),
               **({"Content-Type": "application/json"} if data is not None else {})}
    status, body = httpclient.exchange(url, f"{url}: cannot reach {service}", data=data, headers=headers,
                                       limit=MAX_RESPONSE, deadline=DEADLINE)
    if status >= 400:
        detail = error_message(body)
        raise InputError(f"{url}: {service} refused the request: HTTP {status}" + (f": {detail}" if detail else ""))
    return status, body


def parse_answer(body: bytes, url: str, service: str = "ResultsDB"):
    """An answer's JSON document; bad or too deeply nested JSON is an InputError."""
    if len(body) > MAX_RESPONSE:
        raise InputError(f"{url}: {service}'s answer is larger than {MAX_RESPONSE >> 10} KiB")
    try:
        return json.loads(body)
    except RecursionError:  # [[[[... deeper than the interpreter's stack
        raise InputError(f"{url}: {service}'s answer is nested too deeply") from None
    except ValueError:
        raise InputError(f"{url}: {service}'s answer is not JSON") from None


def created_id(document, url: str) -> str:
    """The id of the result a POST created (its answer is the result)."""
    found = _id(document.get("id") if isinstance(document, dict) else None)
    if found is None:
        raise InputError(f"{url}: ResultsDB's answer has no result id")
    return found


def found_id(document, url: str) -> str | None:
    """The id of the first result a query found, None when it found none."""
    results = document.get("data") if isinstance(document, dict) else None
    if not isinstance(results, list):
        raise InputError(f"{url}: ResultsDB's answer has no result list")
    if not results:
        return None
    found = _id(results[0].get("id") if isinstance(results[0], dict) else None)
    if found is None:
        raise InputError(f"{url}: ResultsDB's answer has a result without a usable id")
    return found


def _id(value) -> str | None:
    """ResultsDB's ids are integers; a short printable string is taken too."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_ID:
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID and value.isprintable():
        return value
    return None


def error_message(body: bytes) -> str:
    """What an error answer says, on one line: its pydantic validation errors (ResultsDB 2.x answers
    {"validation_error": {"body_params": [...]}}, WaiverDB {"validation_error": [...]}) as
    "field: problem; ...", else its JSON "message", else its first line."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        lines = body.decode("utf-8", "replace").strip().splitlines()
        return lines[0][:200] if lines else ""
    if not isinstance(document, dict):
        return ""
    problems = _validation_errors(document.get("validation_error"))
    if problems:
        return "; ".join(problems)[:500]
    message = document.get("message")
    try:
        return json.dumps(message)[:300] if message is not None else ""
    except RecursionError:
        return ""


def _validation_errors(value) -> list[str]:
    """pydantic's errors ({"loc": [...], "msg": ...}, in a list or a dict of lists) as "field: msg"."""
    groups = value.values() if isinstance(value, dict) else [value]
    found = []
    for group in groups:
        for error in group if isinstance(group, list) else ():
            if not isinstance(error, dict) or not isinstance(error.get("msg"), str):
                continue
            loc = error.get("loc")
            where = ".".join(str(p) for p in loc if isinstance(p, (str, int))) if isinstance(loc, list) else ""
            text = f"{where}: {error['msg']}" if where else error["msg"]
            found.append("".join(c if c.isprintable() else " " for c in text)[:200])
    return found
