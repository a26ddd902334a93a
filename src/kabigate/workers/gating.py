"""The gate task: gate a stored kernel once, record the run with its task, publish the result
(ResultsDB when configured, and a kabigate.gate.result message), and send its notifications."""

from __future__ import annotations

import os

from kabigate.errors import read_capped
from kabigate.formats.gatepolicy import DEFAULT_POLICY, MAX_POLICY_FILE, parse_policy, parse_waivers
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
from kabigate.store import KernelRecord, Store, TaskRecord, TaskState
from kabigate.workers.config import Settings
from kabigate.workers.messaging import publish_gate_result, publish_notification


def gate_task(store: Store, settings: Settings, task: TaskRecord) -> dict:
    args = task.args
    candidate = resolve_kernel(store, args["release"], args["stream"])
    run_id = (task.result or {}).get("run")
    if run_id is None:
        baseline: KernelRecord | None
        if args["baseline"] is not None:
            baseline, stream = resolve_kernel(store, args["baseline"]), stream_of(candidate, args["stream"])
        else:
            baseline, stream = previous_in_stream(store, candidate, args["stream"])
        policy = parse_policy(_read(settings.policy), settings.policy) if settings.policy else DEFAULT_POLICY
        waivers = tuple(parse_waivers(_read(settings.waivers), settings.waivers)) if settings.waivers else ()
        result = run_gate(store, candidate, baseline, stream=stream, policy=policy,
                          waivers=(*waivers, *store.waivers()),
                          stablelist=read_stablelist(settings.stablelist, candidate.machine), explain=settings.explain)
        with store.transaction():
            # A delivery of this task that ran alongside (the broker redelivered it after losing the
            # first worker's connection) may have recorded its run meanwhile: keep that one.
            run_id = (store.lock_task(task.key).result or {}).get("run")
            if run_id is None:
                run_id = record_gate(store, result, gate_json(result)).uuid
                store.finish_task(task.key, TaskState.RUNNING, result={"run": run_id})
    run = store.gate_run(run_id)
    report = store.gate_report(run_id)
    resultsdb_id = run.resultsdb_id
    if settings.resultsdb and run.published_to != settings.resultsdb:
        payload = resultsdb_payload(report, testcase=settings.testcase or DEFAULT_TESTCASE)
        resultsdb_id = publish_gate(store, run, settings.resultsdb, payload, os.environ.get("KABIGATE_RESULTSDB_TOKEN"))
    publish_gate_result(settings, run_id, report, resultsdb_id)
    # the run's notifications, and any a worker stopped before sending: bounded, the rest wait
    deliver_pending(store, channels_from_env(), lambda event: publish_notification(settings, event))
    return {"run": run_id, "outcome": run.outcome, "candidate": candidate.release}


def _read(path: str) -> bytes:
    return read_capped(path, MAX_POLICY_FILE, "larger than a policy file can be")
