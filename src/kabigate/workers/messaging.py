"""fedora-messaging: its configuration, publishing gate results and notifications (listener.py consumes
build events).

fedora-messaging reads its own configuration ($FEDORA_MESSAGING_CONF, else
/etc/fedora-messaging/config.toml); when neither exists, kabigate's settings make it: the broker
URL, amq.topic, and a durable queue for the listener bound to the build topics."""

from __future__ import annotations

import os

from kabigate.errors import InputError
from kabigate.store import NotificationEvent
from kabigate.vocabulary import GateClass
from kabigate.workers.config import Settings

# The build topics the listener binds (under any prefix: "#" also matches no words at all).
EVENT_TOPICS = ("#.buildsys.build.state.change", "#.kabigate.build.complete")
_configured = False


def configure_messaging(settings: Settings) -> None:
    global _configured
    if _configured:
        return
    from fedora_messaging import config

    file = os.environ.get("FEDORA_MESSAGING_CONF", "/etc/fedora-messaging/config.toml")
    config.conf.load_config(file)
    if not os.path.exists(file):
        config.conf.update({
            "amqp_url": _pika_url(settings.broker), "publish_exchange": "amq.topic",
            "topic_prefix": settings.topic_prefix,
            "queues": {settings.queue: {"durable": True, "auto_delete": False, "exclusive": False, "arguments": {}}},
            "bindings": [{"queue": settings.queue, "exchange": "amq.topic", "routing_keys": list(EVENT_TOPICS)}],
            "client_properties": {"app": "kabigate"},
        })
    _configured = True


def _pika_url(url: str) -> str:
    """Celery's amqp://host// (virtual host "/") as pika, fedora-messaging's client, reads it."""
    scheme, _, rest = url.partition("://")
    host, slash, vhost = rest.partition("/")
    return f"{scheme}://{host}/%2F" if slash and vhost in ("", "/") else url


def gate_result_body(run: str, report: dict, resultsdb_id: str | None) -> dict:
    """The kabigate.gate.result body (kabigate_messages.GateResultV1) of a stored gate report."""
    regressions = [{"driver": b["driver"], "version": b["version"], "built_for": b["built_for"],
                    "category": b["category"], "outcome": b["outcome"],
                    "symbols": sorted({s["symbol"] for s in b["symbols"]})}
                   for b in report["builds"] if b["class"] == GateClass.REGRESSION]
    return {"run": run, "outcome": report["outcome"], "candidate": report["candidate"],
            "baseline": report["baseline"], "stream": report["stream"], "counts": report["counts"],
            "coverage": report["coverage"], "stablelist_violations": len(report["stablelist_violations"]),
            "regressions": regressions, "resultsdb": resultsdb_id}


def publish_gate_result(settings: Settings, run: str, report: dict, resultsdb_id: str | None) -> None:
    """Publish the gate result; its message id is the run's, so a repeat is recognisable."""
    from kabigate_messages import GateResultV1

    message = GateResultV1(body=gate_result_body(run, report, resultsdb_id))
    message.id = run
    publish(settings, message)


def publish_notification(settings: Settings, event: NotificationEvent) -> None:
    """Publish a notification event on its package's topic (kabigate.package.NAME), or its stream's for
    a blocked gate; the message id is the event's. A topic's words are split at dots: a name's dots
    become underscores."""
    from kabigate_messages import NotificationV1

    what, name = ("package", event.driver) if event.driver is not None else ("stream", event.stream or "none")
    message = NotificationV1(body=event.payload, topic=f"kabigate.{what}.{name.replace('.', '_')}")
    message.id = event.uuid
    try:
        publish(settings, message)
    except PublishError as error:
        raise InputError(str(error)) from None  # services.notify retries it, as a webhook that failed


def publish(settings: Settings, message) -> None:
    """Publish a message (checked against its schema first); PublishError when the broker does not take it."""
    from fedora_messaging import api
    from fedora_messaging.exceptions import ConnectionException, PublishException

    configure_messaging(settings)
    try:
        api.publish(message)
    except (PublishException, ConnectionException) as error:
        raise PublishError(f"{_pika_url(settings.broker).split('@')[-1]}: cannot publish {message.topic}: "
                           f"{type(error).__name__} {error}".strip()) from None


class PublishError(Exception):
    """The broker did not take a message: the task is retried (the gate run is kept)."""
