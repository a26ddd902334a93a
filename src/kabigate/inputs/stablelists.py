"""The stablelist a user points at: a list file, a folder of lists named for their architecture, or
a kernel-abi-stablelists package. The one reader of the CLI, the workers and the web server
(formats/stablelist.py parses the text)."""

from __future__ import annotations

import os
import re
from collections.abc import Container, Mapping
from typing import overload

from kabigate.errors import InputError, read_capped
from kabigate.formats.stablelist import Stablelist, parse_stablelist
from kabigate.inputs.packages import is_package_file, stablelist_bytes_from_package

MAX_STABLELIST_FILE = 64 << 20  # compressed symvers-style lists; parse_stablelist caps the text
MAX_FOLDER_ENTRIES = 10_000  # a folder of lists (RHEL's SRPM SOURCES holds a few hundred files)

# A list of one architecture, as Red Hat names them: the kernel SRPM's Module.kabi_<arch> (with CRCs),
# kernel-abi-stablelists' kabi_stablelist_<arch> (kabi_whitelist_<arch> before RHEL 8); compressed or
# not. Module.kabi_dup_<arch> and the RHEL 6 greylists are other lists, not the stablelist.
_ARCH_LIST = re.compile(r"^(Module\.kabi|kabi_stablelist|kabi_whitelist)_(?!dup_|greylist_)([A-Za-z0-9_]+?)"
                        r"(?:\.(?:gz|xz|zst|bz2))?$")


@overload
def read_stablelist(path: str, machine: str | None = None) -> Stablelist: ...
@overload
def read_stablelist(path: None, machine: str | None = None) -> None: ...
@overload
def read_stablelist(path: str | None, machine: str | None = None) -> Stablelist | None: ...


def read_stablelist(path: str | None, machine: str | None = None) -> Stablelist | None:
    """A stablelist file, a folder of Module.kabi_<arch> (or kabi_stablelist_<arch>) files, or a
    kernel-abi-stablelists package: the list of `machine` (the kernel's architecture, `uname -m`).
    Its `source` names the file used. A file named for another architecture is refused."""
    if path is None:
        return None
    if os.path.isdir(path):
        path = _list_in_folder(path, machine)
    elif is_package_file(path):
        return parse_stablelist(*stablelist_bytes_from_package(path, machine))
    else:
        named = architecture_of(path)
        if named is not None and machine is not None and named != machine:
            raise InputError(f"{path}: a stablelist of {named}, not of the kernel's architecture {machine}")
    return parse_stablelist(read_capped(path, MAX_STABLELIST_FILE, "larger than a stablelist can be"), path)


def architecture_of(path: str) -> str | None:
    """The architecture a list's file name says it is for (Module.kabi_aarch64 -> aarch64), if any."""
    match = _ARCH_LIST.match(os.path.basename(path))
    return match.group(2) if match else None


def _list_in_folder(folder: str, machine: str | None) -> str:
    """The folder's list of `machine` (the only list when `machine` is unknown): Module.kabi_<arch>
    first, the list with CRCs, when the folder has both kinds."""
    try:
        with os.scandir(folder) as entries:
            names: list[str] = []
            for entry in entries:
                if len(names) >= MAX_FOLDER_ENTRIES:
                    raise InputError(f"{folder}: more than {MAX_FOLDER_ENTRIES} entries, not a folder of stablelists")
                if entry.is_file(follow_symlinks=False) and _ARCH_LIST.match(entry.name):
                    names.append(entry.name)
    except OSError as error:
        raise InputError(f"{folder}: cannot read the folder: {error.strerror}") from None
    by_arch: dict[str, list[str]] = {}
    for name in sorted(names):  # "Module.kabi_..." sorts before "kabi_..."
        by_arch.setdefault(architecture_of(name) or "", []).append(name)
    if not by_arch:
        raise InputError(f"{folder}: no Module.kabi_<arch>, kabi_stablelist_<arch> or kabi_whitelist_<arch> in it")
    arch = machine if machine in by_arch else (next(iter(by_arch)) if len(by_arch) == 1 and machine is None
                                                else None)
    if arch is None:
        raise InputError(f"{folder}: stablelists for {', '.join(sorted(by_arch))}; "
                         f"the kernel's architecture {machine or '(unknown)'} is not among them")
    return os.path.join(folder, by_arch[arch][0])


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
