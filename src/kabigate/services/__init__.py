"""The service layer: what kabigate does with a `Store` (ingest, matrix, history; the gate,
explanations and stablelist evidence build on them). Each function takes a Store and returns
plain results; the CLI, the web app and the workers call these, never each other. Tools that work
on a system's files rather than a store (weak-modules, preflight) are kabigate.host."""

from collections.abc import Callable

Advance = Callable[[], None]


def no_progress() -> None:
    """The default `advance` callback: nobody is watching."""
