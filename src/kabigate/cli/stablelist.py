"""`kabigate stablelist demand | request | history`: evidence for the kABI stablelist."""

from __future__ import annotations

import os
import sys

import click
from rich.table import Table

from kabigate.analysis import kmod_rebuilds, stablelist_history
from kabigate.cli.shared import Group, cells, emit_json, err, out, say, write_atomically
from kabigate.cli.store import store_option
from kabigate.errors import read_capped
from kabigate.formats.compression import MAX_TEXT
from kabigate.formats.elrepo import parse_spec_history
from kabigate.inputs.stablelists import read_stablelist
from kabigate.services.evidence import (
    COLUMNS,
    Demand,
    SymbolDemand,
    changes_text,
    demand_csv,
    demand_json,
    demand_scope,
    justification_markdown,
    ksc_report,
    request_text,
    requested_additions,
    symbol_demand,
)
from kabigate.store import Store


@click.group(cls=Group)
def stablelist() -> None:
    """Which symbols drivers need that the stablelist does not promise, and how the list moved.

    \b
    Example:
      kabigate stablelist demand --stablelist kabi_stablelist_x86_64 --json
    """


def _demand_options(command):
    for option in reversed([
        click.option("--stablelist", "stablelist_path", required=True, type=click.Path(), metavar="FILE",
                     help="The distribution's stablelist (RHEL list, Module.kabi, GKI list, plain), a folder of "
                          "Module.kabi_<arch> files or a kernel-abi-stablelists RPM: the architecture's list."),
        click.option("--stream", metavar="NAME", help="The stream whose CRC history counts (default: the only one)."),
        click.option("--driver", metavar="GLOB", help="Only drivers whose name matches."),
        click.option("--arch", metavar="ARCH",
                     help="The architecture whose kernels, builds and list count (default: the stream's only one)."),
    ]):
        command = option(command)
    return command


