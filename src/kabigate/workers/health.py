"""`kabigate health`: can the service work? The store, the broker, its queues, live workers, tasks."""

from __future__ import annotations

from kabigate.errors import InputError
from kabigate.workers.config import QUEUES, Settings


def check_health(settings: Settings, timeout: float) -> dict:
    from kabigate.store import Store, TaskState
    from kabigate.workers.app import app, configure

    configure(settings)
    report: dict = {"store": {"url": settings.db, "ok": False}, "broker": {"url": _without_password(settings.broker),
                                                                         "ok": False},
                    "queues": {}, "workers": [], "tasks": {}, "recent_failures": []}
    try:
        with Store.open(settings.db, create=False) as store:
            report["store"] = {"url": store.url, "ok": True}
            report["tasks"] = store.task_counts()
            report["recent_failures"] = [
                {"key": t.key, "kind": t.kind, "error": t.error, "at": t.updated_at.isoformat()}
                for t in store.tasks(TaskState.FAILED, limit=5)]
    except InputError as error:
        report["store"]["error"] = str(error)
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
            for queue in (*QUEUES, settings.queue):
                report["queues"][queue] = _queue_depth(connection, queue)
        report["broker"]["ok"] = True
        replies = app.control.ping(timeout=timeout) or []
        report["workers"] = sorted(name for reply in replies for name in reply)
    except Exception as error:  # noqa: BLE001  kombu and amqp raise OSError and their own connection errors
        report["broker"]["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    report["ok"] = report["store"]["ok"] and report["broker"]["ok"] and bool(report["workers"])
    return report


def _queue_depth(connection, queue: str) -> dict:
    from amqp.exceptions import NotFound

    channel = connection.channel()  # its own: the broker closes a channel that asks for a missing queue
    try:
        _name, messages, consumers = channel.queue_declare(queue=queue, passive=True)
    except NotFound:  # not declared yet: no worker or listener has started
        return {"messages": 0, "consumers": 0, "declared": False}
    finally:
        channel.close()
    return {"messages": messages, "consumers": consumers, "declared": True}


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':')[0]}{at}{host}" if at else url
