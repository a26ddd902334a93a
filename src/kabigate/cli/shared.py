"""What the command modules share: exit statuses, the consoles, progress bars, reading the inputs
named on the command line with one, and writing reports (text, JSON, files written whole)."""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable
from contextlib import contextmanager
from typing import NoReturn, TypeVar

import click
from rich.console import Console
from rich.text import Text

from kabigate.errors import InputError
from kabigate.model import Kernel, Module, Reason
from kabigate.reports.verdicts import crc_text  # also the commands' shared helper

T = TypeVar("T")

EXIT_OK, EXIT_INCOMPATIBLE, EXIT_INPUT_ERROR = 0, 1, 2

# On a terminal, tables are fitted to its width: Rich shrinks the widest columns and wraps their text,
# and cut_cell()s are kept to one line ending in an ellipsis (a build's 32 module names).
# Piped or written to a file, nothing is cut or fitted to 80 columns: every cell is whole.
TERMINAL = sys.stdout.isatty()
# emoji=False: a module or driver named "x:smile:y" is printed as it is.
out = Console(highlight=False, emoji=False, soft_wrap=True, width=None if TERMINAL else 250)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True)


def say(text: str, console: Console = out) -> None:
    """A line of prose: at a terminal wrapped at words to its width, the lines after the first
    indented two more than it (under a finding's own text); piped or to a file, one line whole."""
    if not console.is_terminal or len(text) <= console.width:
        console.print(text, markup=False, soft_wrap=True)
        return
    indent = len(text) - len(text.lstrip(" "))
    console.print("\n".join(textwrap.wrap(text, console.width, subsequent_indent=" " * (indent + 2),
                                          break_long_words=False, break_on_hyphens=False)),
                  markup=False, soft_wrap=True)


def print_styled(pieces: list[tuple[str, str | None]]) -> None:
    """The pieces as one text, each in its Rich style (None: plain), like out.print() of their markup.
    Piped without colour, printable ASCII is written as Rich would write it (no markup, no wrapping:
    soft_wrap) without Rich's ~0.1 ms a line, a third of a second for a tree's check; other text
    (control codes, tabs, wide characters) goes through Rich, which strips or expands them."""
    plain = "".join(text for text, _style in pieces)
    if out.color_system is None and not out.record and plain.isascii() and plain.replace("\n", "").isprintable():
        out.file.write(plain + "\n")
        return
    out.print(Text.assemble(*(text if style is None else (text, style) for text, style in pieces)))


def _bar():
    """Rich's progress bar on stderr, made only when stderr is a terminal: not shown, there is no
    Progress at all (importing it is ~20 ms of a one-module `check`; a call per module ~10 us)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


@contextmanager
def progress(description: str, total: int | None):
    """A progress bar on stderr, shown only when stderr is a terminal (total None: not known)."""
    if not err.is_terminal:
        yield lambda: None
        return
    with _bar() as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


@contextmanager
def stages(names: list[str]):
    """A progress bar through a command's stages, in this order, on stderr when it is a terminal:
    step(name) shows the stage now running (a stage may be skipped) and how many came before it."""
    if not err.is_terminal:
        yield lambda _name: None
        return
    with _bar() as bar:
        task = bar.add_task(names[0], total=len(names))
        # Drawn at once: a stage shorter than a refresh is still seen going by.
        yield lambda name: bar.update(task, description=name, completed=names.index(name), refresh=True)


def read_modules_with_progress(paths: list[str],
                               ahead: Callable[[Callable[..., None]], list[Module]] | None = None) -> list[Module]:
    """read_modules(paths), or what `ahead` (inputs.modules.modules_read_ahead()) began, with a bar."""
    from kabigate.inputs.modules import count_modules, read_modules  # the package readers: not for --help

    # Counting walks the tree (and opens each package) once more: only for a bar that is shown.
    with progress("reading modules", count_modules(paths) if err.is_terminal else 0) as advance:
        return ahead(advance) if ahead is not None else read_modules(paths, advance)


def map_modules_with_progress(paths: list[str], each: Callable[[Module], T]) -> list[T]:
    """each(module) of every module under `paths` (inputs.modules.map_modules()), with a bar."""
    from kabigate.inputs.modules import count_modules, map_modules  # the package readers: not for --help

    with progress("reading modules", count_modules(paths) if err.is_terminal else 0) as advance:
        return map_modules(paths, each, advance)


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


def cut_cell(value: str) -> Text:
    """A table cell kept to one line on a terminal, ending in an ellipsis where its column ends (the
    cell's no_wrap, not the column's: Rich would give a no_wrap column its whole width first); whole
    when piped."""
    return Text(value, no_wrap=True, overflow="ellipsis") if TERMINAL else Text(value)


def cells(*values: str) -> list[Text]:
    """Table cells taken as they are: names and paths from outside are not Rich markup."""
    return [Text(value) for value in values]


def write_atomically(path: str, text: str) -> None:
    """Write a report whole or not at all: a temporary file in the same folder, renamed into place."""
    import tempfile  # only for reports written to files (~4 ms of every start otherwise)

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


class Leave(Exception):
    """A command is done: main() exits with `code` (leave())."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def leave(code: int) -> NoReturn:
    """End a command whose output is written with `code`. Run as the `kabigate` program, the process
    then ends at once (main(at_once=True)): a tree's command holds ~500,000 objects that reference
    counting and the interpreter's shutdown would free one by one (~0.04 s) for the process to end
    anyway; the frames holding them stay alive in the exception until then. For commands that leave
    nothing to clean up: no temporary file, child process or server outlives their output."""
    raise Leave(code)


