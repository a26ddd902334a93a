"""Command line: the `kabigate` group and `main()`.

Each area defines its commands in its own module (abi: inspect, check, diff), which the group
imports when the command is used; what those modules share is in cli/shared.py.

Exit status: 0 all fine, 1 an incompatibility was found, 2 usage or input error.
Reports go to stdout (text, or JSON with --json); progress and errors go to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from kabigate import __version__
from kabigate.cli.shared import EXIT_INPUT_ERROR, EXIT_OK, Leave, err
from kabigate.errors import InputError


def main(*, at_once: bool = False) -> None:
    """The command line, its exit status raised as SystemExit. `at_once` (the program itself, not a
    caller in the same process): a command that ends with shared.leave() ends the process there."""
    try:
        cli.main(prog_name="kabigate", standalone_mode=False)
    except Leave as done:
        if not at_once:
            sys.exit(done.code)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BrokenPipeError:  # as below: the reader went away, nothing more to tell it
            os._exit(EXIT_OK)
        os._exit(done.code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.UsageError as error:  # one line, as every other input error
        command = error.ctx.command_path if error.ctx is not None else "kabigate"
        err.print(f"{command}: error: {error.format_message()} (see `{command} --help`)", markup=False)
        sys.exit(EXIT_INPUT_ERROR)
    except click.ClickException as error:
        err.print(f"kabigate: error: {error.format_message()}", markup=False)
        sys.exit(EXIT_INPUT_ERROR)
    except click.exceptions.Abort:
        err.print("kabigate: aborted")
        sys.exit(EXIT_INPUT_ERROR)
    except InputError as error:
        err.print(f"kabigate: error: {error}", markup=False)
        sys.exit(EXIT_INPUT_ERROR)
    except BrokenPipeError:
        sys.exit(EXIT_OK)


def program() -> None:
    """The `kabigate` program: the console script and `python -m kabigate`."""
    main(at_once=True)


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

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if args and self.get_command(ctx, name) is None and not ctx.resilient_parsing:
            import difflib  # only for a mistyped command (~4 ms of every start otherwise)

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            raise click.UsageError(f"no command {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""), ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands by what they are for (SECTIONS), each with its whole first sentence, from
        their summaries: --help imports none of them (0.3 s)."""
        self._listing = True
        try:
            self._format_sections(ctx, formatter)
        finally:
            self._listing = False

    def _format_sections(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for title, names in SECTIONS.items():
            rows = []
            for name in names:
                command = self.get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit=1000)))
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if self._listing and name not in self.commands and name in self.summaries:
            return click.Command(name, help=self.summaries[name])
        if name not in self.commands and name in self.modules:
            module, _, attribute = self.modules[name].partition(":")
            self.add_command(getattr(importlib.import_module(f"kabigate.cli.{module}"), attribute), name)
        return super().get_command(ctx, name)


