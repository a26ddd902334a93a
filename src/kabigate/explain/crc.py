"""Why an export's CRC changed between two kernels, from the BTF both kernels ship.

modversions' CRC (scripts/genksyms) hashes the text of a symbol's declaration and, recursively,
of every struct, union, enum and typedef the declaration reaches, through pointers and
function-pointer prototypes too: member names and types, enum constants, array sizes; not
offsets, not parameter names. This module renders each named BTF type of a kernel the same way
(one line of text, anonymous types inline, named ones by reference, as genksyms' symtypes do),
compares the two kernels' texts name by name, and for each changed export lists the changed
types its declaration reaches, with the parameter and depth it reaches them at.

BTF is one graph for the whole kernel, larger than what the translation unit exporting a symbol
sees, so this explains a CRC change that happened (the CRCs say so) rather than predicting one.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from kabigate.formats import btf as B
from kabigate.formats.cheaders import HeaderIndex
from kabigate.model import Export

# The key genksyms gives a named type in its symtypes (s#, u#, e#, t#).
_KEY_KIND = {B.STRUCT: "struct", B.UNION: "union", B.ENUM: "enum", B.ENUM64: "enum", B.TYPEDEF: "typedef"}
_MODIFIERS = {B.CONST: "const", B.VOLATILE: "volatile", B.RESTRICT: "restrict"}
MAX_INLINE_DEPTH = 64  # anonymous types nest; a hostile BTF's cycle through them must end
# Exported data without a BTF VAR whose type the kernel fixes by name (include/linux/tracepoint.h,
# include/linux/static_call.h): DEFINE_TRACE_FN's `struct tracepoint __tracepoint_<name>`,
# DEFINE_STATIC_CALL's `struct static_call_key __SCK__<name>`.
DATA_BY_PREFIX = (("__tracepoint_", ("struct", "tracepoint")), ("__SCK__", ("struct", "static_call_key")))

TypeKey = tuple[str, str]


@dataclass
class KernelTypes:
    """One kernel's named types as genksyms-like text, the named-type graph, and the prototype of
    every function BTF describes. Built once per kernel (cached by the caller)."""

    release: str
    exports: dict[str, Export]
    defs: dict[int, str]  # named type id -> its definition text
    keys: dict[int, TypeKey]  # named type id -> (kind, name)
    edges: dict[int, tuple[int, ...]]  # named type id -> named type ids its definition names
    members: dict[int, tuple[tuple[str, str], ...]]  # struct/union/enum id -> flattened (member, text)
    layout: dict[int, tuple]  # struct/union id -> (size, ((member, bit offset), ...)): for humans only
    funcs: dict[str, tuple[str, tuple[tuple[str, tuple[int, ...]], ...]]]  # name -> (decl, ((param, ids)))
    vars: dict[str, tuple[str, tuple[int, ...]]]  # name -> (decl, ids)
    # a module's own types (its split BTF on vmlinux's), by owner as Module.symvers names it
    modules: dict[str, KernelTypes] = field(default_factory=dict)
    by_key: dict[TypeKey, list[int]] = field(default_factory=dict, init=False)

    def __post_init__(self):
        for type_id, key in self.keys.items():
            self.by_key.setdefault(key, []).append(type_id)


def kernel_types(btf: B.Btf, release: str, exports: dict[str, Export]) -> KernelTypes:
    """A kernel's (or, for a module's split BTF, the module's own) types and functions."""
    renderer = _Renderer(btf)
    defs, keys, edges, members, layout = {}, {}, {}, {}, {}
    for type_id in range(btf.first_own_id if btf.base is not None else 0, len(btf.types)):
        entry = btf.types[type_id]
        kind_key = _KEY_KIND.get(entry.kind)
        if kind_key is None or not entry.name:
            continue
        refs: set[int] = set()
        defs[type_id] = renderer.definition(type_id, refs)
        keys[type_id] = (kind_key, entry.name)
        edges[type_id] = tuple(sorted(refs))
        if entry.kind in (B.STRUCT, B.UNION, B.ENUM, B.ENUM64):
            members[type_id] = tuple(renderer.flat_members(type_id))
        if entry.kind in (B.STRUCT, B.UNION):
            layout[type_id] = (entry.size, tuple((m[0], m[2]) for m in entry.items))
    funcs = {}
    for name, type_id in btf.funcs().items():
        proto_id = btf.types[type_id].type
        proto = btf.types[proto_id]
        if proto.kind != B.FUNC_PROTO:
            continue
        params = [("return", _named_refs(renderer, proto.type))]
        params += [(param or f"#{index + 1}", _named_refs(renderer, ptype))
                   for index, (param, ptype) in enumerate(proto.items) if ptype]
        funcs[name] = (renderer.declaration(proto_id, name), tuple(params))
    variables = {}
    for name, type_id in btf.vars().items():
        var_type = btf.types[type_id].type
        variables[name] = (renderer.declaration(var_type, name), _named_refs(renderer, var_type))
    return KernelTypes(release, exports, defs, keys, edges, members, layout, funcs, variables)


