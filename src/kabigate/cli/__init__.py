"""Command line: the `kabigate` group, shared output helpers, and `main()`.

Each area registers its commands from its own module (abi: inspect, check, diff).

Exit status: 0 all fine, 1 an incompatibility was found, 2 usage or input error.
Reports go to stdout (text, or JSON with --json); progress and errors go to stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from kabigate import __version__
from kabigate.errors import InputError
from kabigate.model import Kernel, Module, Reason
from kabigate.modules import count_modules, read_modules
from kabigate.reports import crc_text  # also the commands' shared helper

EXIT_OK, EXIT_INCOMPATIBLE, EXIT_INPUT_ERROR = 0, 1, 2

# Tables are not cut to 80 columns when the report goes to a file or a pipe.
# emoji=False: a module or driver named "x:smile:y" is printed as it is.
out = Console(highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


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
    does not pay for SQLAlchemy, Alembic and the web stack (0.4 s and 20 MB of every run)."""

    def __init__(self, *args, modules: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.modules = modules  # command name -> module that registers it with @cli.command()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.modules))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.modules:
            importlib.import_module(f"kabigate.cli.{self.modules[name]}")
        return super().get_command(ctx, name)


COMMAND_MODULES = {
    "inspect": "abi", "check": "abi", "diff": "abi",
    "precheck": "packages", "rpm-deps": "packages",
    "keygen": "signing", "sign": "signing", "verify": "signing",
    "db": "store", "ingest": "store", "matrix": "store", "history": "store", "kernels": "store", "drivers": "store",
    "gate": "gate", "watch": "gate", "waiver": "waiver",
    "stablelist": "stablelist",
    "serve": "web",
    "worker": "service", "listen": "service", "announce": "service", "health": "service", "tasks": "service",
    "weak-modules": "install", "preflight": "install",
    "explain": "explain",
    "boot-check": "boot",
}


@click.group(cls=LazyGroup, modules=COMMAND_MODULES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kabigate")
def cli() -> None:
    """Will this kernel module load on that kernel, and if not, why?"""


@contextmanager
def progress(description: str, total: int):
    """A progress bar on stderr, shown only when stderr is a terminal."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


def read_modules_with_progress(paths: list[str]) -> list[Module]:
    with progress("reading modules", count_modules(paths)) as advance:
        return read_modules(paths, advance)


def load_kernel_with_progress(paths: list[str], vermagic: str | None = None) -> Kernel:
    """A progress bar while kernel packages are read (a linux-image .deb takes seconds)."""
    # Imported here: the package readers (HTTP, TLS) would add 60 ms to every `kabigate --help`.
    from kabigate.kernels import load_kernel
    from kabigate.packages import is_package_file, is_url

    packages = sum(is_url(p) or is_package_file(p) for p in paths)
    with progress("reading kernel packages", packages) as advance:
        return load_kernel(paths, vermagic, advance)


def describe_reason(reason: Reason) -> str:
    """A reason (or warning) in one line of text: its code, message and CRCs."""
    crcs = ""
    if reason.module_crc is not None or reason.kernel_crc is not None:
        crcs = f" (module {crc_text(reason.module_crc) or '-'}, kernel {crc_text(reason.kernel_crc) or '-'})"
    return f"{reason.code}: {reason.message}{crcs}"


def cells(*values: str) -> list[Text]:
    """Table cells taken as they are: names and paths from outside are not Rich markup."""
    return [Text(value) for value in values]


def write_atomically(path: str, text: str) -> None:
    """Write a report whole or not at all: a temporary file in the same folder, renamed into place."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=".kabigate-", dir=directory)
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 is for secrets, not reports
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as error:
        raise InputError(f"{path}: {error.strerror}") from None


def emit_json(document: dict) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
