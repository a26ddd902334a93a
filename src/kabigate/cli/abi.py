"""`kabigate inspect | check | diff`: what modules need, whether they load, how kernels differ."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from kabigate.analysis import diff_kernels
from kabigate.cli.shared import (
    EXIT_INCOMPATIBLE,
    EXIT_OK,
    JsonText,
    c_module_writer,
    crc_text,
    describe_reason,
    emit_json,
    json_text,
    leave,
    load_kernel_with_progress,
    map_modules_with_progress,
    out,
    print_styled,
    read_modules_with_progress,
    trust_options,
)
from kabigate.errors import InputError
from kabigate.model import Export, Kernel, Module, ModuleSignature, ReasonCode, SymbolVersion, Verdict
from kabigate.reports.verdicts import checked_verdict_report, kernel_report
from kabigate.rules import LoadOptions, check_modules

if TYPE_CHECKING:
    from kabigate.explain.crc import SymbolExplanation
    from kabigate.formats.stablelist import Stablelist

# -- inspect --------------------------------------------------------------------------------

@click.command()
@click.argument("modules", nargs=-1, required=True, metavar="MODULE_OR_DIR...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
def inspect(modules: tuple[str, ...], as_json: bool) -> None:
    """What a module needs (imports, CRCs, namespaces) and provides (exports).

    \b
    Example:
      kabigate inspect --json /lib/modules/6.1.0-56-amd64/updates/dkms/jool.ko
    """
    from kabigate.inputs.modules import collector_paused  # the package readers: not for --help

    with collector_paused(freeze=True):
        if as_json:  # each module's text made where it is read (a worker process, for many files)
            emit_json({"modules": map_modules_with_progress(list(modules), _module_json_text)})
        else:
            for module in read_modules_with_progress(list(modules)):
                _print_module(module)
        leave(EXIT_OK)


def _module_json_text(module: Module) -> JsonText:
    """_module_json()'s text in the document, written in C from the module's fields when built."""
    write = c_module_writer()
    if write is not None:
        text = write(_module_head(module), module.versions, module.imports, module.exports,
                     _signature_json(module.signature), MODULE_NEWLINE)
        if text is not None:
            return JsonText(text)
    return json_text(_module_json(module), MODULE_NEWLINE)


MODULE_NEWLINE = "\n    "  # an item of the document's "modules" list


def _module_json(module: Module) -> dict:
    versions = module.versions or ()
    texts = [_crc_texts[v.crc] for v in versions]  # once each: a tree has ~190,000, imports as many again
    crcs = _version_crcs(versions, texts)
    return {
        **_module_head(module),
        "versions": None if module.versions is None else [{"symbol": v.name, "crc": text}
                                                          for v, text in zip(versions, texts)],
        "imports": [{"symbol": i.name, "weak": i.weak, "crc": crcs.get(i.name)} for i in module.imports],
        "exports": [_export_json(e) for e in module.exports],
        "signature": _signature_json(module.signature),
    }


def _module_head(module: Module) -> dict:
    """_module_json()'s members before its versions (cli/_jsonindent.c module() writes the rest alike)."""
    return {
        "path": module.path,
        "name": module.name,
        "machine": module.machine,
        "compression": module.compression,
        "vermagic": module.vermagic,
        "license": module.license,
        "depends": module.depends,
        "import_ns": module.imported_namespaces,
        "intree": module.info("intree") is not None,
        "modinfo": [[key, value] for key, value in module.modinfo],
    }


def _signature_json(signature: ModuleSignature | None) -> dict | None:
    return None if signature is None else {
        "id_type": signature.id_type, "signer": signature.signer, "key_id": signature.key_id,
        "hash_algorithm": signature.hash_algorithm, "size": signature.signature_size}


class _CrcTexts(dict):
    """crc_text() of each CRC met, made once: a tree's 189,000 versions have 18,000 CRCs."""

    def __missing__(self, crc: int) -> str | None:
        text = self[crc] = crc_text(crc)
        return text


_crc_texts = _CrcTexts()


def _version_crcs(versions: tuple[SymbolVersion, ...], texts: list[str | None]) -> dict[str, str | None]:
    """Each __versions symbol's CRC text, the first record's as Module.version_of() gives it."""
    return {v.name: text for v, text in zip(reversed(versions), reversed(texts))}


def _export_json(export: Export) -> dict:
    return {"symbol": export.name, "crc": crc_text(export.crc), "type": export.export_type,
            "gpl_only": export.gpl_only, "namespace": export.namespace, "owner": export.owner}


