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

    def __init__(self, *args, modules: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.modules = modules  # command name -> "module:attribute" of its click command

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.modules))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
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
    "build": "build:build",
}


@click.group(cls=LazyGroup, modules=COMMAND_MODULES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kabigate")
def cli() -> None:
    """Will this kernel module load on that kernel, and if not, why?"""
