"""kabigate's memory: kernels, streams, driver builds and verdicts (SQLite or PostgreSQL).

`Store` is the only way in; nothing outside this package writes SQL."""

from kabigate.store.store import (
    BuildFailure,
    BuildRecord,
    Cell,
    Delivery,
    GateRun,
    KernelRecord,
    NotificationEvent,
    Removed,
    Store,
    StoredVerdict,
    StoreError,
    Subscription,
    TaskRecord,
    TaskState,
    WaiverDbLink,
    default_url,
    flavor_of,
    version_key,
)

__all__ = ["BuildFailure", "BuildRecord", "Cell", "Delivery", "GateRun", "KernelRecord", "NotificationEvent",
           "Removed", "Store", "StoreError", "StoredVerdict", "Subscription", "TaskRecord", "TaskState", "WaiverDbLink",
           "default_url", "flavor_of", "version_key"]
