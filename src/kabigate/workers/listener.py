"""`kabigate listen`: the fedora-messaging consumer that turns build events into enqueued tasks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kabigate.errors import InputError
from kabigate.store import Store
from kabigate.workers.app import configure, enqueue
from kabigate.workers.config import Settings
from kabigate.workers.events import event_request
from kabigate.workers.koji import HubUnavailable
from kabigate.workers.messaging import configure_messaging

log = logging.getLogger("kabigate.workers")


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
    from fedora_messaging.twisted import consumer

    if not isinstance(consumer.get_message, _GuardedDecoder):
        consumer.get_message = _GuardedDecoder(consumer.get_message)


class _GuardedDecoder:
    """fedora-messaging's get_message, a RecursionError made the ValidationError that drops the message."""

    def __init__(self, decode: Callable[[Any, Any, Any], Any]):
        self.decode = decode

    def __call__(self, topic, properties, body):
        from fedora_messaging.exceptions import ValidationError

        try:
            return self.decode(topic, properties, body)
        except RecursionError:
            raise ValidationError("the body is nested too deeply") from None


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
