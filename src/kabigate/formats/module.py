"""A kernel module (.ko, .ko.xz, .ko.zst, .ko.gz): what it needs and what it provides.

Reads the same sections the kernel's load_module() does (kernel/module/main.c):
`.modinfo` (get_modinfo), `__versions` and `__version_ext_*` (check_version),
the symbol table (simplify_symbols) and the `__ksymtab*`/`__kcrctab*` export tables
(find_module_sections), plus the appended signature (module_sig_check).
"""

from __future__ import annotations

import dataclasses
import importlib
import mmap
import os
import struct
from types import ModuleType

from kabigate.errors import InputError, regular_fd
from kabigate.formats.compression import compression_of, decompress, refuse_other_compression
from kabigate.formats.elf import (
    ET_REL,
    SHN_ABS,
    SHN_COMMON,
    SHN_LORESERVE,
    SHN_UNDEF,
    SHN_XINDEX,
    SHT_NOBITS,
    SHT_STRTAB,
    SHT_SYMTAB,
    STB_GLOBAL,
    STB_WEAK,
    ElfFile,
    Symbol,
    machine_name,
)
from kabigate.formats.modsig import signature_of, split_signature
from kabigate.model import ElfLayout, Export, Import, Module, ModuleSignature, SymbolVersion


def c_reader() -> ModuleType | None:
    """The C reader of the same facts (formats/_modfast.c), unless KABIGATE_PURE is set or it was
    not built (installed without a C compiler: the Python path then reads every module)."""
    if os.environ.get("KABIGATE_PURE"):
        return None
    try:
        return importlib.import_module("kabigate.formats._modfast")
    except ImportError:
        return None


_modfast = c_reader()


def reads_in_c() -> bool:
    """Whether read_module() reads modules with the C reader (KABIGATE_PURE unset, and it was built)."""
    return _modfast is not None

KSYMTAB_PREFIX = "__ksymtab_"
CRC_PREFIX = "__crc_"
NAMESPACE_PREFIX = "__kstrtabns_"
# struct modversion_info { unsigned long crc; char name[MODULE_NAME_LEN]; } is 64 bytes.
MODVERSION_INFO_SIZE = 64
THIS_MODULE = ".gnu.linkonce.this_module"
# The sections module_frob_arch_sections() looks for by name: arm64's PLTs (asm/module.lds.h),
# ppc64's stubs (asm/module.h) (rules._check_arch_sections()).
ARCH_SECTIONS = (".plt", ".init.plt", ".stubs")
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4


def read_module(path: str) -> Module:
    """Parse the module file at `path`; raises InputError for anything that is not a module."""
    if (facts := read_module_facts(path)) is not None:
        return module_of_facts(path, facts)
    fd, status = regular_fd(path)  # a FIFO named *.ko is refused, not waited on
    try:
        if status.st_size == 0:
            raise InputError(f"{path}: empty file, not an ELF file")
        # mmap: only the pages of the sections read are touched (most of a module is code).
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
            return parse_module(mapped, path)
    except OSError as error:
        raise InputError(f"{path}: {error.strerror}") from None
    finally:
        os.close(fd)


def read_module_facts(path: str) -> tuple | None:
    """The C reader's facts of the uncompressed module file at `path`, mapped and read in C: plain
    tuples, lists, numbers and (shared) strs, cheap to pickle, unlike a Module's thousands of small
    objects; None when the C reader leaves the file to read_module()'s Python path (not built,
    compressed, not openable, damaged: the Python path tells)."""
    return None if _modfast is None else _modfast.read_file(path)


def module_of_facts(path: str, facts: tuple) -> Module:
    """The Module of read_module_facts()' facts."""
    return _module_of(path, None, _signature_read_in_c(facts[0])[1], facts[1])


def parse_module(raw: bytes | mmap.mmap, path: str) -> Module:
    if raw[:4] == b"\x7fELF":  # no compression's magic: a tree's 4,000 modules are sniffed once
        compression, data = None, raw
    else:
        compression = compression_of(raw)
        refuse_other_compression(raw, path)
        data = decompress(raw, path) if compression else raw
    size, signature = _split_signature(data)
    # The C reader's None: it met something it leaves to the Python path (errors included).
    if _modfast is not None and (facts := _modfast.read(data, size, path)) is not None:
        return _module_of(path, compression, signature, facts)
    elf = ElfFile(data, path, size)
    if elf.type != ET_REL:
        raise InputError(f"{path}: not a kernel module (ELF type {elf.type}, modules are relocatable objects)")
    modinfo_section = elf.section(".modinfo")
    if modinfo_section is None or elf.section(THIS_MODULE) is None:
        raise InputError(f"{path}: not a kernel module (no .modinfo or {THIS_MODULE} section)")
    versions = _read_versions(elf)
    sections = elf.sections
    tables = {s.index for s in sections
              if s.name in EXPORT_TABLE_SECTIONS or s.name.startswith(EXPORT_TABLE_SECTIONS[1::2])}
    # One pass over the symbol table for what the imports, exports and layout need.
    wanted = {SHN_UNDEF, SHN_COMMON} | (tables | {SHN_ABS} if tables else set())
    symbols = elf.symbols_in(wanted)
    return Module(
        path=path,
        machine=elf.machine_name,
        modinfo=_parse_modinfo(elf.section_bytes(modinfo_section)),
        versions=versions,
        imports=tuple(Import(symbol.name, symbol.bind == STB_WEAK) for symbol in symbols
                      if symbol.shndx == SHN_UNDEF and symbol.name and symbol.bind in (STB_GLOBAL, STB_WEAK)),
        exports=_read_exports(elf, tables, [symbol for symbol in symbols if symbol.shndx in tables
                                            or symbol.shndx == SHN_ABS]),
        signature=signature,
        compression=compression,
        layout=_read_layout(elf, [symbol for symbol in symbols if symbol.shndx == SHN_COMMON]),
    )


