"""`kabigate --help` imports no command's module (SQLAlchemy, the web stack, the package readers),
and lists what importing them would list: COMMAND_SUMMARIES are the commands' first sentences."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from kabigate.cli import COMMAND_MODULES, COMMAND_SUMMARIES, cli


@pytest.mark.parametrize("name", sorted(COMMAND_MODULES))
def test_each_summary_is_the_commands_short_help(name):
    module, _, attribute = COMMAND_MODULES[name].partition(":")
    command = getattr(importlib.import_module(f"kabigate.cli.{module}"), attribute)
    assert command.short_help is None and not command.hidden
    placeholder = click.Command(name, help=COMMAND_SUMMARIES[name])
    for limit in (20, 45, 62, 200, 10_000):
        assert placeholder.get_short_help_str(limit) == command.get_short_help_str(limit)


def test_help_imports_no_command_module():
    code = ("import sys; from kabigate.cli import main; sys.argv = ['kabigate', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m.startswith(('kabigate.cli.', 'kabigate.inputs.modules', 'sqlalchemy'))))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Check modules against kernels:" in run.stdout and "weak-modules" in run.stdout
    assert run.stdout.splitlines()[-1] == "['kabigate.cli.shared']"


def test_help_lists_what_the_imported_commands_list():
    lazy = CliRunner().invoke(cli, ["--help"], terminal_width=200).output
    for name in COMMAND_MODULES:
        cli.get_command(click.Context(cli), name)  # imported now: listed from the commands themselves
    assert CliRunner().invoke(cli, ["--help"], terminal_width=200).output == lazy
    assert set(COMMAND_SUMMARIES) == set(COMMAND_MODULES)


def test_the_check_command_imports_no_signing_http_or_pool():
    """`kabigate check|inspect|diff` start without cryptography (the signing commands' and --trust's),
    the HTTP client (URLs), multiprocessing (a pool), Rich's progress bars (a terminal) or a store."""
    code = ("import sys; import kabigate.cli.abi\n"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('cryptography', 'http', 'ssl',\n"
            "       'multiprocessing', 'concurrent', 'sqlalchemy'))} | ({'rich.progress'} & set(sys.modules))))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.splitlines()[-1] == "[]"
