"""Command line: the `kabigate` group and `main()`.

Each area defines its commands in its own module (abi: inspect, check, diff), which the group
imports when the command is used; what those modules share is in cli/shared.py.

Exit status: 0 all fine, 1 an incompatibility was found, 2 usage or input error.
Reports go to stdout (text, or JSON with --json); progress and errors go to stderr.
"""

from __future__ import annotations

import importlib
import sys

import click

from kabigate import __version__
from kabigate.cli.shared import EXIT_INPUT_ERROR, EXIT_OK, err
from kabigate.errors import InputError


def main() -> None:
    try:
        cli.main(prog_name="kabigate", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(EXIT_INPUT_ERROR)
    except click.exceptions.Abort:
        err.print("kabigate: aborted")
        sys.exit(EXIT_INPUT_ERROR)
    except InputError as error:
        err.print(f"kabigate: error: {error}", markup=False)
        sys.exit(EXIT_INPUT_ERROR)
    except BrokenPipeError:
        sys.exit(EXIT_OK)


class LazyGroup(click.Group):
    """Imports a command's module when the command is used, not at start-up: `kabigate check`
    does not pay for SQLAlchemy, Alembic and the web stack (0.4 s and 20 MB of every run).
    The command modules do not import this one: the imports run one way, from the group down."""

    def __init__(self, *args, modules: dict[str, str], summaries: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.modules = modules  # command name -> "module:attribute" of its click command
        self.summaries = summaries  # command name -> the first sentence of its help
        self._listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.modules))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """--help lists the commands by their summaries, importing none of them (0.3 s)."""
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if self._listing and name not in self.commands and name in self.summaries:
            return click.Command(name, help=self.summaries[name])
        if name not in self.commands and name in self.modules:
            module, _, attribute = self.modules[name].partition(":")
            self.add_command(getattr(importlib.import_module(f"kabigate.cli.{module}"), attribute), name)
        return super().get_command(ctx, name)


COMMAND_MODULES = {
    "inspect": "abi:inspect", "check": "abi:check", "diff": "abi:diff",
    "precheck": "packages:precheck", "rpm-deps": "packages:rpm_deps",
    "keygen": "signing:keygen", "sign": "signing:sign", "verify": "signing:verify",
    "db": "store:db", "ingest": "store:ingest", "matrix": "store:matrix", "history": "store:history",
    "kernels": "store:kernels", "drivers": "store:drivers",
    "gate": "gate:gate", "watch": "gate:watch", "waiver": "waiver:waiver",
    "stablelist": "stablelist:stablelist",
    "serve": "web:serve",
    "worker": "service:worker", "listen": "service:listen", "announce": "service:announce",
    "health": "service:health", "tasks": "service:tasks",
    "weak-modules": "install:weak_modules", "preflight": "install:preflight",
    "explain": "explain:explain_command",
    "boot-check": "boot:boot_check_command",
}

# Each command's first sentence, which --help lists without importing the command's module
# (tests/unit/test_cli_startup.py holds them to the commands' docstrings).
COMMAND_SUMMARIES = {
    "inspect": "What a module needs (imports, CRCs, namespaces) and provides (exports).",
    "check": "Will these modules, installed together, load on KERNEL? Exit 1 if any does not.",
    "diff": "Exports added, removed or changed from KERNEL_A to KERNEL_B.",
    "precheck": ("Presence and CRC of every kernel(sym)/ksym(sym) an RPM Requires, from package "
                 "headers or repository metadata alone (no payload read, nothing downloaded)."
                ),
    "rpm-deps": "RPM Requires (or --provides) lines for kmod spec files, like RHEL's find-requires.ksyms.",
    "keygen": "Generate a module-signing key and its self-signed certificate.",
    "sign": "Append a signature to each module, byte for byte what the kernel's sign-file appends.",
    "verify": ("Signer, key id and hash of each module's signature, and whether it verifies against "
               "the trusted keys."
              ),
    "db": "Create, upgrade and inspect the store.",
    "ingest": "Add kernels and driver builds to the store; each is judged against everything stored.",
    "matrix": "Driver builds x kernels: which build loads on which kernel, and the first reason when not.",
    "history": ("Along each stream: the kernel each build of DRIVER stops loading on, why, and which "
                "build loads again."
               ),
    "kernels": "The kernels in the store.",
    "drivers": "The driver builds in the store (and recorded build failures).",
    "gate": "Gate a candidate kernel on the stored driver builds.",
    "watch": ("Poll kernel repositories (yum repodata, a folder of .debs, a Debian Packages index); "
              "ingest and gate each kernel not gated yet, oldest first, once."
             ),
    "waiver": "Waivers kept in the store: every gate (CLI, watch, API) applies them with its --waivers file.",
    "stablelist": "Which symbols drivers need that the stablelist does not promise, and how the list moved.",
    "serve": ("Serve the dashboard (matrix, kernels, drivers, gate runs, stablelist demand) and the "
              "REST API (/api/v1, schema at /api/v1/openapi.json)."
             ),
    "worker": "Run a Celery worker: ingest and gate tasks from RabbitMQ into the shared store.",
    "listen": ("Consume build events (Koji's buildsys.build.state.change, kabigate.build.complete) "
               "with fedora-messaging and enqueue their ingest (and gate, for kernels)."
              ),
    "announce": ("Publish a kabigate.build.complete message (for build systems other than Koji): a "
                 "finished build whose packages are at FILES (paths the workers see, or URLs)."
                ),
    "health": "The service's health: store, broker, queues, workers, tasks.",
    "tasks": "The workers' tasks, most recent first: what was asked, its state, its error or result.",
    "weak-modules": ("RHEL's weak-modules, deciding with every rule of the kernel's module loader "
                     "instead of `depmod -naeE` alone (presence and CRC): a module the kernel would "
                     "refuse (module_layout, vermagic, GPL-only, namespaces, ...) is not linked, and "
                     "the reason is printed."
                    ),
    "preflight": ("Before installing a kernel: which installed out-of-tree modules (weak-updates/, "
                  "extra/, updates/, DKMS) will load on it, which will not and why, and which stored "
                  "build would."
                 ),
    "explain": ("Which changed types explain the CRC changes from KERNEL_A to KERNEL_B (every changed "
                "export, or the SYMBOLs)."
               ),
    "boot-check": ("Boot the kernel in qemu (KVM when it works, TCG otherwise), insert MODULEs in "
                   "dependency order (in-tree dependencies from the kernel package first) and print "
                   "the kernel's verdict and messages beside kabigate's."
                  ),
}


@click.group(cls=LazyGroup, modules=COMMAND_MODULES, summaries=COMMAND_SUMMARIES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kabigate")
def cli() -> None:
    """Will this kernel module load on that kernel, and if not, why?"""
