"""Stablelist evidence: which symbols the stored drivers need, how often each really changed along a
stream, what that broke, and a request a distribution can act on.

A symbol is demanded by a driver build when one of its modules imports it and no module of the same
build provides it (Red Hat's ksc counts the same way). Along the stream's kernels in order, each
symbol's export history gives its CRC changes, removals and re-appearances; the stored verdicts give
how many driver x kernel cells failed with it at fault.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from kabigate.errors import InputError
from kabigate.formats.stablelist import Stablelist
from kabigate.model import Export
from kabigate.rules import RULES_VERSION
from kabigate.services.ingest import refresh_verdicts
from kabigate.store import KernelRecord, Store


@dataclass
class SymbolDemand:
    symbol: str
    stablelisted: bool
    drivers: set[str] = field(default_factory=set)
    builds: int = 0
    greylisted_by: int = 0  # packages whose greylist.txt names it (ELRepo kmods)
    exported_by: int = 0  # kernels of the stream that export it
    crc_changes: int = 0
    removals: int = 0
    reappearances: int = 0
    failures: int = 0  # driver build x kernel cells that fail with it at fault
    first_kernel: str | None = None
    last_kernel: str | None = None
    latest: Export | None = None  # its export in the newest kernel that has it

    @property
    def violation(self) -> bool:
        """A stablelisted symbol whose CRC changed, or that was removed, inside the stream."""
        return self.stablelisted and bool(self.crc_changes or self.removals)


@dataclass(frozen=True)
class Demand:
    stream: str
    arch: str | None  # the architecture of the stream's kernels counted (None: unknown)
    kernels: list[KernelRecord]
    stablelist: str
    builds: int
    drivers: int
    symbols: list[SymbolDemand]  # ranked: most failures, then most drivers, then most changes


def demand_scope(store: Store, stream: str | None, arch: str | None) -> tuple[str, str | None]:
    """The stream (the store's only one when not given) and the architecture (its kernels' only one
    when not given) whose evidence counts: the stablelist is read for that architecture."""
    streams = store.streams()
    if stream is None:
        if len(streams) != 1:
            raise InputError(f"the store has {len(streams)} streams ({', '.join(streams) or 'none'}): give --stream")
        (stream,) = streams
    architectures = sorted({k.machine for k in store.kernels(stream) if k.machine})
    if arch is None and len(architectures) > 1:
        raise InputError(f"stream {stream} holds kernels of {', '.join(architectures)}: give --arch")
    if arch is not None and arch not in architectures:
        raise InputError(f"--arch {arch}: stream {stream} holds no kernel of it "
                         f"(architectures: {', '.join(architectures) or 'none known'})")
    return stream, arch or (architectures[0] if architectures else None)


def symbol_demand(store: Store, stablelist: Stablelist, stream: str | None = None, driver: str | None = None,
                  arch: str | None = None) -> Demand:
    """The demand of the builds of `arch` along the kernels of `arch` in `stream` (demand_scope())."""
    stream, arch = demand_scope(store, stream, arch)
    kernels = [k for k in store.kernels(stream) if arch is None or k.machine == arch]
    builds = [b for b in store.driver_builds(driver) if arch is None or b.machine in (arch, None)]
    if not builds:
        raise InputError("no driver builds in the store" + (f" match {driver}" if driver else "")
                         + (f" of {arch}" if arch else ""))
    build_ids = [b.id for b in builds]
    provided = {build_id: {e.name for m in modules for e in m.exports}
                for build_id, modules in store.load_builds(build_ids).items()}
    driver_of = {b.id: b.driver for b in builds}
    demand: dict[str, SymbolDemand] = {}
    users: dict[str, set[int]] = {}
    for build_id, symbol, _crc in store.imports_of(build_ids):
        if symbol in provided[build_id]:
            continue
        entry = demand.setdefault(symbol, SymbolDemand(symbol, symbol in stablelist))
        entry.drivers.add(driver_of[build_id])
        users.setdefault(symbol, set()).add(build_id)
    for symbol, entry in demand.items():
        entry.builds = len(users[symbol])
    for greylist in store.greylists(build_ids).values():
        for symbol in set(greylist) & demand.keys():
            demand[symbol].greylisted_by += 1
    _stream_history(store, kernels, demand)
    _failures(store, kernels, build_ids, demand)
    ranked = sorted(demand.values(), key=lambda d: (-d.failures, -len(d.drivers), -d.crc_changes, d.symbol))
    return Demand(stream, arch, kernels, stablelist.source, len(builds), len(set(driver_of.values())), ranked)


def _stream_history(store: Store, kernels: list[KernelRecord], demand: dict[str, SymbolDemand]) -> None:
    previous: dict[str, Export | None] = {}
    for kernel in kernels:
        exports = store.load_kernel(kernel.id).exports
        for symbol, entry in demand.items():
            export = exports.get(symbol)
            before = previous.get(symbol)
            if export is not None:
                entry.exported_by += 1
                entry.first_kernel = entry.first_kernel or kernel.release
                entry.last_kernel = kernel.release
                entry.latest = export
                if before is not None and before.crc != export.crc:
                    entry.crc_changes += 1
                elif before is None and symbol in previous:
                    entry.reappearances += 1
            elif before is not None:
                entry.removals += 1
            if export is not None or symbol in previous:
                previous[symbol] = export


def _failures(store: Store, kernels: list[KernelRecord], build_ids: list[int],
              demand: dict[str, SymbolDemand]) -> None:
    kernel_ids = [k.id for k in kernels]
    refresh_verdicts(store, kernel_ids=kernel_ids)
    failing = [key for key, cell in store.cells(RULES_VERSION, build_ids=build_ids, kernel_ids=kernel_ids).items()
               if not cell.loads]
    for modules in store.verdict_details(failing).values():
        for symbol in {r["symbol"] for module in modules for r in module["reasons"] if r["symbol"]}:
            if symbol in demand:
                demand[symbol].failures += 1


def requested_additions(demand: Demand, min_drivers: int = 1, max_crc_changes: int | None = None) -> list[SymbolDemand]:
    """Off-list symbols worth asking for: used by at least `min_drivers` drivers, exported by the
    stream's newest kernels, and (optionally) not more volatile than `max_crc_changes`."""
    return [d for d in demand.symbols
            if not d.stablelisted and len(d.drivers) >= min_drivers and d.latest is not None
            and d.last_kernel == demand.kernels[-1].release
            and (max_crc_changes is None or d.crc_changes <= max_crc_changes)]


