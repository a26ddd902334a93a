"""BTF, the BPF Type Format: the compact type graph distribution kernels carry in vmlinux
(`.BTF`, CONFIG_DEBUG_INFO_BTF) and, as split BTF on top of vmlinux's, in every module
(CONFIG_DEBUG_INFO_BTF_MODULES).

Layout from include/uapi/linux/btf.h and the kernel's own reader, btf_parse() in kernel/bpf/btf.c
(btf_parse_hdr, btf_check_all_metas): a header, a type section of variable-length records
(struct btf_type, then kind-specific data), a string section. Type ids count from 1 (0 is void);
split BTF continues the ids and string offsets of its base (btf_parse_module()).
Everything read is bounds-checked: a module's .BTF is hostile input like the rest of it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias

from kabigate.errors import InputError

BTF_MAGIC = 0xEB9F
HEADER_MIN = 24  # struct btf_header up to str_len

# Kinds (BTF_KIND_*).
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT = 9, 10, 11, 12, 13, 14, 15, 16
DECL_TAG, TYPE_TAG, ENUM64 = 17, 18, 19
KIND_NAMES = {INT: "int", PTR: "ptr", ARRAY: "array", STRUCT: "struct", UNION: "union", ENUM: "enum",
              FWD: "fwd", TYPEDEF: "typedef", VOLATILE: "volatile", CONST: "const", RESTRICT: "restrict",
              FUNC: "func", FUNC_PROTO: "func_proto", VAR: "var", DATASEC: "datasec", FLOAT: "float",
              DECL_TAG: "decl_tag", TYPE_TAG: "type_tag", ENUM64: "enum64"}
# Kinds whose third word is a type id (the others hold a size, or nothing).
_REF_KINDS = frozenset({PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DECL_TAG, TYPE_TAG})
# btf_parse() refuses more (BTF_MAX_TYPE, BTF_MAX_NAME_OFFSET); so does kabigate.
MAX_TYPES = 0x000FFFFF
MAX_STRINGS = 0x00FFFFFF


@dataclass(frozen=True, slots=True)
class BtfType:
    """One type record. `type` is the referenced type id (ptr, typedef, modifiers, func, var,
    decl_tag; a func_proto's return type); `size` is the byte size (int, struct, union, enum,
    datasec, float). `items` depends on the kind: members (name, type, bit_offset, bitfield_size)
    of a struct/union, parameters (name, type) of a func_proto, constants (name, value) of an enum,
    (type, offset, size) of a datasec; `extra` is (elem_type, index_type, nelems) of an array,
    (encoding, bit_offset, bits) of an int, a var's or func's linkage, a decl_tag's component index."""

    kind: int
    name: str
    type: int = 0
    size: int = 0
    items: tuple = ()
    extra: tuple | int = 0
    kind_flag: bool = False

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def array(self) -> tuple[int, int, int]:
        """An array's (elem_type, index_type, nelems)."""
        if self.kind != ARRAY or not isinstance(self.extra, tuple):
            raise ValueError(f"a BTF {self.kind_name}, not an array")
        return self.extra


# A BTF's types by id: a list, or a split BTF's view over its base's list and its own.
TypeList: TypeAlias = "list[BtfType] | SplitTypes"