def _named_refs(renderer: _Renderer, type_id: int) -> tuple[int, ...]:
    refs: set[int] = set()
    renderer.ref(type_id, refs, 0)
    return tuple(sorted(refs))


class _Renderer:
    """genksyms' view of a type as text: a named struct/union/enum is `struct foo` where used and
    its members where defined; anonymous ones are written out where used."""

    def __init__(self, btf: B.Btf):
        self.types = btf.types
        # type id -> (text, named types it names): a type is used many times (every prototype
        # naming `struct sk_buff *`), rendered once.
        self.memo: dict[int, tuple[str, frozenset[int]]] = {}

    def definition(self, type_id: int, refs: set[int]) -> str:
        entry = self.types[type_id]
        if entry.kind == B.TYPEDEF:
            return f"typedef {self.ref(entry.type, refs, 0)} {entry.name}"
        return self.body(type_id, refs, 0)

    def declaration(self, type_id: int, name: str) -> str:
        """A function or variable as declared, parameter names left out (genksyms drops them)."""
        return f"{self.ref(type_id, set(), 0)} {name}"

    def body(self, type_id: int, refs: set[int], depth: int) -> str:
        entry = self.types[type_id]
        kind = _KEY_KIND[entry.kind]
        head = f"{kind} {entry.name}" if entry.name else kind
        if entry.kind in (B.ENUM, B.ENUM64):
            return f"{head} {{ {' , '.join(f'{n} = {v}' for n, v in entry.items)} }}"
        parts = []
        for name, member_type, _offset, bits in entry.items:
            text = self.ref(member_type, refs, depth + 1)
            parts.append(f"{text} {name}{f' : {bits}' if bits else ''}".rstrip())
        return f"{head} {{ {' ; '.join(parts)} }}"

    def ref(self, type_id: int, refs: set[int], depth: int) -> str:
        """How a use of the type reads; named types it names go into `refs`."""
        if depth > MAX_INLINE_DEPTH:
            return "<too deep>"
        known = self.memo.get(type_id)
        if known is None:
            named: set[int] = set()
            known = self.memo[type_id] = (self._ref(type_id, named, depth), frozenset(named))
        refs |= known[1]
        return known[0]

    def _ref(self, type_id: int, refs: set[int], depth: int) -> str:
        entry = self.types[type_id]
        kind = entry.kind
        if kind == 0:
            return "void"
        if kind in _KEY_KIND and entry.name:
            refs.add(type_id)
            return entry.name if kind == B.TYPEDEF else f"{_KEY_KIND[kind]} {entry.name}"
        if kind in _KEY_KIND:  # anonymous struct, union or enum: written out in place
            return self.body(type_id, refs, depth + 1)
        if kind in (B.INT, B.FLOAT):
            return entry.name
        if kind == B.FWD:
            return f"{'union' if entry.kind_flag else 'struct'} {entry.name}"
        if kind == B.PTR:
            target = self.types[entry.type]
            if target.kind == B.FUNC_PROTO:  # written as C writes a function pointer's type
                return f"{self.ref(target.type, refs, depth + 1)} (*)({self.params(target, refs, depth + 1)})"
            return f"{self.ref(entry.type, refs, depth + 1)} *"
        if kind in _MODIFIERS:
            return f"{_MODIFIERS[kind]} {self.ref(entry.type, refs, depth + 1)}"
        if kind == B.ARRAY:
            element, _index, count = entry.array
            return f"{self.ref(element, refs, depth + 1)} [{count}]"
        if kind == B.FUNC_PROTO:
            return f"{self.ref(entry.type, refs, depth + 1)} ({self.params(entry, refs, depth + 1)})"
        if kind in (B.TYPE_TAG, B.DECL_TAG, B.VAR, B.FUNC):
            return self.ref(entry.type, refs, depth + 1)
        return f"<{entry.kind_name}>"

    def params(self, proto: B.BtfType, refs: set[int], depth: int) -> str:
        return ", ".join("..." if not ptype else self.ref(ptype, refs, depth) for _n, ptype in proto.items)

    def flat_members(self, type_id: int, prefix: str = "", depth: int = 0):
        """(member, text) with anonymous struct/union members flattened into their container, the
        way C names them (skb->dev, not skb-><anon>.dev)."""
        entry = self.types[type_id]
        if entry.kind in (B.ENUM, B.ENUM64):
            yield from ((name, str(value)) for name, value in entry.items)
            return
        for name, member_type, _offset, bits in entry.items:
            member = self.types[member_type]
            if not name and member.kind in (B.STRUCT, B.UNION) and not member.name and depth < MAX_INLINE_DEPTH:
                yield from self.flat_members(member_type, prefix, depth + 1)
                continue
            text = self.ref(member_type, set(), 0)
            yield (prefix + name, f"{text}{f' : {bits}' if bits else ''}")


