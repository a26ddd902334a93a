"""kabigate's message schemas (fedora-messaging): what kabigate consumes and what it publishes.

A schema package by fedora-messaging's convention: consumers install it (it needs only
fedora-messaging) and get validated, summarised messages; the classes are registered under the
`fedora.messages` entry point group.

- `kabigate.build.complete` (BuildCompleteV1): a build system other than Koji announces a
  finished kernel or driver build; kabigate ingests it (and gates a kernel).
- `kabigate.gate.result` (GateResultV1): the outcome of one gate of a kernel, published by the
  kabigate worker that ran it. The message id is the gate run's id, so a consumer that sees one
  twice (a worker lost between publishing and recording it) can tell.
- `kabigate.package.<NAME>` and `kabigate.stream.<NAME>` (NotificationV1): a notification event for a
  driver package (a kernel breaks it, a rebuild fixes it) or a stream (a gate blocks), published for
  those who subscribed the bus to it. The message id is the event's id.
"""

from __future__ import annotations

from typing import ClassVar

from fedora_messaging import message

_TEXT = {"type": "string", "minLength": 1, "maxLength": 4096}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_OUTCOME = {"enum": ["PASSED", "INFO", "NEEDS_INSPECTION", "FAILED"]}
_KERNEL = {
    "type": "object",
    "required": ["release"],
    "properties": {"release": _NAME, "package_version": {"type": ["string", "null"]},
                   "machine": {"type": ["string", "null"]}},
}


class BuildCompleteV1(message.Message):
    """A kernel or driver build is finished and its packages are where `files` say."""

    topic = "kabigate.build.complete"
    body_schema: ClassVar[dict] = {
        "id": "https://kabigate.example.org/message-schemas/build.complete/v1.json",
        "$schema": "http://json-schema.org/draft-07/schema#",
        "description": "A finished kernel or driver build for kabigate to ingest (and gate, for a kernel)",
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "files"],
        "properties": {
            "kind": {"enum": ["kernel", "drivers"]},
            # Package files or http(s) URLs: one kernel's packages (image + headers, kernel-core +
            # kernel-devel), or driver packages / a yum repository / module trees.
            "files": {"type": "array", "minItems": 1, "maxItems": 64, "items": _TEXT},
            "stream": _NAME,  # kernels: the stream it belongs to (its gate's baseline is the one before)
            "name": _NAME,  # drivers: names a module tree's build (packages name themselves)
            "version": _NAME,
            "build_id": _NAME,  # the build system's id for the build: a repeated event is done once
        },
    }

    @property
    def app_name(self) -> str:
        return "kabigate"

    @property
    def summary(self) -> str:
        kind = "kernel" if self.body.get("kind") == "kernel" else "driver"
        stream = f" of {self.body['stream']}" if self.body.get("stream") else ""
        return f"{kind} build{stream} finished: {', '.join(self.body.get('files', [])[:3])}"

    def __str__(self) -> str:
        return self.summary


class GateResultV1(message.Message):
    """The gate of a kernel on the stored driver builds: its outcome and its regressions."""

    topic = "kabigate.gate.result"
    body_schema: ClassVar[dict] = {
        "id": "https://kabigate.example.org/message-schemas/gate.result/v1.json",
        "$schema": "http://json-schema.org/draft-07/schema#",
        "description": "The outcome of a kabigate gate of a kernel",
        "type": "object",
        "required": ["run", "outcome", "candidate", "baseline", "stream", "counts", "coverage", "regressions"],
        "properties": {
            "run": {"type": "string", "maxLength": 36},  # the gate run's id in the store (and the message id)
            "outcome": _OUTCOME,
            "candidate": _KERNEL,
            "baseline": {"oneOf": [_KERNEL, {"type": "null"}]},
            "stream": {"type": ["string", "null"]},
            "counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0},
                       "required": ["regression", "still_failing", "fixed", "unaffected", "new"]},
            "coverage": {"type": "integer", "minimum": 0},  # gating builds judged on the candidate
            "stablelist_violations": {"type": "integer", "minimum": 0},
            "regressions": {"type": "array", "items": {
                "type": "object",
                "required": ["driver", "category", "outcome", "symbols"],
                "properties": {"driver": _NAME, "version": {"type": ["string", "null"]},
                               "built_for": {"type": ["string", "null"]}, "category": _NAME, "outcome": _OUTCOME,
                               "symbols": {"type": "array", "items": {"type": "string"}}},
            }},
            "resultsdb": {"type": ["string", "null"]},  # the ResultsDB result id, when published there too
        },
    }

    @property
    def app_name(self) -> str:
        return "kabigate"

    @property
    def summary(self) -> str:
        body = self.body
        baseline = body["baseline"]["release"] if body.get("baseline") else "none"
        return (f"kabigate gate of {body['candidate']['release']} against {baseline}: {body['outcome']} "
                f"({body['counts']['regression']} regressions)")

    def __str__(self) -> str:
        return self.summary


class NotificationV1(message.Message):
    """A notification event: a kernel breaks a package, a rebuild fixes it, a gate blocks. Its topic is
    the package's (kabigate.package.NAME) or, for a blocked gate, the stream's (kabigate.stream.NAME)."""

    topic = "kabigate.package"
    body_schema: ClassVar[dict] = {
        "id": "https://kabigate.example.org/message-schemas/notification/v1.json",
        "$schema": "http://json-schema.org/draft-07/schema#",
        "description": "A kabigate notification event (the webhook's JSON)",
        "type": "object",
        "required": ["id", "kind", "summary", "package", "stream", "kernel", "gate_run", "gate_outcome"],
        "properties": {
            "id": {"type": "string", "maxLength": 36},  # the event's id (and the message id)
            "kind": {"enum": ["package-broken", "package-fixed", "gate-blocked"]},
            "summary": _TEXT,
            "package": {"type": ["string", "null"]},
            "stream": {"type": ["string", "null"]},
            "kernel": _NAME,
            "baseline": {"type": ["string", "null"]},
            "gate_run": {"type": "string", "maxLength": 36},
            "gate_outcome": _OUTCOME,
        },
    }

    @property
    def app_name(self) -> str:
        return "kabigate"

    @property
    def summary(self) -> str:
        return self.body["summary"]

    def __str__(self) -> str:
        return self.summary
