"""What a task is asked, and its idempotency key (events.py turns build events into these).

A key names the work, not the delivery: the same build announced twice (Koji resends, a
listener redelivered after a crash, two build systems) has one key, and a key that is done is
not done again. Ingest is content-addressed in the store besides (a kernel or build read twice
is stored once), and a gate is keyed by the kernel release and stream it gates.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

KOJI_COMPLETE = 1  # koji.BUILD_STATES["COMPLETE"]


@dataclass(frozen=True)
class Request:
    kind: str  # ingest-kernel, ingest-drivers, gate
    key: str
    args: dict


def ingest_kernel_request(paths: list[str], stream: str | None, *, vermagic: str | None = None, gate: bool = False,
                          build_id: str | None = None) -> Request:
    args = {"paths": paths, "stream": stream, "vermagic": vermagic, "gate": gate}
    return Request("ingest-kernel", _key("ingest-kernel", build_id or args), args)


def ingest_drivers_request(paths: list[str], name: str | None = None, version: str | None = None,
                           build_id: str | None = None) -> Request:
    args = {"paths": paths, "name": name, "version": version}
    return Request("ingest-drivers", _key("ingest-drivers", build_id or args), args)


def gate_request(release: str, stream: str | None, baseline: str | None = None, *, once: bool = True) -> Request:
    """A gate of a stored kernel. `once`: the gate an event asks for, done once per release and
    stream; otherwise (a person asking again, after new drivers) a new gate each time."""
    args = {"release": release, "stream": stream, "baseline": baseline}
    identity = args if once else dict(args, request=str(uuid.uuid4()))
    return Request("gate", _key("gate", identity), args)


def _key(kind: str, identity) -> str:
    text = identity if isinstance(identity, str) else json.dumps(identity, sort_keys=True)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()}"
