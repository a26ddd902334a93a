"""`kabigate explain`: why exports' CRCs changed between two kernels, from the BTF they ship."""

from __future__ import annotations

import os
import sys

import click

from kabigate.cli.shared import EXIT_INCOMPATIBLE, EXIT_OK, crc_text, emit_json, kernel_paths, out, say, stages
from kabigate.errors import InputError
from kabigate.explain.crc import (
    Explanation,
    SymbolExplanation,
    candidate_json,
    cause_text,
    explain,
    type_change_json,
)
from kabigate.explain.sources import (
    header_trees,
    headers_from_sources,
    headers_of_sources,
    kernel_types_of,
    load_headers,
    needs_modules,
    warm,
)
from kabigate.inputs.kernels import load_kernel

LISTED = 5  # candidates per symbol in a whole release's JSON
# What the progress bar names, in order; the types (BTF, headers) are read once, then cached.
EXPLAIN_STAGES = ("reading types and headers", "comparing types")  # after reading the two kernels


@click.command("explain")
@click.option("--from", "old_paths", multiple=True, required=True, metavar="KERNEL_A",
              help="The kernel before: a vmlinuz, a package root, /lib/modules/<kver> with /boot, ... "
                   "(repeat to combine paths of one kernel); its vmlinuz gives the BTF.")
@click.option("--to", "new_paths", multiple=True, required=True, metavar="KERNEL_B", help="The kernel after.")
@click.option("--headers", "header_paths", multiple=True, type=click.Path(exists=True, file_okay=False),
              metavar="DIR", help="Headers tree of KERNEL_A (default: found in its paths) to rank causes by.")
@click.option("--no-cache", is_flag=True, help="Read the kernels again instead of from kabigate's cache.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("symbols", nargs=-1, metavar="[SYMBOL...]")
def explain_command(old_paths, new_paths, header_paths, no_cache, as_json, symbols) -> None:
    """Which changed types explain the CRC changes from KERNEL_A to KERNEL_B (every changed export,
    or the SYMBOLs). Exit 1 when a CRC changed.

    \b
    Example:
      kabigate explain --from 6.1.0-50-amd64-root/ --to 6.1.0-53-amd64-root/ kmalloc_trace
    """
    # Each kernel named as given (a release, a root folder, a package), before its paths are found.
    names = [f"reading {os.path.basename(given[0].split(',')[0].rstrip('/'))}" for given in (old_paths, new_paths)]
    names += EXPLAIN_STAGES
    old_paths, new_paths = kernel_paths(list(old_paths)), kernel_paths(list(new_paths))
    with stages(names) as step:
        step(names[0])
        kernels = [load_kernel(old_paths)]
        step(names[1])
        kernels.append(load_kernel(new_paths))
        trees = header_trees(list(header_paths or old_paths))
        if header_paths and not trees:
            raise InputError(f"{', '.join(header_paths)}: no headers tree here (a folder with include/linux, or "
                             "Debian's flavor folder beside its -common one)")
        step(EXPLAIN_STAGES[0])
        modules = needs_modules(kernels[0], sorted(set(symbols)) if symbols else None)
        if not no_cache:
            warm(kernels, trees, modules)
        old, new = (kernel_types_of(k, not no_cache, modules) for k in kernels)
        # --headers, else the old kernel's: its folders' headers trees, or its headers packages
        headers = (load_headers(trees, use_cache=not no_cache) if header_paths
                   else headers_from_sources(kernels[0].sources, use_cache=not no_cache))
        headers_used = ([str(tree) for tree in trees] if header_paths else headers_of_sources(kernels[0].sources)
                        ) if headers is not None else []
        step(EXPLAIN_STAGES[1])
        result = explain(old, new, sorted(set(symbols)) if symbols else None, headers)
    # A whole release lists each symbol's first candidates (the full lists of 18,000 symbols are
    # 60 MB of JSON, mostly the same types); asked-for SYMBOLs list them all.
    listed = None if symbols else LISTED
    if as_json:
        emit_json(_json(result, listed, headers_used))
    else:
        _print(result, headers_used, detailed=bool(symbols))
    changed = any(s.old_crc != s.new_crc for s in result.symbols)
    sys.exit(EXIT_INCOMPATIBLE if changed else EXIT_OK)


def _counts(result: Explanation) -> dict:
    changed = [s for s in result.symbols if s.old_crc is not None and s.new_crc is not None
               and s.old_crc != s.new_crc]
    return {"crc_changed": len(changed), "explained": sum(1 for s in changed if s.candidates),
            "changed_types": sum(1 for t in result.types if t.cause),
            "layout_only": sum(1 for t in result.types if not t.cause)}


def _symbol_json(explained: SymbolExplanation, listed: int | None) -> dict:
    return {"symbol": explained.symbol, "old_crc": crc_text(explained.old_crc), "new_crc": crc_text(explained.new_crc),
            "candidates": [candidate_json(c) for c in explained.candidates[:listed]],
            "candidates_total": len(explained.candidates), "no_type_information": explained.no_type_info}


def _json(result: Explanation, listed: int | None, headers_used: list[str]) -> dict:
    return {"old": result.old, "new": result.new, "ranking": result.ranking, "headers": headers_used,
            "counts": _counts(result),
            "types": [type_change_json(t) for t in result.types],
            "symbols": [_symbol_json(s, listed) for s in result.symbols]}


def _print(result: Explanation, headers_used: list[str], detailed: bool) -> None:
    counts = _counts(result)
    share = 100 * counts["explained"] / max(counts["crc_changed"], 1)
    ranking = (f"headers ({', '.join(headers_used)}), then depth" if result.ranking == "headers"
               else "depth and exported use (no headers found: --headers DIR gives them)")
    say(f"{result.old} -> {result.new}: {counts['crc_changed']} exports changed CRC, {counts['explained']} "
        f"explained ({share:.1f} %); {counts['changed_types']} types changed, {counts['layout_only']} in "
        f"layout only; causes ranked by {ranking}")
    named = {c.key for s in result.symbols for c in s.candidates} if detailed else None
    for change in result.types:
        if named is not None and change.key not in named:
            continue  # SYMBOLs asked: the types that explain them
        label = "" if change.cause else " (layout only, not a cause)"
        say(f"  {change.name}{label}: {'; '.join(change.details)}")
    for explained in result.symbols:
        crcs = f"{crc_text(explained.old_crc) or '-'} -> {crc_text(explained.new_crc) or '-'}"
        if explained.old_crc == explained.new_crc and explained.old_crc is not None:
            out.print(f"{explained.symbol}  CRC unchanged ({crc_text(explained.old_crc)})", markup=False)
            continue
        say(f"{explained.symbol}  {crcs}  {cause_text(explained)}")
        if detailed:
            for candidate in explained.candidates[1:]:
                seen = "" if candidate.seen_by is None else f", seen by {candidate.seen_by} headers"
                out.print(f"      {candidate.type} (via {candidate.via}, depth {candidate.depth}{seen})", markup=False)
