"""The signature the kernel's sign-file appends to a module.

Layout (include/linux/module_signature.h, scripts/sign-file.c):
    <module ELF> <signature: PKCS#7/CMS DER> <struct module_signature, 12 bytes> "~Module signature appended~\\n"
The kernel's module_sig_check() / mod_check_sig() read it from the end, as here. A malformed
signature is not an input error: it is a module the kernel refuses (EBADMSG), so it is
reported as the signature's `defect`.
"""

from __future__ import annotations

import struct

from asn1crypto import cms

from kabigate.model import ModuleSignature

MAGIC = b"~Module signature appended~\n"
# struct module_signature { u8 algo, hash, id_type, signer_len, key_id_len; u8 __pad[3]; __be32 sig_len; }
TRAILER = struct.Struct(">BBBBB3sI")
PKEY_ID_PKCS7 = 2
ID_TYPES = {0: "PGP", 1: "X509", PKEY_ID_PKCS7: "PKCS#7"}


def split_signature(data: bytes) -> tuple[int, ModuleSignature | None]:
    """(size of the module without its signature, parsed signature or None if unsigned)."""
    size = len(data)
    if size <= len(MAGIC) or data[size - len(MAGIC):] != MAGIC:
        return size, None
    end = size - len(MAGIC)
    if end < TRAILER.size:
        return end, _defective("EBADMSG: truncated signature trailer", 0, end)
    algo, hash_id, id_type, signer_len, key_id_len, pad, sig_len = TRAILER.unpack_from(data, end - TRAILER.size)
    signed_size = end - TRAILER.size - sig_len
    # mod_check_sig(): the order of its checks decides which error the kernel reports.
    if sig_len >= end - TRAILER.size:
        return end - TRAILER.size, _defective(f"EBADMSG: signature length {sig_len} exceeds the module", sig_len,
                                              end - TRAILER.size)
    if id_type != PKEY_ID_PKCS7:
        kind = ID_TYPES.get(id_type, f"type {id_type}")
        return signed_size, _defective(f"ENOPKG: not signed with expected PKCS#7 message ({kind})", sig_len,
                                       signed_size)
    if algo or hash_id or signer_len or key_id_len or any(pad):
        return signed_size, _defective("EBADMSG: PKCS#7 signature info has unexpected non-zero params",
                                       sig_len, signed_size)
    return signed_size, parse_pkcs7(bytes(data[signed_size:end - TRAILER.size]), signed_size)


def _defective(defect: str, signature_size: int, signed_size: int) -> ModuleSignature:
    return ModuleSignature("PKCS#7", "", "", "", signature_size, signed_size, defect)


def parse_pkcs7(der: bytes, signed_size: int) -> ModuleSignature:
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
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return _defective(f"EBADMSG: unparseable PKCS#7 message ({reason})", len(der), signed_size)
    return ModuleSignature("PKCS#7", hash_algorithm, signer, ":".join(f"{b:02X}" for b in key_id),
                           len(der), signed_size)
