"""`python -m kabigate`: the same as the `kabigate` command."""

from kabigate.cli import program

program()