def emit_json(document: dict) -> None:
    """The document as json.dumps(document, indent=2) prints it, written as it is made: json's
    indenting encoder is pure Python, 2.3 s and 50 MB at once for a tree's `inspect --json`."""
    pieces: list[str] = []
    _indented(document, pieces, "\n", sys.stdout.write)
    pieces.append("\n")
    sys.stdout.write("".join(pieces))


class JsonText(str):
    """A value's JSON text as emit_json() writes it at the indent it is placed at (json_text()):
    made where the value is (a worker process), emitted as it is."""


def json_text(value, newline: str) -> JsonText:
    """`value`'s text in emit_json()'s document at the indent `newline` ("\n" and spaces) gives."""
    written: list[str] = []
    pieces: list[str] = []
    _indented(value, pieces, newline, written.append)
    return JsonText("".join(written) + "".join(pieces))


_string = json.encoder.encode_basestring_ascii  # the C function json.dumps uses (ensure_ascii)
_STREAMED_LEVELS = 2  # the document and its lists (`modules`): below them, one value at a time in C


@functools.cache
def _c_indenter() -> Callable[[object, str], str | None] | None:
    """cli/_jsonindent.c's dumps(), unless KABIGATE_PURE is set or it was not built (loaded at the
    first JSON document, not when `kabigate --help` starts)."""
    if os.environ.get("KABIGATE_PURE"):
        return None
    try:
        return importlib.import_module("kabigate.cli._jsonindent").dumps
    except ImportError:
        return None


@functools.cache
def c_module_writer() -> Callable[..., str | None] | None:
    """cli/_jsonindent.c's module() (`inspect --json`'s record of a module), as _c_indenter()."""
    return None if _c_indenter() is None else importlib.import_module("kabigate.cli._jsonindent").module


_FLUSH_PIECES = 65536
_FLUSH_ITEMS = 128
_LEAF_TYPES = frozenset({str, int, float, bool, type(None)})
_encoders: dict[str, Callable[[object], str]] = {}


def _encoder(newline: str) -> Callable[[object], str]:
    """json's C encoder with "," + `newline` (a newline and an indent) between items."""
    encode = _encoders.get(newline)
    if encode is None:
        encode = _encoders[newline] = json.JSONEncoder(separators=("," + newline, ": ")).encode
    return encode


def _is_leaf(value: dict | list | tuple) -> bool:
    """Only scalars inside (of json's own types: an enum's subclass of str is written by
    _indented, exactly as json does)."""
    return all(map(_LEAF_TYPES.__contains__, map(type, value.values() if isinstance(value, dict) else value)))


def _flat(value: dict | list | tuple, newline: str) -> str | None:
    """A non-empty container of scalars in one call of json's C encoder, its item separator
    carrying the indentation; None when it holds anything else."""
    if not _is_leaf(value):
        return None
    text = _encoder(newline + "  ")(value)
    return text[0] + newline + "  " + text[1:-1] + newline + text[-1]


