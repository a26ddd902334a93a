"""Stablelist evidence: which symbols the stored drivers need, how often each really changed along a
stream, what that broke, and a request a distribution can act on.

A symbol is demanded by a driver build when one of its modules imports it and no module of the same
build provides it (Red Hat's ksc counts the same way). Along the stream's kernels in order, each
symbol's export history gives its CRC changes, removals and re-appearances; the stored verdicts give
how many driver x kernel cells it refused (only where it decides the verdict: rules.deciding_symbols),
and, where the explain cache holds both kernels' types, what in the types changed its CRC.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from kabigate.errors import InputError
from kabigate.explain.sources import types_cached
from kabigate.formats.stablelist import Stablelist
from kabigate.model import Export, Module, version_key
from kabigate.rules import RULES_VERSION, deciding_symbols
from kabigate.services.causes import pair_causes
from kabigate.services.ingest import refresh_verdicts
from kabigate.store import KernelRecord, Store

# The column names the command line and the web page both show, keyed by symbol_demand_json()'s fields.
COLUMNS = {"symbol": "symbol", "stablelisted": "stablelisted", "drivers": "drivers", "builds": "builds",
           "greylisted_by": "greylists", "exported_by": "exported by", "crc_changes": "CRC changes",
           "crc_changed_in": "CRC changed in", "removals": "removals", "failures": "failures caused",
           "last_kernel": "last kernel"}


@dataclass
class CrcChange:
    """A symbol's CRC differing between two neighbouring kernels of the stream that both export it."""

    kernel: str  # the release where the new CRC first appears
    previous: str  # the release before it in the stream
    old_crc: int | None
    new_crc: int | None
    cause: dict | None = None  # explain.crc.cause_json, when the explain cache holds both kernels' types


@dataclass
class SymbolDemand:
    symbol: str
    stablelisted: bool
    drivers: set[str] = field(default_factory=set)
    builds: int = 0
    greylisted_by: int = 0  # packages whose greylist.txt names it (ELRepo kmods)
    exported_by: int = 0  # kernels of the stream that export it
    changes: list[CrcChange] = field(default_factory=list)
    removals: int = 0
    reappearances: int = 0
    failures_caused: int = 0  # driver build x kernel cells it refuses (rules.deciding_symbols)
    first_kernel: str | None = None
    last_kernel: str | None = None
    latest: Export | None = None  # its export in the newest kernel that has it

    @property
    def crc_changes(self) -> int:
        return len(self.changes)

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
    # The modules of each driver's newest build (built for the newest kernel), by driver: ksc's sections.
    newest: list[list[Module]] = field(default_factory=list)


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
    loaded = store.load_builds(build_ids)
    provided = {build_id: {e.name for m in modules for e in m.exports} for build_id, modules in loaded.items()}
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
    ranked = sorted(demand.values(), key=lambda d: (-d.failures_caused, -len(d.drivers), -d.crc_changes, d.symbol))
    newest = {}
    for build in sorted(builds, key=lambda b: (version_key(b.built_for or ""), b.id)):
        newest[build.driver] = loaded[build.id]
    return Demand(stream, arch, kernels, stablelist.source, len(builds), len(set(driver_of.values())), ranked,
                  [newest[name] for name in sorted(newest)])


def _stream_history(store: Store, kernels: list[KernelRecord], demand: dict[str, SymbolDemand]) -> None:
    previous: dict[str, Export | None] = {}
    since: dict[str, KernelRecord] = {}  # the kernel of each symbol's previous export
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
                    entry.changes.append(CrcChange(kernel.release, since[symbol].release, before.crc, export.crc))
                elif before is None and symbol in previous:
                    entry.reappearances += 1
            elif before is not None:
                entry.removals += 1
            if export is not None or symbol in previous:
                previous[symbol] = export
            if export is not None:
                since[symbol] = kernel
    _causes(store, kernels, demand)


