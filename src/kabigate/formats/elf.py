"""A small, bounds-checked reader of relocatable ELF files (kernel modules).

Written here rather than using pyelftools: reading .modinfo, __versions and the undefined
symbols of 500 Debian modules took pyelftools 10x longer than this reader, and kabigate only
needs section headers and the symbol table.
Every offset read from the file is checked against the file size: modules are hostile input.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

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


class ElfError(InputError):
    """The bytes are not a well-formed ELF relocatable object."""


@dataclass(frozen=True, slots=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int
    addr: int = 0  # sh_addr: where a linked image (vmlinux) loads the section


@dataclass(frozen=True, slots=True)
class Symbol:
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
