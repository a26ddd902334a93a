"""Explaining CRC changes on request (the dashboard's "explain" button, POST /api/v1/explanations):
the request is recorded as a task in the store's task table (`kabigate tasks` lists it), and run
by the server, once per key; its causes go to kabigate's cache, where every page finds them."""

from __future__ import annotations

import hashlib
import json

from kabigate.errors import InputError
from kabigate.services.causes import cause_identity, pair_causes
from kabigate.store import KernelRecord, Store, TaskRecord, TaskState

KIND = "explain"
# Symbols one request names: a page asks for its unknown causes, at most a kernel's changed exports.
MAX_SYMBOLS = 5000
# A task tried this often and lost each time (a server stopped while explaining) is failed.
MAX_ATTEMPTS = 3


def queue_explanation(store: Store, old: KernelRecord, new: KernelRecord, symbols: list[str]) -> TaskRecord:
    """Record the request to explain `symbols`' CRC changes from `old` to `new`; its task, new or the
    one recorded before for the same kernels and symbols (keyed by what the causes depend on)."""
    if not symbols:
        raise InputError("no symbol to explain")
    if len(symbols) > MAX_SYMBOLS:
        raise InputError(f"{len(symbols)} symbols: at most {MAX_SYMBOLS} a request")
    if old.id == new.id:
        raise InputError(f"{old.release}: a kernel's CRCs do not change from itself")
    names = sorted(set(symbols))
    identity = json.dumps([cause_identity(old), cause_identity(new), names])
    key = f"{KIND}:{hashlib.sha256(identity.encode()).hexdigest()}"
    with store.transaction():
        return store.queue_task(key, KIND, {"old": old.id, "new": new.id, "from": old.release, "to": new.release,
                                            "symbols": names})


def run_explanation(store: Store, key: str) -> TaskRecord | None:
    """Explain a queued request, reading both kernels' types (seconds: the image's BTF, maybe modules);
    None when it is not this call's to run (done, failed, or running elsewhere)."""
    with store.transaction():
        queued = store.task(key)
        task = store.claim_task(key, queued.kind, queued.args, redelivered=False, max_attempts=MAX_ATTEMPTS)
    if task is None:
        return None
    try:
        old, new = store.kernel(task.args["old"]), store.kernel(task.args["new"])
        found = pair_causes(store, {old.id: old, new.id: new}, {(old.id, new.id): set(task.args["symbols"])},
                            cached=False)[(old.id, new.id)]
    except (InputError, IndexError, OSError) as error:
        with store.transaction():
            store.finish_task(key, TaskState.FAILED, error=str(error) or type(error).__name__)
    else:
        explained = sorted(s for s in task.args["symbols"] if s in found)
        with store.transaction():
            store.finish_task(key, TaskState.DONE, result={"explained": len(explained),
                                                           "unexplained": len(task.args["symbols"]) - len(explained)})
    return store.task(key)
