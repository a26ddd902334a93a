"""The gate task: gate a stored kernel once, record the run with its task, publish the result
(ResultsDB when configured, and a kabigate.gate.result message), and send its notifications. With
the policy's drivers.rebuild, the gate first asks for a build task for each gating package that does
not work on the candidate (its own task type, on the builds queue) and waits for them; it is queued
again when the last one finishes, and then judges the candidate with what they stored. The build
task: one package rebuilt for one kernel, signed with the policy's [signing] key, its outcome stored
(services/rebuild.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from celery.signals import worker_process_shutdown

from kabigate.builder.buildtree import BuildTree
from kabigate.builder.sandbox import check_sandbox
from kabigate.builder.source import Signing
from kabigate.errors import InputError, read_capped
from kabigate.formats.gatepolicy import DEFAULT_POLICY, MAX_POLICY_FILE, Policy, parse_policy, parse_waivers
from kabigate.inputs.stablelists import read_stablelist
from kabigate.reports.gate import DEFAULT_TESTCASE, gate_json, resultsdb_payload
from kabigate.services.gate import (
    previous_in_stream,
    publish_gate,
    record_gate,
    resolve_kernel,
    run_gate,
    stream_of,
)
from kabigate.services.notify import channels_from_env, deliver_pending
from kabigate.services.rebuild import Rebuild, candidate_tree, needing_rebuild, newest_built, rebuild_packages
from kabigate.services.waiverdb import Target, import_waivers
from kabigate.signing.keys import HASHES, PASSPHRASE_ENV, load_signing_key
from kabigate.store import KernelRecord, Store, TaskRecord, TaskState
from kabigate.workers.config import Settings
from kabigate.workers.messaging import publish_gate_result, publish_notification
from kabigate.workers.work import Request, build_request

# app.await_tasks: the awaited tasks when all are finished, else None (the gate waits)
Await = Callable[[Store, TaskRecord, list[Request]], list[TaskRecord] | None]


def gate_task(store: Store, settings: Settings, task: TaskRecord, await_tasks: Await) -> dict | None:
    """The gate's result, or None while it waits for its package rebuilds."""
    args = task.args
    candidate = resolve_kernel(store, args["release"], args["stream"])
    run_id = (task.result or {}).get("run")
    awaits = (task.result or {}).get("awaits")
    if run_id is None:
        baseline: KernelRecord | None
        if args["baseline"] is not None:
            baseline, stream = resolve_kernel(store, args["baseline"]), stream_of(candidate, args["stream"])
        else:
            baseline, stream = previous_in_stream(store, candidate, args["stream"])
        policy = _policy(settings)
        waivers = tuple(parse_waivers(_read(settings.waivers), settings.waivers)) if settings.waivers else ()
        rebuilt: list[Rebuild] | None = None
        if policy.rebuild:
            requests = [build_request(name, built.built_from if (built := newest_built(store, name)) else None,
                                      candidate.release, args["stream"])
                        for name in needing_rebuild(store, candidate, None, policy.gating)]
            rebuilt = []
            if requests or awaits:
                finished = await_tasks(store, task, requests)
                if finished is None:
                    return None
                rebuilt = [_rebuild_of(build) for build in finished]
                awaits = [build.key for build in finished]
        if settings.waiverdb is not None:  # a waiver given in WaiverDB since the last gate applies to this one
            import_waivers(store, Target.from_env(settings.waiverdb, settings.testcase or DEFAULT_TESTCASE,
                                                  settings.product_version))
        result = run_gate(store, candidate, baseline, stream=stream, policy=policy,
                          waivers=(*waivers, *store.waivers()),
                          stablelist=read_stablelist(settings.stablelist, candidate.machine), explain=settings.explain,
                          rebuilt=rebuilt)
        with store.transaction():
            # A delivery of this task that ran alongside (the broker redelivered it after losing the
            # first worker's connection) may have recorded its run meanwhile: keep that one.
            locked = store.lock_task(task.key)
            run_id = (locked.result or {}).get("run")
            if run_id is None:
                run_id = record_gate(store, result, gate_json(result)).uuid
                store.finish_task(task.key, TaskState.RUNNING, result=dict(locked.result or {}, run=run_id))
    run = store.gate_run(run_id)
    report = store.gate_report(run_id)
    resultsdb_id = run.resultsdb_id
    if settings.resultsdb and run.published_to != settings.resultsdb:
        payload = resultsdb_payload(report, testcase=settings.testcase or DEFAULT_TESTCASE)
        resultsdb_id = publish_gate(store, run, settings.resultsdb, payload, os.environ.get("KABIGATE_RESULTSDB_TOKEN"))
    publish_gate_result(settings, run_id, report, resultsdb_id)
    # the run's notifications, and any a worker stopped before sending: bounded, the rest wait
    deliver_pending(store, channels_from_env(), lambda event: publish_notification(settings, event))
    done = {"run": run_id, "outcome": run.outcome, "candidate": candidate.release}
    return done if awaits is None else dict(done, awaits=awaits)


