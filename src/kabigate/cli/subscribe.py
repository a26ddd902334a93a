"""`kabigate subscribe add|list|remove|deliver`: who is told when a kernel breaks a package, a rebuild
fixes it, or a gate blocks (services/notify.py)."""

from __future__ import annotations

import click

from kabigate.cli.shared import Group, emit_json, err, out
from kabigate.cli.store import json_option, store_option
from kabigate.reports.notifications import subscription_json
from kabigate.services.notify import channels_from_env, deliver_pending, subscribe, unsubscribe
from kabigate.store import Store


@click.group(cls=Group)
def subscribe_group() -> None:
    """Subscriptions: an owner follows a driver package or a stream, by e-mail, webhook or the bus, and is
    told when a new kernel breaks a package, a rebuild fixes it, or a gate blocks. Each event is sent
    once; every gate run records its events and sends them.

    \b
    Example:
      kabigate subscribe add --package jool --email me@example.org --owner me
      kabigate subscribe add --stream debian-6.1 --webhook https://ci.example.org/hook --secret "$SECRET" --owner ci
    """


@subscribe_group.command("add")
@click.option("--package", metavar="NAME", help="Follow this driver package.")
@click.option("--stream", metavar="NAME", help="Follow every package and gate of this stream.")
@click.option("--email", metavar="ADDRESS", help="Send e-mail here (SMTP server: $KABIGATE_SMTP=HOST[:PORT]).")
@click.option("--webhook", metavar="URL", help="POST JSON here, signed (X-Kabigate-Signature: sha256=HMAC).")
@click.option("--secret", metavar="TEXT", envvar="KABIGATE_WEBHOOK_SECRET",
              help="The webhook's HMAC-SHA256 key (16 to 512 characters; also $KABIGATE_WEBHOOK_SECRET).")
@click.option("--bus", is_flag=True, help="Publish on the message bus (kabigate.package.NAME, kabigate.stream.NAME).")
@click.option("--owner", required=True, help="Who the subscription is for.")
@json_option
@store_option
def subscribe_add(store: Store, as_json: bool, owner: str, **channel) -> None:
    """Subscribe to a package's or a stream's events, by one channel."""
    source = click.get_current_context().get_parameter_source("secret")
    if channel["webhook"] is None and source == click.core.ParameterSource.ENVIRONMENT:
        channel["secret"] = None  # $KABIGATE_WEBHOOK_SECRET is for webhooks; an e-mail takes none
    added = subscribe(store, owner, **channel)
    if as_json:
        emit_json(subscription_json(added))
    else:
        out.print(f"subscription {added.id} added: {_describe(subscription_json(added))}", markup=False)


@subscribe_group.command("list")
@json_option
@store_option
def subscribe_list(store: Store, as_json: bool) -> None:
    """The subscriptions, oldest first (webhook secrets are never shown)."""
    found = [subscription_json(s) for s in store.subscriptions()]
    if as_json:
        emit_json({"subscriptions": found})
        return
    if not found:
        err.print("no subscriptions in the store", markup=False)
    for entry in found:
        out.print(f"{entry['id']:>4}  {_describe(entry)}", markup=False)


@subscribe_group.command("remove")
@click.argument("subscription_id", type=click.IntRange(1, 2**63 - 1), metavar="ID")
@json_option
@store_option
def subscribe_remove(store: Store, subscription_id: int, as_json: bool) -> None:
    """Remove a subscription; what it had not been sent yet is dropped."""
    removed = unsubscribe(store, subscription_id)
    if as_json:
        emit_json(subscription_json(removed))
    else:
        out.print(f"subscription {removed.id} removed: {_describe(subscription_json(removed))}", markup=False)


@subscribe_group.command("deliver")
@store_option
def subscribe_deliver(store: Store) -> None:
    """Send the notifications still pending (a sender stopped midway, an endpoint that was down): each
    once. E-mail needs $KABIGATE_SMTP (with $KABIGATE_SMTP_SECURITY, $KABIGATE_SMTP_USER and
    $KABIGATE_SMTP_PASSWORD or $KABIGATE_SMTP_PASSWORD_FILE: see the README); the bus is the workers'
    (kabigate worker)."""
    report = deliver_pending(store, channels_from_env())
    out.print(f"{report.delivered} delivered, {report.retrying} to retry, {report.failed} failed, "
              f"{report.waiting} waiting for a channel", markup=False)


def _describe(entry: dict) -> str:
    where = entry["channel"] + (f" {entry['address']}" if entry["address"] else "")
    return f"{entry['owner']} follows {entry['target_kind']} {entry['target']} by {where}"
