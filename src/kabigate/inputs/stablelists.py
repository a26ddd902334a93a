"""The stablelist a user points at: a list file, or a kernel-abi-stablelists package. The one
reader of the CLI, the workers and the web server (formats/stablelist.py parses the text)."""

from __future__ import annotations

from typing import overload

from kabigate.errors import read_capped
from kabigate.formats.stablelist import Stablelist, parse_stablelist
from kabigate.inputs.packages import is_package_file, stablelist_bytes_from_package

MAX_STABLELIST_FILE = 64 << 20  # compressed symvers-style lists; parse_stablelist caps the text


@overload
def read_stablelist(path: str, machine: str | None = None) -> Stablelist: ...
@overload
def read_stablelist(path: None, machine: str | None = None) -> None: ...
@overload
def read_stablelist(path: str | None, machine: str | None = None) -> Stablelist | None: ...


def read_stablelist(path: str | None, machine: str | None = None) -> Stablelist | None:
    """A stablelist file, or a kernel-abi-stablelists package (the list of `machine`)."""
    if path is None:
        return None
    if is_package_file(path):
        return parse_stablelist(*stablelist_bytes_from_package(path, machine))
    return parse_stablelist(read_capped(path, MAX_STABLELIST_FILE, "larger than a stablelist can be"), path)
