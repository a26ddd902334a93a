"""The module parser as it was before the fast path (issue 23): an ElfFile that decodes every
symbol of the table before filtering, and parse_module over it, kept verbatim as the oracle of
tests/test_module_fastpath.py (the fast path must give identical Modules and refuse the same files).
"""

from __future__ import annotations

import struct

from kabigate.errors import InputError
from kabigate.formats.compression import compression_of, decompress, refuse_other_compression
from kabigate.formats.elf import (
    ELF_MAGIC,
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ET_REL,
    MACHINE_NAMES,
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
    ElfError,
    Section,
    Symbol,
)
from kabigate.formats.modsig import split_signature
from kabigate.formats.module import (
    CRC_PREFIX,
    EXPORT_TABLE_SECTIONS,
    KSYMTAB_PREFIX,
    MODVERSION_INFO_SIZE,
    NAMESPACE_PREFIX,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    THIS_MODULE,
)
from kabigate.model import ElfLayout, Export, Import, Module, SymbolVersion


class ElfFile:
    """Header, section table and lazily read symbol table of one ELF image in memory."""

    def __init__(self, data, what: str = "file", size: int | None = None):
        """`data` may be an mmap of the whole file, or any object sliced like bytes (signing
        reads a module from its file on demand); only its first `size` bytes are the ELF image
        (a signed module carries its signature after them)."""
        self.data = data
        self.size = len(data) if size is None else size
        self.what = what
        if self.size < 16 or data[:4] != ELF_MAGIC:
            raise ElfError(f"{what}: not an ELF file")
        elf_class, encoding = data[4], data[5]
        if elf_class not in (ELFCLASS32, ELFCLASS64):
            raise ElfError(f"{what}: unknown ELF class {elf_class}")
        if encoding not in (ELFDATA2LSB, ELFDATA2MSB):
            raise ElfError(f"{what}: unknown ELF data encoding {encoding}")
        self.is64 = elf_class == ELFCLASS64
        self.endian = "<" if encoding == ELFDATA2LSB else ">"
        header_format = self.endian + ("HHIQQQIHHHHHH" if self.is64 else "HHIIIIIHHHHHH")
        header = self._unpack_from(header_format, 16, "ELF header")
        (self.type, self.machine, _version, _entry, _phoff, shoff, self.flags,
         _ehsize, _phentsize, _phnum, shentsize, shnum, shstrndx) = header
        self._sections = self._read_section_headers(shoff, shentsize, shnum, shstrndx)
        self._by_name = {s.name: s for s in reversed(self._sections)}

    @property
    def machine_name(self) -> str:
        name = MACHINE_NAMES.get(self.machine, f"machine-{self.machine}")
        if name == "ppc64" and self.endian == "<":
            return "ppc64le"
        return name

    @property
    def sections(self) -> list[Section]:
        return self._sections

    def section(self, name: str) -> Section | None:
        return self._by_name.get(name)

    def section_bytes(self, section: Section) -> bytes:
        if section.type == SHT_NOBITS:
            return b""
        return self._slice(section.offset, section.size, f"section {section.name}")

    def symbols_in(self, section_indexes: set[int]) -> list[Symbol]:
        """The .symtab entries whose st_shndx is in `section_indexes` (SHN_UNDEF for imports).

        Filtering before decoding names matters: a module has thousands of local symbols
        and kabigate needs a few dozen of them.
        """
        symtab = next((s for s in self._sections if s.type == SHT_SYMTAB), None)
        if symtab is None:
            return []
        if not 0 <= symtab.link < len(self._sections):
            raise ElfError(f"{self.what}: symbol table links to missing string table {symtab.link}")
        names = self.section_bytes(self._sections[symtab.link])
        if self.is64:
            rows = [(n, v, s, i, sh) for n, i, _o, sh, v, s in self._table(symtab, self.endian + "IBBHQQ")
                    if sh in section_indexes]
        else:
            rows = [(n, v, s, i, sh) for n, v, s, i, _o, sh in self._table(symtab, self.endian + "IIIBBH")
                    if sh in section_indexes]
        symbols = []
        for name_off, value, size, st_info, shndx in rows:
            if name_off >= len(names) and name_off != 0:
                raise ElfError(f"{self.what}: symbol name offset {name_off} outside string table")
            end = names.find(b"\0", name_off)
            name = names[name_off:end if end >= 0 else len(names)].decode("utf-8", "replace")
            symbols.append(Symbol(name, value, size, st_info >> 4, st_info & 0xF, shndx))
        return symbols

    def string_at(self, section: Section, offset: int) -> str:
        """NUL-terminated string at `offset` inside a section."""
        if not 0 <= offset < section.size or section.type == SHT_NOBITS:
            raise ElfError(f"{self.what}: string offset {offset} outside {section.name or 'string table'}")
        start = section.offset + offset
        end = self.data.find(b"\0", start, section.offset + section.size)
        if end < 0:
            raise ElfError(f"{self.what}: unterminated string in {section.name or 'string table'}")
        return self.data[start:end].decode("utf-8", "replace")

    # -- internals ------------------------------------------------------------

    def _unpack_from(self, fmt: str, offset: int, what: str) -> tuple:
        size = struct.calcsize(fmt)
        if offset < 0 or offset + size > self.size:
            raise ElfError(f"{self.what}: truncated ({what} at offset {offset} beyond end of file)")
        return struct.unpack(fmt, self.data[offset:offset + size])

    def _slice(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"{self.what}: truncated ({what} at offset {offset}, size {size}, "
                           f"file has {self.size} bytes)")
        return self.data[offset:offset + size]

    def _table(self, section: Section, fmt: str) -> list[tuple]:
        entry_size = struct.calcsize(fmt)
        if section.entsize not in (0, entry_size):
            raise ElfError(f"{self.what}: section {section.name} has entry size {section.entsize}, "
                           f"expected {entry_size}")
        raw = self._slice(section.offset, section.size - section.size % entry_size, f"section {section.name}")
        return list(struct.iter_unpack(fmt, raw))

    def _read_section_headers(self, shoff: int, shentsize: int, shnum: int, shstrndx: int) -> list[Section]:
        fmt = self.endian + ("IIQQQQIIQQ" if self.is64 else "IIIIIIIIII")
        if shnum == 0 or shoff == 0:
            raise ElfError(f"{self.what}: ELF file has no section headers")
        if shentsize != struct.calcsize(fmt):
            raise ElfError(f"{self.what}: unexpected section header size {shentsize}")
        table = self._slice(shoff, shnum * shentsize, "section header table")
        raw_headers = list(struct.iter_unpack(fmt, table))
        if shstrndx == SHN_XINDEX:
            shstrndx = raw_headers[0][6]
        if not 0 < shstrndx < shnum:
            raise ElfError(f"{self.what}: section name table index {shstrndx} out of range")
        sh_name_table = raw_headers[shstrndx]
        names_offset, names_size = sh_name_table[4], sh_name_table[5]
        names = self._slice(names_offset, names_size, "section name table")
        sections = []
        for index, header in enumerate(raw_headers):
            name_off, sh_type, flags, addr, offset, size, link, info, _align, entsize = header
            if not 0 <= name_off < max(names_size, 1):
                raise ElfError(f"{self.what}: section {index} name offset out of range")
            end = names.find(b"\0", name_off)
            name = names[name_off:end if end >= 0 else len(names)].decode("utf-8", "replace")
            if sh_type != SHT_NOBITS and (offset + size > self.size):
                raise ElfError(f"{self.what}: truncated (section {name or index} ends at {offset + size}, "
                               f"file has {self.size} bytes)")
            sections.append(Section(index, name, sh_type, flags, offset, size, link, info, entsize, addr))
        return sections


