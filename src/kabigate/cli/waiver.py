"""`kabigate waiver add|list|revoke|import`: waivers kept in the store, applied by every gate with
--waivers', and kept in step with WaiverDB (--waiverdb)."""

from __future__ import annotations

import os

import click

from kabigate.cli.shared import Group, emit_json, err, out, say
from kabigate.cli.store import json_option, store_option
from kabigate.reports.gate import DEFAULT_TESTCASE, waiver_json
from kabigate.services.gate import add_waiver, revoke_waiver
from kabigate.services.waiverdb import TOKEN_ENV, Target, add_and_post, import_waivers, revoke_and_post
from kabigate.store import Store, WaiverDbLink


def waiverdb_options(command):
    """Where the waivers are in WaiverDB."""
    for option in reversed([
        click.option("--waiverdb", "waiverdb_url", metavar="URL",
                     help=f"WaiverDB's API (.../api/v1.0); token from ${TOKEN_ENV}."),
        click.option("--testcase", default=DEFAULT_TESTCASE, show_default=True,
                     help="The gate's ResultsDB test case, which the WaiverDB waivers waive."),
        click.option("--product-version", metavar="NAME",
                     help="WaiverDB's product version (e.g. fedora-41, rhel-9.6), as Greenwave's decision names it."),
    ]):
        command = option(command)
    return command


@click.group(cls=Group)
def waiver() -> None:
    """Waivers kept in the store: every gate (CLI, watch, API) applies them with its --waivers file;
    posted to and imported from WaiverDB with --waiverdb. A waiver is never deleted: it is revoked,
    and stays listed as revoked.

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
@waiverdb_options
@json_option
@store_option
def waiver_add(store: Store, as_json: bool, waiverdb_url: str | None, testcase: str, product_version: str | None,
               **fields) -> None:
    """Store a waiver (checked as a waivers file's are: a reason, who, and not everything waived).

    With --waiverdb, it is posted there first: one WaiverDB waiver of the test case for each item
    (kernel NVR) and scenario of the stored kernels --kernel covers, its patterns in the comment.
    Greenwave then forgives the whole result of those kernels; kabigate's gates still forgive only
    the findings the patterns match.

    \b
    Example:
      kabigate waiver add --driver jool --kernel '6.1.0-50-*' --reason 'fixed in 4.1.11' --who me \\
          --waiverdb https://waiverdb.example.org/api/v1.0 --product-version debian-12
    """
    posted: list[WaiverDbLink] = []
    if waiverdb_url is None:
        added = add_waiver(store, fields)
    else:
        added, posted = add_and_post(store, fields, Target.from_env(waiverdb_url, testcase, product_version))
    if as_json:
        emit_json(dict(waiver_json(added), **({"waiverdb": [{"url": link.api_url, "id": link.waiverdb_id,
                                                            "item": link.subject_identifier,
                                                            "scenario": link.scenario} for link in posted]}
                                             if waiverdb_url else {})))
        return
    out.print(f"waiver {added.id} added: {added.label}", markup=False)
    for link in posted:
        out.print(f"  posted to {link.api_url}: waiver {link.waiverdb_id} of {link.subject_identifier}"
                  + (f" ({link.scenario})" if link.scenario else ""), markup=False)


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
        say(f"{w.id:>4}  driver={w.driver} symbol={w.symbol} kernel={w.kernel}  {state}  {w.who}: {w.reason}")


@waiver.command("revoke")
@click.argument("waiver_id", type=click.IntRange(1, 2**63 - 1), metavar="ID")
@click.option("--waiverdb", "waiverdb_url", metavar="URL",
              help=f"Also revoke its copies posted to this WaiverDB API (waived=false); token from ${TOKEN_ENV}.")
@json_option
@store_option
def waiver_revoke(store: Store, waiver_id: int, waiverdb_url: str | None, as_json: bool) -> None:
    """Revoke a stored waiver: gates no longer apply it; it stays in `waiver list --all`.

    \b
    Example:
      kabigate waiver revoke 3 --waiverdb https://waiverdb.example.org/api/v1.0
    """
    if waiverdb_url is None:
        revoked, copies = revoke_waiver(store, waiver_id), 0
    else:
        revoked, copies = revoke_and_post(store, waiver_id, waiverdb_url, os.environ.get(TOKEN_ENV))
    if as_json:
        emit_json(waiver_json(revoked))
    else:
        out.print(f"waiver {revoked.id} revoked: {revoked.label}"
                  + (f"; {copies} WaiverDB copies revoked" if waiverdb_url else ""), markup=False)


@waiver.command("import")
@waiverdb_options
@json_option
@store_option
def waiver_import(store: Store, waiverdb_url: str | None, testcase: str, product_version: str | None,
                  as_json: bool) -> None:
    """Read WaiverDB's current waivers of the gate's test case into the store, so that gates apply
    them and the results they publish say so.

    A waiver kabigate posted comes back with its patterns; one written in WaiverDB forgives
    everything on the stored kernels of its item (of its scenario's architecture), as Greenwave
    would. A waiver already imported or posted is not copied again; a revocation in WaiverDB
    (waived=false) revokes the stored waivers imported from what it supersedes.

    \b
    Example:
      kabigate waiver import --waiverdb https://waiverdb.example.org/api/v1.0 --product-version debian-12
    """
    if waiverdb_url is None:
        raise click.UsageError("give --waiverdb URL")
    result = import_waivers(store, Target.from_env(waiverdb_url, testcase, product_version))
    if as_json:
        emit_json({"added": [waiver_json(w) for w in result.added], "revoked": [waiver_json(w) for w in result.revoked],
                   "already_stored": result.known, "items_not_stored": sorted(set(result.not_stored)),
                   "refused": result.refused})
        return
    for added in result.added:
        say(f"waiver {added.id} imported: {added.label}")
    for revoked in result.revoked:
        out.print(f"waiver {revoked.id} revoked: WaiverDB revoked it", markup=False)
    for refusal in result.refused:
        say(f"not imported: {refusal}", err)
    err.print(f"{len(result.added)} waivers imported, {len(result.revoked)} revoked, {result.known} already stored"
              + (f"; {len(result.not_stored)} for kernels not in the store" if result.not_stored else ""),
              markup=False)
