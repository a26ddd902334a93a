"""A ResultsDB-shaped endpoint on 127.0.0.1: POST /api/v2.0/results validated as ResultsDB's API
v2.0 validates a result, GET /api/v2.0/results answering queries by testcase and data."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import typing
import urllib.parse


class ResultsDB(http.server.BaseHTTPRequestHandler):
    """POST /api/v2.0/results, validated as ResultsDB's CreateResultParams and create_result do."""

    received: typing.ClassVar[list[dict]] = []
    outcomes = ("PASSED", "INFO", "FAILED", "NEEDS_INSPECTION")

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/api/v2.0/results":
            return self._answer(404, {"message": "not found"})
        query = dict(urllib.parse.parse_qsl(url.query))
        testcases = query.pop("testcases", "").split(",")
        limit = int(query.pop("limit", 20))
        matching = [dict(r, id=n) for n, r in enumerate(self.received, 1)
                    if r["testcase"]["name"] in testcases and all(r["data"].get(k) == v for k, v in query.items())]
        self._answer(200, {"data": matching[:limit], "prev": None, "next": None})

    def do_POST(self):
        if self.path != "/api/v2.0/results":
            return self._answer(404, {"message": "not found"})
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        except (ValueError, TypeError):
            return self._answer(400, {"message": "Malformed JSON"})
        problems = []  # (field, message), as pydantic reports them
        outcome = body.get("outcome")
        if not isinstance(outcome, str) or outcome.strip().upper() not in self.outcomes:
            problems.append(("outcome", f"must be one of: {', '.join(self.outcomes)}"))
        testcase = body.get("testcase")
        if isinstance(testcase, str):
            testcase = {"name": testcase}
        if not isinstance(testcase, dict) or not testcase.get("name"):
            problems.append(("testcase", "testcase name must be non-empty"))
        for key in ("note", "ref_url"):
            if key in body and not isinstance(body[key], str):
                problems.append((key, "str type expected"))
        data = body.get("data", {})
        if not isinstance(data, dict) or not all(
                isinstance(k, str) and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str)
                                                                                            for i in v)))
                for k, v in data.items()):
            problems.append(("data", "must map names to strings or lists of strings"))
        if problems:  # flask-pydantic's answer to a body CreateResultParams refuses
            return self._answer(400, {"validation_error": {"body_params": [
                {"loc": [field], "msg": message, "type": "value_error"} for field, message in problems]}})
        self.received.append(body)
        self._answer(201, dict(body, id=len(self.received), submit_time="2026-11-29T00:00:00"))

    def _answer(self, status, document):
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args):
        pass


@contextlib.contextmanager
def resultsdb_server():
    """A fresh endpoint (ResultsDB.received emptied); its API URL."""
    server = http.server.HTTPServer(("127.0.0.1", 0), ResultsDB)
    ResultsDB.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/api/v2.0"
    finally:
        server.shutdown()
