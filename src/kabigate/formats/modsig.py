"""The signature the kernel's sign-file appends to a module.

Layout (include/linux/module_signature.h, scripts/sign-file.c):
    <module ELF> <signature: PKCS#7/CMS DER> <struct module_signature, 12 bytes> "~Module signature appended~\n"
The kernel's mod_verify_sig() / mod_check_sig() read it from the end, as here.
"""

from __future__ import annotations

import struct

from asn1crypto import cms

from kabigate.errors import InputError
from kabigate.model import ModuleSignature

MAGIC = b"~Module signature appended~\n"
# struct module_signature { u8 algo, hash, id_type, signer_len, key_id_len; u8 __pad[3]; __be32 sig_len; }
TRAILER = struct.Struct(">BBBBB3xI")
ID_TYPES = {0: "PGP", 1: "X509", 2: "PKCS#7"}


def split_signature(data: bytes, what: str) -> tuple[bytes, ModuleSignature | None]:
    """Return (module bytes without signature, parsed signature or None if unsigned)."""
    if not data.endswith(MAGIC):
        return data, None
    end = len(data) - len(MAGIC)
    if end < TRAILER.size:
        raise InputError(f"{what}: truncated module signature trailer")
    _algo, _hash, id_type, signer_len, key_id_len, sig_len = TRAILER.unpack_from(data, end - TRAILER.size)
    signed_size = end - TRAILER.size - sig_len - signer_len - key_id_len
    if signed_size <= 0:
        raise InputError(f"{what}: module signature length {sig_len} exceeds the file")
    sig = data[end - TRAILER.size - sig_len:end - TRAILER.size]
    if id_type != 2:
        # mod_check_sig() refuses everything but PKCS#7 since 4.3; report what it is.
        signature = ModuleSignature(ID_TYPES.get(id_type, f"type-{id_type}"), "", "", "", sig_len, signed_size)
    else:
        signature = parse_pkcs7(sig, what, signed_size)
    return data[:signed_size], signature


def parse_pkcs7(der: bytes, what: str, signed_size: int) -> ModuleSignature:
    """Signer, key id and digest of the first SignerInfo, as kmod's modinfo reports them."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise ValueError(f"content type is {info['content_type'].native}, not signedData")
        signer_info = info["content"]["signer_infos"][0]
        sid = signer_info["sid"]
        if sid.name == "issuer_and_serial_number":
            issuer = sid.chosen["issuer"].native
            signer = issuer.get("common_name", "") if isinstance(issuer, dict) else ""
            serial = sid.chosen["serial_number"].native
            key_id = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
        else:
            signer, key_id = "", bytes(sid.chosen.native)
        hash_algorithm = signer_info["digest_algorithm"]["algorithm"].native
    except (ValueError, TypeError, KeyError, IndexError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{what}: corrupt module signature ({reason})") from None
    return ModuleSignature("PKCS#7", hash_algorithm, signer, ":".join(f"{b:02X}" for b in key_id),
                           len(der), signed_size)
