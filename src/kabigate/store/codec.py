"""How the store packs what it keeps as blobs: export-id sets, module facts, verdict details,
kernel configs. Pure functions; no SQL here."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sys
import threading
from array import array

import zstandard

from kabigate.errors import InputError
from kabigate.model import ElfLayout, Export, Import, Module, ModuleSignature, PackageOrigin, SymbolVersion

# One (de)compressor per thread: a zstandard context is not thread-safe, and the web app reads the store
# from a pool of threads (shared contexts crashed the process, or failed a read as a damaged blob).
_contexts = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    if not hasattr(_contexts, "compressor"):
        _contexts.compressor = zstandard.ZstdCompressor(level=6)
    return _contexts.compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_contexts, "decompressor"):
        _contexts.decompressor = zstandard.ZstdDecompressor()
    return _contexts.decompressor


# Blobs are the store's own writing, but a store file can come from anywhere: cap what one inflates to.
MAX_BLOB = 64 << 20


class DamagedBlob(InputError):
    """A stored blob does not unpack: the store was damaged inside a row, where SQLite's quick_check
    does not look (it checks pages, not their bytes)."""


def pack(document) -> bytes:
    return _compressor().compress(json.dumps(document, separators=(",", ":")).encode())


def unpack(blob: bytes):
    try:
        return json.loads(_decompress(blob))
    except ValueError as error:  # JSON, UTF-8
        raise DamagedBlob(f"the store is damaged: a stored document does not unpack ({error})") from None


def _decompress(blob: bytes) -> bytes:
    try:
        return _decompressor().decompress(blob, max_output_size=MAX_BLOB)
    except zstandard.ZstdError as error:
        raise DamagedBlob(f"the store is damaged: a stored blob does not unpack ({error})") from None


def pack_ids(ids: list[int]) -> bytes:
    """Sorted ids as compressed little-endian uint32 deltas (neighbouring ids compress to ~1 byte)."""
    deltas = array("I", (b - a for a, b in zip([0, *ids], ids)))
    if sys.byteorder == "big":
        deltas.byteswap()
    return _compressor().compress(deltas.tobytes())


def unpack_ids(blob: bytes) -> list[int]:
    deltas = array("I")
    data = _decompress(blob)
    if len(data) % deltas.itemsize:
        raise DamagedBlob(f"the store is damaged: a stored export set is {len(data)} bytes, not whole ids")
    deltas.frombytes(data)
    if sys.byteorder == "big":
        deltas.byteswap()
    return list(itertools.accumulate(deltas))  # in C: a kernel's 25,000 ids in ~1 ms


def export_digest(export: Export) -> str:
    key = f"{export.name}\0{export.crc}\0{export.export_type}\0{export.namespace}\0{export.owner}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def module_facts(module: Module) -> dict:
    """Everything the loader rules read from a module, path-independent: the same file in two
    packages has the same facts (its exports' owner is its path, set again when it is loaded)."""
    signature = module.signature
    return {
        "machine": module.machine,
        "compression": module.compression,
        "modinfo": [list(pair) for pair in module.modinfo],
        "versions": None if module.versions is None else [[v.name, v.crc] for v in module.versions],
        "imports": [[i.name, i.weak] for i in module.imports],
        "exports": [[e.name, e.crc, e.export_type, e.namespace] for e in module.exports],
        "signature": None if signature is None else [
            signature.id_type, signature.hash_algorithm, signature.signer, signature.key_id,
            signature.signature_size, signature.signed_size, signature.defect],
        # The ELF facts of rules version 2 (docs/loader-checks.md); absent in modules stored before.
        "layout": None if module.layout is None else list(dataclasses.astuple(module.layout)),
    }


def facts_digest(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def module_from_facts(facts: dict, path: str, origin: PackageOrigin | None) -> Module:
    signature = facts["signature"]
    return Module(
        path=path,
        machine=facts["machine"],
        modinfo=tuple((key, value) for key, value in facts["modinfo"]),
        versions=None if facts["versions"] is None else tuple(SymbolVersion(n, c) for n, c in facts["versions"]),
        imports=tuple(Import(name, weak) for name, weak in facts["imports"]),
        exports=tuple(Export(name, crc, path, export_type, namespace)
                      for name, crc, export_type, namespace in facts["exports"]),
        signature=None if signature is None else ModuleSignature(*signature),
        compression=facts["compression"],
        origin=origin,
        layout=_layout(facts.get("layout")),
    )


_LAYOUT_FIELDS = [field.name for field in dataclasses.fields(ElfLayout)]  # the stored list's order (astuple)


def _layout(values: list | None) -> ElfLayout | None:
    if values is None:
        return None
    if len(values) == 11:  # stored before arch_sections and e_flags were read
        values = [*values, None, None]
    *scalars, write_exec, common, ctors, arch, e_flags = values
    return ElfLayout(**dict(zip(_LAYOUT_FIELDS, [*scalars, tuple(write_exec), tuple(common), ctors,
                                                 None if arch is None else tuple(arch), e_flags])))


def pack_config(config: dict[str, str]) -> bytes:
    return _compressor().compress("\n".join(f"{k}={v}" for k, v in sorted(config.items())).encode())


def unpack_config(blob: bytes) -> dict[str, str]:
    try:
        text = _decompress(blob).decode()
    except UnicodeDecodeError as error:
        raise DamagedBlob(f"the store is damaged: a stored kernel config does not unpack ({error})") from None
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
