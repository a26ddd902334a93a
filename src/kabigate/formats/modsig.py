"""The signature the kernel's sign-file appends to a module.

Layout (include/linux/module_signature.h, scripts/sign-file.c):
    <module ELF> <signature: PKCS#7/CMS DER> <struct module_signature, 12 bytes> "~Module signature appended~\\n"
The kernel's module_sig_check() / mod_check_sig() read it from the end, as here. A malformed
signature is not an input error: it is a module the kernel refuses (EBADMSG), so it is
reported as the signature's `defect`.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Callable

from kabigate.formats.der import (
    CONTEXT_0,
    CONTEXT_0_PRIMITIVE,
    INTEGER,
    OID,
    SEQUENCE,
    SET,
    STRING_TAGS,
    DerError,
    Element,
    oid_text,
    parse,
    string_value,
)
from kabigate.model import ModuleSignature

MAGIC = b"~Module signature appended~\n"
# struct module_signature { u8 algo, hash, id_type, signer_len, key_id_len; u8 __pad[3]; __be32 sig_len; }
TRAILER = struct.Struct(">BBBBB3sI")
PKEY_ID_PKCS7 = 2
ID_TYPES = {0: "PGP", 1: "X509", PKEY_ID_PKCS7: "PKCS#7"}


# formats/_modfast.c pkcs7(): (digest OID, the signer's string tag or 0, its bytes, key id), or None
Pkcs7Reader = Callable[[bytes], tuple[bytes, int, bytes, bytes] | None]


def split_signature(data: bytes | bytearray | mmap.mmap,
                    fast: Pkcs7Reader | None = None) -> tuple[int, ModuleSignature | None]:
    """(size of the module without its signature, parsed signature or None if unsigned). `data`
    is sliced, never read whole: it may be a module file read on demand. `fast`: see parse_pkcs7()."""
    size = len(data)
    if size <= len(MAGIC) or data[size - len(MAGIC):] != MAGIC:
        return size, None
    end = size - len(MAGIC)
    if end < TRAILER.size:
        return end, _defective("EBADMSG: truncated signature trailer", 0, end)
    algo, hash_id, id_type, signer_len, key_id_len, pad, sig_len = TRAILER.unpack(data[end - TRAILER.size:end])
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
    return signed_size, parse_pkcs7(bytes(data[signed_size:end - TRAILER.size]), signed_size, fast)


def _defective(defect: str, signature_size: int, signed_size: int) -> ModuleSignature:
    return ModuleSignature("PKCS#7", "", "", "", signature_size, signed_size, defect)


# Digest OIDs -> the names the kernel (crypto/hash_info.c) and kmod's modinfo print.
DIGEST_NAMES = {
    "1.2.840.113549.2.5": "md5", "1.3.14.3.2.26": "sha1", "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256", "2.16.840.1.101.3.4.2.2": "sha384", "2.16.840.1.101.3.4.2.3": "sha512",
    "2.16.840.1.101.3.4.2.8": "sha3-256", "2.16.840.1.101.3.4.2.9": "sha3-384",
    "2.16.840.1.101.3.4.2.10": "sha3-512", "1.2.156.10197.1.401": "sm3",
}
SIGNED_DATA = "1.2.840.113549.1.7.2"
COMMON_NAME = "2.5.4.3"


def parse_pkcs7(der: bytes, signed_size: int, fast: Pkcs7Reader | None = None) -> ModuleSignature:
    """Signer, key id and digest of the first SignerInfo, as kmod's modinfo reports them. `fast`:
    the C reader of the same fields (a quarter of a module's read in Python), which leaves
    anything unusual, defects included, to this walk."""
    if fast is not None and (fields := fast(der)) is not None:
        return signature_of(fields, len(der), signed_size)
    try:
        content_type, content = parse(der).expect(SEQUENCE, "ContentInfo").children()[:2]
        if oid_text(content_type) != SIGNED_DATA:
            raise DerError(f"content type {oid_text(content_type)} is not signedData")
        signed_data = content.expect(CONTEXT_0, "content").children()[0].expect(SEQUENCE, "SignedData")
        signer_infos = signed_data.children()[-1].expect(SET, "signerInfos").children()
        if not signer_infos:
            raise DerError("no SignerInfo")
        _version, sid, digest_algorithm = signer_infos[0].expect(SEQUENCE, "SignerInfo").children()[:3]
        if sid.tag == SEQUENCE:  # issuerAndSerialNumber
            issuer, serial = sid.children()
            signer = _common_name(issuer.expect(SEQUENCE, "issuer"))
            key_id = serial.expect(INTEGER, "serialNumber").content.lstrip(b"\0") or b"\0"
        elif sid.tag == CONTEXT_0_PRIMITIVE:  # subjectKeyIdentifier
            signer, key_id = "", sid.content
        else:
            raise DerError(f"unknown signer identifier tag 0x{sid.tag:02x}")
        digest_oid = oid_text(digest_algorithm.expect(SEQUENCE, "digestAlgorithm").children()[0])
        hash_algorithm = DIGEST_NAMES.get(digest_oid, digest_oid)
    except (DerError, ValueError, IndexError) as error:
        return _defective(f"EBADMSG: unparseable PKCS#7 message ({error})", len(der), signed_size)
    return ModuleSignature("PKCS#7", hash_algorithm, signer, key_id.hex(":").upper(), len(der), signed_size)


def signature_of(fields: tuple[bytes, int, bytes, bytes], der_size: int, signed_size: int) -> ModuleSignature:
    """The signature of a Pkcs7Reader's fields (formats/_modfast.c pkcs7() and signature())."""
    digest, name_tag, name, serial_or_key_id = fields
    return ModuleSignature("PKCS#7", _digest_name(digest),
                           name.decode(STRING_TAGS[name_tag], "replace") if name_tag else "",
                           serial_or_key_id.hex(":").upper(), der_size, signed_size)


@functools.lru_cache(maxsize=64)  # a tree's thousands of signatures name one or two digests
def _digest_name(oid: bytes) -> str:
    text = oid_text(Element(OID, oid, 0, len(oid)))
    return DIGEST_NAMES.get(text, text)


def _common_name(name) -> str:
    for relative_name in name.children():
        for attribute in relative_name.expect(SET, "RelativeDistinguishedName").children():
            kind, value = attribute.expect(SEQUENCE, "AttributeTypeAndValue").children()[:2]
            if oid_text(kind) == COMMON_NAME:
                return string_value(value)
    return ""
