"""A ResultsDB-shaped endpoint on 127.0.0.1: POST /api/v2.0/results validated as ResultsDB's API
v2.0 validates a result, GET /api/v2.0/results answering queries by testcase and data."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import typing
import urllib.parse
import urllib.request


class _JsonHandler(http.server.BaseHTTPRequestHandler):
    """Answers in JSON, quietly."""

    def _answer(self, status, document):
        self._raw(status, json.dumps(document).encode())

    def _raw(self, status, payload: bytes):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args):
        pass


@contextlib.contextmanager
def _serving(handler: type[http.server.BaseHTTPRequestHandler], api: str):
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{api}"
    finally:
        server.shutdown()


class ResultsDB(_JsonHandler):
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


@contextlib.contextmanager
def resultsdb_server():
    """A fresh endpoint (ResultsDB.received emptied); its API URL."""
    ResultsDB.received = []
    with _serving(ResultsDB, "/api/v2.0") as url:
        yield url


class WaiverDB(_JsonHandler):
    """WaiverDB 1.4's /api/v1.0/waivers/: POST (one waiver or a list) validated as its CreateWaiver
    model, answered 201 with the waivers created; GET the current waivers (the newest of each
    subject, testcase, user and product version unless include_obsolete), filtered and paged. The
    bearer token is the user (WaiverDB takes it from Kerberos or OIDC); a POST without one is 401.
    `hostile` makes every answer one a broken or hostile server gives: "junk", "500", "huge"."""

    stored: typing.ClassVar[list[dict]] = []
    hostile: typing.ClassVar[str | None] = None

    def do_GET(self):
        if self._hostile():
            return
        url = urllib.parse.urlsplit(self.path)
        if url.path.rstrip("/") != "/api/v1.0/waivers":
            return self._answer(404, {"message": "Not Found"})
        query = dict(urllib.parse.parse_qsl(url.query))
        page, limit = int(query.pop("page", 1)), int(query.pop("limit", 10))
        obsolete = query.pop("include_obsolete", "false").lower() in ("1", "true")
        current = {}
        for waiver in self.stored:  # newest of each subject, testcase, user and product version
            current[(waiver["subject_type"], waiver["subject_identifier"], waiver["testcase"], waiver["username"],
                     waiver["product_version"])] = waiver["id"]
        matching = [w for w in reversed(self.stored) if (obsolete or w["id"] in current.values())
                    and all(w.get(k) == v for k, v in query.items())]
        chunk = matching[(page - 1) * limit:page * limit]
        more = len(matching) > page * limit
        self._answer(200, {"data": chunk, "prev": None, "first": None, "last": None,
                           "next": f"http://{self.headers['Host']}{url.path}?page={page + 1}" if more else None})

    def do_POST(self):
        if self._hostile():
            return
        if self.path.rstrip("/") != "/api/v1.0/waivers":
            return self._answer(404, {"message": "Not Found"})
        authorization = self.headers.get("Authorization", "")
        if not authorization.startswith("Bearer "):
            return self._answer(401, {"message": "Unauthorized"})
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        except (ValueError, TypeError):
            return self._answer(400, {"message": "Failed to decode JSON object"})
        entries = body if isinstance(body, list) else [body]
        problems = [problem for entry in entries for problem in self._problems(entry)]
        if problems or not entries:
            return self._answer(400, {"validation_error": [
                {"loc": [field], "msg": message, "type": "value_error"} for field, message in problems]})
        created = []
        for entry in entries:
            subject = entry.get("subject") or {}
            waiver = {"id": len(self.stored) + 1,
                      "subject_type": entry.get("subject_type") or subject.get("type"),
                      "subject_identifier": entry.get("subject_identifier") or subject.get("item"),
                      "testcase": entry["testcase"], "username": authorization.removeprefix("Bearer "),
                      "proxied_by": None, "product_version": entry["product_version"],
                      "waived": entry.get("waived", True), "comment": entry["comment"],
                      "scenario": entry.get("scenario"), "timestamp": "2026-12-07T00:00:00.000000"}
            waiver["subject"] = {"type": waiver["subject_type"], "item": waiver["subject_identifier"]}
            self.stored.append(waiver)
            created.append(waiver)
        self._answer(201, created if isinstance(body, list) else created[0])

    @staticmethod
    def _problems(entry) -> list[tuple[str, str]]:
        if not isinstance(entry, dict):
            return [("__root__", "value is not a valid dict")]
        problems = [(key, "ensure this value has at least 1 characters") for key in ("product_version", "comment")
                    if not isinstance(entry.get(key), str) or not entry[key]]
        if not isinstance(entry.get("testcase"), str):
            problems.append(("__root__", "Argument testcase is missing"))
        if not isinstance(entry.get("waived", True), bool):
            problems.append(("waived", "value could not be parsed to a boolean"))
        if entry.get("subject") is None and not (entry.get("subject_type") and entry.get("subject_identifier")):
            problems.append(("__root__", "subject must be defined using result_id or subject or both "
                                         "subject_identifier, subject_type"))
        return problems

    def _hostile(self) -> bool:
        if self.hostile == "junk":
            self._raw(200, b"{\"data\": [tru")
        elif self.hostile == "500":
            self._raw(500, b"<html><body>Internal Server Error\n<p>Traceback ...</p></body></html>")
        elif self.hostile == "huge":
            self._raw(200, b"{\"data\": [" + b"{\"id\": 1}, " * 400_000 + b"]}")
        return self.hostile is not None


@contextlib.contextmanager
def waiverdb_server():
    """A fresh WaiverDB-shaped endpoint (no waivers, well-behaved); its API URL."""
    WaiverDB.stored, WaiverDB.hostile = [], None
    with _serving(WaiverDB, "/api/v1.0") as url:
        yield url


def post_waiver(url: str, user: str, body: dict) -> None:
    """A waiver written in WaiverDB directly (its web form, or Greenwave's users), as `user`."""
    request = urllib.request.Request(url + "/waivers/", data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {user}"})
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 201
