"""The command line's surface, without the corpus: the help's sections hold every command once,
usage errors are one line with a suggestion, `--db` works before the command too, and a read
command never creates a store."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import click

from kabigate.cli import COMMAND_MODULES, SECTIONS, cli


def kabigate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "KABIGATE_DB"} | (env or {})
    return subprocess.run([sys.executable, "-m", "kabigate", *args], capture_output=True, text=True, env=environment)


def test_every_command_is_in_exactly_one_help_section():
    listed = [name for names in SECTIONS.values() for name in names]
    assert sorted(listed) == sorted(COMMAND_MODULES)


def test_help_lists_the_sections_with_whole_first_sentences():
    help_text = kabigate("--help").stdout
    for title in SECTIONS:
        assert f"{title}:" in help_text
    assert "..." not in help_text.partition("\n")[2]  # no description cut off (the usage line has one)
    context = click.Context(cli)
    for name in COMMAND_MODULES:
        assert cli.get_command(context, name) is not None


def test_a_mistyped_command_is_one_line_with_a_suggestion():
    result = kabigate("matirx")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kabigate: error: no command 'matirx'; did you mean 'matrix'? (see `kabigate --help`)"]


def test_a_usage_error_is_one_line_naming_the_command():
    result = kabigate("kernels", "--bogus")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("kabigate kernels: error: ") and "--bogus" in line and "kabigate kernels --help" in line


def test_read_commands_never_create_a_store(tmp_path):
    missing = tmp_path / "sub" / "typo.db"
    for args in (["kernels"], ["drivers"], ["matrix"], ["history", "jool"], ["db", "status"], ["tasks"]):
        result = kabigate(*args, "--db", str(missing))
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().splitlines() == [
            f"kabigate: error: {missing}: no kabigate store here (`kabigate ingest` or `kabigate db upgrade` "
            "creates one)"], args
    assert not missing.parent.exists()
    result = kabigate("kernels", "--db", "sqlite:///")
    assert result.returncode == 2 and "needs a file path" in result.stderr


def test_db_before_the_command_is_the_commands_store(tmp_path):
    store = tmp_path / "kabigate.db"
    created = kabigate("db", "upgrade", "--db", str(store))
    assert created.returncode == 0, created.stderr
    before = kabigate("--db", str(store), "kernels", "--json")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout) == json.loads(kabigate("kernels", "--json", "--db", str(store)).stdout)
    # and it wins over $KABIGATE_DB, as the command's own --db does
    elsewhere = kabigate("--db", str(store), "kernels", env={"KABIGATE_DB": str(tmp_path / "other.db")})
    assert elsewhere.returncode == 0, elsewhere.stderr


def _examples(command: click.Command) -> list[list[str]]:
    """The example command lines of a command's help (continuation lines joined)."""
    text = (command.help or "").partition("Example:")[2]
    joined = re.sub(r"\\\n\s*", "", text)
    return [shlex.split(line.strip(), comments=False)[shlex.split(line.strip()).index("kabigate"):]
            for line in joined.splitlines() if "kabigate" in line]


def test_every_command_has_an_example_that_uses_its_real_options():
    context = click.Context(cli)
    for name in COMMAND_MODULES:
        command = cli.get_command(context, name)
        examples = _examples(command)
        assert examples, f"{name}: no example in its help"
        for words in examples:
            assert words[1] == name, words
            target, rest = command, words[2:]
            if isinstance(command, click.Group):  # the example names a subcommand
                target, rest = command.get_command(context, rest[0]), rest[1:]
                assert target is not None, words
            options = {opt for param in target.params for opt in param.opts + param.secondary_opts}
            used = {word.partition("=")[0] for word in rest if word.startswith("-")}
            assert used <= options, f"{' '.join(words)}: no {sorted(used - options)}"
