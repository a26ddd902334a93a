"""TOML from outside, read with tomllib and the bounds tomllib lacks."""

from __future__ import annotations

import re
import tomllib

from kabigate.errors import InputError

# tomllib keeps every prefix of a dotted key (a.b.c = 1) as a tuple, so its memory grows with the
# square of the parts (10,000 parts: 400 MiB, a 1 MiB file: tens of GiB). kabigate's files nest
# two or three deep.
MAX_KEY_PARTS = 64
_KEY_PART = r"""(?:[A-Za-z0-9_-]++|"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+')"""
# Any such run where a key may start (a line, [table], [[array]], {inline, ...), also inside a
# string: a sure bound without a second TOML parser, and linear.
_LONG_DOTTED_KEY = re.compile(
    rf"""(?:\A|(?<=[\n\[{{,]))[ \t]*+{_KEY_PART}(?:[ \t]*+\.[ \t]*+{_KEY_PART}){{{MAX_KEY_PARTS}}}""")
INT64 = range(-1 << 63, 1 << 63)  # TOML 1.0: an integer that does not fit must be an error


def parse_toml(data: bytes, what: str) -> dict:
    """A TOML document from outside (policies, waivers, service settings; the caller caps its size):
    its syntax errors, integers outside 64 bits, dotted keys too long and nesting too deep are one
    InputError each."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what}: not UTF-8 text") from None
    if _LONG_DOTTED_KEY.search(text):
        raise InputError(f"{what}: a dotted key of more than {MAX_KEY_PARTS} parts")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{what}: not valid TOML: {error}") from None
    except ValueError:  # int() of more than sys.get_int_max_str_digits() digits
        raise InputError(f"{what}: not valid TOML: an integer outside the 64-bit range TOML allows") from None
    except RecursionError:
        raise InputError(f"{what}: nested too deeply") from None
    _check_integers(document, what)
    return document


def _check_integers(document: dict, what: str) -> None:
    """Hexadecimal, octal and binary integers of any length parse (int(text, 16) has no digit limit),
    then fail where they are printed: TOML allows 64 bits. A loop, not recursion: tables nest deep."""
    pending: list = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, int) and value not in INT64:
            raise InputError(f"{what}: not valid TOML: an integer outside the 64-bit range TOML allows")
