"""fedora-messaging: publishing gate results and consuming build events (`kabigate listen`).

fedora-messaging reads its own configuration ($FEDORA_MESSAGING_CONF, else
/etc/fedora-messaging/config.toml); when neither exists, kabigate's settings make it: the broker
URL, amq.topic, and a durable queue for the listener bound to the build topics."""

from __future__ import annotations

import logging
import os
import time

from kabigate.errors import InputError
from kabigate.vocabulary import GateClass
from kabigate.workers.config import Settings

log = logging.getLogger("kabigate.workers")

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
            "amqp_url": _pika_url(settings.broker), "publish_exchange": "amq.topic", "topic_prefix": settings.topic_prefix,
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


def listen(settings: Settings) -> None:
    """Consume build events (blocks): each one that is for kabigate becomes an enqueued task."""
    from fedora_messaging import api

    configure_messaging(settings)
    _drop_undecodable_messages()
    api.consume(EventConsumer(settings))


def _drop_undecodable_messages() -> None:
    """fedora-messaging (3.9) drops a message whose body fails its schema or is not JSON, but a
    body of arrays nested ~1,000 deep makes json.loads raise RecursionError, which stops the
    consumer; restarted, it meets the same message first: one message from anyone who may publish
    stops kabigate for good. Its consumer reads messages with `get_message`: a RecursionError there
    becomes the ValidationError that has the message dropped."""
    from fedora_messaging.exceptions import ValidationError
    from fedora_messaging.twisted import consumer

    decode = consumer.get_message
    if getattr(decode, "kabigate_guarded", False):
        return

    def guarded(topic, properties, body):
        try:
            return decode(topic, properties, body)
        except RecursionError:
            raise ValidationError("the body is nested too deeply") from None

    guarded.kabigate_guarded = True
    consumer.get_message = guarded


class EventConsumer:
    """The fedora-messaging callback: an event -> a request -> the task table and the queue.

    A message is acknowledged once its task is recorded and sent, so a listener killed in
    between gets it again, and the task's key makes the second time a no-op. Bad messages are
    logged in one line and dropped; when the store or broker is unreachable the message is
    given back (and the listener waits a little before the next). Any other exception is a bug,
    logged in one line (its traceback at DEBUG) and dropped too: fedora-messaging would stop the
    listener on it and give the message back, to meet it first again after every restart."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def __call__(self, message) -> None:
        from fedora_messaging.exceptions import Drop, Nack

        try:
            self._handle(message)
        except (Drop, Nack):
            raise
        except Exception as error:  # a bug must not stop the listener: see above
            log.error("dropped message %s: internal error: %s", message.id,
                      InputError(f"{type(error).__name__}: {str(error)[:300]}"))  # escapes line breaks
            log.debug("message %s", message.id, exc_info=True)
            raise Drop() from None

    def _handle(self, message) -> None:
        from fedora_messaging.exceptions import Drop, Nack

        from kabigate.store import Store
        from kabigate.workers.app import configure, enqueue
        from kabigate.workers.koji import HubUnavailable
        from kabigate.workers.work import event_request

        try:
            request = event_request(message.topic, message.body, self.settings)
        except HubUnavailable as error:  # Koji's hub is down or busy: the build is not lost
            log.warning("message %s: %s; given back", message.id, error)
            time.sleep(5)
            raise Nack() from None
        except InputError as error:
            log.warning("dropped message %s: %s", message.id, error)
            raise Drop() from None
        if request is None:
            return
        configure(self.settings)
        try:
            with Store.open(self.settings.db) as store:
                task, sent = enqueue(store, request)
        except InputError as error:
            log.warning("message %s: %s; given back", message.id, error)
            time.sleep(5)
            raise Nack() from None
        log.info("message %s: %s %s %s", message.id, request.kind, request.key,
                 "enqueued" if sent else f"already {task.state}")