def _causes(store: Store, kernels: list[KernelRecord], demand: dict[str, SymbolDemand]) -> None:
    """Each CRC change's cause, from the explain cache only (a gate or `explain` read the kernels):
    a kernel pair it does not hold costs a look-up, never a reading of the kernels."""
    by_release = {k.release: k for k in kernels}
    cached = {k.release: types_cached(list(k.sources), k.release) for k in kernels}
    pairs: dict[tuple[int, int], set[str]] = {}
    for entry in demand.values():
        for change in entry.changes:
            if cached[change.previous] and cached[change.kernel]:
                pairs.setdefault((by_release[change.previous].id, by_release[change.kernel].id), set()).add(
                    entry.symbol)
    if not pairs:
        return
    causes = pair_causes(store, {k.id: k for k in kernels}, pairs)
    for entry in demand.values():
        for change in entry.changes:
            key = (by_release[change.previous].id, by_release[change.kernel].id)
            change.cause = causes.get(key, {}).get(entry.symbol)


def _failures(store: Store, kernels: list[KernelRecord], build_ids: list[int],
              demand: dict[str, SymbolDemand]) -> None:
    kernel_ids = [k.id for k in kernels]
    refresh_verdicts(store, kernel_ids=kernel_ids)
    failing = [key for key, cell in store.cells(RULES_VERSION, build_ids=build_ids, kernel_ids=kernel_ids).items()
               if not cell.loads]
    for modules in store.verdict_details(failing).values():
        deciding = set().union(*(deciding_symbols((r["code"], r["symbol"]) for r in m["reasons"]) for m in modules))
        for symbol in deciding & demand.keys():
            demand[symbol].failures_caused += 1


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


def cause_text(cause: dict | None) -> str | None:
    """A CrcChange's cause in a few words (explain.crc.cause_json's most likely type)."""
    if cause is None:
        return None
    first = cause["most_likely"]
    return first["type"] if first else f"no type information: {cause['no_type_information']}"


def changes_text(d: SymbolDemand) -> str:
    """Where the CRC changed: each release, with its cause when known."""
    return ", ".join(c.kernel + (f" ({text})" if (text := cause_text(c.cause)) else "") for c in d.changes)


def _evidence_lines(demand: Demand, d: SymbolDemand, export: Export) -> list[str]:
    kernels = demand.kernels
    return [f"used by {len(d.drivers)} drivers ({', '.join(sorted(d.drivers))}), {d.builds} builds"
            + (f"; in {d.greylisted_by} packages' greylist.txt" if d.greylisted_by else ""),
            f"exported by {d.exported_by} of {len(kernels)} kernels ({d.first_kernel} .. {d.last_kernel}); "
            f"now 0x{export.crc or 0:08x} {export.export_type} from {export.owner}"
            + (f", namespace {export.namespace}" if export.namespace else ""),
            f"CRC changed {d.crc_changes} times, removed {d.removals} times, back {d.reappearances} times "
            "along the stream" + (f": in {changes_text(d)}" if d.changes else ""),
            f"refused {d.failures_caused} driver x kernel cells where it decided the verdict"]


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
        lines += [f"## `{d.symbol}`", "", *(f"- {line}" for line in _evidence_lines(demand, d, export)), ""]
    return "\n".join(lines)


# ksc's ksc-result.txt (Red Hat's kernel module source checker, ksc.py Ksc.save_result/write_result):
# a "[command: ...]" line, then per module "{NAME.ko@VERMAGIC[@ns:NS...]}", "[ARCH]", the stablelisted
# symbols it uses under [STABLELISTUSAGE], and under [NONSTABLELISTUSAGE] each other symbol between
# lines of ten '#' with its justification; a symbol justified in an earlier section refers to it.
KSC_SEPARATOR = "#" * 10
KSC_REFERENCE = "JUSTIFICATION STATED UNDER `{}' SECTION"
KSC_UNSAFE = str.maketrans("#{}", "   ")  # what would end ksc's reading of a justification or a section