# -- comparing two kernels ------------------------------------------------------------------------

@dataclass(frozen=True)
class TypeChange:
    """A named type whose genksyms text differs between the kernels (`cause`), or whose layout
    alone did (size, member offsets: shown, never a cause of a CRC change)."""

    key: TypeKey
    cause: bool
    details: tuple[str, ...]  # "member `int depth` added", ...
    module: str = ""  # a module's own type (its split BTF): the module, as Module.symvers names it

    @property
    def name(self) -> str:
        name = self.key[1] if self.key[0] == "typedef" else f"{self.key[0]} {self.key[1]}"
        return f"{name} (in {self.module})" if self.module else name


class Candidate(NamedTuple):  # a tuple: a release has hundreds of thousands of them
    key: TypeKey  # ("struct", "Qdisc"), ("declaration", symbol)
    type: str  # "struct Qdisc", or "declaration of <symbol>: `old` -> `new`"
    via: str  # the parameter ("return", a parameter name or #N) it is reached through
    depth: int  # 0: the declaration itself; 1: a type the declaration names; ...
    seen_by: int | None  # shipped headers that see its definition (0: private); None: headers unknown


@dataclass(frozen=True)
class SymbolExplanation:
    symbol: str
    old_crc: int | None
    new_crc: int | None
    candidates: tuple[Candidate, ...]  # most likely first
    no_type_info: str | None  # why BTF cannot say, when it cannot


@dataclass
class Explanation:
    old: str
    new: str
    types: list[TypeChange]
    symbols: list[SymbolExplanation]
    ranking: str  # "headers": by how widely the type is seen, then depth; "depth" without headers

    @property
    def explained(self) -> int:
        return sum(1 for s in self.symbols if s.candidates)


