"""`kabigate weak-modules` (a drop-in for RHEL's /usr/sbin/weak-modules) and `kabigate preflight`:
install-time decisions, made with the loader rules."""

from __future__ import annotations

import os
import sys

import click

from kabigate.cli import EXIT_INCOMPATIBLE, EXIT_OK, cli, emit_json, err, out
from kabigate.services import weakmodules as wm


@cli.command("weak-modules")
@click.option("--add-modules", "action", flag_value="add-modules",
              help="Link the modules (read from stdin, or given as arguments) into every installed kernel they load on.")
@click.option("--remove-modules", "action", flag_value="remove-modules",
              help="Remove the links of modules that are gone (stdin or arguments), and what needed them.")
@click.option("--add-kernel", "action", flag_value="add-kernel",
              help="Link every other kernel's extra/ modules that load on KREL (default: the running kernel).")
@click.option("--remove-kernel", "action", flag_value="remove-kernel",
              help="Remove every link of KREL's weak-updates/ (default: the running kernel).")
@click.option("--dry-run", is_flag=True, help="Decide and print, change nothing.")
@click.option("--verbose", is_flag=True, help="Print each decision and the commands run.")
@click.option("--no-initramfs", is_flag=True, help="Never regenerate an initramfs.")
@click.option("--basedir", default="/", metavar="DIR", help="The system root to work on (default /).")
@click.option("--dracut", default="/sbin/dracut", metavar="PATH", help="dracut to regenerate initramfs images with.")
@click.option("--delete-modules", is_flag=True, hidden=True)  # deprecated in RHEL's script too: no effect
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("args", nargs=-1, metavar="[KREL | MODULE...]")
def weak_modules(action: str | None, dry_run: bool, verbose: bool, no_initramfs: bool, basedir: str, dracut: str,
                 delete_modules: bool, as_json: bool, args: tuple[str, ...]) -> None:
    """RHEL's weak-modules, deciding with every rule of the kernel's module loader instead of
    `depmod -naeE` alone (presence and CRC): a module the kernel would refuse (module_layout,
    vermagic, GPL-only, namespaces, ...) is not linked, and the reason is printed.

    Exit 0 when everything judged is linked, 1 when a module was refused for a kernel, 2 on bad input."""
    if action is None:
        raise click.UsageError("one of --add-modules, --remove-modules, --add-kernel, --remove-kernel is required")
    if delete_modules:
        err.print("WARNING: --delete-modules is deprecated, no effect", markup=False)
    root = wm.Root(basedir)
    verbose_lines = verbose and not as_json
    runner = wm.WeakModules(root, say=(lambda line: out.print(line, markup=False)) if verbose_lines else (lambda _l: None))
    if action in ("add-modules", "remove-modules"):
        lines = args if args else (() if sys.stdin.isatty() else sys.stdin.read(1 << 24).splitlines())
        modules = wm.read_module_list(lines, os.getcwd(), root)
        if not modules:
            raise SystemExit(EXIT_OK)
        outcome = runner.add_modules(modules) if action == "add-modules" else runner.remove_modules(modules)
    else:
        if len(args) > 1:
            raise click.UsageError(f"--{action} takes one kernel release")
        krel = args[0] if args else os.uname().release
        outcome = runner.add_kernel(krel) if action == "add-kernel" else runner.remove_kernel(krel)

    tools = wm.Tools(dry_run=dry_run, initramfs=not no_initramfs, dracut=dracut)
    wm.commit(root, outcome, tools)
    if as_json:
        emit_json({**outcome.to_json(), "dry_run": dry_run})
    else:
        if verbose_lines:
            for argv in outcome.commands:
                out.print(" ".join(argv), markup=False)
        for refusal in outcome.refused:
            first = refusal.reasons[0]
            err.print(f"weak-modules: {refusal.module} (built for {refusal.module_kernel}) will not load on "
                      f"{refusal.kernel}: {first.code}: {first.message}", markup=False)
    raise SystemExit(EXIT_INCOMPATIBLE if outcome.refused else EXIT_OK)
