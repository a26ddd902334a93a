"""A task's JSON (`kabigate tasks --json`, the API's /tasks/{key} and /explanations): one shape."""

from __future__ import annotations

from kabigate.store import TaskRecord


def task_json(task: TaskRecord) -> dict:
    return {"key": task.key, "kind": task.kind, "args": task.args, "state": task.state, "attempts": task.attempts,
            "error": task.error, "result": task.result, "created_at": task.created_at.isoformat(),
            "updated_at": task.updated_at.isoformat()}
