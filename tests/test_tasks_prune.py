"""`kabigate tasks --prune --older-than DAYS` on SQLite and on a real PostgreSQL server: done and
failed tasks older than that go, queued and running ones stay whatever their age."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kabigate.store import Store
from kabigate.store import schema as t

KABIGATE = [sys.executable, "-m", "kabigate"]
def test_tasks_prune_deletes_old_done_and_failed_tasks_only(store_url):
    import datetime

    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=40)
    with Store.open(store_url) as store:
        with store.transaction():
            for key in ("old-done", "old-failed", "old-queued", "old-running", "new-done"):
                store.queue_task(key, "ingest-drivers", {"paths": [key]})
            store.claim_task("old-running", "ingest-drivers", {}, redelivered=False, max_attempts=3)
            for key, state in (("old-done", "done"), ("old-failed", "failed"), ("new-done", "done")):
                store.finish_task(key, state, error="bad input" if state == "failed" else None)
        with store.transaction():
            store._writing().execute(t.task.update().where(t.task.c.key.like("old-%")).values(updated_at=long_ago))
    env = dict(os.environ, KABIGATE_DB=store_url)
    pruned = subprocess.run([*KABIGATE, "tasks", "--prune", "--older-than", "30", "--json"], check=False, env=env,
                            capture_output=True, text=True)
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["pruned"] == 2
    with Store.open(store_url) as store:
        assert sorted((task.key, task.state) for task in store.tasks()) == [
            ("new-done", "done"), ("old-queued", "queued"), ("old-running", "running")]
        with store.transaction():
            task = store.queue_task("old-done", "ingest-drivers", {"paths": ["old-done"]})
        assert (task.state, task.attempts) == ("queued", 0)  # its key forgotten: the request is asked anew
    again = subprocess.run([*KABIGATE, "tasks", "--prune", "--older-than", "30"], check=False, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.startswith("pruned 0 done or failed tasks"), again.stdout
    for bad in (["--prune"], ["--older-than", "3"], ["--prune", "--older-than", "inf"],
                ["--prune", "--older-than", "nan"], ["--prune", "--older-than", "3", "--state", "done"]):
        refused = subprocess.run([*KABIGATE, "tasks", *bad], check=False, env=env, capture_output=True, text=True)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, (bad, refused.stderr)


def test_a_task_waits_for_the_tasks_it_asked_for_and_is_queued_when_the_last_finishes(store_url):
    """A gate asking for two builds (one of them already asked for by another gate) is waiting, its
    delivery not counted; the first build to finish leaves it waiting, the last queues it; asked
    again (woken), it finds every build finished. On SQLite and PostgreSQL."""
    builds = [("build:a", "build", {"driver": "a"}), ("build:b", "build", {"driver": "b"})]
    with Store.open(store_url) as store:
        with store.transaction():
            store.queue_task("build:a", "build", {"driver": "a"})  # another gate's, running
            store.claim_task("build:a", "build", {}, redelivered=False, max_attempts=3)
            store.claim_task("gate:1", "gate", {"release": "r"}, redelivered=False, max_attempts=3)
            awaited = store.await_tasks("gate:1", builds)
        assert [(a.key, a.state) for a in awaited] == [("build:a", "running"), ("build:b", "queued")]
        gate = store.task("gate:1")
        assert (gate.state, gate.attempts, gate.result) == ("waiting", 0, {"awaits": ["build:a", "build:b"]})
        with store.transaction():  # a duplicate delivery of the waiting gate is skipped
            assert store.claim_task("gate:1", "gate", {}, redelivered=False, max_attempts=3) is None
        with store.transaction():
            store.finish_task("build:a", "done", result={"outcome": "built"})
            store.release_waiters("build:a")
        assert store.task("gate:1").state == "waiting" and store.waiters("build:a", "queued") == []
        with store.transaction():
            store.claim_task("build:b", "build", {}, redelivered=False, max_attempts=3)
            store.finish_task("build:b", "failed", error="no kernel r in the store")
            store.release_waiters("build:b")
        assert [w.key for w in store.waiters("build:b", "queued")] == ["gate:1"]
        with store.transaction():
            assert store.claim_task("gate:1", "gate", {}, redelivered=False, max_attempts=3).attempts == 1
            again = store.await_tasks("gate:1", [])  # nothing new to ask for: those asked before, finished
        assert [(a.key, a.state) for a in again] == [("build:a", "done"), ("build:b", "failed")]
        assert store.task("gate:1").state == "running"
