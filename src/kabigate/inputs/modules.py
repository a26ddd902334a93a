"""Finding and reading the modules a user names: module files, directories searched recursively,
packages (.rpm, .deb, as files or http(s) URLs), folders of packages, yum/dnf repositories."""

from __future__ import annotations

import gc
import os
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TypeVar, cast

from kabigate.errors import InputError, not_regular
from kabigate.formats.module import module_of_facts, read_module, read_module_facts
from kabigate.inputs.packages import (
    PACKAGE_SUFFIXES,
    Package,
    is_url,
    module_count,
    modules_of_package,
    package_sources,
)
from kabigate.model import (
    MODULE_SUFFIXES,
    ElfLayout,
    Export,
    Import,
    Module,
    ModuleSignature,
    SymbolVersion,
)
from kabigate.processes import SharedMap, map_in_processes


@dataclass
class _Inputs:
    files: list[str]  # loose module files
    packages: list  # packages.PackageSource


def find_module_files(paths: list[str]) -> list[str]:
    """Loose module files: files given explicitly are taken as modules whatever their name (unless
    they are packages); directories are searched for *.ko[.xz|.zst|.gz], in a stable (sorted) order."""
    return _inputs(paths).files


def _inputs(paths: list[str]) -> _Inputs:
    inputs = _Inputs([], [])
    for path in paths:
        if not is_url(path) and not os.path.exists(path):
            raise InputError(f"{path}: no such file or directory")
        sources = package_sources(path)
        if sources is not None:
            inputs.packages.extend(sources)
        elif os.path.isdir(path):
            for found in sorted(_walk(path)):
                if found.endswith(PACKAGE_SUFFIXES):
                    inputs.packages.extend(package_sources(found) or [])
                else:
                    inputs.files.append(found)
        else:
            kind = not_regular(os.stat(path).st_mode) if not is_url(path) else None
            if kind is not None:
                raise InputError(f"{path}: {kind}, not a regular file: refusing it")
            inputs.files.append(path)
    return inputs


def _walk(top: str) -> Iterator[str]:
    """Files under `top` named like modules or packages; a special file (FIFO, device, socket)
    so named is refused, never opened (opening a FIFO blocks)."""
    suffixes = MODULE_SUFFIXES + PACKAGE_SUFFIXES
    for entry in walk_entries(top):
        if entry.name.endswith(suffixes):
            try:  # a regular file is told by the folder's listing, a symlink's target by a stat (a tree has
                # 4,000 files); what os.path.exists() would find missing is let through
                kind = None if entry.is_file() else not_regular(entry.stat().st_mode)
            except (OSError, ValueError):
                kind = None
            if kind is not None:
                raise InputError(f"{entry.path}: {kind}, not a regular file: refusing it")
            yield entry.path


def walk_files(top: str) -> Iterator[str]:
    """The path of every non-directory under `top` (walk_entries())."""
    return (entry.path for entry in walk_entries(top))


def walk_entries(top: str) -> Iterator[os.DirEntry]:
    """Every non-directory under `top`, folders in sorted order, without recursion (Python 3.11's
    os.walk recurses, and a deep enough tree is a RecursionError); symlinked folders are not followed."""
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            if directory == top:
                raise InputError(f"{directory}: {error.strerror}") from None
            continue  # as os.walk: an unreadable folder below is passed over
        folders = []
        for entry in listed:
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif not entry.is_dir():  # a symlink to a folder is not followed, as by os.walk
                    yield entry
            except OSError:
                yield entry
        stack.extend(reversed(folders))


def count_modules(paths: list[str]) -> int:
    """Work units for a progress bar: one per loose module, one per module a package file lists
    (RPM header file list, deb md5sums), one per package of a repository (read whole)."""
    inputs = _inputs(paths)
    total = len(inputs.files)
    for source in inputs.packages:
        if source.repository is not None or source.location.startswith(("http://", "https://")):
            total += 1
            continue
        package = Package(source.location)
        total += module_count(package) or 1
        package.close()
    return total


def read_modules(paths: list[str], advance: Callable[..., None] = lambda *_: None) -> list[Module]:
    """Every module under `paths`; `advance` is called as modules are read (progress bars)."""
    inputs = _inputs(paths)
    if not inputs.files and not inputs.packages:
        raise InputError(f"{', '.join(paths)}: no kernel modules (*.ko, *.ko.xz, *.ko.zst, *.ko.gz) "
                         "or packages (*.rpm, *.deb) found")
    modules = read_module_files(inputs.files, advance)
    for source in inputs.packages:
        whole = source.repository is not None or source.location.startswith(("http://", "https://"))
        package = source.open()
        try:
            with collector_paused():
                modules.extend(modules_of_package(package, (lambda: None) if whole else advance))
        finally:
            package.close()
        if whole:
            advance()
    if not modules:
        raise InputError(f"{', '.join(paths)}: no kernel modules in the packages given")
    return modules


T = TypeVar("T")


