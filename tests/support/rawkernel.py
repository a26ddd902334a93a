"""Raw kernels as arm64's Image and s390's vmlinux.bin lay them out (formats/rawimage.py reads them):
a header, the banner and vermagic, then __ksymtab, __ksymtab_gpl, __kcrctab, __kcrctab_gpl and
__ksymtab_strings back to back, each table sorted by name, as include/asm-generic/vmlinux.lds.h
places them. Used by the unit tests and as fuzz seeds."""

from __future__ import annotations

import struct

ARM64_HEADER = b"MZ" + bytes(0x36) + b"ARM\x64" + bytes(4)  # Documentation/arm64/booting.rst
# name -> namespace; around the kfree anchor, four entries each side (rawimage._CHECKED)
EXPORTS = {b"aa": b"", b"ab": b"", b"ac": b"", b"ad": b"", b"ke": b"", b"kfree": b"", b"kg": b"",
           b"kh": b"", b"ki": b"", b"kj": b"USB_STORAGE"}
GPL_EXPORTS = {b"ga": b"", b"gb": b"CXL"}


def raw_kernel(header: bytes, endian: str, prel32: bool, base: int, modversions: bool = True) -> bytes:
    """PREL32 entries (three s32 offsets from their own address) or pointers to link addresses
    from `base`; CRC i is 0x1000 + i, none without CONFIG_MODVERSIONS."""
    head = header + b"Linux version 6.1.0-fuzz (x)\0" + b"6.1.0-fuzz SMP mod_unload modversions \0"
    head += bytes(-len(head) % 8)
    size = 12 if prel32 else 24
    entries = [*EXPORTS.items(), *GPL_EXPORTS.items()]
    strings_at = len(head) + (size + (4 if modversions else 0)) * len(entries)
    strings, targets = b"\0", []
    for name, namespace in entries:
        name_at = strings_at + len(strings)
        strings += name + b"\0"
        namespace_at = strings_at + len(strings) if namespace else None
        strings += namespace + b"\0" if namespace else b""
        targets.append((name_at, namespace_at))
    table = b""
    for index, (name_at, namespace_at) in enumerate(targets):
        entry = len(head) + size * index
        if prel32:
            table += struct.pack(endian + "iii", 0, name_at - entry - 4,
                                 namespace_at - entry - 8 if namespace_at else 0)
        else:
            table += struct.pack(endian + "QQQ", base, base + name_at, base + namespace_at if namespace_at else 0)
    crcs = b"".join(struct.pack(endian + "I", 0x1000 + i) for i in range(len(entries))) if modversions else b""
    return head + table + crcs + strings
