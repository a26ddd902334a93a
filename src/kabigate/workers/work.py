"""What a task is asked, and its idempotency key (events.py turns build events into these).

A key names the work, not the delivery: the same build announced twice (Koji resends, a
listener redelivered after a crash, two build systems) has one key, and a key that is done is
not done again. Ingest is content-addressed in the store besides (a kernel or build read twice
is stored once), and a gate is keyed by the kernel release and stream it gates. A build (a package
rebuilt for a kernel a gate judges; its own task type on its own queue) is keyed by the package, the
source it is built from and the kernel: two gates that need it share it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

KOJI_COMPLETE = 1  # koji.BUILD_STATES["COMPLETE"]
BUILD = "build"  # the request kind that runs on the builds queue


@dataclass(frozen=True)
class Request:
    kind: str  # ingest-kernel, ingest-drivers, gate, build
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


def build_request(driver: str, source: str | None, release: str, stream: str | None) -> Request:
    """A gating package rebuilt for a stored kernel from `source` (services/rebuild.py); its outcome stored."""
    args = {"driver": driver, "source": source, "release": release, "stream": stream}
    return Request(BUILD, _key(BUILD, args), args)


def _key(kind: str, identity) -> str:
    text = identity if isinstance(identity, str) else json.dumps(identity, sort_keys=True)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()}"
