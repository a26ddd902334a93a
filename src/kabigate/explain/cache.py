"""The cache of kernels' types and headers indexes that `kabigate explain`, the gate and the web read,
kept outside the clone (`$KABIGATE_CACHE` or the user's cache directory, `btf/`), so that the second
question about a kernel does not decompress, parse or scan it again.

An entry is keyed by its files' paths, sizes and mtimes and by FORMAT (bumped when KernelTypes,
HeaderIndex or their rendering change); it is written to a temporary file and renamed, so a reader never sees half
of one. Entries are data (compressed JSON), never pickles: a cache others can write to may give
wrong answers, never run their code. The cache keeps to a size (cache_max(), $KABIGATE_CACHE_MAX):
writing an entry removes the least recently used.
"""

from __future__ import annotations

import contextlib
import contextvars
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

from kabigate.errors import InputError, read_capped
from kabigate.explain.crc import KernelTypes
from kabigate.formats.cheaders import HeaderIndex
from kabigate.inputs.modules import collector_paused
from kabigate.model import Export

FORMAT = 6


def cache_dir() -> Path:
    return Path(os.environ.get("KABIGATE_CACHE") or platformdirs.user_cache_dir("kabigate")) / "btf"


ENTRY_SUFFIX = ".json.zst"


OLD_ENTRY_SUFFIX = ".pickle"  # kabigate before FORMAT 6: never read, removed as the least recently used


def entry_path(identity: str) -> Path:
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
    # Millions of acyclic tuples and dicts: with the collector, reading a kernel's modules' types took
    # 2.4x as long (6.9 s against 2.9 s for two kernels', the second beside the first).
    with collector_paused():
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, nested too deep
            raise _Malformed(f"cache entry: not JSON ({type(error).__name__})") from None
        kind, value = _object(document, "kind value")
        if kind != codec.kind or (value is None and not codec.optional):
            raise _Malformed(f"cache entry: not one of {codec.kind}")
        return None if value is None else codec.decode(value)


# What reading an entry that is gone or not this kabigate's own raises: it is then computed again.
_UNREADABLE = (OSError, InputError)


class NotCached(Exception):
    """Inside cached_only(): an entry is not in the cache, and is not to be computed."""


# Inside cached_only(): the entries read so far (entry path -> value), or None outside it.
CACHED_ONLY: contextvars.ContextVar[dict | None] = contextvars.ContextVar("kabigate_cached_only", default=None)


@contextlib.contextmanager
def cached_only():
    """Read entries from the cache and never compute one (NotCached instead): a web page shows
    the causes a gate or `explain` has already worked out, without decompressing kernels itself.
    An entry is decoded once inside it: the matrix asks about each kernel for several pairs."""
    token = CACHED_ONLY.set({})
    try:
        yield
    finally:
        CACHED_ONLY.reset(token)


# Inside explain_stored()'s look-ahead: an entry in the cache is a placeholder, not decoded.
PROBING: contextvars.ContextVar[bool] = contextvars.ContextVar("kabigate_probing", default=False)


def cached(identity: str, compute, use_cache: bool, codec: _Codec):
    entry = entry_path(identity)
    memo = CACHED_ONLY.get()
    if memo is not None and entry in memo:
        return memo[entry]
    if PROBING.get():
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
        return _load(entry_path(identity), JSON_OBJECT)
    except _UNREADABLE:
        return None


def write_entry(identity: str, value: dict) -> None:
    _store(entry_path(identity), value, JSON_OBJECT)


def generation() -> tuple[str, int]:
    """The cache folder and its mtime (ns; 0: none yet): every entry written or evicted changes it
    (renamed into it, unlinked from it), so that an entry found missing stays missing while it is the same."""
    folder = cache_dir()
    try:
        return str(folder), folder.stat().st_mtime_ns
    except OSError:
        return str(folder), 0


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