# Every field, in order: the C reader's Module, ElfLayout and ModuleSignature are made by
# _modfast.instance(), which sets each slot as their __init__ would.
_MODULE_FIELDS = tuple(field.name for field in dataclasses.fields(Module))
_LAYOUT_FIELDS = tuple(field.name for field in dataclasses.fields(ElfLayout))
_EXPORT_FIELDS = tuple(field.name for field in dataclasses.fields(Export))


def _module_of(path: str, compression: str | None, signature: ModuleSignature | None, facts: tuple) -> Module:
    """The Module of the C reader's facts (its layout: ElfLayout's fields in order)."""
    e_machine, little, modinfo, versions, import_names, import_weak, exports, layout = facts
    assert _modfast is not None  # facts come from it
    instances = _modfast.instances  # the frozen dataclasses' fields set from C: __init__ is the cost
    instance = _modfast.instance
    return instance(Module, _MODULE_FIELDS, (
        path, machine_name(e_machine, little), modinfo,
        None if versions is None else instances(SymbolVersion, ("name", "crc"), versions),
        instances(Import, ("name", "weak"), (import_names, import_weak)),
        tuple(instance(Export, _EXPORT_FIELDS, export) for export in exports), signature, compression, None,
        instance(ElfLayout, _LAYOUT_FIELDS, layout)))


def _split_signature(data: bytes | mmap.mmap) -> tuple[int, ModuleSignature | None]:
    """split_signature(), its trailer and PKCS#7 read in C when built (a defect or an unusual
    signature is left to the Python path, which tells)."""
    if _modfast is None:
        return split_signature(data)
    found = _modfast.signature(data)
    return split_signature(data, _modfast.pkcs7) if found is None else _signature_read_in_c(found)


def _signature_read_in_c(found: tuple) -> tuple[int, ModuleSignature | None]:
    """split_signature()'s result from _modfast.signature()'s."""
    if len(found) == 2:  # unsigned
        return found
    size, der_size, fields = found
    return size, signature_of(fields, der_size, size)


def _read_layout(elf: ElfFile, common: list[Symbol]) -> ElfLayout:
    """The section facts elf_validity_cache_copy() (6.4+) / setup_load_info() (6.1),
    module_enforce_rwx_sections(), find_module_sections() and simplify_symbols() check."""
    sections = elf.sections
    this_module = [s for s in sections if s.name == THIS_MODULE]
    symtabs = [s for s in sections if s.type == SHT_SYMTAB]
    first = this_module[0]  # find_sec() takes the first (that is SHF_ALLOC)
    names = {s.name for s in sections}
    return ElfLayout(
        this_module_size=first.size,
        this_module_sections=len(this_module),
        this_module_nobits=first.type == SHT_NOBITS,
        this_module_alloc=bool(first.flags & SHF_ALLOC),
        modinfo_sections=sum(s.name == ".modinfo" for s in sections),
        symbol_tables=len(symtabs),
        symbol_strings_ok=bool(symtabs) and 0 < symtabs[0].link < len(sections)
        and sections[symtabs[0].link].type == SHT_STRTAB,
        section_names_ok=sections[_section_names_index(elf)].type == SHT_STRTAB,
        write_exec_sections=tuple(f"{s.name} (index {s.index})" for s in sections
                                  if s.flags & (SHF_WRITE | SHF_EXECINSTR) == SHF_WRITE | SHF_EXECINSTR),
        # simplify_symbols() lets LTO's __gnu_lto* common symbols through.
        common_symbols=tuple(sorted({sym.name for sym in common if not sym.name.startswith("__gnu_lto")})),
        ctors_and_init_array=".ctors" in names and ".init_array" in names,
        arch_sections=tuple(name for name in ARCH_SECTIONS if name in names),
        e_flags=struct.unpack_from(elf.endian + "I", elf.data, 48 if elf.is64 else 36)[0],
    )


def _section_names_index(elf: ElfFile) -> int:
    """e_shstrndx (ElfFile checked it is in range), or section 0's sh_link for SHN_XINDEX."""
    (index,) = struct.unpack_from(elf.endian + "H", elf.data, 62 if elf.is64 else 50)
    return elf.sections[0].link if index == SHN_XINDEX else index