def diff_types(old: KernelTypes, new: KernelTypes) -> tuple[dict[int, TypeChange], list[TypeChange]]:
    """(old type id -> its change, for every changed named type; all changes, causes and
    layout-only, one per name)."""
    changed: dict[int, TypeChange] = {}
    by_key: dict[TypeKey, TypeChange] = {}
    for key, old_ids in old.by_key.items():
        new_ids = new.by_key.get(key)
        if not new_ids:
            continue
        new_defs = {new.defs[i] for i in new_ids}
        for type_id in old_ids:
            if old.defs[type_id] in new_defs:
                continue
            change = by_key.get(key)
            if change is None:
                change = by_key[key] = TypeChange(key, True, _describe(old, type_id, new, new_ids))
            changed[type_id] = change
        if key not in by_key and key[0] in ("struct", "union"):
            layouts_old = {old.layout[i] for i in old_ids if i in old.layout}
            layouts_new = {new.layout[i] for i in new_ids if i in new.layout}
            if layouts_old and layouts_new and layouts_old != layouts_new:
                by_key[key] = TypeChange(key, False, _layout_details(min(layouts_old), min(layouts_new)))
    return changed, sorted(by_key.values(), key=lambda c: (not c.cause, c.key))


def _describe(old: KernelTypes, old_id: int, new: KernelTypes, new_ids: list[int]) -> tuple[str, ...]:
    """Member-level differences against the new definition most like the old one."""
    if old.keys[old_id][0] == "typedef":
        return (f"was `{old.defs[old_id]}`, now `{new.defs[new_ids[0]]}`",)
    before = old.members.get(old_id, ())
    best = min(new_ids, key=lambda i: len(set(new.members.get(i, ())) ^ set(before)))
    after = new.members.get(best, ())
    old_map, new_map = dict(before), dict(after)
    details = []
    enum = old.keys[old_id][0] == "enum"
    for name, text in before:
        if name not in new_map:
            details.append(f"constant {name} removed" if enum else f"member `{text} {name}` removed")
        elif new_map[name] != text:
            details.append(f"constant {name} = {text} -> {new_map[name]}" if enum
                           else f"member {name}: `{text}` -> `{new_map[name]}`")
    for name, text in after:
        if name not in old_map:
            details.append(f"constant {name} = {text} added" if enum else f"member `{text} {name}` added")
    if not details and [n for n, _ in before] != [n for n, _ in after]:
        details.append("members reordered")
    if not details:  # an anonymous member's own shape, or a member's name only
        details.append("definition changed")
    return tuple(details)


def _layout_details(before: tuple, after: tuple) -> tuple[str, ...]:
    details = []
    if before[0] != after[0]:
        details.append(f"size {before[0]} -> {after[0]} bytes")
    new_offsets = dict(after[1])
    moved = [f"{name} {offset // 8} -> {new_offsets[name] // 8}" for name, offset in before[1]
             if name and name in new_offsets and new_offsets[name] != offset]
    if moved:
        details.append("offsets moved: " + ", ".join(moved[:8]) + (" ..." if len(moved) > 8 else ""))
    return tuple(details) or ("layout changed",)


class _Reach:
    """For a declaration's parts, the changed types they reach in the old kernel's named-type graph
    (edges: a definition names a type) and at what depth. Many declarations: one breadth-first
    search backwards from each changed type, shared by all; a few: one forward search each."""

    def __init__(self, types: KernelTypes, changed: dict[int, TypeChange], declarations: int):
        self.types, self.changed = types, changed
        self.rows: dict[int, dict[TypeKey, int]] | None = None
        if declarations > FORWARD_SEARCHES:
            self.rows = self._backwards()

    def _backwards(self) -> dict[int, dict[TypeKey, int]]:
        reverse: dict[int, list[int]] = {}
        for source, targets in self.types.edges.items():
            for target in targets:
                reverse.setdefault(target, []).append(source)
        rows: dict[int, dict[TypeKey, int]] = {}
        for target, change in self.changed.items():
            seen = {target: 0}
            queue = deque([target])
            while queue:
                node = queue.popleft()
                step = seen[node] + 1
                for parent in reverse.get(node, ()):
                    if parent not in seen:
                        seen[parent] = step
                        queue.append(parent)
            for node, distance in seen.items():
                row = rows.setdefault(node, {})
                if distance < row.get(change.key, distance + 1):
                    row[change.key] = distance
        return rows

    def backwards_rows(self) -> dict[int, dict[TypeKey, int]]:
        if self.rows is None:
            self.rows = self._backwards()
        return self.rows

    def _forwards(self, start: tuple[int, ...]) -> dict[TypeKey, int]:
        seen = dict.fromkeys(start, 0)
        queue = deque(start)
        found: dict[TypeKey, int] = {}
        while queue:
            node = queue.popleft()
            change = self.changed.get(node)
            if change is not None and change.key not in found:
                found[change.key] = seen[node]
            for child in self.types.edges.get(node, ()):
                if child not in seen:
                    seen[child] = seen[node] + 1
                    queue.append(child)
        return found

    def of(self, params) -> dict[TypeKey, tuple[int, str]]:
        """Changed type -> (depth, part of the declaration) for a declaration's parts."""
        found: dict[TypeKey, tuple[int, str]] = {}
        for via, ids in params:
            rows = ([self.rows.get(i, {}) for i in ids] if self.rows is not None else [self._forwards(ids)])
            for row in rows:
                for key, distance in row.items():
                    known = found.get(key)
                    if known is None or distance + 1 < known[0]:
                        found[key] = (distance + 1, via)
        return found


