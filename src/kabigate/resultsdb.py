"""Publishing to ResultsDB (v2.0 API), where Fedora and CentOS CI keep test results and
Greenwave reads them to gate builds."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from kabigate.errors import InputError

# A ResultsDB answer is the created result, a few KiB; anything larger is not one.
MAX_RESPONSE = 1 << 20
TIMEOUT = 30


def publish_result(api_url: str, payload: dict, token: str | None = None) -> str:
    """POST the result to <api_url>/results; returns the id ResultsDB gave it."""
    url = api_url.rstrip("/") + "/results"
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers=dict(_headers(token), **{"Content-Type": "application/json"}))
    record = _exchange(request, url)
    if not isinstance(record, dict) or "id" not in record:
        raise InputError(f"{url}: ResultsDB's answer has no result id")
    return str(record["id"])


def _headers(token: str | None) -> dict[str, str]:
    return {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}


def _exchange(request: urllib.request.Request, url: str):
    if not url.startswith(("http://", "https://")):
        raise InputError(f"{url}: a ResultsDB API URL starts with http:// or https://")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            body = response.read(MAX_RESPONSE + 1)
    except urllib.error.HTTPError as error:
        detail = _message(error.read(4096)) or error.reason
        raise InputError(f"{url}: ResultsDB refused the request: HTTP {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise InputError(f"{url}: cannot reach ResultsDB: {reason}") from None
    if len(body) > MAX_RESPONSE:
        raise InputError(f"{url}: ResultsDB's answer is larger than {MAX_RESPONSE >> 10} KiB")
    try:
        return json.loads(body)
    except ValueError:
        raise InputError(f"{url}: ResultsDB's answer is not JSON") from None


def find_result(api_url: str, testcase: str, data: dict[str, str], token: str | None = None) -> str | None:
    """The id of a result of `testcase` whose data has these values, if ResultsDB has one (so that a
    result is never published twice: a restarted publisher asks before it posts)."""
    query = urllib.parse.urlencode({"testcases": testcase, **data, "limit": 1})
    url = api_url.rstrip("/") + "/results?" + query
    document = _exchange(urllib.request.Request(url, headers=_headers(token)), url)
    results = document.get("data") if isinstance(document, dict) else None
    if not isinstance(results, list):
        raise InputError(f"{url}: ResultsDB's answer has no result list")
    found = results[0].get("id") if results and isinstance(results[0], dict) else None
    return None if found is None else str(found)


def _message(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip().splitlines()[0][:200] if body.strip() else ""
    message = document.get("message") if isinstance(document, dict) else None
    return json.dumps(message)[:300] if message is not None else ""
