"""print_styled() writes what out.print() of the same text in Rich markup writes: piped plain ASCII
by itself, anything else (control codes, tabs, wide characters, colour) through Rich."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.markup import escape

from kabigate.cli import shared

PIECES = [
    [("OK   ", "green"), (" mc  ", None), ("/lib/modules/x/kernel/drivers/media/mc/mc.ko", "dim")],
    [("FAIL ", "bold red"), (" [bold]not markup[/bold]  ", None), ("/x.ko", "dim"), ("\n", None),
     ("      Unknown symbol x (err -2)", None), ("\n", None), ("      warning taints", "yellow")],
    [("a" * 400, None), ("\n", None), ("b" * 300, "dim")],  # past the piped width: never wrapped
    [("bell\x07 back\x08 cr\r ff\x0c", "bold red"), ("\n", None), ("tab\there", None)],  # stripped, expanded
    [("wide 漢字 ü", "green"), (" ☃\ttab", None)],
]


def _markup(pieces: list[tuple[str, str | None]]) -> str:
    return "".join(f"[{style}]{escape(text)}[/{style}]" if style else escape(text) for text, style in pieces)


@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("color", [None, "standard"])
def test_same_text_as_rich_markup(pieces, color, capsys, monkeypatch):
    console = Console(highlight=False, emoji=False, soft_wrap=True, width=250, color_system=color)
    monkeypatch.setattr(shared, "out", console)
    console.print(_markup(pieces))
    expected = capsys.readouterr().out
    shared.print_styled(pieces)
    assert capsys.readouterr().out == expected
