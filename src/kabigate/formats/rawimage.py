"""The ABI a raw kernel image exports: arm64's `Image` (arch/arm64/kernel/head.S) and s390's
decompressed vmlinux.bin (arch/s390/boot), which are the kernel's memory from its first byte on as
`objcopy -O binary` copies it, with no ELF header and no symbols.

The export tables are found by the shape include/asm-generic/vmlinux.lds.h gives them in RO_DATA:
`__ksymtab` then `__ksymtab_gpl` (struct kernel_symbol entries, each table sorted by name by
KEEP(*(SORT(___ksymtab+*))), the order find_symbol()'s bsearch relies on), then `__kcrctab` and
`__kcrctab_gpl` (one u32 CRC per entry, in the same order; absent without CONFIG_MODVERSIONS), then
`__ksymtab_strings` (a merged string section: a name may be the tail of another). The entry naming
an anchor every kernel exports (system_wq, kmalloc_caches, kfree) is found in a bounded window
before the anchor's string; the tables are the run of well-formed entries around it, split where
the name order restarts.

Entries are three s32 offsets from their own address with CONFIG_HAVE_ARCH_PREL32_RELOCATIONS
(arm64; offset_to_ptr()), else three pointers to link addresses (s390x; the image's first byte is
linked at a page-aligned address, recovered from the anchor entry).
"""

from __future__ import annotations

import re
import struct
import sys
from array import array

from kabigate.errors import InputError
from kabigate.model import Export

# Documentation/arm64/booting.rst: the header's magic "ARM\x64" at offset 0x38.
ARM64_MAGIC_OFFSET = 0x38
ARM64_MAGIC = b"ARM\x64"
# arch/s390/boot/head.S: `.org EP_OFFSET; .ascii EP_STRING` (0x10008, "S390EP"), which kexec checks.
S390_EP_OFFSET = 0x10008
S390_EP = b"S390EP"

# Exported by every kernel since 2.6 (kernel/workqueue.c, mm/slab_common.c) and the tail of no
# other export, so each appears whole in __ksymtab_strings.
_ANCHORS = (b"system_wq", b"kmalloc_caches", b"kfree")
_MAX_ANCHORS = 8  # occurrences tried (an anchor's string also sits in BTF's and other string tables)
# The tables precede the strings: 28 bytes per export at most (24 + a CRC) plus the strings before
# the anchor's; Debian's 6.1 arm64 has 11k exports in 350 KiB.
_WINDOW = 4 << 20
_MAX_EXPORTS = 200_000
_PAGE = 4096
_CHECKED = 4  # well-formed, name-sorted entries each side of the anchor's
_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{0,254}\0")
_NAMESPACE = re.compile(rb"[A-Za-z0-9_]{0,254}\0")
_BTF_HEADERS = (b"\x9f\xeb\x01\x00\x18\x00\x00\x00", b"\xeb\x9f\x01\x00\x00\x00\x00\x18")


def raw_image_machine(container: bytes, image: bytes) -> str | None:
    """`uname -m` of a raw image, from its header (arm64) or its boot loader's (s390)."""
    if image[ARM64_MAGIC_OFFSET:ARM64_MAGIC_OFFSET + 4] == ARM64_MAGIC:
        return "aarch64"
    if container[S390_EP_OFFSET:S390_EP_OFFSET + 6] == S390_EP:
        return "s390x"
    return None


class _Layout:
    """How entries are stored: PREL32 offsets (12 bytes) or pointers (24 bytes) from `base`."""

    def __init__(self, image: bytes, endian: str, prel32: bool, base: int = 0):
        self.image, self.endian, self.prel32, self.base = image, endian, prel32, base
        self.size = 12 if prel32 else 24
        self.fields = struct.Struct(endian + ("iii" if prel32 else "QQQ"))

    def targets(self, entry: int) -> tuple[int, int | None]:
        """File offsets of an entry's name and namespace (None: no namespace)."""
        _value, name, namespace = self.fields.unpack_from(self.image, entry)
        if self.prel32:
            return entry + 4 + name, (entry + 8 + namespace if namespace else None)
        return name - self.base, (namespace - self.base if namespace else None)

    def entry_ok(self, entry: int) -> bool:
        if entry < 0 or entry + self.size > len(self.image):
            return False
        name, namespace = self.targets(entry)
        return (entry < name < len(self.image) and _NAME.match(self.image, name) is not None
                and (namespace is None or (entry < namespace < len(self.image)
                                           and _NAMESPACE.match(self.image, namespace) is not None)))


