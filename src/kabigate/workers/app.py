"""The Celery app: two task types do requests (work.Request) against the shared store: `kabigate.run`
(ingest, gate) on the `kabigate` queue, and `kabigate.build` (a package rebuilt for a kernel: minutes
of compiling) on the `kabigate-builds` queue, so that build workers scale apart (`kabigate worker
--queues`). A gate that needs rebuilds asks for them and waits without holding its worker: its task
is `waiting` until the last build finishes, whose worker queues the gate again (store/tasks.py).

Delivery is at least once and the work is done once: a task is acknowledged only when done
(acks_late), given back to the broker when its worker process dies (reject_on_worker_lost), and
recorded in the store's `task` table, where a worker claims it before working. A second delivery
of a claimed task is skipped unless the broker marks it redelivered (its worker or connection was
lost); the work itself is idempotent (content-addressed ingest; a gate records its run with the
task, in one transaction). Bad input is recorded as failed with its one-line error and not
retried; a store or broker error (a server restart, two workers on one kernel) is retried, up to
max_attempts deliveries.
"""

from __future__ import annotations

import contextlib
import logging
import os

from celery import Celery
from kombu.exceptions import OperationalError

from kabigate.errors import InputError
from kabigate.inputs.httpclient import only_under
from kabigate.store import Store, StoreError, TaskRecord, TaskState
from kabigate.store.tasks import FINISHED
from kabigate.workers.config import BUILD_QUEUE, WORK_QUEUE, Settings
from kabigate.workers.gating import build_task, gate_task
from kabigate.workers.messaging import PublishError
from kabigate.workers.work import BUILD, Request, gate_request

log = logging.getLogger("kabigate.workers")

app = Celery("kabigate", set_as_current=False)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,  # a task is minutes of reading packages: none waits behind another
    task_ignore_result=True,  # results live in the store
    task_serializer="json",
    accept_content=["json"],
    task_default_queue=WORK_QUEUE,
    task_routes={"kabigate.build": {"queue": BUILD_QUEUE}},
    broker_connection_retry_on_startup=True,
    broker_transport_options={"confirm_publish": True},  # enqueued means the broker has it
    # A task whose connection was lost cannot be acknowledged; the broker redelivers it. Stop the
    # first copy rather than run both (harmless, as the work is idempotent, but twice the work).
    worker_cancel_long_running_tasks_on_connection_loss=True,
    worker_hijack_root_logger=False,
)
SETTINGS = Settings()
# A task that met a store or broker error runs again after 5 s, 10 s, ... at most 5 minutes apart,
# 20 times (about an hour and a half of outage); a task that gets to work counts deliveries instead
# (max_attempts).
RETRY_DELAY, RETRY_DELAY_MAX, RETRIES = 5, 300, 20


class BrokerError(InputError):
    """The broker cannot be reached: for a command, an error; for a task, a reason to try again."""


def configure(settings: Settings) -> None:
    """Use these settings in this process (and the worker processes it forks)."""
    global SETTINGS
    SETTINGS = settings
    app.conf.broker_url = settings.broker


def enqueue(store: Store, request: Request) -> tuple[TaskRecord, bool]:
    """Record the request and send it to the workers; (its task, sent). A request whose task is
    running, waiting, done or failed is not sent again."""
    with store.transaction():
        task = store.queue_task(request.key, request.kind, request.args)
    if task.state != TaskState.QUEUED:
        return task, False
    _send(task)
    return task, True


def enqueue_once(store: Store, request: Request) -> TaskRecord | None:
    """Record the request and send it, unless its key is recorded already (in any state): None then.
    The record is committed only once the broker has the task, so a sender killed in between finds
    no record and sends it again (the worker's claim makes a second copy a no-op), and a task still
    queued behind others is not sent again on every call, as `enqueue` would."""
    with store.transaction():
        if store.tasks(key=request.key):
            return None
        task = store.queue_task(request.key, request.kind, request.args)
        _send(task)
    return task


def _send(task: TaskRecord) -> None:
    """Give a queued task to the broker: a build to the builds queue (its own task type), the rest to the work queue."""
    try:
        (build if task.kind == BUILD else run).apply_async((task.kind, task.key, task.args))
    except OperationalError as error:  # kombu's word for a broker it cannot reach
        raise BrokerError(f"{SETTINGS.broker.split('@')[-1]}: cannot enqueue: {error}") from None


@app.task(name="kabigate.run", bind=True, max_retries=RETRIES)
def run(self, kind: str, key: str, args: dict) -> None:
    _work(self, kind, key, args)


@app.task(name="kabigate.build", bind=True, max_retries=RETRIES)
def build(self, kind: str, key: str, args: dict) -> None:
    _work(self, kind, key, args)


