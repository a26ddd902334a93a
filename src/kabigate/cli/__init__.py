"""Command line: the `kabigate` group and `main()`.

Each area defines its commands in its own module (abi: inspect, check, diff), which the group
imports when the command is used; what those modules share is in cli/shared.py.

Exit status: 0 all fine, 1 an incompatibility was found, 2 usage or input error.
Reports go to stdout (text, or JSON with --json); progress and errors go to stderr.
"""

from __future__ import annotations

import difflib
import importlib
import os
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


class LazyGroup(click.Group):
    """Imports a command's module when the command is used, not at start-up: `kabigate check`
    does not pay for SQLAlchemy, Alembic and the web stack (0.4 s and 20 MB of every run).
    The command modules do not import this one: the imports run one way, from the group down."""

    def __init__(self, *args, modules: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.modules = modules  # command name -> "module:attribute" of its click command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.modules))

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if args and self.get_command(ctx, name) is None and not ctx.resilient_parsing:
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            raise click.UsageError(f"no command {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""), ctx)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands by what they are for (SECTIONS), each with its whole first sentence."""
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
    "stablelist": "stablelist:stablelist",
    "serve": "web:serve",
    "worker": "service:worker", "listen": "service:listen", "announce": "service:announce",
    "health": "service:health", "tasks": "service:tasks",
    "weak-modules": "install:weak_modules", "preflight": "install:preflight",
    "explain": "explain:explain_command",
    "boot-check": "boot:boot_check_command",
    "build": "build:build", "build-log": "build:build_log",
}


# The help's sections: what a command is for. tests/test_cli_surface.py holds every command to one.
SECTIONS = {
    "Check modules against kernels": ["inspect", "check", "diff", "explain", "boot-check", "precheck", "rpm-deps"],
    "Sign modules": ["keygen", "sign", "verify"],
    "The store": ["db", "ingest", "build", "build-log", "kernels", "drivers", "matrix", "history"],
    "Gate kernels": ["gate", "watch", "waiver"],
    "Stablelist evidence": ["stablelist"],
    "On a host, at install time": ["preflight", "weak-modules"],
    "kabigate as a service": ["serve", "worker", "listen", "announce", "tasks", "health"],
}


@click.group(cls=LazyGroup, modules=COMMAND_MODULES,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, prog_name="kabigate")
@click.option("--db", metavar="PATH_OR_URL", expose_value=False, is_eager=True, callback=_use_store,
              help="The store for the command (as its own --db; default: $KABIGATE_DB, else the user's data "
                   "directory's kabigate.db).")
def cli() -> None:
    """Will this kernel module load on that kernel, and if not, why?

    Exit status: 0 fine, 1 an incompatibility or a failed gate, 2 a usage or input error.
    `kabigate COMMAND --help` shows a command's options and an example."""
