"""kabigate boot-check: the real kernel's verdict beside kabigate's."""

from __future__ import annotations

import sys
import warnings

import click

from kabigate.boot.check import boot_check
from kabigate.boot.qemu import qemu_available
from kabigate.cli.shared import (
    EXIT_INCOMPATIBLE,
    EXIT_OK,
    describe_reason,
    emit_json,
    err,
    out,
    progress,
    read_modules_with_progress,
)
from kabigate.errors import InputError
from kabigate.model import LoadVerdict
from kabigate.reports.verdicts import checked_verdict_report, kernel_report


@click.command("boot-check")
@click.option("--image", required=True, metavar="VMLINUZ_OR_KERNEL_PACKAGE",
              help="The kernel to boot: a vmlinuz, or a kernel package "
                   "(linux-image .deb, kernel-core .rpm; file or URL).")
@click.option("--kernel", "-k", "kernel_paths", multiple=True, metavar="KERNEL",
              help="What kabigate predicts with (as check -k takes it); default: the image itself.")
@click.option("--timeout", type=click.IntRange(10, 3600), default=300, show_default=True,
              help="Seconds the whole run (boot and every insmod) may take.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("modules", nargs=-1, required=True, metavar="MODULE...")
def boot_check_command(image, kernel_paths, timeout, as_json, modules) -> None:
    """Boot the kernel in qemu, insert MODULEs, and compare its verdicts with kabigate's.

    qemu uses KVM when it works, TCG otherwise; MODULEs are inserted in dependency order (in-tree
    dependencies from the kernel package first), and the kernel's verdict and messages are printed
    beside kabigate's. Exit 1 if they disagree or the kernel refuses a module.

    \b
    Example:
      kabigate boot-check -k 6.1.0-56-amd64-root/ jool/*.ko
    """
    why = qemu_available()
    if why is not None:
        raise InputError(f"cannot boot a kernel here: {why}")
    parsed = read_modules_with_progress(list(modules))
    with progress("booting the kernel", 4) as advance, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = boot_check(image, list(kernel_paths), parsed, timeout=timeout, advance=advance)
    if any("TCG" in str(w.message) for w in caught):
        err.print("kabigate: note: KVM cannot run this kernel here; booted with TCG emulation", markup=False)
    set_exports = {e.name for e in (e for entry in result.entries for e in entry.module.exports)}
    reports = []
    for entry in result.entries:
        said = entry.kernel_reason
        kernel_verdict = LoadVerdict.LOADS if said is None else said.code if entry.accepted else LoadVerdict.FAILS
        reports.append({
            "path": entry.module.path, "name": entry.module.name, "in_tree": entry.in_tree,
            "agrees": entry.agrees,
            "kernel": {"verdict": kernel_verdict,
                       "exit_status": entry.result.exit_status,
                       "reason": None if said is None else {"code": said.code, "symbol": said.symbol,
                                                            "message": said.message},
                       "messages": entry.result.kernel_messages},
            "kabigate": checked_verdict_report(entry.verdict, set_exports, None),
        })
    if as_json:
        emit_json({"kernel": kernel_report(result.kernel), "image": image, "modules": reports,
                   "disagreements": len(result.disagreements)})
    else:
        _print(result, reports)
    refused = any(entry.kernel_reason is not None for entry in result.entries)
    sys.exit(EXIT_INCOMPATIBLE if result.disagreements or refused else EXIT_OK)


def _print(result, reports) -> None:
    out.print(f"booted {result.kernel.release or result.image}  {len(result.entries)} modules inserted",
              markup=False)
    for entry, report in zip(result.entries, reports):
        mark = "agree   " if entry.agrees else "DISAGREE"
        origin = " (in-tree dependency)" if entry.in_tree else ""
        out.print(f"{mark} {entry.module.name}{origin}  {entry.module.path}", markup=False,
                  style=None if entry.agrees else "bold red")
        said = entry.kernel_reason
        kernel_text = "loads" if said is None else f"{'takes it' if entry.accepted else 'fails'}: " \
            f"{said.code}: {said.message}"
        predicted = entry.verdict.reasons[0] if entry.verdict.reasons else None
        out.print(f"    kernel:   {kernel_text}", markup=False)
        ours = "loads" if predicted is None else "fails: " + describe_reason(predicted)
        out.print(f"    kabigate: {ours}", markup=False)
        for message in report["kernel"]["messages"]:
            out.print(f"      | {message}", markup=False, style="dim")
    out.print(f"{len(result.entries) - len(result.disagreements)} agree, {len(result.disagreements)} disagree")