def _work(self, kind: str, key: str, args: dict) -> None:
    # A retry of this task carries on its own claim (left running when the store was down) as a
    # redelivery does a lost worker's.
    redelivered = bool((self.request.delivery_info or {}).get("redelivered")) or self.request.retries > 0
    try:
        store = _process_store()
        with store.transaction():
            task = store.claim_task(key, kind, args, redelivered=redelivered, max_attempts=SETTINGS.max_attempts)
        if task is None:
            log.info("%s: %s already done, failed, waiting or running elsewhere", kind, key)
            _wake(store, key)  # a finished task's waiters, should sending them have failed
            return
        try:
            with only_under(SETTINGS.may_fetch, "listen.allow or koji.topurl"):
                result = HANDLERS[kind](store, task)
        except (StoreError, PublishError, BrokerError):
            raise
        except InputError as error:
            _finish(store, key, TaskState.FAILED, error=str(error))
            log.warning("%s %s failed: %s", kind, key, error)
            return
        except Exception as error:  # a bug: recorded, not retried (it would fail the same way)
            log.exception("%s %s", kind, key)
            _finish(store, key, TaskState.FAILED, error=f"internal error: {type(error).__name__}: {error}")
            return
        if result is None:
            log.info("%s %s waits for the tasks it asked for", kind, key)
            return
        _finish(store, key, TaskState.DONE, result=result)
        log.info("%s %s done: %s", kind, key, result)
    except (StoreError, PublishError, BrokerError) as error:
        if isinstance(error, StoreError):
            _forget_store()  # opened again for the retry: the database may have restarted, or been replaced
        delay = min(RETRY_DELAY_MAX, RETRY_DELAY * 2 ** self.request.retries)
        log.warning("%s %s: %s; again in %d s", kind, key, error, delay)
        try:
            with Store.open(SETTINGS.db) as store, store.transaction():
                if store.lock_task(key).state == TaskState.RUNNING:  # a finished or waiting task stays so
                    store.finish_task(key, TaskState.QUEUED, error=str(error))
        except (StoreError, InputError):
            pass  # the store is down: the claim stays running, and the retry takes it up
        raise self.retry(countdown=delay, exc=error) from None


# This worker process's store: (pid, database, Store).
_store: tuple[int, str | None, Store] | None = None


def _process_store() -> Store:
    """The store this worker process works on, opened at its first task and kept for the next ones:
    its engine's connections, and what it has read of rows that never change (a kernel's ~25,000
    exports: ~0.2 s to read; a build's modules, checked against their digests), serve every later
    task: opening a store and reading again what a task judges against cost a build's ingest ~6x.
    Opened anew in a process forked from this one, and after a store error (_forget_store())."""
    global _store
    if _store is None or _store[:2] != (os.getpid(), SETTINGS.db):
        _store = opened = (os.getpid(), SETTINGS.db, Store.open(SETTINGS.db))
        return opened[2]
    return _store[2]


def _forget_store() -> None:
    global _store
    if _store is not None and _store[0] == os.getpid():
        with contextlib.suppress(Exception):  # closing a store whose database went away
            _store[2].close()
    _store = None


def _finish(store: Store, key: str, state: TaskState, **fields) -> None:
    """Record the task finished; the tasks that were waiting for it alone are queued and sent."""
    with store.transaction():
        store.finish_task(key, state, **fields)
        store.release_waiters(key)
    _wake(store, key)


def _wake(store: Store, key: str) -> None:
    for waiter in store.waiters(key, TaskState.QUEUED):
        _send(waiter)


def await_tasks(store: Store, task: TaskRecord, requests: list[Request]) -> list[TaskRecord] | None:
    """Have `task` wait for `requests` (and those it awaited before), sending the ones not sent: the
    awaited tasks when every one is finished, else None (the task is waiting; its worker is free)."""
    with store.transaction():
        awaited = store.await_tasks(task.key, [(r.key, r.kind, r.args) for r in requests])
    for queued in awaited:
        if queued.state == TaskState.QUEUED:
            _send(queued)
    return awaited if all(a.state in FINISHED for a in awaited) else None


def _ingest_kernel(store: Store, task: TaskRecord) -> dict:
    from kabigate.inputs.kernels import load_kernel
    from kabigate.services.ingest import ingest_kernel

    args = task.args
    ingested = ingest_kernel(store, load_kernel(args["paths"], args["vermagic"]), args["stream"])
    result = {"release": ingested.record.release, "verdicts": ingested.verdicts}
    if args["gate"]:
        gate, _sent = enqueue(store, gate_request(ingested.record.release, args["stream"]))
        result["gate"] = gate.key
    return result


def _ingest_drivers(store: Store, task: TaskRecord) -> dict:
    from kabigate.services.ingest import ingest_driver_build, read_driver_builds

    args = task.args
    builds = read_driver_builds(args["paths"], args["name"], args["version"])
    if not builds:
        raise InputError(f"{', '.join(args['paths'])[:300]}: no kernel modules or driver packages")
    return {"builds": [ingest_driver_build(store, build).record.label for build in builds]}


def _gate(store: Store, task: TaskRecord) -> dict | None:
    return gate_task(store, SETTINGS, task, await_tasks)


def _build(store: Store, task: TaskRecord) -> dict:
    return build_task(store, SETTINGS, task)


HANDLERS = {"ingest-kernel": _ingest_kernel, "ingest-drivers": _ingest_drivers, "gate": _gate, BUILD: _build}


def worker_main(settings: Settings, concurrency: int | None, hostname: str | None, loglevel: str) -> None:
    """Run a worker (blocks): `concurrency` processes taking tasks from the broker's queues in `settings.queues`."""
    configure(settings)
    argv = ["worker", f"--loglevel={loglevel}", "--without-gossip", "--without-mingle",
            f"--concurrency={concurrency or settings.concurrency or os.cpu_count() or 1}",
            f"--queues={','.join(settings.queues)}"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)