FORWARD_SEARCHES = 50  # up to this many declarations, a forward search each beats the shared one


def explain(old: KernelTypes, new: KernelTypes, symbols: list[str] | None = None,
            headers: HeaderIndex | None = None) -> Explanation:
    """Explain the CRC changes of `symbols` (default: every export whose CRC changed).

    BTF reaches nearly every changed type from nearly every export (one merged graph, pointers
    everywhere); genksyms hashes only the definitions the exporting file sees. With the kernel's
    shipped headers the candidates are ranked by how many headers see the type's definition
    (struct mm_struct: most; struct iommu_device: a few; a type no header defines: none, last),
    then by depth; without them, by depth and how many exported prototypes are near the type
    (exported_use())."""
    changed, changes = diff_types(old, new)
    names = {change.key: change.name for change in changes}
    if symbols is None:
        symbols = sorted(name for name, export in old.exports.items()
                         if name in new.exports and export.crc != new.exports[name].crc)
    reach = _Reach(old, changed, len(symbols))
    popularity: dict[TypeKey, int | None] = {}

    def seen_by(key: TypeKey) -> int | None:
        if key not in popularity:
            popularity[key] = headers.popularity(key) if headers else None
        return popularity[key]

    if headers is not None:
        def rank(candidate: Candidate):
            return -(candidate.seen_by or 0), candidate.depth, candidate.type
    else:
        use = exported_use(old, changed)

        def rank(candidate: Candidate):
            return candidate.depth - USE_WEIGHT * math.log2(1 + use.get(candidate.key, 0)), candidate.type

    results = [_explain_symbol(symbol, old, new, reach, names, seen_by, rank) for symbol in symbols]
    modules: dict[str, list[int]] = {}
    for index, explained in enumerate(results):
        owner = old.exports[explained.symbol].owner if explained.symbol in old.exports else "vmlinux"
        if not explained.candidates and owner in old.modules and owner in new.modules:
            modules.setdefault(owner, []).append(index)
    for owner, indexes in modules.items():
        module_changes = _explain_module(owner, old, new, [results[i].symbol for i in indexes], reach, names,
                                         seen_by, rank)
        changes += module_changes[0]
        for index, explained in zip(indexes, module_changes[1]):
            results[index] = explained
    return Explanation(old.release, new.release, changes, results, "headers" if headers else "exports")


# Without headers, a candidate ranks by its depth - USE_WEIGHT * log2(1 + exported_use()): a type
# one level deeper comes first when four times as many exported prototypes are near it.
# bench/explain_truth.py --no-headers, first candidate true (seed 1 / seed 2) for 50->53, 50->56,
# 47->56: by depth alone 74.8/71.2, 59.6/63.6, 87.2/88.8 %; with USE_WEIGHT 0.5 79.6/75.6,
# 66.8/67.2, 94.4/92.8 % (0.25 to 1 are within 2 points of it; counting only the prototypes that
# name the type, or the types whose definitions name it, did worse than depth alone).
USE_WEIGHT = 0.5


