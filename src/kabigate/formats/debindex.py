"""Debian `Packages` indexes (plain, .gz, .xz): the stanzas of a repository's binary packages."""

from __future__ import annotations

from kabigate.errors import InputError
from kabigate.formats.compression import compression_of, decompress

MAX_INDEX = 128 << 20  # bookworm's whole main/binary-amd64 index is ~100 MiB uncompressed
MAX_STANZAS = 500_000
MAX_FIELD = 1 << 20


def parse_packages_index(data: bytes, what: str) -> list[dict[str, str]]:
    """Each stanza's fields (continuation lines joined with newlines); stanzas without a Package
    field are refused, as apt refuses them."""
    if compression_of(data):
        data = decompress(data, what, MAX_INDEX)
    text = bytes(data).decode("utf-8", "replace")
    stanzas: list[dict[str, str]] = []
    position = 0
    while position < len(text):  # a stanza at a time: no list of every stanza's text at once
        end = text.find("\n\n", position)
        end = len(text) if end < 0 else end
        block, position = text[position:end], end + 2
        if not block.strip():
            continue
        if len(stanzas) == MAX_STANZAS:
            raise InputError(f"{what}: more than {MAX_STANZAS} packages, not a kernel repository index")
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
            elif line.strip():
                raise InputError(f"{what}: not a Packages index: line {line[:80]!r} has no field name")
            if key is not None and len(fields[key]) > MAX_FIELD:
                raise InputError(f"{what}: field {key[:40]} larger than {MAX_FIELD >> 10} KiB")
        if "Package" not in fields:
            raise InputError(f"{what}: a stanza without a Package field")
        stanzas.append(fields)
    return stanzas
