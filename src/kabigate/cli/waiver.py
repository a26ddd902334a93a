"""`kabigate waiver add|list|revoke`: waivers kept in the store, applied by every gate with --waivers'."""

from __future__ import annotations

import click

from kabigate.cli.shared import Group, emit_json, err, out
from kabigate.cli.store import json_option, store_option
from kabigate.reports.gate import waiver_json
from kabigate.services.gate import add_waiver, revoke_waiver
from kabigate.store import Store


@click.group(cls=Group)
def waiver() -> None:
    """Waivers kept in the store: every gate (CLI, watch, API) applies them with its --waivers file.
    A waiver is never deleted: it is revoked, and stays listed as revoked.

    \b
    Example:
      kabigate waiver add --driver jool --symbol 'nf_*' --kernel '6.1.0-5*' --reason 'fixed in 4.1.11' --who me
    """


@waiver.command("add")
@click.option("--driver", metavar="GLOB", help="Driver name pattern (default: any).")
@click.option("--symbol", metavar="GLOB", help="Symbol pattern (default: any).")
@click.option("--kernel", metavar="GLOB", help="Kernel release pattern (default: any).")
@click.option("--reason", required=True, help="Why the finding is forgiven (e.g. a bug link).")
@click.option("--who", required=True, help="Who decided.")
@click.option("--expires", metavar="YYYY-MM-DD", help="Last day it applies (default: never expires).")
@json_option
@store_option
def waiver_add(store: Store, as_json: bool, **fields) -> None:
    """Store a waiver (checked as a waivers file's are: a reason, who, and not everything waived)."""
    added = add_waiver(store, fields)
    if as_json:
        emit_json(waiver_json(added))
    else:
        out.print(f"waiver {added.id} added: {added.label}", markup=False)


@waiver.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Revoked waivers too.")
@json_option
@store_option
def waiver_list(store: Store, include_revoked: bool, as_json: bool) -> None:
    """The stored waivers, oldest first."""
    waivers = store.waivers(include_revoked=include_revoked)
    if as_json:
        emit_json({"waivers": [waiver_json(w) for w in waivers]})
        return
    if not waivers:
        err.print("no waivers in the store", markup=False)
    for w in waivers:
        state = f"revoked {w.revoked_at:%Y-%m-%d}" if w.revoked_at else (f"until {w.expires}" if w.expires
                                                                         else "no expiry")
        out.print(f"{w.id:>4}  driver={w.driver} symbol={w.symbol} kernel={w.kernel}  {state}  {w.who}: {w.reason}",
                  markup=False)


@waiver.command("revoke")
@click.argument("waiver_id", type=click.IntRange(1, 2**63 - 1), metavar="ID")
@json_option
@store_option
def waiver_revoke(store: Store, waiver_id: int, as_json: bool) -> None:
    """Revoke a stored waiver: gates no longer apply it; it stays in `waiver list --all`."""
    revoked = revoke_waiver(store, waiver_id)
    if as_json:
        emit_json(waiver_json(revoked))
    else:
        out.print(f"waiver {revoked.id} revoked: {revoked.label}", markup=False)
