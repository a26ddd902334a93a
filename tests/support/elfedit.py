"""Real modules edited to fail one of the loader's pre-resolution checks each
(docs/loader-checks.md): x86_64 little-endian ELF64 edits of section headers and symbols."""

from __future__ import annotations

import struct

from kabigate.formats.elf import SHT_SYMTAB, ElfFile
from kabigate.formats.module import SHF_ALLOC, SHF_WRITE

SHN_COMMON = 0xFFF2


def _section_header(elf: ElfFile, index: int) -> int:
    (shoff,) = struct.unpack_from("<Q", elf.data, 0x28)
    return shoff + index * 64


def with_flags(data: bytes, section: str, add: int = 0, remove: int = 0) -> bytes:
    out = bytearray(data)
    elf = ElfFile(data)
    at = _section_header(elf, elf.section(section).index) + 8
    (flags,) = struct.unpack_from("<Q", out, at)
    struct.pack_into("<Q", out, at, (flags | add) & ~remove)
    return bytes(out)


def renamed(data: bytes, section: str, to: str) -> bytes:
    """`section` renamed `to` (an existing section's name): two sections of that name."""
    out = bytearray(data)
    elf = ElfFile(data)
    (name,) = struct.unpack_from("<I", out, _section_header(elf, elf.section(to).index))
    struct.pack_into("<I", out, _section_header(elf, elf.section(section).index), name)
    return bytes(out)


def with_elf_abi(data: bytes, level: int) -> bytes:
    """ppc64's ELF ABI level (e_flags & 3: 1 ELFv1, 2 ELFv2) set to `level`."""
    out = bytearray(data)
    (flags,) = struct.unpack_from("<I", out, 0x30)
    struct.pack_into("<I", out, 0x30, (flags & ~3) | level)
    return bytes(out)


def stripped(data: bytes) -> bytes:
    """The symbol table turned into plain data: no SHT_SYMTAB left."""
    out = bytearray(data)
    elf = ElfFile(data)
    symtab = next(s for s in elf.sections if s.type == SHT_SYMTAB)
    struct.pack_into("<I", out, _section_header(elf, symtab.index) + 4, 1)  # SHT_PROGBITS
    return bytes(out)


def with_common_symbol(data: bytes) -> bytes:
    """The first data object of the symbol table made SHN_COMMON, as without -fno-common."""
    out = bytearray(data)
    elf = ElfFile(data)
    symtab = next(s for s in elf.sections if s.type == SHT_SYMTAB)
    for offset in range(symtab.offset + 24, symtab.offset + symtab.size, 24):
        info, shndx = out[offset + 4], struct.unpack_from("<H", out, offset + 6)[0]
        if info & 0xF == 1 and 0 < shndx < len(elf.sections) and elf.sections[shndx].name.startswith(".bss"):
            struct.pack_into("<H", out, offset + 6, SHN_COMMON)
            return bytes(out)
    raise AssertionError("no .bss object to make common")


def with_crc(data: bytes, symbol: str, crc: int) -> bytes:
    """`symbol`'s record in __versions (64-byte modversion_info: u64 crc, name, in the module's byte
    order) given `crc`."""
    out = bytearray(data)
    elf = ElfFile(data)
    section = elf.section("__versions")
    for offset in range(section.offset, section.offset + section.size, 64):
        if out[offset + 8:offset + 64].split(b"\0", 1)[0] == symbol.encode():
            struct.pack_into(elf.endian + "Q", out, offset, crc)
            return bytes(out)
    raise AssertionError(f"no __versions record for {symbol}")


EDITS = {
    "write-exec": lambda d: with_flags(d, ".text", add=SHF_WRITE),
    "two-modinfo": lambda d: renamed(d, ".comment", ".modinfo"),
    "two-this-module": lambda d: renamed(d, ".comment", ".gnu.linkonce.this_module"),
    "this-module-not-alloc": lambda d: with_flags(d, ".gnu.linkonce.this_module", remove=SHF_ALLOC),
    "stripped": stripped,
    # two defects, to see which check each series makes first
    "stripped-this-module-not-alloc": lambda d: stripped(with_flags(d, ".gnu.linkonce.this_module",
                                                                    remove=SHF_ALLOC)),
    "common": with_common_symbol,
}