@stablelist.command("demand")
@_demand_options
@click.option("--limit", type=click.IntRange(min=1), help="Show only the first N symbols of the ranking.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def demand(store: Store, stablelist_path: str, stream, driver, arch: str, limit, as_csv: bool, as_json: bool) -> None:
    """Every symbol the stored drivers import, ranked by the failures it caused along the stream."""
    result = _demand(store, stablelist_path, stream, arch, driver)
    symbols = result.symbols[:limit] if limit else result.symbols
    if as_json:
        emit_json(demand_json(result, limit))
    elif as_csv:
        sys.stdout.write(demand_csv(symbols))
    else:
        _print_demand(result, symbols)


def _demand(store: Store, stablelist_path: str, stream: str | None, arch: str | None, driver: str | None) -> Demand:
    """The demand of the stream's architecture, against that architecture's list."""
    stream, arch = demand_scope(store, stream, arch)
    return symbol_demand(store, read_stablelist(stablelist_path, arch), stream, driver, arch)


def _print_demand(result: Demand, symbols: list[SymbolDemand]) -> None:
    listed = sum(d.stablelisted for d in result.symbols)
    say(f"{len(result.symbols)} symbols imported by {result.builds} builds of {result.drivers} drivers; "
        f"{listed} on {result.stablelist}, {len(result.symbols) - listed} not; stream {result.stream}: "
        f"{len(result.kernels)} {result.arch or ''} kernels")
    table = Table(*(COLUMNS[c] for c in ("symbol", "stablelisted", "drivers", "builds", "failures", "exported_by",
                                         "removals", "crc_changes", "crc_changed_in")), box=None)
    for d in symbols:
        listed_text = ("yes, VIOLATED" if d.violation else "yes") if d.stablelisted else "no"
        table.add_row(*cells(d.symbol, listed_text, str(len(d.drivers)), str(d.builds), str(d.failures_caused),
                             f"{d.exported_by}/{len(result.kernels)}", str(d.removals), str(d.crc_changes),
                             changes_text(d)))
    out.print(table)


@stablelist.command("request")
@_demand_options
@click.option("--format", "list_format", type=click.Choice(["rhel", "module-kabi", "plain", "ksc"]), default="rhel",
              show_default=True, help="The list format of the proposed additions; ksc: the ksc-result.txt Red Hat's "
              "stablelist request process takes, its justifications filled from the evidence.")
@click.option("--rhel-major", type=int, default=9, show_default=True, help="RHEL major release (rhel format).")
@click.option("--min-drivers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Propose symbols used by at least this many drivers.")
@click.option("--max-crc-changes", type=click.IntRange(min=0),
              help="Leave out symbols whose CRC changed more often than this along the stream.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the list here (default: stdout).")
@click.option("--justification", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the Markdown justification (one section per symbol) here.")
@store_option
def request(store: Store, stablelist_path: str, stream, driver, arch: str | None, list_format: str, rhel_major: int,
            min_drivers: int, max_crc_changes, output, justification) -> None:
    """The stablelist additions the stored drivers' evidence asks for, in the distribution's format."""
    stream, arch = demand_scope(store, stream, arch)
    listed = read_stablelist(stablelist_path, arch)
    result = symbol_demand(store, listed, stream, driver, arch)
    symbols = requested_additions(result, min_drivers, max_crc_changes)
    if list_format == "ksc":
        text = ksc_report(result, symbols, listed, result.arch or "x86_64", " ".join(["kabigate", *sys.argv[1:]]))
    else:
        text = request_text(symbols, list_format, result.arch or "x86_64", rhel_major)
    if output:
        write_atomically(output, text)
    else:
        sys.stdout.write(text)
    if justification:
        write_atomically(justification, justification_markdown(result, symbols))
    err.print(f"{len(symbols)} symbols proposed, off {result.stablelist}", markup=False)


@stablelist.command("history")
@click.argument("files", nargs=-1, required=True, type=click.Path(), metavar="FILE...")
@click.option("--arch", default="x86_64", show_default=True,
              help="Architecture: which list of a kernel-abi-stablelists package or a folder of Module.kabi_<arch> "
                   "files; a list named for another one is refused.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(files: tuple[str, ...], arch: str, as_json: bool) -> None:
    """How a stablelist moved between releases (FILEs oldest first; a folder or package gives the
    list of --arch): symbols added, removed, and kept symbols whose reference CRC changed (lists
    with CRCs: Module.kabi, symvers)."""
    if len(files) < 2:
        raise click.UsageError("give at least two lists, oldest first")
    steps = stablelist_history([read_stablelist(path, arch) for path in files])
    if as_json:
        emit_json({"steps": [{"from": s.before, "to": s.after, "size": s.size, "added": s.added,
                              "removed": s.removed, "crc_changed": s.crc_changed} for s in steps]})
        return
    # lists picked from folders share their file name (Module.kabi_x86_64): then the paths tell them apart
    names = {os.path.basename(path) for path in [steps[0].before, *(s.after for s in steps)]}
    shown = os.path.basename if len(names) == len(steps) + 1 else os.path.normpath
    table = Table("from", "to", "size", "added", "removed", "CRC changed", box=None)
    for s in steps:
        table.add_row(*cells(shown(s.before), shown(s.after), str(s.size), str(len(s.added)),
                             str(len(s.removed)), str(len(s.crc_changed))))
    out.print(table)


@stablelist.command("rebuilds")
@click.argument("history_file", type=click.Path(dir_okay=False), metavar="SPEC_HISTORY.tsv")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rebuilds(history_file: str, as_json: bool) -> None:
    """ELRepo's kmod rebuilds per RHEL minor, from its spec history: how often the kABI promise
    failed real drivers (a kmod is rebuilt for a minor when its symbols broke)."""
    steps = kmod_rebuilds(parse_spec_history(read_capped(history_file, MAX_TEXT, "larger than a spec history"),
                                             history_file))
    if as_json:
        emit_json({"minors": [vars(step) for step in steps]})
        return
    table = Table("RHEL minor", "first builds", "rebuilds", "spec revisions", box=None)
    for step in steps:
        table.add_row(*cells(step.minor, str(step.first_builds), str(step.rebuilds), str(step.revisions)))
    out.print(table)