def parse_module(raw, path: str) -> Module:
    compression = compression_of(raw)
    refuse_other_compression(raw, path)
    data = decompress(raw, path) if compression else raw
    size, signature = split_signature(data)
    elf = ElfFile(data, path, size)
    if elf.type != ET_REL:
        raise InputError(f"{path}: not a kernel module (ELF type {elf.type}, modules are relocatable objects)")
    modinfo_section = elf.section(".modinfo")
    if modinfo_section is None or elf.section(THIS_MODULE) is None:
        raise InputError(f"{path}: not a kernel module (no .modinfo or {THIS_MODULE} section)")
    return Module(
        path=path,
        machine=elf.machine_name,
        modinfo=_parse_modinfo(elf.section_bytes(modinfo_section)),
        versions=_read_versions(elf),
        imports=_read_imports(elf),
        exports=_read_exports(elf),
        signature=signature,
        compression=compression,
        layout=_read_layout(elf),
    )


def _read_layout(elf: ElfFile) -> ElfLayout:
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
        common_symbols=tuple(sorted({sym.name for sym in elf.symbols_in({SHN_COMMON})
                                     if not sym.name.startswith("__gnu_lto")})),
        ctors_and_init_array=".ctors" in names and ".init_array" in names,
        arch_sections=tuple(name for name in (".plt", ".init.plt", ".stubs") if name in names),
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


def _read_imports(elf: ElfFile) -> tuple[Import, ...]:
    return tuple(Import(symbol.name, symbol.bind == STB_WEAK)
                 for symbol in elf.symbols_in({SHN_UNDEF})
                 if symbol.name and symbol.bind in (STB_GLOBAL, STB_WEAK))




def _read_exports(elf: ElfFile) -> tuple[Export, ...]:
    """Exports from the `__ksymtab_<sym>` symbols, with the CRC from `__crc_<sym>` and the
    namespace from `__kstrtabns_<sym>` (include/linux/export.h lays them out that way)."""
    sections = elf.sections
    tables = {s.index for s in sections
              if s.name in EXPORT_TABLE_SECTIONS or s.name.startswith(EXPORT_TABLE_SECTIONS[1::2])}
    if not tables:
        return ()
    by_name = {symbol.name: symbol for symbol in elf.symbols_in(tables | {SHN_ABS})}
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
    data = elf.section_bytes(elf.sections[symbol.shndx])
    if symbol.value + 4 > len(data):
        raise InputError(f"{elf.what}: CRC of {symbol.name} lies outside its section")
    (crc,) = struct.unpack_from(elf.endian + "I", data, symbol.value)
    return crc


def _symbol_string(elf: ElfFile, symbol) -> str:
    if symbol is None or symbol.shndx == SHN_UNDEF or symbol.shndx >= min(len(elf.sections), SHN_LORESERVE):
        return ""
    return elf.string_at(elf.sections[symbol.shndx], symbol.value)