def map_modules(paths: list[str], each: Callable[[Module], T],
                advance: Callable[..., None] = lambda *_: None) -> list[T]:
    """each(module) of every module under `paths`, in read_modules()' order, its first error raised.
    Many loose files are read and mapped by this process and a forked child per other core
    (processes.map_in_processes()), for a mapping to something small (a module's JSON text): a whole
    module costs more to unpickle than to read. Packages' modules are read and mapped here."""
    inputs = _inputs(paths)
    if inputs.packages or not inputs.files:  # read_modules() reads packages, and tells of no modules
        return [each(module) for module in read_modules(paths, advance)]
    with collector_paused():
        return map_in_processes(inputs.files, lambda path: each(read_module(path)), advance)


def read_module_files(paths: list[str], advance: Callable[..., None] = lambda *_: None) -> list[Module]:
    """read_module() of every path, in order, the first error raised (_reading())."""
    with collector_paused(), _reading(paths) as shared:
        return cast(list[Module], shared.results(advance))


@contextmanager
def modules_read_ahead(paths: list[str]) -> Iterator[Callable[[Callable[..., None]], list[Module]]]:
    """read_modules(paths) begun now: the loose files of a tree are read by forked children while
    this process does other work (`check` reads its kernel), and the function given, called with a
    progress callback, joins them and returns the modules, or raises what read_modules() raises."""
    try:
        inputs = _inputs(paths)
    except InputError:  # told when the modules are asked for, after what comes before them
        inputs = None
    if inputs is None or inputs.packages or not inputs.files:
        yield lambda advance: read_modules(paths, advance)
        return
    with collector_paused(), _reading(inputs.files) as shared:
        yield lambda advance: cast(list[Module], shared.results(advance))


def _reading(paths: list[str]) -> SharedMap:
    """read_module() of each path, many files shared out between this process and a forked child per
    other core (processes.SharedMap), each file coming back compact (_read_compact()): a Module's
    thousands of small objects cost more to pickle and unpickle than to read, the C reader's plain
    facts a fifth of it; this process makes the Modules of them as they arrive, between its own runs."""
    here = os.getpid()

    def read(path: str) -> Module | tuple[bool, tuple]:  # a Module here, a compact one in a child
        return read_module(path) if os.getpid() == here else _read_compact(path)

    def made(path: str, found: Module | tuple[bool, tuple]) -> Module:
        return found if isinstance(found, Module) else _from_compact(path, found)

    return SharedMap(paths, read, then=made)


@contextmanager
def collector_paused(*, freeze: bool = False):
    """The cyclic garbage collector off while a tree's modules are made: they are acyclic, yet
    their ~400,000 small objects set off full collections of an ever larger heap (a third of the
    read's time). With `freeze` (a command's whole run), what exists at the end is frozen: re-enabled
    over it, the first collection would walk it all (0.2 s) to free nothing, as it dies by reference
    counting when the command exits."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if freeze:
                gc.freeze()
            gc.enable()


def _read_compact(path: str) -> tuple[bool, tuple]:
    """The module at `path` in a form cheap to pickle: (True, the C reader's facts), or (False, the
    module read by the Python path, packed)."""
    facts = read_module_facts(path)
    return (True, facts) if facts is not None else (False, _packed(read_module(path)))


def _from_compact(path: str, compact: tuple[bool, tuple]) -> Module:
    in_c, facts = compact
    return module_of_facts(path, facts) if in_c else _unpacked(facts)


_SIGNATURE_FIELDS = tuple(field.name for field in fields(ModuleSignature))
_LAYOUT_FIELDS = tuple(field.name for field in fields(ElfLayout))


def _packed(module: Module) -> tuple:
    """The module in a few large objects: its hundreds of symbol names joined by NULs (which a
    name read up to its NUL cannot hold), its CRCs as an array."""
    versions = module.versions
    signature, layout = module.signature, module.layout
    return (module.path, module.machine, module.modinfo,
            None if versions is None else (_joined([v.name for v in versions]),
                                           array("I", [v.crc for v in versions]).tobytes()),
            _joined([i.name for i in module.imports]), bytes(i.weak for i in module.imports),
            [(e.name, e.crc, e.owner, e.export_type, e.namespace) for e in module.exports],
            None if signature is None else [getattr(signature, f) for f in _SIGNATURE_FIELDS],
            module.compression, [getattr(layout, f) for f in _LAYOUT_FIELDS])


def _joined(names: list[str]) -> tuple[int, str]:
    return len(names), "\0".join(names)


def _split(joined: tuple[int, str]) -> list[str]:
    count, text = joined
    return text.split("\0") if count else []


def _unpacked(packed: tuple) -> Module:
    path, machine, modinfo, versions, imports, weak, exports, signature, compression, layout = packed
    return Module(path=path, machine=machine, modinfo=modinfo,
                  versions=None if versions is None else tuple(map(SymbolVersion, _split(versions[0]),
                                                                   array("I", versions[1]).tolist())),
                  imports=tuple(map(Import, _split(imports), map(bool, weak))),
                  exports=tuple(Export(*export) for export in exports),
                  signature=None if signature is None else ModuleSignature(*signature),
                  compression=compression, layout=ElfLayout(*layout))
