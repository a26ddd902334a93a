"""The `Store`: everything kabigate remembers, in SQLite or PostgreSQL.

The facade over the store's parts, one file for what each keeps: base.py (opening, the schema,
transactions, the shared look-ups and inserts), records.py (kernels, streams, driver builds, build
failures), verdicts.py (verdicts by cell), gating.py (gate runs, waivers), tasks.py (the task
queue), notifications.py (subscriptions, events, their outbox), upkeep.py (removing, renaming,
moving, pruning). Callers (services, the web app, workers) get plain records and model objects
back, never rows or sessions.
"""

from kabigate.store.base import SQLITE_BUSY_TIMEOUT, StoreError, default_url, engine_url
from kabigate.store.gating import GateRun, GateStore, WaiverDbLink
from kabigate.store.notifications import Delivery, NotificationEvent, NotificationStore, Subscription
from kabigate.store.records import BuildFailure, BuildRecord, KernelRecord, flavor_of, version_key
from kabigate.store.tasks import TASK_STATES, TaskQueue, TaskRecord
from kabigate.store.upkeep import Removed, Upkeep
from kabigate.store.verdicts import Cell, StoredVerdict, VerdictStore
from kabigate.vocabulary import TaskState


class Store(Upkeep, VerdictStore, GateStore, TaskQueue, NotificationStore):
    """Everything kabigate remembers. Open with `Store.open(url)`; use as a context manager."""


__all__ = ["SQLITE_BUSY_TIMEOUT", "TASK_STATES", "BuildFailure", "BuildRecord", "Cell", "Delivery", "GateRun",
           "KernelRecord", "NotificationEvent", "Removed", "Store", "StoreError", "StoredVerdict", "Subscription",
           "TaskRecord", "TaskState", "WaiverDbLink", "default_url", "engine_url", "flavor_of", "version_key"]