def raw_image_exports(image: bytes, machine: str, what: str) -> dict[str, Export]:
    """Every export of a raw image, its CRC, GPL-only-ness and namespace (owner "vmlinux")."""
    endian = ">" if machine == "s390x" else "<"
    anchors = [m.start() + 1 for name in _ANCHORS
               for m in re.finditer(re.escape(b"\0" + name + b"\0"), image)][:_MAX_ANCHORS]
    for anchor in anchors:
        for prel32 in (True, False):
            layout = _anchor_entry(image, endian, prel32, anchor)
            if layout is not None:
                return _exports(layout[0], layout[1], what)
    raise InputError(f"{what}: no export table (a __ksymtab entry naming system_wq, kmalloc_caches or kfree) "
                     f"in the {machine} image")


def _anchor_entry(image: bytes, endian: str, prel32: bool, anchor: int) -> tuple[_Layout, int] | None:
    """The layout and offset of the entry whose name is the anchor string."""
    low = max(0, anchor - _WINDOW) & ~7
    words = array("i" if prel32 else "q")
    words.frombytes(image[low:anchor - anchor % 8])
    if (endian == "<") != (sys.byteorder == "little"):
        words.byteswap()
    if prel32:  # the name field at low + 4i holds anchor - (low + 4i)
        want = anchor - low
        for index, value in enumerate(words):
            if value + 4 * index == want:
                entry = low + 4 * index - 4
                layout = _Layout(image, endian, True)
                if _plausible(layout, entry):
                    return layout, entry
        return None
    for index, value in enumerate(words):  # the name field at low + 8i holds base + anchor
        base = value - anchor
        if base >= 0 and base % _PAGE == 0:
            entry = low + 8 * index - 8
            layout = _Layout(image, endian, False, base)
            if _plausible(layout, entry):
                return layout, entry
    return None


def _plausible(layout: _Layout, entry: int) -> bool:
    """Whether the entries around `entry` are well-formed and name-sorted (a wrong base or a stray
    match points into the middle of strings, breaking the order)."""
    around = range(entry - _CHECKED * layout.size, entry + (_CHECKED + 1) * layout.size, layout.size)
    if not all(layout.entry_ok(e) for e in around):
        return False
    names = [layout.image[layout.targets(e)[0]:layout.image.find(b"\0", layout.targets(e)[0])] for e in around]
    return sum(names[i] <= names[i - 1] for i in range(1, len(names))) <= 1


def _exports(layout: _Layout, anchor_entry: int, what: str) -> dict[str, Export]:
    image, size = layout.image, layout.size
    first = anchor_entry
    while layout.entry_ok(first - size) and anchor_entry - first < _MAX_EXPORTS * size:
        first -= size
    end = anchor_entry + size
    while layout.entry_ok(end) and end - first < _MAX_EXPORTS * size:
        end += size
    entries = range(first, end, size)
    targets = [layout.targets(entry) for entry in entries]
    names = [_cstring(image, name, what) for name, _namespace in targets]
    restarts = [index for index in range(1, len(names)) if names[index] <= names[index - 1]]
    if len(restarts) > 1:
        raise InputError(f"{what}: the export table around its anchor is not two name-sorted runs "
                         f"(__ksymtab, __ksymtab_gpl): {len(restarts)} restarts")
    gpl_from = restarts[0] if restarts else len(names)
    strings = min(t for pair in targets for t in pair if t is not None)
    crcs: list[int] | None = None
    if strings >= end + 4 * len(names):  # __kcrctab and __kcrctab_gpl lie between
        raw = image[end:end + 4 * len(names)]
        crcs = [crc for (crc,) in struct.iter_unpack(layout.endian + "I", raw)]
    exports: dict[str, Export] = {}
    for index, (name, (_name_at, namespace_at)) in enumerate(zip(names, targets)):
        namespace = _cstring(image, namespace_at, what) if namespace_at is not None else b""
        exports[name.decode("ascii", "replace")] = Export(
            name.decode("ascii", "replace"), crcs[index] if crcs is not None else None, "vmlinux",
            "EXPORT_SYMBOL" if index < gpl_from else "EXPORT_SYMBOL_GPL", namespace.decode("ascii", "replace"))
    return exports


def _cstring(image: bytes, at: int, what: str) -> bytes:
    end = image.find(b"\0", at, at + 1024)
    if end < 0:
        raise InputError(f"{what}: export table string at {at:#x} has no end within 1 KiB")
    return image[at:end]


def raw_image_btf(image: bytes) -> bytes | None:
    """The `.BTF` blob (CONFIG_DEBUG_INFO_BTF), found by its header: magic 0xeb9f, version 1,
    hdr_len 24 (include/uapi/linux/btf.h); its length is the header's."""
    for header in _BTF_HEADERS:
        start = image.find(header)
        if start >= 0 and start + 24 <= len(image):
            endian = "<" if header[0] == 0x9F else ">"
            type_off, type_len, str_off, str_len = struct.unpack_from(endian + "IIII", image, start + 8)
            end = start + 24 + max(type_off + type_len, str_off + str_len)
            return image[start:end] if end <= len(image) else None
    return None
