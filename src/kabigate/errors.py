"""The one exception type that crosses layers: bad input, reported as a one-line message."""


class InputError(Exception):
    """A file or argument kabigate cannot use; the message names it and says why."""