class Btf:
    """A parsed BTF blob: `types[i]` is type id i (types[0] is void); a split BTF's list starts with
    its base's types, so ids resolve the way the kernel resolves them."""

    def __init__(self, types: TypeList, base: Btf | None, what: str, strings: bytes):
        self.types = types
        self.base = base
        self.what = what
        self.strings = strings
        # Split BTF's string offsets continue its base's (btf_name_by_offset()).
        self.strings_len: int = (base.strings_len if base is not None else 0) + len(strings)
        self._by_name: dict[str, list[int]] | None = None

    def string_at(self, offset: int) -> str:
        if self.base is not None and offset < self.base.strings_len:
            return self.base.string_at(offset)
        local = offset - (self.base.strings_len if self.base is not None else 0)
        if not 0 <= local < len(self.strings):
            raise InputError(f"{self.what}: BTF name offset {offset} outside the string section")
        return self.strings[local:self.strings.index(b"\0", local)].decode("utf-8", "replace")

    @property
    def first_own_id(self) -> int:
        return len(self.base.types) if self.base is not None else 1

    def by_name(self, name: str) -> list[int]:
        """Ids of the types called `name` (any kind), in id order."""
        if self._by_name is None:
            index: dict[str, list[int]] = {}
            for type_id, entry in enumerate(self.types):
                if entry.name:
                    index.setdefault(entry.name, []).append(type_id)
            self._by_name = index
        return self._by_name.get(name, [])

    def funcs(self) -> dict[str, int]:
        """Function name -> its FUNC type id (the first, as btf_find_by_name_kind() returns)."""
        found: dict[str, int] = {}
        for type_id in range(self.first_own_id, len(self.types)):
            entry = self.types[type_id]
            if entry.kind == FUNC:
                found.setdefault(entry.name, type_id)
        return found

    def vars(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for type_id in range(self.first_own_id, len(self.types)):
            entry = self.types[type_id]
            if entry.kind == VAR:
                found.setdefault(entry.name, type_id)
        return found


_HEADER = {e: struct.Struct(e + "HBBIIIII") for e in "<>"}
_TYPE = {e: struct.Struct(e + "III") for e in "<>"}
_U32 = {e: struct.Struct(e + "I") for e in "<>"}
_TRIPLE = {e: struct.Struct(e + "III") for e in "<>"}
_PAIR = {e: struct.Struct(e + "II") for e in "<>"}
_ENUM = {e: struct.Struct(e + "Ii") for e in "<>"}


def parse_btf(data: bytes, what: str, base: Btf | None = None) -> Btf:
    """Parse a .BTF section; `base` is vmlinux's BTF for a module's split BTF."""
    view = memoryview(data)
    if len(view) < HEADER_MIN:
        raise InputError(f"{what}: BTF truncated ({len(view)} bytes, the header alone is {HEADER_MIN})")
    endian = "<" if struct.unpack_from("<H", view, 0)[0] == BTF_MAGIC else ">"
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER[endian].unpack_from(view, 0)
    if magic != BTF_MAGIC:
        raise InputError(f"{what}: not BTF (magic {magic:#06x})")
    if version != 1:
        raise InputError(f"{what}: BTF version {version}, kabigate reads version 1")
    if hdr_len < HEADER_MIN or hdr_len > len(view):
        raise InputError(f"{what}: BTF header length {hdr_len} out of range")
    body = len(view) - hdr_len
    if type_off % 4 or type_off + type_len > body or str_off + str_len > body:
        raise InputError(f"{what}: BTF type or string section lies outside the data")
    if str_len > MAX_STRINGS:
        raise InputError(f"{what}: BTF string section of {str_len} bytes exceeds the kernel's limit")
    strings = bytes(view[hdr_len + str_off:hdr_len + str_off + str_len])
    # btf_parse_str_sec(): NUL-terminated; only a base's starts with the empty name.
    if (strings and strings[-1] != 0) or (base is None and strings[:1] not in (b"", b"\0")):
        raise InputError(f"{what}: BTF string section does not end with NUL, or a base's does not start with it")
    btf = Btf([], base, what, strings)
    names: dict[int, str] = {}

    def name_at(offset: int) -> str:
        known = names.get(offset)
        if known is None:
            known = names[offset] = btf.string_at(offset)
        return known

    types: TypeList = SplitTypes(base.types) if base is not None else [BtfType(kind=0, name="void")]
    first = len(types)
    position, end = hdr_len + type_off, hdr_len + type_off + type_len
    header_struct, u32, triple, pair, enum32 = (_TYPE[endian], _U32[endian], _TRIPLE[endian], _PAIR[endian],
                                                _ENUM[endian])

    def need(size: int, kind: int) -> None:
        if position + size > end:
            raise InputError(f"{what}: BTF type {len(types)} ({KIND_NAMES.get(kind, kind)}) runs past the type section")

    while position < end:
        need(12, 0)
        name_off, info, size_or_type = header_struct.unpack_from(view, position)
        position += 12
        kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
        name = name_at(name_off) if name_off else ""
        if kind == INT:
            need(4, kind)
            (raw,) = u32.unpack_from(view, position)
            position += 4
            entry = BtfType(kind, name, size=size_or_type, extra=((raw >> 24) & 0x0F, (raw >> 16) & 0xFF, raw & 0xFF))
        elif kind == ARRAY:
            need(12, kind)
            entry = BtfType(kind, name, extra=triple.unpack_from(view, position))
            position += 12
        elif kind in (STRUCT, UNION):
            need(12 * vlen, kind)
            members = []
            for member_name, member_type, offset in triple.iter_unpack(view[position:position + 12 * vlen]):
                if kind_flag:  # bitfield size in the top 8 bits (BTF_MEMBER_BITFIELD_SIZE)
                    members.append((name_at(member_name) if member_name else "", member_type,
                                    offset & 0xFFFFFF, offset >> 24))
                else:
                    members.append((name_at(member_name) if member_name else "", member_type, offset, 0))
            position += 12 * vlen
            entry = BtfType(kind, name, size=size_or_type, items=tuple(members), kind_flag=kind_flag)
        elif kind == ENUM:
            need(8 * vlen, kind)
            values = tuple((name_at(n) if n else "", (v & 0xFFFFFFFF) if not kind_flag else v)
                           for n, v in enum32.iter_unpack(view[position:position + 8 * vlen]))
            position += 8 * vlen
            entry = BtfType(kind, name, size=size_or_type, items=values, kind_flag=kind_flag)
        elif kind == ENUM64:
            need(12 * vlen, kind)
            values64 = []
            for n, low, high in triple.iter_unpack(view[position:position + 12 * vlen]):
                value = (high << 32) | low
                if kind_flag and value >> 63:  # signed enum
                    value -= 1 << 64
                values64.append((name_at(n) if n else "", value))
            position += 12 * vlen
            entry = BtfType(kind, name, size=size_or_type, items=tuple(values64), kind_flag=kind_flag)
        elif kind == FUNC_PROTO:
            need(8 * vlen, kind)
            params = tuple((name_at(n) if n else "", t)
                           for n, t in pair.iter_unpack(view[position:position + 8 * vlen]))
            position += 8 * vlen
            entry = BtfType(kind, name, type=size_or_type, items=params)
        elif kind == VAR:
            need(4, kind)
            (linkage,) = u32.unpack_from(view, position)
            position += 4
            entry = BtfType(kind, name, type=size_or_type, extra=linkage)
        elif kind == DATASEC:
            need(12 * vlen, kind)
            entry = BtfType(kind, name, size=size_or_type,
                            items=tuple(triple.iter_unpack(view[position:position + 12 * vlen])))
            position += 12 * vlen
        elif kind == DECL_TAG:
            need(4, kind)
            (component,) = struct.unpack_from(endian + "i", view, position)
            position += 4
            entry = BtfType(kind, name, type=size_or_type, extra=component)
        elif kind == FUNC:
            entry = BtfType(kind, name, type=size_or_type, extra=vlen, kind_flag=kind_flag)
        elif kind in _REF_KINDS:
            entry = BtfType(kind, name, type=size_or_type, kind_flag=kind_flag)
        elif kind == FLOAT:
            entry = BtfType(kind, name, size=size_or_type)
        else:
            raise InputError(f"{what}: BTF type {len(types)} has unknown kind {kind}")
        types.append(entry)
        if len(types) > MAX_TYPES:
            raise InputError(f"{what}: more than {MAX_TYPES} BTF types")
    _check_references(types, first, what)
    btf.types = types
    return btf


class SplitTypes:
    """A split BTF's types: its base's, then its own, by type id; the base's list is shared, not
    copied (vmlinux has 100,000 types, a kernel 4,000 modules)."""

    def __init__(self, base: TypeList):
        self.base = base
        self.own: list[BtfType] = []

    def __len__(self) -> int:
        return len(self.base) + len(self.own)

    def __getitem__(self, type_id: int) -> BtfType:
        if 0 <= type_id < len(self.base):
            return self.base[type_id]
        return self.own[type_id - len(self.base)]

    def __iter__(self) -> Iterator[BtfType]:
        yield from self.base
        yield from self.own

    def append(self, entry: BtfType) -> None:
        self.own.append(entry)


def _check_references(types: TypeList, first: int, what: str) -> None:
    """Every type id a record names must exist (btf_check_all_types() resolves each); walkers of
    the graph then index `types` without further checks."""
    count = len(types)
    for type_id in range(first, count):
        entry = types[type_id]
        refs: list[int] = []
        if entry.kind in _REF_KINDS:
            refs.append(entry.type)
        if entry.kind in (STRUCT, UNION):
            refs.extend(member[1] for member in entry.items)
        elif entry.kind == FUNC_PROTO:
            refs.extend(param[1] for param in entry.items)
        elif entry.kind == DATASEC:
            refs.extend(item[0] for item in entry.items)
        elif entry.kind == ARRAY:
            refs.extend(entry.array[:2])
        for ref in refs:
            if ref >= count:
                raise InputError(f"{what}: BTF type {type_id} refers to type {ref}, of {count - 1}")
