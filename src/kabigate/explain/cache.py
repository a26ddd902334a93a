"""A kernel's types for `kabigate explain`, read from its vmlinuz/vmlinux, and its headers' index,
kept in a cache outside the clone (`$KABIGATE_CACHE` or the user's cache directory, `btf/`), so
that the second question about a kernel does not decompress, parse or scan it again.

An entry is keyed by its files' paths, sizes and mtimes and by FORMAT (bumped when KernelTypes,
HeaderIndex or their rendering change); it is written to a temporary file and renamed, so a reader never sees half
of one. Entries are data (compressed JSON), never pickles: a cache others can write to may give
wrong answers, never run their code. The cache keeps to a size (cache_max(), $KABIGATE_CACHE_MAX):
writing an entry removes the least recently used.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import dataclasses
import gc
import hashlib
import itertools
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import zstandard

from kabigate.errors import InputError, open_regular, read_capped
from kabigate.explain.crc import KernelTypes, SymbolExplanation, explain, kernel_types
from kabigate.formats.btf import parse_btf
from kabigate.formats.bzimage import MAX_KERNEL_IMAGE, kernel_image, looks_like_kernel_image
from kabigate.formats.cheaders import HeaderIndex, index_headers
from kabigate.formats.compression import compression_of, decompress
from kabigate.formats.elf import ElfFile
from kabigate.formats.modsig import split_signature
from kabigate.formats.vmlinux import image_exports, image_release
from kabigate.inputs.packages import Package, is_package_file, is_url
from kabigate.model import MODULE_SUFFIXES, Export, Kernel

FORMAT = 6
MAX_HEADER = 4 << 20  # the largest 6.1 header is under 1 MiB; bigger ones are not headers
MAX_HEADERS = 200_000


def cache_dir() -> Path:
    return Path(os.environ.get("KABIGATE_CACHE") or platformdirs.user_cache_dir("kabigate")) / "btf"


def load_types(image_path: str, use_cache: bool = True) -> KernelTypes:
    """The KernelTypes of the kernel image at `image_path` (vmlinuz or vmlinux)."""
    return _cached(_image_identity(image_path), lambda: _read(image_path), use_cache, TYPES)


def load_module_types(image_path: str, modules: tuple[str, tuple[str, ...]], use_cache: bool = True
                      ) -> dict[str, KernelTypes]:
    """The own types of a kernel's exporting modules (`modules`: its module tree's kernel/ folder,
    the owners of module exports), cached apart from vmlinux's: a question about vmlinux's
    exports does not read them."""
    return _cached(_image_identity(image_path, modules), lambda: _read_modules(image_path, modules), use_cache,
                   MODULE_TYPES)


def warm(kernels: list[Kernel], header_tree_list: list[Path], with_modules: bool = True) -> None:
    """Fill the cache for these kernels and headers in parallel processes (one per core, two at
    most): reading one kernel is CPU-bound Python (decompress, parse, render), so a pair read
    side by side takes half the time. Each child writes its cache entry; nothing large comes back."""
    todo: list[tuple[Callable[..., object], tuple]] = [(load_types, (kernel.image,)) for kernel in kernels
            if kernel.image and not _cached_already(_image_identity(kernel.image))]
    todo += [(load_module_types, (kernel.image, _modules_of(kernel))) for kernel in kernels
             if with_modules and kernel.image and _modules_of(kernel)
             and not _cached_already(_image_identity(kernel.image, _modules_of(kernel)))]
    if header_tree_list and not _cached_already(_headers_identity(header_tree_list, "x86")[0]):
        todo.append((load_headers, (header_tree_list,)))
    if len(todo) < 2 or (os.cpu_count() or 1) < 2:
        return  # one job: done in-process by the caller
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(_fill, function, args) for function, args in todo]:
            future.result()


def _fill(function, args) -> None:
    function(*args)  # its result is in the cache; the parent reads it there


def _cached_already(identity: str) -> bool:
    return _entry(identity).is_file()


def _image_identity(image_path: str, modules: tuple[str, tuple[str, ...]] | None = None) -> str:
    try:
        stat = os.stat(image_path)
    except OSError as error:
        raise InputError(f"{image_path}: {error.strerror}") from None
    identity = f"{os.path.abspath(image_path)}\0{stat.st_size}\0{stat.st_mtime_ns}"
    if modules is not None:
        folder = Path(modules[0])
        owners = hashlib.sha256("\0".join(modules[1]).encode()).hexdigest()
        identity += f"\0{folder.resolve()}\0{folder.stat().st_mtime_ns}\0{owners}"
    return identity


def _modules_of(kernel: Kernel) -> tuple[str, tuple[str, ...]] | None:
    """The in-tree module folder beside a kernel's image (<root>/boot/vmlinuz-<kver> ->
    <root>/lib/modules/<kver>/kernel) and the modules that export something."""
    if kernel.image is None or kernel.release is None:
        return None
    folder = Path(kernel.image).parent.parent / "lib" / "modules" / kernel.release / "kernel"
    owners = tuple(sorted({e.owner for e in kernel.exports.values() if e.owner != "vmlinux"}))
    return (str(folder), owners) if folder.is_dir() and owners else None


def kernel_types_of(kernel: Kernel, use_cache: bool = True, with_modules: bool = True) -> KernelTypes:
    """A loaded kernel's types (from its image's BTF), with all its exports (modules' too)."""
    if kernel.image is None and kernel.release:  # read from packages: the image inside linux-image/kernel-core
        types = types_from_sources(kernel.sources, kernel.release, use_cache)
        if types is not None:
            return dataclasses.replace(types, exports=kernel.exports, release=kernel.release)
    if kernel.image is None:
        raise InputError(f"{', '.join(kernel.sources)}: no kernel image (vmlinuz/vmlinux) found: its BTF is "
                         "what explains CRC changes; give the kernel's /boot/vmlinuz-<kver> too")
    types = load_types(kernel.image, use_cache)
    types = dataclasses.replace(types, exports=kernel.exports, release=kernel.release or types.release)
    modules = _modules_of(kernel)
    if with_modules and modules is not None:
        types.modules = load_module_types(kernel.image, modules, use_cache)
    return types


def needs_modules(kernel: Kernel, symbols: list[str] | None) -> bool:
    """Whether explaining `symbols` (None: all) needs the modules' BTF: one is a module's export."""
    return symbols is None or any(kernel.exports[s].owner != "vmlinux" for s in symbols if s in kernel.exports)


def header_trees(paths: list[str]) -> list[Path]:
    """The headers trees (a folder with include/linux) a kernel's paths name or hold: a headers or
    source tree itself, an extracted package root's usr/src/*, a module tree's build/source links."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            continue
        candidates = [path, path / "build", path / "source"]
        for parent in (path / "usr" / "src", path / "usr" / "src" / "kernels"):
            if parent.is_dir():
                candidates += sorted(parent.iterdir())
        for candidate in candidates:
            if (candidate / "include" / "linux").is_dir() and candidate.resolve() not in found:
                found.append(candidate.resolve())
    return found


def load_headers(trees: list[Path], arch: str = "x86", use_cache: bool = True) -> HeaderIndex | None:
    """The HeaderIndex of the .h files under include/ and arch/<arch>/include of `trees` (merged:
    Debian splits them between linux-headers-<kver>-common and the flavour's), None if none."""
    memo = _CACHED_ONLY.get()
    key = ("headers", tuple(trees), arch)  # walking a headers tree takes ~0.3 s: once inside cached_only()
    if memo is not None and key in memo:
        identity, files = memo[key]
    else:
        identity, files = _headers_identity(trees, arch)
        if memo is not None:
            memo[key] = identity, files
    if not files:
        return None
    return _cached(identity, lambda: index_headers({name: path.read_bytes() for name, (path, _s) in files.items()},
                                                   arch), use_cache, HEADERS)


def _headers_identity(trees: list[Path], arch: str) -> tuple[str, dict[str, tuple[Path, os.stat_result]]]:
    files: dict[str, tuple[Path, os.stat_result]] = {}
    for tree in trees:
        for top in (tree / "include", tree / "arch" / arch / "include"):
            for directory, _dirs, names in os.walk(top):
                for name in names:
                    if name.endswith(".h") and len(files) < MAX_HEADERS:
                        path = Path(directory) / name
                        stat = path.stat() if path.is_file() else None
                        if stat is not None and stat.st_size <= MAX_HEADER:
                            files.setdefault(path.relative_to(tree).as_posix(), (path, stat))
    listing = "\0".join(f"{name}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
                        for name, (path, stat) in sorted(files.items()))
    return f"{arch}\0{listing}", files


ENTRY_SUFFIX = ".json.zst"
OLD_ENTRY_SUFFIX = ".pickle"  # kabigate before FORMAT 6: never read, removed as the least recently used


def _entry(identity: str) -> Path:
    return cache_dir() / f"{hashlib.sha256(f'{FORMAT}{chr(0)}{identity}'.encode()).hexdigest()}{ENTRY_SUFFIX}"


# -- entries: JSON data, never pickles ---------------------------------------------------------
# An entry is zstd-compressed JSON, each kind of value laid out as tables of columns (flat lists
# of strings or numbers) and rebuilt with zip() and islice(): reading the cache, whoever wrote to
# it, can at worst give a wrong answer, never run code as unpickling would. Every column's type
# and length is checked, so a damaged, planted or older entry is computed again, not a traceback.
# Measured on 6.1.0-50 against the pickles kabigate wrote before: its types 2.3 MB (11.1 MB),
# read in ~0.5 s (~0.3 s); its 930 modules' 6.3 MB (51 MB), ~2.0 s (~0.9 s). JSON's strings are
# not shared as a pickle's are, and the objects are built from its lists rather than in C.

MAX_ENTRY = 512 << 20  # decompressed bytes; a kernel's modules' types take ~53 MB
_STR: set[type] = {str}
_INT: set[type] = {int}
_CRC: set[type] = {int, type(None)}


class _Malformed(InputError):
    """An entry that is not what this kabigate writes (read, it is computed again)."""


def _object(value, names: str) -> list:
    """The members of a JSON object with exactly these names, in their order."""
    if type(value) is not dict or value.keys() != set(names.split()):
        raise _Malformed(f"cache entry: expected an object of {names}")
    return [value[name] for name in names.split()]


def _table(value, **columns: set[type]) -> list[list]:
    """The columns of a table (a JSON object of lists of one length), each checked for its types."""
    found = _object(value, " ".join(columns))
    for column, types in zip(found, columns.values()):
        if type(column) is not list or len(column) != len(found[0]) or not set(map(type, column)) <= types:
            raise _Malformed("cache entry: a malformed column")
    return found


def _groups(items: list, counts: list[int]) -> list[tuple]:
    """`items` cut into consecutive tuples of `counts` items."""
    if sum(counts) != len(items) or min(counts, default=0) < 0:
        raise _Malformed("cache entry: group sizes that do not add up")
    return list(map(tuple, map(itertools.islice, itertools.repeat(iter(items)), counts)))  # in C: ~2x a loop


def _columns(rows, *names: str) -> dict[str, list]:
    rows = list(rows)
    return {name: [row[index] for row in rows] for index, name in enumerate(names)}


def _types_json(rows: list[tuple[str, KernelTypes]]) -> dict:
    """(owner, types) rows (a kernel's, its modules'): each table holds all rows' in turn, and the
    rows table how many of each table's rows are whose."""
    tables = [_types_tables(types) for _owner, types in rows]
    merged = {name: {column: [value for table in tables for value in table[name][column]] for column in columns}
              for name, columns in tables[0].items()}
    merged["rows"] = {"owner": [owner for owner, _types in rows], "release": [types.release for _owner, types in rows],
                      **{name: [len(getattr(types, field)) for _owner, types in rows]
                         for name, field in _ROW_TABLES.items()}}
    return merged


# The tables with a row per entry of a KernelTypes field (the others: a row per item of an entry's).
_ROW_TABLES = {"exports": "exports", "types": "keys", "members": "members", "layouts": "layout", "funcs": "funcs",
               "vars": "vars"}


def _types_tables(types: KernelTypes) -> dict[str, dict[str, list]]:
    params = [param for _decl, params in types.funcs.values() for param in params]
    return {
        "exports": _columns(((e.name, e.crc, e.owner, e.export_type, e.namespace) for e in types.exports.values()),
                            "name", "crc", "owner", "type", "namespace"),
        "types": _columns(((i, *types.keys[i], types.defs[i], len(types.edges[i])) for i in types.keys),
                          "id", "kind", "name", "definition", "edges"),
        "edges": {"id": [ref for i in types.keys for ref in types.edges[i]]},
        "members": _columns(((i, len(m)) for i, m in types.members.items()), "id", "count"),
        "member_items": _columns((m for ms in types.members.values() for m in ms), "name", "text"),
        "layouts": _columns(((i, size, len(m)) for i, (size, m) in types.layout.items()), "id", "size", "count"),
        "layout_items": _columns((m for _size, ms in types.layout.values() for m in ms), "name", "offset"),
        "funcs": _columns(((name, decl, len(ps)) for name, (decl, ps) in types.funcs.items()),
                          "name", "declaration", "count"),
        "params": _columns(((name, len(ids)) for name, ids in params), "name", "count"),
        "param_refs": {"id": [ref for _name, ids in params for ref in ids]},
        "vars": _columns(((name, decl, len(ids)) for name, (decl, ids) in types.vars.items()),
                         "name", "declaration", "count"),
        "var_refs": {"id": [ref for _decl, ids in types.vars.values() for ref in ids]},
    }


def _types_from_json(value) -> list[tuple[str, KernelTypes]]:
    """The (owner, types) rows _types_json() wrote. Each table is checked and grouped whole, then
    cut into rows: a kernel's ~900 modules cost one check a column, not 900."""
    (rows, exports, named, edges, members, member_items, layouts, layout_items, funcs, params, param_refs,
     variables, var_refs) = _object(value, "rows exports types edges members member_items layouts layout_items "
                                           "funcs params param_refs vars var_refs")
    owners, releases, *row_counts = _table(rows, owner=_STR, release=_STR, **dict.fromkeys(_ROW_TABLES, _INT))
    ids, kinds, type_names, definitions, edge_counts = _table(named, id=_INT, kind=_STR, name=_STR,
                                                              definition=_STR, edges=_INT)
    member_ids, member_counts = _table(members, id=_INT, count=_INT)
    layout_ids, sizes, layout_counts = _table(layouts, id=_INT, size=_INT, count=_INT)
    func_names, declarations, param_counts = _table(funcs, name=_STR, declaration=_STR, count=_INT)
    param_names, ref_counts = _table(params, name=_STR, count=_INT)
    var_names, var_declarations, var_ref_counts = _table(variables, name=_STR, declaration=_STR, count=_INT)
    param_values = list(zip(param_names, _groups(_table(param_refs, id=_INT)[0], ref_counts)))
    tables = [  # in _ROW_TABLES' order, each a KernelTypes field's keys and the columns of its values
        _table(exports, name=_STR, crc=_CRC, owner=_STR, type=_STR, namespace=_STR),
        [ids, definitions, list(zip(kinds, type_names)), _groups(_table(edges, id=_INT)[0], edge_counts)],
        [member_ids, _groups(list(zip(*_table(member_items, name=_STR, text=_STR))), member_counts)],
        [layout_ids, list(zip(sizes, _groups(list(zip(*_table(layout_items, name=_STR, offset=_INT))),
                                             layout_counts)))],
        [func_names, list(zip(declarations, _groups(param_values, param_counts)))],
        [var_names, list(zip(var_declarations, _groups(_table(var_refs, id=_INT)[0], var_ref_counts)))],
    ]
    bounds = [_offsets(counts, len(table[0])) for table, counts in zip(tables, row_counts)]
    found = []
    for row, (owner, release) in enumerate(zip(owners, releases)):
        exported, (type_ids, *typed), (member_keys, member_values), *fields = (
            [column[ends[row]:ends[row + 1]] for column in table] for table, ends in zip(tables, bounds))
        defs, keys, type_edges = (dict(zip(type_ids, c)) for c in typed)
        layout, funcs, var_decls = (dict(zip(*field)) for field in fields)
        found.append((owner, KernelTypes(release, dict(zip(exported[0], map(Export, *exported))), defs, keys,
                                         type_edges, dict(zip(member_keys, member_values)), layout, funcs, var_decls)))
    return found


def _offsets(counts: list[int], total: int) -> list[int]:
    """Where each of `counts` consecutive runs of a table's `total` rows starts, and the end."""
    if sum(counts) != total or min(counts, default=0) < 0:
        raise _Malformed("cache entry: row counts that do not add up")
    return list(itertools.accumulate(counts, initial=0))


def _headers_json(index: HeaderIndex) -> dict:
    paths = sorted({*index.defined_in.values(), *index.included_by, *itertools.chain(*index.included_by.values())})
    number = {path: n for n, path in enumerate(paths)}
    return {
        "paths": {"path": paths},
        "defined": _columns(((kind, name, number[path]) for (kind, name), path in index.defined_in.items()),
                            "kind", "name", "header"),
        "included": _columns(((number[path], len(by)) for path, by in index.included_by.items()), "header", "count"),
        "includers": {"header": [number[path] for by in index.included_by.values() for path in sorted(by)]},
    }


def _headers_from_json(value) -> HeaderIndex:
    paths, defined, included, includers = _object(value, "paths defined included includers")
    (paths,) = _table(paths, path=_STR)
    kinds, names, headers = _table(defined, kind=_STR, name=_STR, header=_INT)
    targets, counts = _table(included, header=_INT, count=_INT)
    (sources,) = _table(includers, header=_INT)
    if any(column and (min(column) < 0 or max(column) >= len(paths)) for column in (headers, targets, sources)):
        raise _Malformed("cache entry: a header number out of range")
    included_by = {paths[target]: {paths[n] for n in group} for target, group in zip(targets, _groups(sources, counts))}
    return HeaderIndex(dict(zip(zip(kinds, names), map(paths.__getitem__, headers))), included_by)


def _kernel_types_from_json(value) -> KernelTypes:
    """A kernel's types: the first row, the rest its modules'."""
    rows = _types_from_json(value)
    if not rows:
        raise _Malformed("cache entry: no types")
    (_owner, types), *modules = rows
    types.modules = dict(modules)
    return types


def _json_object(value) -> dict:
    if type(value) is not dict:
        raise _Malformed("cache entry: expected a JSON object")
    return value


@dataclass(frozen=True)
class _Codec:
    """How one kind of cached value is written as JSON and read back (None too when `optional`)."""

    kind: str
    encode: Callable
    decode: Callable
    optional: bool = False


TYPES = _Codec("types", lambda types: _types_json([("", types), *types.modules.items()]), _kernel_types_from_json)
MODULE_TYPES = _Codec("module types", lambda found: _types_json(list(found.items())),
                      lambda value: dict(_types_from_json(value)))
HEADERS = _Codec("headers", _headers_json, _headers_from_json)
JSON_OBJECT = _Codec("json", _json_object, _json_object)


def encode_entry(codec: _Codec, value) -> bytes:
    document = {"kind": codec.kind, "value": None if value is None else codec.encode(value)}
    return zstandard.ZstdCompressor(level=3).compress(json.dumps(document, separators=(",", ":")).encode())


def decode_entry(codec: _Codec, raw: bytes):
    """The value of an entry's bytes; an InputError if they are not an entry of `codec`'s kind."""
    try:
        size = zstandard.frame_content_size(raw)  # encode_entry() writes it; -1 when it is not there
        if not 0 <= size <= MAX_ENTRY:
            raise _Malformed(f"cache entry: {size} bytes declared, not 0 to {MAX_ENTRY}")
        text = zstandard.ZstdDecompressor().decompress(raw)  # no more than `size`
    except zstandard.ZstdError as error:
        raise _Malformed(f"cache entry: not zstd data ({error})") from None
    with _no_cyclic_gc():
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, nested too deep
            raise _Malformed(f"cache entry: not JSON ({type(error).__name__})") from None
        kind, value = _object(document, "kind value")
        if kind != codec.kind or (value is None and not codec.optional):
            raise _Malformed(f"cache entry: not one of {codec.kind}")
        return None if value is None else codec.decode(value)


@contextlib.contextmanager
def _no_cyclic_gc():
    """Without the cyclic collector: building millions of tuples and dicts (none in a cycle) sets it
    off again and again, each time walking everything alive; reading a kernel's modules' types
    took 2.4x as long with it (6.9 s against 2.9 s for two kernels', the second beside the first)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# What reading an entry that is gone or not this kabigate's own raises: it is then computed again.
_UNREADABLE = (OSError, InputError)


class NotCached(Exception):
    """Inside cached_only(): an entry is not in the cache, and is not to be computed."""


# Inside cached_only(): the entries read so far (entry path -> value), or None outside it.
_CACHED_ONLY: contextvars.ContextVar[dict | None] = contextvars.ContextVar("kabigate_cached_only", default=None)


@contextlib.contextmanager
def cached_only():
    """Read entries from the cache and never compute one (NotCached instead): a web page shows
    the causes a gate or `explain` has already worked out, without decompressing kernels itself.
    An entry is decoded once inside it: the matrix asks about each kernel for several pairs."""
    token = _CACHED_ONLY.set({})
    try:
        yield
    finally:
        _CACHED_ONLY.reset(token)


# Inside explain_stored()'s look-ahead: an entry in the cache is a placeholder, not decoded.
_PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("kabigate_probing", default=False)


def _cached(identity: str, compute, use_cache: bool, codec: _Codec):
    entry = _entry(identity)
    memo = _CACHED_ONLY.get()
    if memo is not None and entry in memo:
        return memo[entry]
    if _PROBING.get():
        if use_cache and entry.is_file():
            return entry
        raise NotCached(identity)
    if use_cache and entry.is_file():
        try:
            value = _load(entry, codec)
            if memo is not None:
                memo[entry] = value
            return value
        except _UNREADABLE:
            pass  # unreadable, from another kabigate, or just evicted: computed again below
    if memo is not None:
        raise NotCached(identity)
    if use_cache:
        cache_max()  # a bad $KABIGATE_CACHE_MAX is an input error before the work, not after
    value = compute()
    if use_cache:
        _store(entry, value, codec)
    return value


def _load(entry: Path, codec: _Codec):
    """An entry's value; its mtime is set to now: eviction removes the least recently used first."""
    raw = read_capped(str(entry), MAX_ENTRY, "too large for a cache entry")
    with contextlib.suppress(OSError):  # a read-only cache is still read
        os.utime(entry)
    return decode_entry(codec, raw)


def read_entry(identity: str) -> dict | None:
    """The JSON object cached under `identity` (written by write_entry), or None."""
    try:
        return _load(_entry(identity), JSON_OBJECT)
    except _UNREADABLE:
        return None


def write_entry(identity: str, value: dict) -> None:
    _store(_entry(identity), value, JSON_OBJECT)


def _read(image_path: str) -> KernelTypes:
    data = read_capped(image_path, MAX_KERNEL_IMAGE, f"larger than {MAX_KERNEL_IMAGE >> 20} MiB, not a kernel image")
    return _types_of_image(data, image_path)


def _read_modules(image_path: str, modules: tuple[str, tuple[str, ...]]) -> dict[str, KernelTypes]:
    data = read_capped(image_path, MAX_KERNEL_IMAGE, f"larger than {MAX_KERNEL_IMAGE >> 20} MiB, not a kernel image")
    image, btf = _image_btf(data, image_path)
    return _module_types(btf, image_release(image) or os.path.basename(image_path), *modules)


def _image_btf(data: bytes, what: str):
    image = kernel_image(data, what)
    elf = ElfFile(image, what)
    section = elf.section(".BTF")
    if section is None:
        raise InputError(f"{what}: no .BTF section (a kernel built without CONFIG_DEBUG_INFO_BTF)")
    return image, parse_btf(elf.section_bytes(section), f"{what} (.BTF)")


def _types_of_image(data: bytes, what: str) -> KernelTypes:
    image, btf = _image_btf(data, what)
    release = image_release(image) or os.path.basename(what)
    return kernel_types(btf, release, image_exports(ElfFile(image, what)))


def read_module_elf(path: str) -> ElfFile:
    """A module file's ELF image (decompressed, its signature cut off), for its .BTF."""
    raw = read_capped(path, MAX_KERNEL_IMAGE, f"larger than {MAX_KERNEL_IMAGE >> 20} MiB, not a module")
    data = decompress(raw, path) if compression_of(raw) else raw
    size, _signature = split_signature(data)
    return ElfFile(data, path, size)


def _module_types(base, release: str, folder: str, owners: tuple[str, ...]) -> dict[str, KernelTypes]:
    """Each exporting module's own types, from its split BTF on vmlinux's (a module without
    .BTF, or whose file is not there, is left out: its exports say their BTF was not read)."""
    found = {}
    for owner in owners:
        path = next((p for p in (Path(folder) / f"{owner}{suffix}" for suffix in MODULE_SUFFIXES) if p.is_file()),
                    None)
        if path is None:
            continue
        module = read_module_elf(str(path))
        section = module.section(".BTF")
        if section is not None:
            split = parse_btf(module.section_bytes(section), f"{path} (.BTF)", base)
            found[owner] = kernel_types(split, release, {})
    return found


def cache_max() -> int:
    """The cache's size cap in bytes: $KABIGATE_CACHE_MAX (a number of bytes, or with K, M, G or T:
    binary units), 2 GiB by default (a kernel's types take ~2.3 MB, its modules' ~6.3 MB)."""
    text = os.environ.get("KABIGATE_CACHE_MAX", "").strip() or "2G"
    match = re.fullmatch(r"(\d{1,15})\s*([KMGT]?)i?B?", text, re.IGNORECASE)
    if match is None:
        raise InputError(f"KABIGATE_CACHE_MAX={text!r}: not a size (bytes, or a number with K, M, G or T)")
    return int(match.group(1)) << 10 * " KMGT".index(match.group(2).upper() or " ")


def _store(entry: Path, value, codec: _Codec) -> None:
    limit = cache_max()
    data = encode_entry(codec, value)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".btf-", dir=entry.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, entry)
        except BaseException:
            os.unlink(temporary)
            raise
        _evict(entry, limit)
    except OSError:
        pass  # a read-only or full cache only costs time


STALE_TEMPORARY = 24 * 3600  # a writer's temporary file this old belongs to a process that died


def _evict(kept: Path, limit: int) -> None:
    """Remove the least recently used entries (mtime: written or last read) until the cache holds
    `limit` bytes, `kept` (just written) last of all. Safe beside other processes: an entry is
    replaced or removed whole (a reader with it open keeps reading it; one opening it after finds
    none and computes it again) and one removed by another process meanwhile is skipped."""
    entries = []
    for path in kept.parent.iterdir():
        try:
            stat = path.stat()
        except OSError:
            continue  # removed meanwhile
        if path.name.startswith(".btf-") and stat.st_mtime < time.time() - STALE_TEMPORARY:
            with contextlib.suppress(OSError):
                path.unlink()
        elif path.name.endswith((ENTRY_SUFFIX, OLD_ENTRY_SUFFIX)):
            entries.append((path != kept, stat.st_mtime_ns, stat.st_size, path))
    total = sum(size for _other, _mtime, size, _path in entries)
    for _other, _mtime, size, path in sorted(entries, key=lambda e: (not e[0], e[1])):
        if total <= limit or path == kept:
            break
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        total -= size


def explain_symbols(old: Kernel, new: Kernel, symbols: list[str], use_cache: bool = True,
                    required: bool = False) -> dict[str, SymbolExplanation] | None:
    """Each symbol's explanation from `old` to `new` (headers found in the old kernel's paths),
    or None when either kernel's image, hence its BTF, is unknown (`required`: an input error)."""
    if not required and (old.image is None or new.image is None):
        return None
    if not symbols:
        return None
    modules = needs_modules(old, symbols)
    result = explain(kernel_types_of(old, use_cache, modules), kernel_types_of(new, use_cache, modules),
                     sorted(set(symbols)), headers_from_sources(old.sources, use_cache=use_cache))
    return {explained.symbol: explained for explained in result.symbols}


# -- a stored kernel's BTF and headers, from the files it was ingested from ----------------------

def types_from_sources(sources: list[str], release: str, use_cache: bool = True) -> KernelTypes | None:
    """The types of `release`'s image among a stored kernel's sources (a vmlinuz, a package root
    or module tree holding boot/vmlinuz-<release>, or a linux-image/kernel-core package), or None."""
    for source in _expanded(sources):
        path = Path(source)
        if is_url(source) or not path.exists():
            continue
        if path.is_file() and is_package_file(source):
            stat = path.stat()
            types = _cached(f"package\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{release}",
                            lambda source=source: _types_in_package(source, release), use_cache,
                            dataclasses.replace(TYPES, optional=True))
            if types is not None:
                return types
            continue
        image = _image_at(path, release)
        if image is not None:
            return load_types(str(image), use_cache)
    return None


def types_cached(sources: list[str], release: str) -> bool:
    """Whether the cache holds the types of a stored kernel's image (nothing is decoded)."""
    token = _PROBING.set(True)
    try:
        return types_from_sources(sources, release) is not None
    except NotCached:
        return False
    finally:
        _PROBING.reset(token)


def _image_at(path: Path, release: str) -> Path | None:
    """The image a stored kernel's file or folder source is or holds (boot/vmlinuz-<release> of a
    root, or of the root above a module tree)."""
    candidates = [path] if path.is_file() else [path / "boot" / f"vmlinuz-{release}",
                                                path.parent.parent.parent / "boot" / f"vmlinuz-{release}"]
    return next((c for c in candidates if c.is_file() and _is_image(c)), None)


def _stored_modules(sources: list[str], kernel: Kernel, use_cache: bool) -> dict[str, KernelTypes]:
    """A stored kernel's modules' own types, when one of its sources is a folder with the image and
    the module tree beside it (packages are not read for them)."""
    for source in _expanded(sources):
        path = Path(source)
        image = _image_at(path, kernel.release) if path.is_dir() and kernel.release is not None else None
        modules = _modules_of(dataclasses.replace(kernel, image=str(image))) if image is not None else None
        if modules is not None:
            return load_module_types(str(image), modules, use_cache)
    return {}


def headers_from_sources(sources: list[str], arch: str = "x86", use_cache: bool = True) -> HeaderIndex | None:
    """The header index of a stored kernel: headers trees in its folders, else its headers packages."""
    sources = _expanded(sources)
    trees = header_trees([s for s in sources if Path(s).is_dir()])
    if trees:
        return load_headers(trees, arch, use_cache)
    packages = [s for s in sources if not is_url(s) and is_package_file(s) and Path(s).is_file()]
    if not packages:
        return None
    identity = "\0".join(f"{Path(p).resolve()}\0{Path(p).stat().st_size}\0{Path(p).stat().st_mtime_ns}"
                         for p in packages)
    return _cached(f"headers\0{arch}\0{identity}", lambda: _headers_in_packages(packages, arch), use_cache,
                   dataclasses.replace(HEADERS, optional=True))


def sources_identity(sources: list[str]) -> str:
    """A stored kernel's source files as they are now (path, size, mtime; "-" for one gone): what
    an entry derived from them is keyed by."""
    parts = []
    for source in _expanded(sources):
        try:
            stat = os.stat(source)
            parts.append(f"{os.path.abspath(source)}\0{stat.st_size}\0{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{source}\0-")
    return "\0".join(parts)


def _expanded(sources: list[str]) -> list[str]:
    """A kernel read from packages has one source naming them all, joined by ", " (PackageTree's label)."""
    return [part for source in sources
            for part in (source.split(", ") if not Path(source).exists() else [source])]


def _is_image(path: Path) -> bool:
    with open_regular(str(path)) as file:
        return looks_like_kernel_image(file.read(0x210))


def _types_in_package(source: str, release: str) -> KernelTypes | None:
    wanted = {f"/boot/vmlinuz-{release}", f"/boot/vmlinux-{release}"}
    package = Package(source)
    try:
        for member, read in package.members():
            if member.kind == "file" and member.path in wanted:
                return _types_of_image(read(), f"{source}:{member.path}")
    finally:
        package.close()
    return None


_HEADER_MEMBER = re.compile(r"^/usr/src/(?:kernels/|linux-headers-)[^/]+/((?:include|arch/[^/]+/include)/.+\.h)$")


def _headers_in_packages(sources: list[str], arch: str) -> HeaderIndex | None:
    """Debian splits a kernel's headers between linux-headers-<kver>-common and the flavour's
    package: their files are indexed together."""
    files: dict[str, bytes] = {}
    for source in sources:
        package = Package(source)
        try:
            for member, read in package.members():
                match = _HEADER_MEMBER.match(member.path)
                if match and member.kind == "file" and member.size <= MAX_HEADER and len(files) < MAX_HEADERS:
                    files.setdefault(match.group(1), read())
        finally:
            package.close()
    return index_headers(files, arch) if files else None


def explain_stored(old: tuple[list[str], Kernel], new: tuple[list[str], Kernel], symbols: list[str],
                   use_cache: bool = True) -> dict[str, SymbolExplanation] | None:
    """explain_symbols() for two stored kernels, each given as (its sources, the Kernel the store
    holds): None when either image is not among its sources any more."""
    (old_sources, old_kernel), (new_sources, new_kernel) = old, new
    old_release, new_release = old_kernel.release, new_kernel.release
    if not symbols or old_release is None or new_release is None:  # a stored kernel's image is found by its release
        return None
    modules = needs_modules(old_kernel, symbols)

    def inputs():
        return (types_from_sources(old_sources, old_release, use_cache),
                types_from_sources(new_sources, new_release, use_cache),
                headers_from_sources(old_sources, use_cache=use_cache),
                (_stored_modules(old_sources, old_kernel, use_cache),
                 _stored_modules(new_sources, new_kernel, use_cache)) if modules else None)

    if _CACHED_ONLY.get() is not None:
        # Every entry is looked for before any is decoded: a pair the cache cannot explain
        # costs stats, not seconds of reading the half of it that is there.
        token = _PROBING.set(True)
        try:
            inputs()
        finally:
            _PROBING.reset(token)
    old_types, new_types, headers, module_types = inputs()
    if old_types is None or new_types is None:
        return None
    old_types = dataclasses.replace(old_types, exports=old_kernel.exports)
    new_types = dataclasses.replace(new_types, exports=new_kernel.exports)
    if module_types is not None:
        old_types.modules, new_types.modules = module_types
    result = explain(old_types, new_types, sorted(set(symbols)), headers)
    return {explained.symbol: explained for explained in result.symbols}