def _parse_modinfo(data: bytes) -> tuple[tuple[str, str], ...]:
    entries = []
    for item in data.split(b"\0"):
        if not item:
            continue
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            entries.append((key, value))
    return tuple(entries)


def _read_versions(elf: ElfFile) -> tuple[SymbolVersion, ...] | None:
    ext_crcs, ext_names = elf.section("__version_ext_crcs"), elf.section("__version_ext_names")
    if ext_crcs is not None and ext_names is not None:
        return _read_extended_versions(elf, ext_crcs, ext_names)
    section = elf.section("__versions")
    if section is None:
        return None
    data = elf.section_bytes(section)
    crc_size = 8 if elf.is64 else 4
    record = struct.Struct(f"{elf.endian}{'Q' if elf.is64 else 'I'}{MODVERSION_INFO_SIZE - crc_size}s")
    usable = len(data) - len(data) % MODVERSION_INFO_SIZE
    # check_version() compares the low 32 bits: CRCs are u32 in every kernel.
    return tuple(SymbolVersion(name.split(b"\0", 1)[0].decode("utf-8", "replace"), crc & 0xFFFFFFFF)
                 for crc, name in record.iter_unpack(data[:usable]))


def _read_extended_versions(elf: ElfFile, crcs_section, names_section) -> tuple[SymbolVersion, ...]:
    """6.15+ `__version_ext_crcs` (u32 array) paired with NUL-separated `__version_ext_names`."""
    crcs = [crc for (crc,) in struct.iter_unpack(elf.endian + "I", elf.section_bytes(crcs_section)[
        :crcs_section.size - crcs_section.size % 4])]
    names = elf.section_bytes(names_section).split(b"\0")
    if len(names) < len(crcs):
        raise InputError(f"{elf.what}: __version_ext_names has fewer names than __version_ext_crcs has CRCs")
    return tuple(SymbolVersion(name.decode("utf-8", "replace"), crc) for name, crc in zip(names, crcs))


# Section names of the export tables: merged by scripts/module.lds in a linked .ko,
# still one section per symbol ("___ksymtab+foo") in an object file.
EXPORT_TABLE_SECTIONS = ("__ksymtab", "___ksymtab+", "__ksymtab_gpl", "___ksymtab_gpl+",
                         "__kcrctab", "___kcrctab+", "__kcrctab_gpl", "___kcrctab_gpl+", "__ksymtab_strings")


def _read_exports(elf: ElfFile, tables: set[int], symbols: list[Symbol]) -> tuple[Export, ...]:
    """Exports from the `__ksymtab_<sym>` symbols (of `symbols`, those in the export `tables` or
    absolute), with the CRC from `__crc_<sym>` and the namespace from `__kstrtabns_<sym>`
    (include/linux/export.h lays them out that way)."""
    if not tables:
        return ()
    sections = elf.sections
    by_name = {symbol.name: symbol for symbol in symbols}
    exports = []
    for name, symbol in by_name.items():
        if not name.startswith(KSYMTAB_PREFIX):
            continue
        section_name = sections[symbol.shndx].name if symbol.shndx < len(sections) else ""
        if not section_name.startswith(("__ksymtab", "___ksymtab")) or section_name == "__ksymtab_strings":
            continue
        exported = name[len(KSYMTAB_PREFIX):]
        gpl = section_name.startswith(("__ksymtab_gpl", "___ksymtab_gpl+"))
        exports.append(Export(
            name=exported,
            crc=_symbol_crc(elf, by_name.get(CRC_PREFIX + exported)),
            owner=elf.what,
            export_type="EXPORT_SYMBOL_GPL" if gpl else "EXPORT_SYMBOL",
            namespace=_symbol_string(elf, by_name.get(NAMESPACE_PREFIX + exported)),
        ))
    return tuple(exports)


def _symbol_crc(elf: ElfFile, symbol) -> int | None:
    if symbol is None:
        return None
    if symbol.shndx == SHN_ABS:  # kernels before 5.19 (and !CONFIG_MODULE_REL_CRCS) emit absolute CRCs
        return symbol.value & 0xFFFFFFFF
    if symbol.shndx == SHN_UNDEF or symbol.shndx >= min(len(elf.sections), SHN_LORESERVE):
        return None
    section = elf.sections[symbol.shndx]
    if symbol.value + 4 > (0 if section.type == SHT_NOBITS else section.size):
        raise InputError(f"{elf.what}: CRC of {symbol.name} lies outside its section")
    start = section.offset + symbol.value  # within the file: the section headers were checked
    (crc,) = struct.unpack(elf.endian + "I", elf.data[start:start + 4])
    return crc


def _symbol_string(elf: ElfFile, symbol) -> str:
    if symbol is None or symbol.shndx == SHN_UNDEF or symbol.shndx >= min(len(elf.sections), SHN_LORESERVE):
        return ""
    return elf.string_at(elf.sections[symbol.shndx], symbol.value)
