"""What the store keeps of notifications: subscriptions, the events a gate saw (one per key), and the
outbox: each event's delivery to each subscription it concerns, with its state. A sender claims a
delivery for a while (a lease), sends it, and marks it delivered in a transaction; a sender that died
holding one leaves it to the next once the lease is over."""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, or_, select

from kabigate.errors import InputError
from kabigate.store import schema as t
from kabigate.store.base import StoreBase, utc_now
from kabigate.vocabulary import ChannelKind, DeliveryState, EventKind, SubscriptionTarget


@dataclass(frozen=True)
class Subscription:
    id: int
    owner: str
    target_kind: SubscriptionTarget
    target: str
    channel: ChannelKind
    address: str  # "" for the bus
    secret: str | None
    created_at: datetime.datetime


@dataclass(frozen=True)
class NotificationEvent:
    id: int
    uuid: str
    kind: EventKind
    driver: str | None
    stream: str | None
    kernel_release: str
    gate_run: str | None
    payload: dict
    created_at: datetime.datetime


@dataclass(frozen=True)
class Delivery:
    id: int
    event: NotificationEvent
    subscription: Subscription
    state: DeliveryState
    attempts: int
    error: str | None


class NotificationStore(StoreBase):
    """Subscriptions, notification events and their deliveries."""

    def add_subscription(self, owner: str, target_kind: SubscriptionTarget, target: str, channel: ChannelKind,
                         address: str, secret: str | None) -> Subscription:
        new = self._insert_if_new(t.subscription, {
            "owner": owner, "target_kind": target_kind, "target": target, "channel": channel, "address": address,
            "secret": secret, "created_at": utc_now()})
        if new is None:
            raise InputError(f"{target_kind} {target} is already followed by {channel} {address}".rstrip())
        return self.subscriptions(t.subscription.c.id == new)[0]

    def subscriptions(self, *where) -> list[Subscription]:
        """Subscriptions, oldest first."""
        with self._reading() as connection:
            rows = connection.execute(select(t.subscription).where(*where).order_by(t.subscription.c.id)).all()
        return [_subscription(row) for row in rows]

    def remove_subscription(self, subscription_id: int) -> Subscription:
        """Delete a subscription and its deliveries (those not sent are no longer wanted)."""
        found = self.subscriptions(t.subscription.c.id == subscription_id)
        if not found:
            raise InputError(f"no subscription {subscription_id} in the store")
        connection = self._writing()
        connection.execute(t.notification_delivery.delete()
                           .where(t.notification_delivery.c.subscription_id == subscription_id))
        connection.execute(t.subscription.delete().where(t.subscription.c.id == subscription_id))
        return found[0]

    def record_event(self, key: str, kind: EventKind, driver: str | None, stream: str | None, kernel_release: str,
                     gate_run: str | None, payload: dict) -> NotificationEvent | None:
        """Record an event unless one of this key exists, with a pending delivery to each subscription
        it concerns (its package's, its stream's; the bus once); the new event, or None."""
        now = utc_now()
        event_uuid = str(uuid.uuid4())
        payload = dict(payload, id=event_uuid)
        new = self._insert_if_new(t.notification_event, {
            "uuid": event_uuid, "key": key, "kind": kind, "driver": driver, "stream": stream,
            "kernel_release": kernel_release, "gate_run": gate_run, "payload": json.dumps(payload),
            "created_at": now})
        if new is None:
            return None
        c = t.subscription.c
        wanted = self.subscriptions(or_(and_(c.target_kind == SubscriptionTarget.PACKAGE, c.target == driver),
                                        and_(c.target_kind == SubscriptionTarget.STREAM, c.target == stream)))
        bus = [s for s in wanted if s.channel == ChannelKind.BUS][:1]  # one message on the topic, however many follow
        rows = [{"event_id": new, "subscription_id": s.id, "state": DeliveryState.PENDING, "attempts": 0,
                 "next_attempt_at": now} for s in wanted if s.channel != ChannelKind.BUS or s in bus]
        self._insert_ignoring_duplicates(t.notification_delivery, rows)
        return self.events(t.notification_event.c.id == new)[0]

    def event_exists(self, key: str) -> bool:
        with self._reading() as connection:
            return connection.scalar(select(t.notification_event.c.id).where(t.notification_event.c.key == key)) \
                is not None

    def events(self, *where, limit: int | None = None) -> list[NotificationEvent]:
        """Notification events, newest first."""
        query = select(t.notification_event).where(*where).order_by(t.notification_event.c.id.desc()).limit(limit)
        with self._reading() as connection:
            rows = connection.execute(query).all()
        return [_event(row) for row in rows]

    def events_of(self, *, driver: str | None = None, stream: str | None = None, limit: int = 50
                  ) -> list[NotificationEvent]:
        """A package's events (driver) or a stream's (stream), newest first: what their feeds show."""
        column, value = (t.notification_event.c.driver, driver) if driver is not None \
            else (t.notification_event.c.stream, stream)
        return self.events(column == value, limit=limit)

    def due_deliveries(self, now: datetime.datetime, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next attempt is due and which no sender holds, oldest first."""
        d = t.notification_delivery
        with self._reading() as connection:
            rows = connection.execute(select(d).where(
                d.c.state == DeliveryState.PENDING, d.c.next_attempt_at <= now,
                or_(d.c.claimed_until.is_(None), d.c.claimed_until < now)).order_by(d.c.id).limit(limit)).all()
        return self._deliveries(rows)

    def deliveries(self, state: DeliveryState | None = None) -> list[Delivery]:
        d = t.notification_delivery
        with self._reading() as connection:
            rows = connection.execute(select(d).where(*([d.c.state == state] if state else []))
                                      .order_by(d.c.id)).all()
        return self._deliveries(rows)

    def _deliveries(self, rows) -> list[Delivery]:
        events = {e.id: e for e in self.events(t.notification_event.c.id.in_(sorted({r.event_id for r in rows})))}
        subscriptions = {s.id: s for s in self.subscriptions(t.subscription.c.id.in_(
            sorted({r.subscription_id for r in rows})))}
        return [Delivery(r.id, events[r.event_id], subscriptions[r.subscription_id], DeliveryState(r.state),
                         r.attempts, r.error) for r in rows]

    def claim_delivery(self, delivery_id: int, now: datetime.datetime, until: datetime.datetime) -> bool:
        """Hold a pending delivery until `until`, unless another sender holds it or it is done: whether
        this sender got it (one UPDATE: two senders cannot both get it)."""
        d = t.notification_delivery
        claimed = self._writing().execute(d.update().where(
            d.c.id == delivery_id, d.c.state == DeliveryState.PENDING,
            or_(d.c.claimed_until.is_(None), d.c.claimed_until < now)).values(claimed_until=until))
        return claimed.rowcount == 1

    def finish_delivery(self, delivery_id: int, attempts: int, *, delivered: bool, error: str | None = None,
                        give_up: bool = False, next_attempt_at: datetime.datetime | None = None) -> None:
        """After a sender's attempts: delivered, failed for good, or pending again from `next_attempt_at`."""
        d = t.notification_delivery
        now = utc_now()
        state = DeliveryState.DELIVERED if delivered else DeliveryState.FAILED if give_up else DeliveryState.PENDING
        self._writing().execute(d.update().where(and_(d.c.id == delivery_id, d.c.state == DeliveryState.PENDING))
                                .values(state=state, attempts=attempts, error=error, claimed_until=None,
                                        delivered_at=now if delivered else None,
                                        next_attempt_at=next_attempt_at or now))


def _subscription(row) -> Subscription:
    return Subscription(row.id, row.owner, SubscriptionTarget(row.target_kind), row.target, ChannelKind(row.channel),
                        row.address, row.secret, row.created_at)


def _event(row) -> NotificationEvent:
    return NotificationEvent(row.id, row.uuid, EventKind(row.kind), row.driver, row.stream, row.kernel_release,
                             row.gate_run, json.loads(row.payload), row.created_at)
