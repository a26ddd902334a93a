"""Publishing to ResultsDB (v2.0 API), where Fedora and CentOS CI keep test results and
Greenwave reads them to gate builds."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from kabigate.errors import InputError

# A ResultsDB answer is the created result, a few KiB; anything larger is not one.
MAX_RESPONSE = 1 << 20
TIMEOUT = 30


def publish_result(api_url: str, payload: dict, token: str | None = None) -> dict:
    """POST the result to <api_url>/results; returns ResultsDB's record of it (with its id)."""
    if not api_url.startswith(("http://", "https://")):
        raise InputError(f"{api_url}: a ResultsDB API URL starts with http:// or https://")
    url = api_url.rstrip("/") + "/results"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            body = response.read(MAX_RESPONSE + 1)
    except urllib.error.HTTPError as error:
        detail = _message(error.read(4096)) or error.reason
        raise InputError(f"{url}: ResultsDB refused the result: HTTP {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise InputError(f"{url}: cannot reach ResultsDB: {reason}") from None
    if len(body) > MAX_RESPONSE:
        raise InputError(f"{url}: ResultsDB's answer is larger than {MAX_RESPONSE >> 10} KiB")
    try:
        record = json.loads(body)
    except ValueError:
        raise InputError(f"{url}: ResultsDB's answer is not JSON") from None
    if not isinstance(record, dict) or "id" not in record:
        raise InputError(f"{url}: ResultsDB's answer has no result id")
    return record


def _message(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip().splitlines()[0][:200] if body.strip() else ""
    message = document.get("message") if isinstance(document, dict) else None
    return json.dumps(message)[:300] if message is not None else ""
