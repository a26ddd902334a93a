"""The one exception type that crosses layers: bad input, reported as a one-line message; and the
one way input files are opened (regular files only, size capped)."""

from __future__ import annotations

import os
import stat


class InputError(Exception):
    """A file or argument kabigate cannot use; the message names it and says why, on one line:
    line breaks and other control characters (from a file name in a package, a server's reason
    phrase) are written as escapes."""

    def __init__(self, message: object = ""):
        text = str(message)
        if not text.isprintable():
            text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
        super().__init__(text)


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def not_regular(mode: int) -> str | None:
    """What a file of this st_mode is when it is not a regular file ("a FIFO", ...), else None."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str):
    """A binary file object for a regular file; FIFOs, devices and sockets are refused without
    blocking (opened O_NONBLOCK, then checked with fstat), and OS errors become InputError."""
    fd, _status = regular_fd(path)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_fd(path: str) -> tuple[int, os.stat_result]:
    """open_regular()'s file as a descriptor (the caller closes it) and its fstat: for a tree's
    thousands of modules mapped, no file object each."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise InputError(f"{path}: {error.strerror}") from None
    try:
        status = os.fstat(fd)
        kind = not_regular(status.st_mode)
        if kind is not None:
            raise InputError(f"{path}: {kind}, not a regular file: refusing to read it")
        os.set_blocking(fd, True)
        return fd, status
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: str, limit: int, too_large: str) -> bytes:
    """The whole file, refusing more than `limit` bytes ("<path>: <too_large>"), special files,
    and turning OS errors into InputError: key, passphrase, module and text files are read this way."""
    with open_regular(path) as file:
        try:
            size = os.fstat(file.fileno()).st_size
            if size > limit:
                raise InputError(f"{path}: {too_large}")
            # Sized reads: read(limit + 1) would reserve `limit` bytes for a small file.
            data = file.read(size + 1 if size else limit + 1)
            if size and len(data) > size:  # it grew while being read
                data += file.read(limit + 1 - len(data))
        except OSError as error:
            raise InputError(f"{path}: {error.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{path}: {too_large}")
    return data
