"""What the command modules share: exit statuses, the consoles, progress bars, reading the inputs
named on the command line with one, and writing reports (text, JSON, files written whole)."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from kabigate.errors import InputError
from kabigate.inputs.modules import count_modules, read_modules
from kabigate.model import Kernel, Module, Reason
from kabigate.reports.verdicts import crc_text  # also the commands' shared helper

EXIT_OK, EXIT_INCOMPATIBLE, EXIT_INPUT_ERROR = 0, 1, 2

# Tables are not cut to 80 columns when the report goes to a file or a pipe.
# emoji=False: a module or driver named "x:smile:y" is printed as it is.
out = Console(highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


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
    from kabigate.inputs.kernels import load_kernel
    from kabigate.inputs.packages import is_package_file, is_url

    paths = kernel_paths(paths)
    packages = sum(is_url(p) or is_package_file(p) for p in paths)
    with progress("reading kernel packages", packages) as advance:
        return load_kernel(paths, vermagic, advance)


def kernel_paths(values: list[str]) -> list[str]:
    """One kernel's paths, given any way a command takes them: a repeated option, paths joined by a
    comma (image.deb,headers.deb), or the release of a kernel in the store (--db / $KABIGATE_DB),
    which stands for the files it was ingested from."""
    paths = []
    for part in (part for value in values for part in value.split(",") if part):
        if "://" in part or os.path.lexists(part) or not _RELEASE.fullmatch(part):
            paths.append(part)
            continue
        stored = _stored_sources(part)
        if stored is None:
            raise InputError(f"{part}: no such file or directory, nor a kernel release in the store")
        paths += stored
    return paths


# A kernel release as `uname -r` prints it: what a path that does not exist may be instead.
_RELEASE = re.compile(r"\d+\.\d+[0-9A-Za-z.+_~-]*")


def _stored_sources(release: str) -> list[str] | None:
    """The files the stored kernel of `release` was read from, if there is a store holding one."""
    from kabigate.store import Store, StoreError

    try:
        store = Store.open(None, create=False)
    except StoreError:
        return None
    with store:
        records = store.find_kernels(release)
    if len(records) > 1:
        raise InputError(f"{release}: {len(records)} stored kernels of this release (flavors): give its files")
    # a kernel read from packages has one source naming them all, joined by ", " (PackageTree's label)
    return [path for source in records[0].sources for path in source.split(", ")] if records else None


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


class Group(click.Group):
    """A command group whose help lists each subcommand with its whole first sentence."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, command.get_short_help_str(limit=1000)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
