"""The stablelist a user points at: a list file, or a kernel-abi-stablelists package. The one
reader of the CLI, the workers and the web server (formats/stablelist.py parses the text)."""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import overload

from kabigate.errors import InputError, read_capped
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


def matching_kernel(stablelist: Stablelist | None, exports: Mapping[str, object] | Container[str],
                    release: str | None) -> Stablelist | None:
    """The stablelist, unless it lists none of the kernel's exports: then it is not this kernel's
    list (a file that only parses as one, a list of another architecture or product), refused."""
    if stablelist is not None and not any(symbol in exports for symbol in stablelist.symbols):
        shown = ", ".join(repr(s) for s in sorted(stablelist.symbols)[:2])
        raise InputError(f"{stablelist.source}: none of its {len(stablelist.symbols)} symbols ({shown}"
                         f"{', ...' if len(stablelist.symbols) > 2 else ''}) is exported by {release or 'the kernel'}: "
                         "not a stablelist of this kernel")
    return stablelist