# This process's last kernel's build tree: a gate's builds all want it, and extracting a Debian
# kernel's headers .debs takes as long as building a small package. Its lifetime is bounded: dropped
# TREE_IDLE_SECONDS after the last build that used it, and when the worker process ends (Celery's
# pool processes leave with os._exit, which skips TemporaryDirectory's own cleanup); one left by a
# process that was killed is removed by the next that keeps a tree (its folder names its pid).
_TREE: dict[int, tuple[tempfile.TemporaryDirectory, BuildTree]] = {}
_TREE_LOCK = threading.Lock()
_TREE_TIMER: list[threading.Timer] = []
TREE_PREFIX = "kabigate-tree-"
TREE_IDLE_SECONDS = 600.0


def build_task(store: Store, settings: Settings, task: TaskRecord) -> dict:
    """Rebuild one package for one stored kernel; what happened (services.rebuild.Rebuild.json)."""
    args = task.args
    candidate = resolve_kernel(store, args["release"], args["stream"])
    with _TREE_LOCK:
        for timer in _TREE_TIMER:
            timer.cancel()
        _TREE_TIMER.clear()
        (rebuild,) = rebuild_packages(store, candidate, [args["driver"]], _signing(_policy(settings)),
                                      tree=_kept_tree(candidate))
        timer = threading.Timer(TREE_IDLE_SECONDS, drop_kept_tree)
        timer.daemon = True
        timer.start()
        _TREE_TIMER.append(timer)
    return rebuild.json()


def _kept_tree(kernel: KernelRecord) -> BuildTree | None:
    """The kernel's build tree, kept from this process's last build or made and kept now; None when it
    cannot be made (the rebuild then says why). The caller holds _TREE_LOCK."""
    if kernel.id not in _TREE:
        _drop()
        _remove_orphans(Path(tempfile.gettempdir()))
        folder = tempfile.TemporaryDirectory(prefix=f"{TREE_PREFIX}{os.getpid()}-")
        try:
            check_sandbox(Path(folder.name))
            _TREE[kernel.id] = folder, candidate_tree(kernel, Path(folder.name) / "tree")
        except InputError:
            folder.cleanup()
            return None
    return _TREE[kernel.id][1]


@worker_process_shutdown.connect
def drop_kept_tree(**_signal) -> None:
    """Remove the kept build tree (idle too long, or the worker process ends)."""
    with _TREE_LOCK:
        _drop()


def _drop() -> None:
    for folder, _tree in _TREE.values():
        folder.cleanup()
    _TREE.clear()


def _remove_orphans(parent: Path) -> None:
    """The kept trees of worker processes that no longer run (killed before they could remove theirs)."""
    for folder in parent.glob(f"{TREE_PREFIX}*-*"):
        pid = folder.name.removeprefix(TREE_PREFIX).split("-")[0]
        if (pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}")
                and folder.lstat().st_uid == os.geteuid()):  # never another user's
            shutil.rmtree(folder, ignore_errors=True)


def _rebuild_of(build: TaskRecord) -> Rebuild:
    """What a finished build task did; one that failed (bad input) left its package not rebuilt, saying why."""
    if build.state == TaskState.DONE and build.result is not None:
        return Rebuild.from_json(build.result)
    return Rebuild(build.args["driver"], build.args["source"], None, build.error)


def _policy(settings: Settings) -> Policy:
    return parse_policy(_read(settings.policy), settings.policy) if settings.policy else DEFAULT_POLICY


def _signing(policy: Policy) -> Signing | None:
    """The policy's [signing] key for the rebuilt modules (its passphrase from $KBUILD_SIGN_PIN, as sign-file
    reads it)."""
    if policy.sign_key is None or policy.sign_cert is None:  # both or neither, as parsed
        return None
    if policy.sign_hash not in HASHES:
        raise InputError(f"{policy.source}: signing.hash {policy.sign_hash!r}: one of {', '.join(HASHES)}")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    return Signing(load_signing_key(policy.sign_key, policy.sign_cert, passphrase.encode() if passphrase else None),
                   policy.sign_hash)


def _read(path: str) -> bytes:
    return read_capped(path, MAX_POLICY_FILE, "larger than a policy file can be")