def _flat_records(value: list | tuple, newline: str) -> str | None:
    """A non-empty list of non-empty dicts of scalars (a module's imports, versions, exports: a
    tree's --json holds ~400,000) in one call of json's C encoder, with the members' indentation
    as its separator; the dicts' own brackets are then indented by one replace(): ensure_ascii
    writes a newline inside a string as \\n, so "},<newline>{" is only ever between two dicts."""
    for item in value:
        if type(item) is not dict or not item or not _is_leaf(item):
            return None
    item_newline = newline + "  "
    member_newline = item_newline + "  "
    text = _encoder(member_newline)(value)  # '[{"k": v,<member_newline>"k": v},<member_newline>{...}]'
    body = text[2:-2].replace("}," + member_newline + "{", item_newline + "}," + item_newline + "{" + member_newline)
    return "[" + item_newline + "{" + member_newline + body + item_newline + "}" + newline + "]"


def _scalar(value) -> str | None:
    """A JSON scalar as json.dumps writes it, None for a container (checked in json's order)."""
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return json.dumps(value)
    return None


def _indented(value, pieces: list[str], newline: str, write) -> None:
    """json.dumps(indent=2)'s text of `value` appended to `pieces` (`newline` is "\n" and the
    current indent); pieces are written out every _FLUSH_PIECES items of a list."""
    if type(value) is JsonText:
        pieces.append(value)
        return
    text = _scalar(value)
    if text is not None:
        pieces.append(text)
        return
    c_indent = _c_indenter()
    if c_indent is not None and len(newline) > _STREAMED_LEVELS * 2:
        # Below the levels streamed item by item (a tree's modules): written in C, unless it holds
        # what json writes otherwise (then the Python path below, which also refuses as json does).
        text = c_indent(value, newline)
        if text is not None:
            pieces.append(text)
            return
    if value and isinstance(value, (dict, list, tuple)):
        text = _flat(value, newline)
        if text is None and not isinstance(value, dict):
            text = _flat_records(value, newline)
        if text is not None:
            pieces.append(text)
            return
    inner = newline + "  "
    if isinstance(value, dict):
        if not value:
            pieces.append("{}")
            return
        separator = "{" + inner
        for key, item in value.items():
            key_text = _string(key) if isinstance(key, str) else _key(key)
            text = _scalar(item)
            if text is None:
                pieces.append(separator + key_text + ": ")
                _indented(item, pieces, inner, write)
            else:
                pieces.append(separator + key_text + ": " + text)
            separator = "," + inner
        pieces.append(newline + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            pieces.append("[]")
            return
        separator = "[" + inner
        for count, item in enumerate(value, 1):
            pieces.append(separator)
            _indented(item, pieces, inner, write)
            separator = "," + inner
            # Indented in C, an item is one large piece (a module's ~12 kB): written out every few.
            if len(pieces) > _FLUSH_PIECES or (c_indent is not None and count % _FLUSH_ITEMS == 0):
                write("".join(pieces))
                pieces.clear()
        pieces.append(newline + "]")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _key(key) -> str:
    """A dict key that is not a str, converted as json.dumps converts it."""
    text = _scalar(key)
    if text is None or isinstance(key, str):
        raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")
    return text if text[0] == '"' else _string(text)


def trust_options(function):
    """--trust and the distribution policy options, shared by `verify` and `check`."""
    for decorator in reversed([
        click.option("--trust", "trust_paths", multiple=True, metavar="CERT_OR_KERNEL",
                     help="Trusted certificates (PEM/DER), or a kernel (vmlinuz, vmlinux, kernel root, "
                          "lib/modules/<kver>) whose built-in keys to trust. Repeatable."),
        click.option("--require-codesigning-eku", is_flag=True,
                     help="The signing certificate must have the codeSigning EKU (SUSE)."),
        click.option("--accept-module-signing-oid", is_flag=True,
                     help="With --require-codesigning-eku, also accept Red Hat's module-signing EKU."),
        click.option("--reject-expired", is_flag=True, help="Refuse certificates outside their validity."),
    ]):
        function = decorator(function)
    return function


class Group(click.Group):
    """A command group whose help lists each subcommand with its whole first sentence."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, command.get_short_help_str(limit=1000)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