def exported_use(types: KernelTypes, changed: dict[int, TypeChange]) -> dict[TypeKey, int]:
    """For each changed type, how many exported functions' prototypes name it, or name a type whose
    definition names it, or one more step: BTF's stand-in for how many headers see its definition
    (genksyms expands only the definitions the exporting file sees). A type private to a .c file
    is near few exported prototypes; struct mm_struct, near hundreds."""
    reverse: dict[int, set[int]] = {}
    for source, targets in types.edges.items():
        for target in targets:
            reverse.setdefault(target, set()).add(source)
    naming: dict[int, set[str]] = {}
    for name, (_declaration, params) in types.funcs.items():
        if name in types.exports:
            for _via, ids in params:
                for type_id in ids:
                    naming.setdefault(type_id, set()).add(name)
    use: dict[TypeKey, int] = {}
    for type_id, change in changed.items():
        near, frontier = {type_id}, {type_id}
        for _step in range(2):
            frontier = {parent for node in frontier for parent in reverse.get(node, ())} - near
            near |= frontier
        functions = set().union(*(naming.get(node, ()) for node in near))
        use[change.key] = max(use.get(change.key, 0), len(functions))
    return use


def _explain_module(owner: str, old: KernelTypes, new: KernelTypes, symbols: list[str], reach: _Reach,
                    names: dict[TypeKey, str], seen_by, rank) -> tuple[list[TypeChange], list[SymbolExplanation]]:
    """A module's exports: its own changed types (its split BTF, old against new), and vmlinux's
    reached through them (the shared distances from vmlinux's types)."""
    old_module, new_module = old.modules[owner], new.modules[owner]
    own_changed, own_changes = diff_types(old_module, new_module)
    own_changes = [dataclasses.replace(c, module=owner) for c in own_changes]
    own_changed = {i: dataclasses.replace(c, module=owner) for i, c in own_changed.items()}
    rows = reach.backwards_rows()
    own_names = {c.key: c.name for c in own_changes}
    memo: dict[tuple[int, ...], dict[TypeKey, int]] = {}  # a module's functions share parameter types
    results = []
    for symbol in symbols:
        before, after = old.exports[symbol], new.exports.get(symbol)
        roots = old_module.funcs.get(symbol)
        if roots is None:
            why: str | None = ("a data symbol: BTF describes no type for it" if symbol not in old_module.vars
                   else "no type information")
            results.append(SymbolExplanation(symbol, before.crc, after.crc if after else None, (), why))
            continue
        declaration, params = roots
        found: dict[TypeKey, tuple[int, str]] = {}
        for via, ids in params:
            reached = memo.get(ids)
            if reached is None:
                reached = memo[ids] = _module_reach(ids, old_module, own_changed, rows)
            for key, depth in reached.items():
                known = found.get(key)
                if known is None or depth < known[0]:
                    found[key] = (depth, via)
        candidates = [Candidate(key, own_names.get(key) or names[key], via, depth, seen_by(key))
                      for key, (depth, via) in found.items()]
        candidates.sort(key=rank)
        new_roots = new_module.funcs.get(symbol)
        if new_roots is not None and new_roots[0] != declaration:
            candidates.insert(0, Candidate(("declaration", symbol),
                                           f"declaration of {symbol}: `{declaration}` -> `{new_roots[0]}`",
                                           "declaration", 0, None))
        why = None if candidates else ("CRC changed but no type it reaches changed in BTF: a change BTF does not "
                                       "record (an attribute, a macro, a declaration-only or include-only change)")
        results.append(SymbolExplanation(symbol, before.crc, after.crc if after else None, tuple(candidates), why))
    return own_changes, results