def _use_store(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`kabigate --db X COMMAND`: every store command reads its --db from $KABIGATE_DB, so the
    group's --db is that variable's value for this run (and for what the command starts)."""
    if value is not None:
        os.environ["KABIGATE_DB"] = value


COMMAND_MODULES = {
    "inspect": "abi:inspect", "check": "abi:check", "diff": "abi:diff",
    "precheck": "packages:precheck", "rpm-deps": "packages:rpm_deps",
    "keygen": "signing:keygen", "sign": "signing:sign", "verify": "signing:verify",
    "db": "store:db", "ingest": "store:ingest", "matrix": "store:matrix", "history": "store:history",
    "kernels": "store:kernels", "drivers": "store:drivers",
    "gate": "gate:gate", "watch": "gate:watch", "waiver": "waiver:waiver",
    "subscribe": "subscribe:subscribe_group",
    "stablelist": "stablelist:stablelist",
    "serve": "web:serve",
    "worker": "service:worker", "listen": "service:listen", "announce": "service:announce",
    "health": "service:health", "tasks": "service:tasks",
    "weak-modules": "install:weak_modules", "preflight": "install:preflight",
    "explain": "explain:explain_command",
    "boot-check": "boot:boot_check_command",
    "build": "build:build", "build-log": "build:build_log",
}

# Each command's first sentence, which --help lists without importing the command's module
# (tests/unit/test_cli_startup.py holds them to the commands' docstrings).
COMMAND_SUMMARIES = {
    "inspect": 'What a module needs (imports, CRCs, namespaces) and provides (exports).',
    "check": 'Will these modules, installed together, load on KERNEL? Exit 1 if any does not.',
    "diff": ('Exports added, removed or changed from KERNEL_A to KERNEL_B. Exit 1 if the ABI broke (with '
             "--stablelist: if a listed symbol broke). When both kernels' images are known, each CRC "
             'change names the changed type that most likely caused it (from their BTF; see explain).'),
    "precheck": ('Presence and CRC of every kernel(sym)/ksym(sym) an RPM Requires, from package headers or '
                 'repository metadata alone (no payload read, nothing downloaded). `check` then applies '
                 'every loader rule to the modules themselves. Exit 1 if a requirement is not met.'),
    "rpm-deps": "RPM Requires (or --provides) lines for kmod spec files, like RHEL's find-requires.ksyms.",
    "keygen": 'Generate a module-signing key and its self-signed certificate.',
    "sign": "Append a signature to each module, byte for byte what the kernel's sign-file appends.",
    "verify": ("Signer, key id and hash of each module's signature, and whether it verifies against the "
               'trusted keys. Exit 1 if any module is unsigned or (with --trust) does not verify.'),
    "db": 'Create, upgrade, inspect and tidy the store.',
    "ingest": 'Add kernels and driver builds to the store; each is judged against everything stored.',
    "matrix": ('Driver builds x kernels: which build loads on which kernel, and the first reason when not; '
               "with --packages, each driver package's state on each kernel."),
    "history": ('Along each stream: the kernel each build of DRIVER stops loading on, why, and which build '
                'loads again.'),
    "kernels": 'The kernels in the store, and how many driver packages work on each (of those known there).',
    "drivers": ('The driver builds in the store (and recorded build failures), and whether each package '
                'works on the newest kernel of each stream.'),
    "gate": ('Gate a candidate kernel on the stored driver builds. Exit 0 PASSED/INFO, 1 FAILED or '
             'NEEDS_INSPECTION, 2 error.'),
    "watch": ('Poll kernel repositories (yum repodata, a folder of .debs, a Debian Packages index); '
              'ingest and gate each kernel not gated yet, oldest first, once. Restart-safe: a kernel '
              'half-processed when the watcher died is processed again, and a gate run is never published '
              'twice.'),
    "waiver": ('Waivers kept in the store: every gate (CLI, watch, API) applies them with its --waivers '
               'file; posted to and imported from WaiverDB with --waiverdb. Revoked, never deleted.'),
    "subscribe": ("Subscriptions: an owner follows a driver package or a stream, by e-mail, webhook or the bus, "
                  'and is told when a new kernel breaks a package, a rebuild fixes it, or a gate blocks.'),
    "stablelist": 'Which symbols drivers need that the stablelist does not promise, and how the list moved.',
    "serve": ('Serve the dashboard (matrix, kernels, drivers, gate runs, stablelist demand) and the REST '
              'API (/api/v1, schema at /api/v1/openapi.json). Writes (ingest, gate) need `Authorization: '
              'Bearer $KABIGATE_API_TOKEN`; without that variable set the server is read-only.'),
    "worker": 'Run a Celery worker: ingest, gate and package build tasks from RabbitMQ into the shared store.',
    "listen": ("Consume build events (Koji's buildsys.build.state.change, kabigate.build.complete) with "
               'fedora-messaging and enqueue their ingest (and gate, for kernels).'),
    "announce": 'Publish a kabigate.build.complete message: a finished build, for the workers to ingest.',
    "health": "The service's health: store, broker, queues, workers, tasks. Exit 1 when something is down.",
    "tasks": "The workers' tasks, most recent first: what was asked, its state, its error or result.",
    "weak-modules": "RHEL's weak-modules, deciding with every rule of the kernel's module loader.",
    "preflight": 'Before installing a kernel: which installed out-of-tree modules will load on it.',
    "explain": ('Which changed types explain the CRC changes from KERNEL_A to KERNEL_B (every changed '
                'export, or the SYMBOLs). Exit 1 when a CRC changed.'),
    "boot-check": "Boot the kernel in qemu, insert MODULEs, and compare its verdicts with kabigate's.",
    "build": ('Build SOURCE (a Debian *-dkms .deb, a folder with dkms.conf, a kmod source RPM, a Kbuild '
              'folder) against a kernel.'),
    "build-log": ("Print the stored log of DRIVER VERSION's failed or excluded build for KERNEL_RELEASE "
                  '(bounded: its first 256 KiB and last 768 KiB), after its outcome and first error line.'),
}

# The help's sections: what a command is for. tests/test_cli_surface.py holds every command to one.
SECTIONS = {
    "Check modules against kernels": ["inspect", "check", "diff", "explain", "boot-check", "precheck", "rpm-deps"],
    "Sign modules": ["keygen", "sign", "verify"],
    "The store": ["db", "ingest", "build", "build-log", "kernels", "drivers", "matrix", "history"],
    "Gate kernels": ["gate", "watch", "waiver", "subscribe"],
    "Stablelist evidence": ["stablelist"],
    "On a host, at install time": ["preflight", "weak-modules"],
    "kabigate as a service": ["serve", "worker", "listen", "announce", "tasks", "health"],
}


@click.group(cls=LazyGroup, modules=COMMAND_MODULES, summaries=COMMAND_SUMMARIES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="kabigate")
@click.option("--db", metavar="PATH_OR_URL", expose_value=False, is_eager=True, callback=_use_store,
              help="The store for the command (as its own --db; default: $KABIGATE_DB, else the user's data "
                   "directory's kabigate.db).")
def cli() -> None:
    """Will this kernel module load on that kernel, and if not, why?

    Exit status: 0 fine, 1 an incompatibility or a failed gate, 2 a usage or input error.
    `kabigate COMMAND --help` shows a command's options and an example."""
