"""A small, bounds-checked reader of relocatable ELF files (kernel modules).

Written here rather than using pyelftools: reading .modinfo, __versions and the undefined
symbols of 500 Debian modules took pyelftools 10x longer than this reader, and kabigate only
needs section headers and the symbol table.
Every offset read from the file is checked against the file size: modules are hostile input.
"""

from __future__ import annotations

import functools
import mmap
import re
import struct
from typing import NamedTuple

from kabigate.errors import InputError

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_REL = 1

SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_NOBITS = 8

SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2
SHN_XINDEX = 0xFFFF

STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2

# e_machine values (include/uapi/linux/elf-em.h) and the name `uname -m` gives.
MACHINE_NAMES = {
    3: "i386",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    22: "s390x",
    40: "arm",
    62: "x86_64",
    183: "aarch64",
    243: "riscv64",
    258: "loongarch64",
}


def machine_name(machine: int, little_endian: bool) -> str:
    """`uname -m` of an e_machine (ppc64 little-endian is ppc64le)."""
    name = MACHINE_NAMES.get(machine, f"machine-{machine}")
    return "ppc64le" if name == "ppc64" and little_endian else name


class ElfError(InputError):
    """The bytes are not a well-formed ELF relocatable object."""


class Section(NamedTuple):  # a tuple: made for every section of every module read, 4x cheaper than a dataclass
    index: int  # type: ignore[assignment]  # shadows tuple.index(), which no caller uses on a Section
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int
    addr: int = 0  # sh_addr: where a linked image (vmlinux) loads the section


_SYM64, _SYM32 = struct.Struct("IBBHQQ"), struct.Struct("IIIBBH")
_SYM64_LE, _SYM64_BE = struct.Struct("<IBBHQQ").unpack_from, struct.Struct(">IBBHQQ").unpack_from
_SYM32_LE, _SYM32_BE = struct.Struct("<IIIBBH").unpack_from, struct.Struct(">IIIBBH").unpack_from


@functools.lru_cache(maxsize=64)
def _byte_class_of(values: frozenset[int]) -> re.Pattern[bytes]:
    return re.compile(b"[" + b"".join(re.escape(bytes([value])) for value in sorted(values)) + b"]")


def _byte_class(values: set[int]) -> re.Pattern[bytes]:
    """A pattern matching any one of `values` (bytes), compiled once per set."""
    return _byte_class_of(frozenset(values))


class Symbol(NamedTuple):
    name: str
    value: int
    size: int
    bind: int
    type: int
    shndx: int


class ElfFile:
    """Header, section table and lazily read symbol table of one ELF image in memory."""

    def __init__(self, data: bytes | mmap.mmap, what: str = "file", size: int | None = None):
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
        return machine_name(self.machine, self.endian == "<")

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

        Filtering before decoding matters: a module has thousands of local symbols and kabigate
        needs a few dozen of them. The low bytes of every entry's st_shndx are one strided slice,
        searched in C for the wanted values; only those entries are unpacked and checked whole.
        """
        symtab = next((s for s in self._sections if s.type == SHT_SYMTAB), None)
        if symtab is None:
            return []
        if not 0 <= symtab.link < len(self._sections):
            raise ElfError(f"{self.what}: symbol table links to missing string table {symtab.link}")
        names = self.section_bytes(self._sections[symtab.link])
        entry = _SYM64 if self.is64 else _SYM32
        raw = self._table_bytes(symtab, entry.size)
        # st_shndx is at 6 (Elf64_Sym) or 14 (Elf32_Sym); its low byte comes first when little-endian.
        low_byte = (6 if self.is64 else 14) + (self.endian == ">")
        pattern = _byte_class({index & 0xFF for index in section_indexes})
        unpack = (_SYM64_LE if self.endian == "<" else _SYM64_BE) if self.is64 else \
            (_SYM32_LE if self.endian == "<" else _SYM32_BE)
        symbols = []
        wanted, entry_size, is64, names_size = section_indexes, entry.size, self.is64, len(names)
        for match in pattern.finditer(raw[low_byte::entry_size]):
            if is64:
                name_off, st_info, _other, shndx, value, size = unpack(raw, match.start() * entry_size)
            else:
                name_off, value, size, st_info, _other, shndx = unpack(raw, match.start() * entry_size)
            if shndx not in wanted:
                continue
            if name_off >= names_size and name_off != 0:
                raise ElfError(f"{self.what}: symbol name offset {name_off} outside string table")
            end = names.find(b"\0", name_off)
            name = names[name_off:end if end >= 0 else names_size].decode("utf-8", "replace")
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
        return struct.unpack(fmt, self.data[offset:offset + size])  # data may be any object sliced like bytes

    def _slice(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"{self.what}: truncated ({what} at offset {offset}, size {size}, "
                           f"file has {self.size} bytes)")
        return self.data[offset:offset + size]

    def _table_bytes(self, section: Section, entry_size: int) -> bytes:
        """A table section's whole entries (a trailing partial entry is ignored)."""
        if section.entsize not in (0, entry_size):
            raise ElfError(f"{self.what}: section {section.name} has entry size {section.entsize}, "
                           f"expected {entry_size}")
        return self._slice(section.offset, section.size - section.size % entry_size, f"section {section.name}")

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