def _print_module(module: Module) -> None:
    out.print(f"[bold]{escape(module.name)}[/bold]  {escape(module.path)}")  # names and paths are not markup
    rows = [("machine", module.machine), ("vermagic", module.vermagic or "(none)"),
            ("license", module.license or "(none)"), ("depends", ",".join(module.depends)),
            ("import_ns", ",".join(module.imported_namespaces)),
            ("intree", "yes" if module.info("intree") else "no"),
            ("srcversion", module.info("srcversion") or ""),
            ("versions", "none (no __versions section)" if module.versions is None else str(len(module.versions)))]
    signature = module.signature
    rows.append(("signature", "unsigned" if signature is None else
                 f"{signature.id_type} {signature.hash_algorithm} signer '{signature.signer}' key {signature.key_id}"))
    lines = [f"  {key:<11} {value}" for key, value in rows]  # printed at once: Rich is slow a call
    lines.append(f"  imports     {len(module.imports)}")
    versions = module.versions or ()
    crcs = _version_crcs(versions, [crc_text(v.crc) for v in versions])
    for symbol in module.imports:
        crc = crcs.get(symbol.name) or "(no crc)"
        lines.append(f"    {crc:<10}  {symbol.name}{'  (weak)' if symbol.weak else ''}")
    lines.append(f"  exports     {len(module.exports)}")
    for export in module.exports:
        namespace = f"  ns {export.namespace}" if export.namespace else ""
        lines.append(f"    {crc_text(export.crc) or '(no crc)':<10}  {export.name}  {export.export_type}{namespace}")
    out.print("\n".join(lines), markup=False)
    out.print()


# -- check ----------------------------------------------------------------------------------

@click.command()
@click.option("--kernel", "-k", "kernel_paths", multiple=True, required=True, metavar="KERNEL",
              help="Symvers file, headers tree, /lib/modules/<kver> tree or extracted package root "
                   "(repeat to combine several paths of one kernel).")
@click.option("--vermagic", help="The kernel's vermagic string, when the KERNEL paths do not tell it.")
@click.option("--stablelist", "stablelist_path", type=click.Path(), metavar="FILE",
              help="kABI stablelist: also report which imported symbols are on it (a list, a folder of "
                   "Module.kabi_<arch> files or a kernel-abi-stablelists RPM: the kernel's architecture's list).")
@click.option("--require-signature", is_flag=True, help="Model a kernel that enforces module signatures.")
@click.option("--sig-enforce", is_flag=True,
              help="Model module.sig_enforce=1 (Secure Boot): --require-signature, trusting the keys built into "
                   "the kernel's image (found with KERNEL) and --trust (enrolled MOK certificates).")
