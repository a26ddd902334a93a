"""The task queue's memory: each worker request by its key (kabigate.workers), its state, attempts,
error and result. A key makes a redelivered or repeated request a no-op.

A task may wait for others it asked for (a gate for its package rebuilds): their keys are its
result's `awaits`, it is `waiting` until the last of them finishes, then queued again. Who waits
for a task is found from the waiting tasks' results (there are few), under row locks taken in one
order (the awaited tasks, then the waiter), so that the last task to finish always sees the waiter
and two finishing at once do not both miss it."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from sqlalchemy import func, select

from kabigate.errors import InputError
from kabigate.store import schema as t
from kabigate.store.base import StoreBase, utc_now
from kabigate.vocabulary import TaskState

TASK_STATES = tuple(TaskState)
FINISHED = (TaskState.DONE, TaskState.FAILED)


@dataclass(frozen=True)
class TaskRecord:
    """A worker task (kabigate.workers): what was asked, where it stands."""

    key: str
    kind: str
    args: dict
    state: TaskState
    attempts: int
    error: str | None
    result: dict | None
    created_at: datetime.datetime
    updated_at: datetime.datetime



class TaskQueue(StoreBase):
    """Worker tasks: queued, claimed by one worker, finished, pruned."""

    def queue_task(self, key: str, kind: str, args: dict) -> TaskRecord:
        """Record a request (state queued) unless one of this key exists; its record."""
        now = utc_now()
        self._insert_ignoring_duplicates(t.task, [{"key": key, "kind": kind, "args": json.dumps(args),
                                                   "state": TaskState.QUEUED, "attempts": 0, "created_at": now,
                                                   "updated_at": now}])
        return self.task(key)

    def claim_task(self, key: str, kind: str, args: dict, *, redelivered: bool, max_attempts: int) -> TaskRecord | None:
        """Take a task for this worker (state running), or None when it is not this delivery's to do:
        done or failed already, or running elsewhere and this delivery is a duplicate rather than a
        redelivery (the broker redelivers only what a lost worker or connection left unacknowledged).
        A task delivered more than `max_attempts` times is recorded as failed instead."""
        self.queue_task(key, kind, args)
        connection = self._writing()
        row = self.lock_task(key)
        if row.state in FINISHED or (row.state in (TaskState.RUNNING, TaskState.WAITING) and not redelivered):
            return None
        if row.attempts >= max_attempts:
            why = row.error or "the worker running it was lost each time"
            self.finish_task(key, TaskState.FAILED, error=f"given up after {row.attempts} attempts: {why}")
            return None
        connection.execute(t.task.update().where(t.task.c.key == key)
                           .values(state=TaskState.RUNNING, attempts=row.attempts + 1, updated_at=utc_now()))
        return self.task(key)

    def await_tasks(self, key: str, requests: list[tuple[str, str, dict]]) -> list[TaskRecord]:
        """Make task `key` (running) wait for `requests` (key, kind, args), each recorded unless it
        exists, and for those it awaited before: `waiting` while one of them is not finished, else left
        running; the awaited tasks."""
        requests = sorted(requests, key=lambda request: request[0])  # in key order: waiters lock shared tasks alike
        for request in requests:
            self.queue_task(*request)
        before = (self.task(key).result or {}).get("awaits", [])
        keys = sorted({*before, *(request[0] for request in requests)})
        # (one pruned since is gone)
        awaited = [row for awaited_key in keys for row in self.tasks(key=awaited_key, for_update=True)]
        waiter = self.lock_task(key)
        result = dict(waiter.result or {}, awaits=[a.key for a in awaited])
        if any(a.state not in FINISHED for a in awaited):
            # a delivery that ends waiting was not lost: it does not count against max_attempts
            self._writing().execute(t.task.update().where(t.task.c.key == key).values(
                state=TaskState.WAITING, attempts=waiter.attempts - 1, result=json.dumps(result), updated_at=utc_now()))
        else:
            self.finish_task(key, TaskState.RUNNING, result=result)
        return awaited

    def release_waiters(self, key: str) -> None:
        """After task `key` finished (in this transaction): queue each task waiting for it whose awaited
        tasks are now all finished."""
        for waiter in self.waiters(key, TaskState.WAITING):
            waiter = self.lock_task(waiter.key)
            if waiter.state == TaskState.WAITING and all(
                    state in FINISHED for state in self._states((waiter.result or {}).get("awaits", []))):
                self.finish_task(waiter.key, TaskState.QUEUED, result=waiter.result)

    def waiters(self, key: str, state: TaskState) -> list[TaskRecord]:
        """The tasks in `state` whose result awaits task `key`."""
        return [task for task in self.tasks(state) if key in (task.result or {}).get("awaits", [])]

    def _states(self, keys: list[str]) -> list[TaskState]:
        with self._reading() as connection:
            found = dict(connection.execute(select(t.task.c.key, t.task.c.state).where(t.task.c.key.in_(keys))).all())
        return [TaskState(found[key]) if key in found else TaskState.DONE for key in keys]  # pruned: finished

    def lock_task(self, key: str) -> TaskRecord:
        """A task, locked until the transaction ends (PostgreSQL: FOR UPDATE; SQLite has one writer):
        two workers given the same task decide one after the other."""
        self._writing()
        rows = self.tasks(key=key, for_update=True)
        if not rows:
            raise InputError(f"no task {key} in the store")
        return rows[0]

    def finish_task(self, key: str, state: TaskState, *, error: str | None = None, result: dict | None = None) -> None:
        """Set a task's state (done, failed; queued again before a retry; waiting) and its error or result."""
        if state not in TASK_STATES:
            raise ValueError(state)
        values = {"state": state, "updated_at": utc_now(), "error": error}
        if result is not None:
            values["result"] = json.dumps(result)
        self._writing().execute(t.task.update().where(t.task.c.key == key).values(**values))

    def task(self, key: str) -> TaskRecord:
        tasks = self.tasks(key=key)
        if not tasks:
            raise InputError(f"no task {key} in the store")
        return tasks[0]

    def tasks(self, state: TaskState | None = None, *, key: str | None = None, limit: int | None = None,
              for_update: bool = False) -> list[TaskRecord]:
        """Tasks, most recently updated first."""
        query = select(t.task).order_by(t.task.c.updated_at.desc(), t.task.c.id.desc()).limit(limit)
        if for_update:
            query = query.with_for_update()
        if state is not None:
            query = query.where(t.task.c.state == state)
        if key is not None:
            query = query.where(t.task.c.key == key)
        with self._reading() as connection:
            rows = connection.execute(query).all()
        return [TaskRecord(row.key, row.kind, json.loads(row.args), TaskState(row.state), row.attempts, row.error,
                           None if row.result is None else json.loads(row.result), row.created_at, row.updated_at)
                for row in rows]

    def prune_tasks(self, before: datetime.datetime) -> int:
        """Delete the done and failed tasks last updated before `before`; how many. Queued and
        running tasks are kept, however old: a worker may be on one, and its key is what makes a
        redelivery a no-op. A pruned key is forgotten: the same request later is done again."""
        deleted = self._writing().execute(t.task.delete().where(
            t.task.c.state.in_(FINISHED), t.task.c.updated_at < before))
        return deleted.rowcount

    def task_counts(self) -> dict[TaskState, int]:
        with self._reading() as connection:
            counted = connection.execute(select(t.task.c.state, func.count()).group_by(t.task.c.state)).all()
        found: dict[str, int] = dict(counted)
        return {state: found.get(state, 0) for state in TASK_STATES}
