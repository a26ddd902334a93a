"""Finding and reading the modules a user names: files, or directories searched recursively."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from kabigate.errors import InputError
from kabigate.formats.module import read_module
from kabigate.model import Module

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def find_module_files(paths: list[str]) -> list[str]:
    """Files given explicitly are taken as modules whatever their name; directories are
    searched for *.ko[.xz|.zst|.gz], in a stable (sorted) order."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            found.extend(sorted(_walk_modules(path)))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    return found


def _walk_modules(top: str) -> Iterator[str]:
    for directory, dirs, files in os.walk(top):
        dirs.sort()
        for name in files:
            if name.endswith(MODULE_SUFFIXES):
                yield os.path.join(directory, name)


def read_modules(paths: list[str], advance: Callable[[], None] = lambda: None) -> list[Module]:
    """Every module under `paths`; `advance` is called once per module read (progress bars)."""
    files = find_module_files(paths)
    if not files:
        raise InputError(f"{', '.join(paths)}: no kernel modules (*.ko, *.ko.xz, *.ko.zst, *.ko.gz) found")
    modules = []
    for path in files:
        modules.append(read_module(path))
        advance()
    return modules
