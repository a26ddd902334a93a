"""The one exception type that crosses layers: bad input, reported as a one-line message."""


class InputError(Exception):
    """A file or argument kabigate cannot use; the message names it and says why."""


def read_capped(path: str, limit: int, too_large: str) -> bytes:
    """The whole file, refusing more than `limit` bytes ("<path>: <too_large>") and turning
    OS errors into InputError: key, passphrase and module files are read this way."""
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise InputError(f"{path}: {error.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{path}: {too_large}")
    return data
