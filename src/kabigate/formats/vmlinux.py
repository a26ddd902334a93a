"""The ABI a linked kernel image (vmlinux, or the one inside a vmlinuz) exports, read from the image
alone: the `__ksymtab`/`__ksymtab_gpl` tables and their parallel `__kcrctab`/`__kcrctab_gpl` CRCs,
as the module loader reads them (find_exported_symbol_in_section() and symversion() in
kernel/module/main.c; struct kernel_symbol in include/linux/export.h).

With CONFIG_HAVE_ARCH_PREL32_RELOCATIONS (x86_64, arm64, ppc64, ...) an entry is three s32 offsets
relative to their own address (value, name, namespace: offset_to_ptr()); otherwise three pointers.
A 5.19+ `__kcrctab` entry is the CRC itself (u32), at the index of its symbol's entry.
"""

from __future__ import annotations

import re
import struct

from kabigate.errors import InputError
from kabigate.formats.bzimage import ELF_MAGIC
from kabigate.formats.elf import ElfFile, Section
from kabigate.formats.rawimage import raw_image_btf, raw_image_exports, raw_image_machine
from kabigate.model import Export

SHF_ALLOC = 0x2
_BANNER = re.compile(rb"Linux version (\S+) \(")
_VERMAGIC_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")


def image_abi(container: bytes, image: bytes, what: str) -> tuple[str, dict[str, Export], bytes | None]:
    """`uname -m`, exports and `.BTF` blob (None without CONFIG_DEBUG_INFO_BTF) of the kernel
    `image` decompressed from `container`: an ELF vmlinux by its sections, a raw image by its tables."""
    if image[:4] == ELF_MAGIC:
        elf = ElfFile(image, what)
        section = elf.section(".BTF")
        return elf.machine_name, image_exports(elf), elf.section_bytes(section) if section is not None else None
    machine = raw_image_machine(container, image)
    if machine is None:
        raise InputError(f"{what}: decompresses to neither an ELF vmlinux nor an arm64 or s390 kernel")
    return machine, raw_image_exports(image, machine, what), raw_image_btf(image)


def image_exports(elf: ElfFile) -> dict[str, Export]:
    """Every export of the image, its CRC (None without CONFIG_MODVERSIONS), GPL-only-ness and
    namespace; owner "vmlinux" as Module.symvers names it."""
    exports: dict[str, Export] = {}
    for table, crcs, export_type in (("__ksymtab", "__kcrctab", "EXPORT_SYMBOL"),
                                     ("__ksymtab_gpl", "__kcrctab_gpl", "EXPORT_SYMBOL_GPL")):
        section = elf.section(table)
        if section is None:
            continue
        crc_section = elf.section(crcs)
        crc_values = _crcs(elf, crc_section) if crc_section is not None else None
        for index, (name, namespace) in enumerate(_symbols(elf, section, crc_values)):
            crc = crc_values[index] if crc_values is not None else None
            exports[name] = Export(name, crc, "vmlinux", export_type, namespace)
    if not exports and elf.section("__ksymtab_strings") is None:
        raise InputError(f"{elf.what}: no export tables (__ksymtab): not a linked kernel image")
    return exports


def image_release(data: bytes) -> str | None:
    """UTS_RELEASE from the kernel's banner, linux_banner in init/version.c."""
    match = _BANNER.search(data)
    return match.group(1).decode("ascii", "replace") if match else None


def image_vermagic(data: bytes, release: str) -> str | None:
    """VERMAGIC_STRING, the string load_module() compares modules' vermagic= with (the kernel keeps
    it as `vermagic` in kernel/module/main.c): the release, a space, then flag words only."""
    needle = release.encode() + b" "
    start = data.find(needle)
    while start >= 0:
        end = data.find(b"\0", start, start + 512)
        if end > 0 and data[start - 1:start] == b"\0":
            text = data[start:end].decode("ascii", "replace")
            words = text[len(release) + 1:].split()
            if words and all(_VERMAGIC_TOKEN.fullmatch(w) for w in words) and "mod_unload" in words:
                return text
        start = data.find(needle, start + 1)
    return None


def _crcs(elf: ElfFile, section: Section) -> list[int]:
    raw = elf.section_bytes(section)
    return [crc for (crc,) in struct.iter_unpack(elf.endian + "I", raw[:len(raw) - len(raw) % 4])]


def _symbols(elf: ElfFile, section: Section, crcs: list[int] | None) -> list[tuple[str, str]]:
    raw = elf.section_bytes(section)
    pointer = 8 if elf.is64 else 4
    # The CRC table has one u32 per entry, which tells the entry size; without it, PREL32 entries
    # are the 64-bit kernels' (every 64-bit arch the distributions ship selects it).
    if crcs:
        entry_size = len(raw) // len(crcs)
        if entry_size * len(crcs) != len(raw) or entry_size not in (12, 3 * pointer):
            raise InputError(f"{elf.what}: {section.name} ({len(raw)} bytes) does not match "
                             f"its {len(crcs)} CRCs")
    else:
        entry_size = 12 if elf.is64 else 3 * pointer
    if len(raw) % entry_size:
        raise InputError(f"{elf.what}: {section.name} is not a whole number of {entry_size}-byte entries")
    symbols = []
    if entry_size == 12:
        for index, (_value, name_off, ns_off) in enumerate(struct.iter_unpack(elf.endian + "iii", raw)):
            address = section.addr + index * 12
            name = _string(elf, address + 4 + name_off)
            namespace = _string(elf, address + 8 + ns_off) if ns_off else ""
            symbols.append((name, namespace))
    else:
        fmt = elf.endian + ("QQQ" if pointer == 8 else "III")
        for _value, name_ptr, ns_ptr in struct.iter_unpack(fmt, raw):
            symbols.append((_string(elf, name_ptr), _string(elf, ns_ptr) if ns_ptr else ""))
    return symbols


def _string(elf: ElfFile, address: int) -> str:
    section = next((s for s in elf.sections
                    if s.flags & SHF_ALLOC and s.addr <= address < s.addr + s.size), None)
    if section is None:
        raise InputError(f"{elf.what}: export table names address {address:#x}, outside the image")
    return elf.string_at(section, address - section.addr)