def request_text(symbols: list[SymbolDemand], list_format: str, arch: str, rhel_major: int = 9) -> str:
    """The additions in the distribution's own list format, which parse_stablelist() reads back."""
    ordered = sorted(symbols, key=lambda d: d.symbol)
    if list_format == "rhel":
        return f"[rhel{rhel_major}_{arch}_stablelist]\n" + "".join(f"\t{d.symbol}\n" for d in ordered)
    if list_format == "module-kabi":
        # Module.kabi_<arch>: CRC, symbol, owner, export type, namespace, as RHEL 9 writes it.
        exported = [(d.symbol, d.latest) for d in ordered if d.latest is not None]  # all: requested_additions()
        return "".join(f"0x{e.crc or 0:08x}\t{symbol}\t{e.owner}\t{e.export_type}\t{e.namespace}\n"
                       for symbol, e in exported)
    if list_format == "plain":
        return "# symbols third-party drivers need, proposed for the kABI stablelist (kabigate)\n" + \
            "".join(f"{d.symbol}\n" for d in ordered)
    raise InputError(f"unknown stablelist format {list_format!r} (rhel, module-kabi, plain)")


def justification_markdown(demand: Demand, symbols: list[SymbolDemand]) -> str:
    """Why each proposed symbol should be promised: who uses it, how volatile it was, what it broke."""
    kernels = demand.kernels
    lines = [f"# kABI stablelist request: {len(symbols)} symbols", "",
             (f"Evidence from {demand.builds} driver builds of {demand.drivers} drivers, against the "
             f"{len(kernels)} {demand.arch or ''} kernels of stream {demand.stream} ({kernels[0].release} .. "
             f"{kernels[-1].release}); "
             f"none of these symbols is on {demand.stablelist}."), ""]
    for d in symbols:
        export = d.latest
        if export is None:  # none: requested_additions() keeps the symbols the newest kernels export
            continue
        lines += [f"## `{d.symbol}`", "",
                  f"- used by {len(d.drivers)} drivers ({', '.join(sorted(d.drivers))}), {d.builds} builds"
                  + (f"; in {d.greylisted_by} packages' greylist.txt" if d.greylisted_by else ""),
                  f"- exported by {d.exported_by} of {len(kernels)} kernels ({d.first_kernel} .. {d.last_kernel}); "
                  f"now `0x{export.crc or 0:08x}` {export.export_type} from {export.owner}"
                  + (f", namespace {export.namespace}" if export.namespace else ""),
                  (f"- CRC changed {d.crc_changes} times, removed {d.removals} times, back {d.reappearances} times "
                  "along the stream"),
                  f"- at fault in {d.failures} driver x kernel failures", ""]
    return "\n".join(lines)


def symbol_demand_json(d: SymbolDemand) -> dict:
    return {"symbol": d.symbol, "stablelisted": d.stablelisted, "drivers": sorted(d.drivers), "builds": d.builds,
            "greylisted_by": d.greylisted_by, "exported_by": d.exported_by, "crc_changes": d.crc_changes,
            "removals": d.removals, "reappearances": d.reappearances, "failures": d.failures,
            "first_kernel": d.first_kernel, "last_kernel": d.last_kernel, "kabi_violation": d.violation}


def demand_json(demand: Demand, limit: int | None = None) -> dict:
    """The symbol demand; `limit`: only the first symbols of the ranking (the totals still count all)."""
    symbols = demand.symbols[:limit] if limit else demand.symbols
    return {"stream": demand.stream, "arch": demand.arch, "stablelist": demand.stablelist,
            "kernels": [k.release for k in demand.kernels],
            "builds": demand.builds, "drivers": demand.drivers, "symbols": [symbol_demand_json(d) for d in symbols]}


DEMAND_CSV_COLUMNS = ("symbol", "stablelisted", "drivers", "builds", "greylisted_by", "exported_by_kernels",
                      "crc_changes", "removals", "reappearances", "failures", "first_kernel", "last_kernel",
                      "kabi_violation")


def demand_csv(symbols: list[SymbolDemand]) -> str:
    """The dashboard's /demand.csv: a row a symbol, in the ranking's order (drivers joined by spaces)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(DEMAND_CSV_COLUMNS)
    for d in symbols:
        writer.writerow([d.symbol, d.stablelisted, " ".join(sorted(d.drivers)), d.builds, d.greylisted_by,
                         d.exported_by, d.crc_changes, d.removals, d.reappearances, d.failures,
                         d.first_kernel or "", d.last_kernel or "", d.violation])
    return buffer.getvalue()
