"""Finding and reading the modules a user names: module files, directories searched recursively,
packages (.rpm, .deb, as files or http(s) URLs), folders of packages, yum/dnf repositories."""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import threading
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import TypeVar

from kabigate.errors import InputError, not_regular
from kabigate.formats.module import read_module, reads_in_c
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
    for path in walk_files(top):
        if path.endswith(suffixes):
            try:  # one stat a file (a tree has 4,000): what os.path.exists() would find missing is let through
                kind = not_regular(os.stat(path).st_mode)
            except (OSError, ValueError):
                kind = None
            if kind is not None:
                raise InputError(f"{path}: {kind}, not a regular file: refusing it")
            yield path


def walk_files(top: str) -> Iterator[str]:
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
                    yield entry.path
            except OSError:
                yield entry.path
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
    Many loose files are mapped in runs of MAPPED_RUN by this process and a forked child per other
    core, each taking the next run from a pipe of run numbers (on a loaded machine a slower process
    takes fewer), a child sending back all it made pickled whole through a pipe: for a mapping to
    something small (a module's JSON text), as a whole module costs more to unpickle than to read.
    (A multiprocessing pool costs its parent a third more CPU: its threads, a pickle per task.)
    Packages' modules are read and mapped here."""
    inputs = _inputs(paths)
    if inputs.packages or not _pooled(inputs.files):
        return [each(module) for module in read_modules(paths, advance)]
    files = inputs.files
    size = max(MAPPED_RUN, -(-len(files) // MOST_RUNS))
    runs = [files[start:start + size] for start in range(0, len(files), size)]
    queue, queued = os.pipe()
    os.write(queued, b"".join(number.to_bytes(2, "little") for number in range(len(runs))))
    os.close(queued)
    children: list[tuple[int, int]] = []
    try:
        for _ in range(_workers() - 1):
            children.append(_forked(queue, runs, each))
        with collector_paused():
            done, failed = _mapped_runs(queue, runs, each, advance)
            os.close(queue)
            queue = -1
            for pid, reader in list(children):
                with os.fdopen(reader, "rb") as pipe:
                    child_done, child_failed = pickle.load(pipe)
                os.waitpid(pid, 0)
                children.remove((pid, reader))
                done.update(child_done)
                failed.update(child_failed)
                for results in child_done.values():
                    for _ in results:
                        advance()
        if failed:
            kind, message = failed[min(failed)]  # the first in order: every run before it was mapped
            if kind == "error":
                raise InputError(message)
            raise RuntimeError(f"a module mapping process failed: {message}")
        return [result for number in range(len(runs)) for result in done[number]]
    finally:
        if queue >= 0:
            os.close(queue)
        for pid, reader in children:  # an error stops them all
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                os.close(reader)


# Files a process of map_modules() maps at a time: ~60 runs of a tree, few enough to cost nothing
# to hand out, enough for a process slowed by other work to take fewer. At most MOST_RUNS runs, so
# that their numbers fit in a page, what any pipe holds (one written whole before anyone reads).
MAPPED_RUN = 64
MOST_RUNS = 2048


def _mapped_runs(queue: int, runs: list[list[str]], each: Callable[[Module], T],
                 advance: Callable[..., None] = lambda *_: None) -> tuple[dict, dict]:
    """Runs taken from `queue` until it is empty, or a run fails: ({run number: [each(module)...]},
    {run number: ("error", InputError's message) or ("crash", traceback)})."""
    done: dict[int, list[T]] = {}
    while len(taken := os.read(queue, 2)) == 2:  # the numbers were written whole: reads take two bytes
        number = int.from_bytes(taken, "little")
        try:
            results = []
            for path in runs[number]:
                results.append(each(read_module(path)))
                advance()
            done[number] = results
        except InputError as error:
            return done, {number: ("error", str(error))}
        except Exception:
            import traceback  # only for a bug's report

            return done, {number: ("crash", traceback.format_exc())}
    return done, {}


def _forked(queue: int, runs: list[list[str]], each: Callable[[Module], T]) -> tuple[int, int]:
    """A child process mapping runs taken from `queue`, sending back _mapped_runs()' outcome;
    (its pid, the reading end of its pipe)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid:
        os.close(writer)
        return pid, reader
    status = 0
    try:  # the child: never returns, exits without the parent's atexit work or buffered output
        os.close(reader)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the parent, which ends it
        outcome = _mapped_runs(queue, runs, each)
        with os.fdopen(writer, "wb") as pipe:
            pickle.dump(outcome, pipe, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _workers() -> int:
    return min(len(os.sched_getaffinity(0)), 8)


def _pooled(paths: list[str]) -> bool:
    """Whether reading `paths` is worth one worker process per core, and may have them."""
    return len(paths) >= PARALLEL_MIN_FILES and _workers() >= 2 and _forkable()


_SIGNATURE_FIELDS = tuple(field.name for field in fields(ModuleSignature))
_LAYOUT_FIELDS = tuple(field.name for field in fields(ElfLayout))
# Below this many files a second process costs more than it saves (fork, pipes: ~20 ms).
PARALLEL_MIN_FILES = 64


def read_module_files(paths: list[str], advance: Callable[..., None] = lambda *_: None) -> list[Module]:
    """read_module() of every path, in order, the first error raised. Read by the C reader, in this
    process: its 4,023 modules of a tree take less time than pickling them back from workers would.
    By the Python path, many files are read by one worker process per core (parsing is CPU-bound
    Python); each module comes back packed in plain tuples, as pickling its thousands of small
    dataclasses costs as much as parsing them."""
    modules = []
    with collector_paused():
        if reads_in_c() or not _pooled(paths):
            for path in paths:
                modules.append(read_module(path))
                advance()
            return modules
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(_workers(), initializer=_ignore_sigint) as pool:
            for packed in pool.imap(_read_packed, paths, chunksize=32):
                modules.append(_unpacked(packed))
                advance()
    return modules


def _forkable() -> bool:
    """Whether a pool may be forked from here: from the main thread of a process that may fork (the
    command line, a service's main loop); a Celery worker (daemonic) may not, a web request's thread
    should not. multiprocessing is imported only then (~10 ms of every start otherwise)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    import multiprocessing

    return not multiprocessing.current_process().daemon


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


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C reaches the parent, which ends the pool


def _read_packed(path: str) -> tuple:
    """The module in a few large objects: its hundreds of symbol names joined by NULs (which a
    name read up to its NUL cannot hold), its CRCs as an array."""
    module = read_module(path)
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