def ksc_report(demand: Demand, symbols: list[SymbolDemand], stablelist: Stablelist, arch: str, command: str) -> str:
    """The request as ksc writes it for Red Hat's stablelist process: one section per module of each
    driver's newest build that uses a requested symbol; the justification is the evidence. ksc reads
    a justification up to the next '#' and a section name up to '}': the evidence has neither."""
    requested = {d.symbol: d for d in symbols if d.latest is not None}
    justified: dict[str, str] = {}  # symbol -> the module whose section states its justification
    text = [f"[command: {command}]\n"]
    for modules in demand.newest:
        provided = {e.name for m in modules for e in m.exports}
        for module in modules:
            imports = {i.name for i in module.imports} - provided
            asked = sorted(imports & requested.keys())
            if not asked:
                continue
            ko = module.path.rsplit("/", 1)[-1].split(".ko", 1)[0] + ".ko"  # ksc names the .ko file given it
            namespaces = "".join(f"@ns:{ns}" for ns in module.imported_namespaces if ns)
            text.append(f"\n{{{ko}@{(module.vermagic or '').strip()}{namespaces}}}\n\n[{arch}]\n[STABLELISTUSAGE]\n")
            text += [f"{name}\n" for name in sorted(imports & stablelist.symbols)]
            text.append("[NONSTABLELISTUSAGE]\n")
            for name in asked:
                if name in justified:
                    body = KSC_REFERENCE.format(justified[name])
                else:
                    d = requested[name]
                    body = "\n".join(_evidence_lines(demand, d, d.latest) if d.latest else []).translate(KSC_UNSAFE)
                    justified[name] = ko
                text.append(f"{KSC_SEPARATOR}\n({name})\n\n{body}\n\n")
            text.append(f"{KSC_SEPARATOR}\n")
    return "".join(text)


def change_json(change: CrcChange) -> dict:
    return {"kernel": change.kernel, "previous": change.previous, "old_crc": change.old_crc,
            "new_crc": change.new_crc, "cause": change.cause}


def symbol_demand_json(d: SymbolDemand) -> dict:
    return {"symbol": d.symbol, "stablelisted": d.stablelisted, "drivers": sorted(d.drivers), "builds": d.builds,
            "greylisted_by": d.greylisted_by, "exported_by": d.exported_by, "crc_changes": d.crc_changes,
            "crc_changed_in": [change_json(c) for c in d.changes],
            "removals": d.removals, "reappearances": d.reappearances, "failures": d.failures_caused,
            "first_kernel": d.first_kernel, "last_kernel": d.last_kernel, "kabi_violation": d.violation}


def demand_json(demand: Demand, limit: int | None = None) -> dict:
    """The symbol demand; `limit`: only the first symbols of the ranking (the totals still count all)."""
    symbols = demand.symbols[:limit] if limit else demand.symbols
    return {"stream": demand.stream, "arch": demand.arch, "stablelist": demand.stablelist,
            "kernels": [k.release for k in demand.kernels],
            "builds": demand.builds, "drivers": demand.drivers, "symbols": [symbol_demand_json(d) for d in symbols]}


DEMAND_CSV_COLUMNS = ("symbol", "stablelisted", "drivers", "builds", "greylisted_by", "exported_by", "crc_changes",
                      "removals", "reappearances", "failures", "first_kernel", "last_kernel", "kabi_violation",
                      "crc_changed_in")


def demand_csv(symbols: list[SymbolDemand]) -> str:
    """`stablelist demand --csv` and the dashboard's /demand.csv: a row a symbol, in the ranking's
    order (drivers joined by spaces; exported_by counts kernels, failures the cells it decided)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(DEMAND_CSV_COLUMNS)
    for d in symbols:
        row = symbol_demand_json(d)
        row["drivers"] = " ".join(row["drivers"])
        row["crc_changed_in"] = changes_text(d)
        writer.writerow([row[c] for c in DEMAND_CSV_COLUMNS])
    return buffer.getvalue()