def _module_reach(ids: tuple[int, ...], module: KernelTypes, own_changed: dict[int, TypeChange],
                  rows: dict[int, dict[TypeKey, int]]) -> dict[TypeKey, int]:
    """Changed type -> depth from a declaration part's types: breadth first through the module's
    own types; at a vmlinux type, its shared distances."""
    seen = dict.fromkeys(ids, 1)
    queue = deque(ids)
    found: dict[TypeKey, int] = {}
    while queue:
        node = queue.popleft()
        depth = seen[node]
        change = own_changed.get(node)
        if change is not None and depth < found.get(change.key, depth + 1):
            found[change.key] = depth
        children = module.edges.get(node)
        if children is None:  # a vmlinux type
            for key, distance in rows.get(node, {}).items():
                if depth + distance < found.get(key, depth + distance + 1):
                    found[key] = depth + distance
            continue
        for child in children:
            if child not in seen:
                seen[child] = depth + 1
                queue.append(child)
    return found


def _explain_symbol(symbol: str, old: KernelTypes, new: KernelTypes, reach: _Reach, names: dict[TypeKey, str],
                    seen_by, rank) -> SymbolExplanation:
    before, after = old.exports.get(symbol), new.exports.get(symbol)
    old_crc, new_crc = (before.crc if before else None), (after.crc if after else None)
    roots = _roots(old, symbol)
    if roots is None:
        why: str | None = ("not exported by the old kernel" if before is None else
               "exported by a module whose BTF was not read" if before.owner != "vmlinux" else
               "a data symbol: BTF describes no type for it" if symbol not in old.funcs else
               "no type information")
        return SymbolExplanation(symbol, old_crc, new_crc, (), why)
    declaration, params = roots
    candidates = [Candidate(key, names[key], via, depth, seen_by(key))
                  for key, (depth, via) in reach.of(params).items()]
    candidates.sort(key=rank)
    new_roots = _roots(new, symbol)
    if new_roots is not None and new_roots[0] != declaration:  # its own line: genksyms hashes it first
        candidates.insert(0, Candidate(("declaration", symbol),
                                       f"declaration of {symbol}: `{declaration}` -> `{new_roots[0]}`",
                                       "declaration", 0, None))
    ranked = tuple(candidates)
    why = None if ranked else ("CRC changed but no type it reaches changed in BTF: a change BTF does not "
                               "record (an attribute, a macro, a declaration-only or include-only change)")
    return SymbolExplanation(symbol, old_crc, new_crc, ranked, why)


def _roots(types: KernelTypes, symbol: str) -> tuple[str, tuple[tuple[str, tuple[int, ...]], ...]] | None:
    """The declaration of an exported symbol and the named types each of its parts names."""
    if symbol in types.funcs:
        return types.funcs[symbol]
    if symbol in types.vars:
        declaration, ids = types.vars[symbol]
        return declaration, (("type", ids),)
    for prefix, key in DATA_BY_PREFIX:
        if symbol.startswith(prefix) and types.by_key.get(key):
            return f"{key[0]} {key[1]} {symbol}", (("type", tuple(types.by_key[key])),)
    return None


# -- report shapes (kabigate explain --json, and the cause attached to crc-mismatch reasons) -------

def candidate_json(candidate: Candidate) -> dict:
    return {"type": candidate.type, "key": list(candidate.key), "via": candidate.via, "depth": candidate.depth,
            "seen_by_headers": candidate.seen_by}


def cause_json(explained: SymbolExplanation) -> dict:
    """The short form attached to a crc-mismatch reason: the most likely cause, or why none."""
    first = explained.candidates[0] if explained.candidates else None
    return {"most_likely": None if first is None else candidate_json(first),
            "candidates": len(explained.candidates), "no_type_information": explained.no_type_info}


def cause_text(explained: SymbolExplanation) -> str:
    if not explained.candidates:
        return f"no type information: {explained.no_type_info}"
    first = explained.candidates[0]
    if first.depth == 0:
        return first.type
    others = len(explained.candidates) - 1
    return (f"most likely {first.type} (via {first.via}, depth {first.depth})"
            + (f"; {others} more changed type{'s' if others > 1 else ''} reachable" if others else ""))


def type_change_json(change: TypeChange) -> dict:
    return {"type": change.name, "key": list(change.key), "cause": change.cause, "details": list(change.details)}
