"""kABI stablelists: the exported symbols a distribution promises to keep stable.

Formats read:
- RHEL kabi_stablelist_<arch> / kabi_whitelist_<arch>: "[rhel9_x86_64_stablelist]" then TAB-indented symbols;
- Android GKI abi_gki_*: "[abi_symbol_list]" then indented symbols, "#" comments;
- RHEL Module.kabi_<arch> (and any symvers file): symvers lines, which also pin each CRC;
- a plain list, one symbol a line, "#" comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kabigate.errors import InputError
from kabigate.formats.compression import text_lines
from kabigate.formats.symvers import looks_like_symvers, parse_symvers


@dataclass(frozen=True)
class Stablelist:
    source: str
    format: str  # "rhel", "android-gki", "module-kabi", "plain"
    symbols: frozenset[str]
    crcs: dict[str, int | None] = field(default_factory=dict)  # only for Module.kabi-style lists (None: no CRC)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.symbols


def parse_stablelist(data: bytes, what: str) -> Stablelist:
    lines = text_lines(data, what)
    if looks_like_symvers(next((line for line in lines if line.strip()), "")):
        exports = parse_symvers("\n".join(lines).encode(), what)
        return Stablelist(what, "module-kabi", frozenset(exports), {n: e.crc for n, e in exports.items()})
    symbols = set()
    list_format = "plain"
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            list_format = "android-gki" if line == "[abi_symbol_list]" else "rhel"
            continue
        if any(c.isspace() for c in line) or not _is_symbol_name(line):
            raise InputError(f"{what}:{number}: not a symbol name: {raw.strip()[:80]!r}")
        symbols.add(line)
    if not symbols:
        raise InputError(f"{what}: no symbols found (not a stablelist?)")
    return Stablelist(what, list_format, frozenset(symbols))


def _is_symbol_name(text: str) -> bool:
    # C identifiers, plus the '.' that some arches (ppc64 ELFv1 ".foo", gcc ".cold") use.
    return all(c.isalnum() or c in "_.$" for c in text)
