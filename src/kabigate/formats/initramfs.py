"""What an initramfs image holds that decides which modules boot with it: its module files and
modprobe configuration, each with a digest, as RHEL's weak-modules compares an old and a new
image (compare_initramfs_modules(): `find -name *.ko* ; find etc/modprobe.d usr/lib/modprobe.d`).

An initramfs is cpio "newc" archives one after the other (dracut's early microcode archive
uncompressed, then the main one compressed with gzip, xz or zstd), with zero padding between.
Hostile input: sizes are checked against the data, decompression is capped.
"""

from __future__ import annotations

import hashlib
import re

from kabigate.errors import InputError
from kabigate.formats.compression import compression_of, decompress
from kabigate.model import MODULE_SUFFIXES

_HEADER = 110
_HEX = re.compile(rb"[0-9A-Fa-f]{104}")
_CONF = re.compile(r"^(etc|usr/lib|lib)/modprobe\.d/[^/]+\.conf$")
MAX_ARCHIVES = 64


def module_digests(data, what: str) -> dict[str, str]:
    """Member path -> sha256 of every module and modprobe.d/*.conf file of the image."""
    found: dict[str, str] = {}
    _archives(memoryview(data), what, found, depth=0)
    return found


def _archives(data: memoryview, what: str, found: dict[str, str], depth: int) -> None:
    position = 0
    archives = 0
    while position < len(data):
        if data[position] == 0:  # padding between archives
            position += 1
            continue
        archives += 1
        if archives > MAX_ARCHIVES:
            raise InputError(f"{what}: more than {MAX_ARCHIVES} archives in one initramfs")
        head = bytes(data[position:position + 6])
        if head in (b"070701", b"070702"):
            position = _cpio(data, position, what, found)
            continue
        kind = compression_of(data[position:position + 6])
        if kind is None or depth > 0:
            raise InputError(f"{what}: not a cpio archive or gzip/xz/zstd data at offset {position} "
                             f"(magic {head[:4].hex()})")
        # A compressed archive runs to the end of the image.
        _archives(memoryview(decompress(data[position:], what)), what, found, depth + 1)
        return


def _cpio(data: memoryview, position: int, what: str, found: dict[str, str]) -> int:
    while True:
        raw = bytes(data[position:position + _HEADER])
        if len(raw) < _HEADER or raw[:6] not in (b"070701", b"070702") or not _HEX.fullmatch(raw[6:]):
            raise InputError(f"{what}: bad or truncated cpio header at offset {position}")
        fields = [int(raw[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_end = position + _HEADER + name_size
        if name_size == 0 or name_size > 4096 or name_end > len(data):
            raise InputError(f"{what}: bad cpio name at offset {position}")
        name = bytes(data[position + _HEADER:name_end - 1]).decode("utf-8", "replace").removeprefix("./")
        start = name_end + (-name_end % 4)
        end = start + size
        if end > len(data):
            raise InputError(f"{what}: cpio member {name} is truncated")
        if name == "TRAILER!!!":
            return end + (-end % 4)
        if mode & 0o170000 == 0o100000 and (name.endswith(MODULE_SUFFIXES) or _CONF.match(name)):
            found[name] = hashlib.sha256(data[start:end]).hexdigest()
        position = end + (-end % 4)