@trust_options
@click.option("--built-for", "built_for_paths", multiple=True, metavar="KERNEL",
              help="The kernel the modules were built against (with its vmlinuz): each crc-mismatch then "
                   "names the changed type that most likely caused it, from both kernels' BTF.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("modules", nargs=-1, required=True, metavar="MODULE_OR_DIR...")
def check(kernel_paths, vermagic, stablelist_path, require_signature, sig_enforce, built_for_paths, as_json,
          modules, **trust) -> None:
    """Will these modules, installed together, load on KERNEL? Exit 1 if any does not.

    \b
    Example:
      kabigate check -k linux-image-6.1.0-56-amd64-unsigned.deb -k linux-headers-6.1.0-56-amd64.deb jool/
      kabigate check -k /lib/modules/6.1.0-56-amd64 --stablelist kabi_stablelist_x86_64 --json *.ko
    """
    from kabigate.inputs.modules import collector_paused, modules_read_ahead  # the package readers: not for --help
    from kabigate.processes import map_in_processes

    # a tree's modules, verdicts and reports: ~500,000 acyclic objects; its files read by children
    # from the start, while this process reads the kernel
    with collector_paused(freeze=True), modules_read_ahead(list(modules)) as read_ahead:
        kernel = load_kernel_with_progress(list(kernel_paths), vermagic)
        stablelist = _stablelist(stablelist_path, kernel)
        parsed = read_modules_with_progress(list(modules), read_ahead)
        if sig_enforce:  # module_sig_check() against the secondary keyring: built-in keys, then what was enrolled
            if kernel.image is None or not os.path.isfile(kernel.image):
                raise InputError(f"{', '.join(kernel_paths)}: --sig-enforce needs the kernel's image (vmlinuz) for "
                                 "its built-in keys: give a kernel root or /boot/vmlinuz-<kver> with --kernel")
            trust["trust_paths"] = (kernel.image, *trust["trust_paths"])
        options = LoadOptions(require_signature=require_signature or sig_enforce,
                              signature_checks=signature_checks(parsed, **trust))
        verdicts = check_modules(parsed, kernel, options, map_in_processes)  # a tree's: on every core
        causes = _crc_causes(built_for_paths, kernel, verdicts)
        set_exports = {e.name for m in parsed for e in m.exports}
        reports = [checked_verdict_report(v, set_exports, stablelist, causes) for v in verdicts]
        if as_json:
            emit_json({"kernel": kernel_report(kernel), "modules": reports})
        else:
            _print_check(kernel, stablelist, verdicts, reports, causes)
        leave(EXIT_OK if all(v.loads for v in verdicts) else EXIT_INCOMPATIBLE)


def _stablelist(path: str | None, kernel: Kernel) -> Stablelist | None:
    """--stablelist's list for `kernel`; its readers (the package readers, hashlib: ~25 ms) only when given."""
    if path is None:
        return None
    from kabigate.inputs.stablelists import matching_kernel, read_stablelist

    return matching_kernel(read_stablelist(path, kernel.machine), kernel.exports, kernel.release)


def signature_checks(modules: list[Module], trust_paths: tuple[str, ...], require_codesigning_eku: bool,
                     accept_module_signing_oid: bool, reject_expired: bool) -> dict | None:
    """For `check --trust`: each module's signature verified against the trusted keys (the signing
    code and its cryptography, ~0.1 s of start-up, imported only then)."""
    if not trust_paths:
        return None
    from kabigate.formats.compression import decompress
    from kabigate.inputs.packages import module_files  # not for sign/verify: they take files
    from kabigate.signing.verify import TrustPolicy, load_trust, verify_module

    trust = load_trust(list(trust_paths))
    policy = TrustPolicy(require_codesigning_eku, accept_module_signing_oid, reject_expired)
    # modules read from packages are read again from them
    return {module.path: verify_module(decompress(data, module.path), trust, policy)
            for module, data in module_files(modules).items()}


def _crc_causes(built_for_paths, kernel: Kernel, verdicts: list[Verdict]) -> dict[str, SymbolExplanation]:
    """The explanation of every crc-mismatch's symbol, from the built-for kernel to KERNEL."""
    if not built_for_paths:
        return {}
    from kabigate.explain.sources import explain_symbols  # BTF work only when asked for

    built_for = load_kernel_with_progress(list(built_for_paths))
    symbols = [r.symbol for v in verdicts for r in v.reasons if r.code == ReasonCode.CRC_MISMATCH and r.symbol]
    return explain_symbols(built_for, kernel, symbols, required=True) or {}


def _print_check(kernel: Kernel, stablelist: Stablelist | None, verdicts: list[Verdict], reports: list[dict],
                 causes: dict[str, SymbolExplanation]) -> None:
    out.print(f"kernel {kernel.release or '(unknown release)'} {kernel.machine or ''}  "
              f"vermagic '{kernel.vermagic or 'unknown'}'  {len(kernel.exports)} exports", markup=False)
    if stablelist is not None:
        out.print(f"stablelist {stablelist.source} ({len(stablelist.symbols)} symbols)", markup=False)
    pieces: list[tuple[str, str | None]] = []  # printed at once: Rich takes ~0.25 ms a print call
    for verdict, report in zip(verdicts, reports):
        style = "green" if verdict.loads else "bold red"
        pieces += [(f"{report['verdict'].upper():<5}", style), (f" {verdict.module.name}  ", None),
                   (verdict.module.path, "dim"), ("\n", None)]
        for reason in verdict.reasons:
            pieces += [("      " + describe_reason(reason), None), ("\n", None)]
            if reason.code == ReasonCode.CRC_MISMATCH and reason.symbol in causes:
                pieces += [("        cause: " + _cause_text(causes[reason.symbol]), None), ("\n", None)]
        for warning in verdict.warnings:
            pieces += [("      warning " + describe_reason(warning), "yellow"), ("\n", None)]
        if "stablelist" in report:
            coverage = report["stablelist"]
            pieces += [(f"      stablelist: {len(coverage['on'])} on, {len(coverage['off'])} off"
                        + (f": {' '.join(coverage['off'])}" if coverage["off"] else ""), None), ("\n", None)]
    if pieces:
        pieces.pop()  # the last ("\n", None): print_styled() ends the text with one
        print_styled(pieces)
    failing = sum(not v.loads for v in verdicts)
    out.print(f"{len(verdicts) - failing} load, {failing} fail")


# -- diff -----------------------------------------------------------------------------------

@click.command()
@click.argument("old_kernel", metavar="KERNEL_A")
@click.argument("new_kernel", metavar="KERNEL_B")
@click.option("--stablelist", "stablelist_path", type=click.Path(), metavar="FILE",
              help="Report changes to listed symbols as kABI violations (like RHEL's check-kabi); a folder or "
                   "kernel-abi-stablelists RPM gives KERNEL_A's architecture's list.")
@click.option("--no-explain", is_flag=True, help="Do not read the kernels' BTF to explain CRC changes.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
def diff(old_kernel: str, new_kernel: str, stablelist_path: str | None, no_explain: bool, as_json: bool) -> None:
    """Exports added, removed or changed from KERNEL_A to KERNEL_B. Exit 1 if the ABI broke
    (with --stablelist: if a listed symbol broke). When both kernels' images are known, each CRC
    change names the changed type that most likely caused it (from their BTF; see explain).

    \b
    Example:
      kabigate diff --stablelist kabi_stablelist_x86_64 /usr/src/linux-headers-6.1.0-50-amd64 \
          /usr/src/linux-headers-6.1.0-53-amd64
    """
    old, new = load_kernel_with_progress([old_kernel]), load_kernel_with_progress([new_kernel])
    stablelist = _stablelist(stablelist_path, old)
    result = diff_kernels(old, new, stablelist)
    sections = {"added": result.added, "removed": result.removed, "crc_changed": result.crc_changed,
                "became_gpl_only": result.became_gpl_only, "namespace_changed": result.namespace_changed}
    if stablelist is not None:
        sections["stablelist_violations"] = result.stablelist_violations
    causes = {}
    if old.image and new.image and result.crc_changed and not no_explain:
        from kabigate.explain.sources import explain_symbols  # both images known: their BTF says why

        causes = explain_symbols(old, new, [c.name for c in result.crc_changed]) or {}
    if as_json:
        emit_json({"old": kernel_report(old), "new": kernel_report(new),
                    **{key: [_change_json(c, causes) for c in changes] for key, changes in sections.items()}})
    else:
        out.print(f"{old.release} -> {new.release}: {len(old.exports)} -> {len(new.exports)} exports", markup=False)
        for key, changes in sections.items():
            out.print(f"{key.replace('_', ' ')}: {len(changes)}", markup=False)
            if key != "added":
                for change in changes:
                    crc_changed = change.old and change.new and change.old.crc != change.new.crc
                    cause = causes.get(change.name) if crc_changed else None
                    suffix = f"  {_cause_text(cause)}" if cause else ""
                    out.print("  " + _describe_change(change) + suffix, markup=False)
    broken = result.stablelist_violations if stablelist is not None else result.breaks_abi
    sys.exit(EXIT_INCOMPATIBLE if broken else EXIT_OK)


def _change_json(change, causes: dict[str, SymbolExplanation]) -> dict:
    report = {"symbol": change.name,
              "old": None if change.old is None else _export_json(change.old),
              "new": None if change.new is None else _export_json(change.new)}
    if change.old and change.new and change.old.crc != change.new.crc and change.name in causes:
        from kabigate.explain.crc import cause_json  # loaded already: the causes came from it

        report["cause"] = cause_json(causes[change.name])
    return report


def _cause_text(cause: SymbolExplanation) -> str:
    from kabigate.explain.crc import cause_text  # loaded already: the causes came from it (~10 ms otherwise)

    return cause_text(cause)


def _describe_change(change) -> str:
    old, new = change.old, change.new
    if new is None:
        return f"{change.name}  removed (was {crc_text(old.crc)} {old.export_type} from {old.owner})"
    parts = []
    if old.crc != new.crc:
        parts.append(f"crc {crc_text(old.crc)} -> {crc_text(new.crc)}")
    if old.export_type != new.export_type:
        parts.append(f"{old.export_type} -> {new.export_type}")
    if old.namespace != new.namespace:
        parts.append(f"namespace '{old.namespace}' -> '{new.namespace}'")
    return f"{change.name}  {', '.join(parts)}  ({new.owner})"
