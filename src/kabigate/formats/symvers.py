"""Module.symvers / symvers.gz / RHEL Module.kabi_<arch> / SUSE symvers-<flavor>.

One export per line, tab separated (scripts/mod/modpost.c, write_dump()):
    5.6+      0xCRC  symbol  module  export_type  namespace
    5.4-5.5   0xCRC  symbol  namespace  module  export_type
    pre-5.4   0xCRC  symbol  module  export_type
    pre-2.6.x 0xCRC  symbol  module
"""

from __future__ import annotations

from kabigate.errors import InputError
from kabigate.formats.compression import decoded_lines, lazy_lines, text_bytes
from kabigate.formats.module import c_reader
from kabigate.model import Export

_modfast = c_reader()
EXPORT_FIELDS = ("name", "crc", "owner", "export_type", "namespace")

EXPORT_TYPES = frozenset({"EXPORT_SYMBOL", "EXPORT_SYMBOL_GPL", "EXPORT_SYMBOL_GPL_FUTURE",
                          "EXPORT_UNUSED_SYMBOL", "EXPORT_UNUSED_SYMBOL_GPL"})


def looks_like_symvers(text: str) -> bool:
    """Whether the first non-blank line is a symvers line (read lazily: the text may be large)."""
    line = next((line for line in lazy_lines(text) if line.strip()), "")
    return line.startswith("0x") and len(line.split()) >= 3


def parse_symvers(data: bytes, what: str) -> dict[str, Export]:
    """Exports by name; compressed files are decompressed, within the text caps. The lines modpost
    writes today are read in C when it was built (formats/_modfast.c symvers(): 0.1 s of Python
    for a kernel's ~25,000, a third of a one-module `check`); anything else, here."""
    raw = text_bytes(data, what)
    if _modfast is not None and (columns := _modfast.symvers(raw)) is not None:
        return dict(zip(columns[0], _modfast.instances(Export, EXPORT_FIELDS, columns)))
    exports: dict[str, Export] = {}
    for number, line in enumerate(decoded_lines(raw), 1):
        if not line.strip():
            continue
        # Tabs in files modpost writes; hand-edited RHEL Module.kabi files also use spaces.
        fields = line.split()
        if len(fields) < 3 or not fields[0].startswith("0x"):
            raise InputError(f"{what}:{number}: not a symvers line: {line[:80]!r}")
        try:
            crc = int(fields[0], 16)
        except ValueError:
            raise InputError(f"{what}:{number}: bad CRC {fields[0]!r}") from None
        if crc > 0xFFFFFFFF:
            raise InputError(f"{what}:{number}: CRC {fields[0]} is wider than 32 bits")
        name = fields[1]
        if not name:
            raise InputError(f"{what}:{number}: empty symbol name")
        if len(fields) >= 5 and fields[4] in EXPORT_TYPES:
            namespace, owner, export_type = fields[2], fields[3], fields[4]
        else:
            owner = fields[2]
            export_type = fields[3] if len(fields) > 3 else "EXPORT_SYMBOL"
            namespace = fields[4] if len(fields) > 4 else ""
        if export_type not in EXPORT_TYPES:
            raise InputError(f"{what}:{number}: unknown export type {export_type!r}")
        exports[name] = Export(name, crc, owner, export_type, namespace)
    return exports


def format_symvers(exports: list[Export]) -> str:
    """Module.symvers text in the 5-field format modpost writes today."""
    return "".join(f"0x{e.crc or 0:08x}\t{e.name}\t{e.owner}\t{e.export_type}\t{e.namespace}\n" for e in exports)
