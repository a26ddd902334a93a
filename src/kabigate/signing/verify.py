"""The kernel's verification of a module signature against its trusted keys: kernel/module/signing.c
mod_verify_sig() -> certs/system_keyring.c verify_pkcs7_signature() -> crypto/asymmetric_keys/
pkcs7_parser.c, pkcs7_verify.c and pkcs7_trust.c; trusted keys from certificate files or a kernel
image's built-in keys."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID

from kabigate.errors import InputError, read_capped
from kabigate.formats.bzimage import MAX_KERNEL_IMAGE, kernel_image, looks_like_kernel_image
from kabigate.formats.certlist import system_certificates
from kabigate.formats.compression import compression_of
from kabigate.formats.der import (
    CONTEXT_0,
    CONTEXT_0_PRIMITIVE,
    INTEGER,
    OCTET_STRING,
    SEQUENCE,
    SET,
    DerError,
    Element,
    oid_text,
    parse,
    tlv,
)
from kabigate.formats.elf import ElfFile
from kabigate.formats.modsig import DIGEST_NAMES, MAGIC, TRAILER, split_signature
from kabigate.model import ModuleSignature, SignatureCheck
from kabigate.signing.cms import DATA, ECDSA_WITH, RSA_ENCRYPTION, SIGNED_DATA
from kabigate.signing.image import chunks, module_image
from kabigate.signing.keys import (
    CERTIFICATE_ERRORS,
    HASHES,
    MODULE_SIGNING_OID,
    certificate_error,
    common_name,
    issuer_and_serial,
    load_certificate,
    subject_key_id,
    usable_certificate,
)

# Digests the 6.1 kernel's pkcs7_sig_note_digest_algo() knows, that `cryptography` computes.
_VERIFY_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1, "sha224": hashes.SHA224, **HASHES, "sm3": hashes.SM3}


# -- trust -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrustedCert:
    certificate: x509.Certificate
    source: str  # the file it came from
    ids: frozenset[bytes]  # the kernel's key ids: serial + issuer, and the subject key id

    @property
    def subject(self) -> str:
        return common_name(self.certificate.subject)


@dataclass(frozen=True)
class TrustPolicy:
    """Distribution rules on top of upstream's: upstream checks neither usage nor validity."""

    require_codesigning: bool = False  # SUSE: the signing certificate must have the codeSigning EKU
    accept_module_signing_oid: bool = False  # ...or Red Hat's module-signing-only EKU
    reject_expired: bool = False


def trusted_cert(certificate: x509.Certificate, source: str) -> TrustedCert:
    issuer, serial = issuer_and_serial(certificate)
    ids = {parse(serial).content + issuer}
    skid = subject_key_id(certificate)
    if skid is not None:
        ids.add(skid)
    return TrustedCert(certificate, source, frozenset(ids))


def load_trust(paths: list[str]) -> list[TrustedCert]:
    """Trusted certificates from certificate files (PEM, several per file, or DER), kernel images
    (vmlinuz, vmlinux: their built-in keys), or a kernel root / module tree whose vmlinuz is found."""
    trusted: list[TrustedCert] = []
    for path in paths:
        source = _kernel_image_of(path) if os.path.isdir(path) else path
        data = read_capped(source, MAX_KERNEL_IMAGE, "too large for a certificate or kernel image")
        if b"-----BEGIN CERTIFICATE-----" in data:
            try:
                certificates = x509.load_pem_x509_certificates(data)
            except CERTIFICATE_ERRORS as error:
                raise InputError(f"{source}: unreadable PEM certificate: {certificate_error(error)}") from None
            certificates = [usable_certificate(c, source) for c in certificates]
        elif data[:2] == b"\x30\x82" and len(data) == int.from_bytes(data[2:4], "big") + 4:
            certificates = [load_certificate(data, source)]
        elif looks_like_kernel_image(data[:0x210]) or compression_of(data) is not None:
            certificates = []
            for der in system_certificates(kernel_image(data, source), source):
                try:  # x509_load_certificate_list() skips what it cannot parse, so does this
                    certificates.append(usable_certificate(x509.load_der_x509_certificate(bytes(der)), source))
                except (InputError, *CERTIFICATE_ERRORS):
                    continue
        else:  # kernel_image's own "not a kernel image" would hide that a certificate was expected
            raise InputError(f"neither a certificate nor a kernel image: {source}")
        trusted.extend(trusted_cert(c, source) for c in certificates)
    return trusted


def _kernel_image_of(directory: str) -> str:
    """boot/vmlinuz-<kver> of a kernel root, or of the root above lib/modules/<kver>."""
    parts = os.path.normpath(os.path.abspath(directory)).split(os.sep)
    if len(parts) >= 3 and parts[-3:-1] == ["lib", "modules"]:
        root = os.sep.join(parts[:-3]) or os.sep
        candidate = os.path.join(root, "boot", f"vmlinuz-{parts[-1]}")
        if os.path.isfile(candidate):
            return candidate
        raise InputError(f"{directory}: no {candidate} for this module tree")
    boot = os.path.join(directory, "boot")
    found = sorted(n for n in os.listdir(boot) if n.startswith("vmlinuz-")) if os.path.isdir(boot) else []
    if len(found) != 1:
        raise InputError(f"{directory}: {'several kernels' if found else 'no boot/vmlinuz-*'}: give the vmlinuz")
    return os.path.join(boot, found[0])


def trust_from_der(certificates: list[tuple[bytes, str]]) -> list[TrustedCert]:
    """Trusted certificates as a store keeps them: (DER, where it came from)."""
    return [trusted_cert(load_certificate(der, source), source) for der, source in certificates]


def trust_to_der(trust: list[TrustedCert]) -> list[tuple[bytes, str]]:
    return [(t.certificate.public_bytes(serialization.Encoding.DER), t.source) for t in trust]


# -- verification ------------------------------------------------------------------------------

def verify_file(path: str, trust: list[TrustedCert] | None, policy: TrustPolicy = TrustPolicy()) -> SignatureCheck:
    """verify_module() on a module file (decompressed, read as a ModuleImage: hashed a step at a
    time); a file that is not a module, or whose signature trailer is truncated or malformed, is
    an input error."""
    with module_image(path) as (image, _compression):
        check = verify_module(image, trust, policy)
        if check.result == "EBADMSG":
            raise InputError(f"{path}: malformed module signature ({check.message})")
        size, _ = split_signature(image)
        ElfFile(image, path, size)
    return check


def verify_module(data, trust: list[TrustedCert] | None, policy: TrustPolicy = TrustPolicy(),
                  now: datetime.datetime | None = None) -> SignatureCheck:
    """mod_verify_sig() with the trust set as the kernel's keyring, on a module's bytes (bytes,
    an mmap or a ModuleImage). The result names the kernel's error: module_sig_check() refuses
    ENODATA/ENOPKG/ENOKEY only when signatures are enforced, anything else always. Without a
    trust set (None) only the message is checked."""
    size, signature = split_signature(data)
    if signature is None:
        return SignatureCheck("ENODATA", "unsigned module")
    if signature.defect:
        return SignatureCheck(signature.defect.split(":", 1)[0], signature.defect, signature.signer,
                              signature.key_id, signature.hash_algorithm)
    described = {"signer": signature.signer, "key_id": signature.key_id,
                 "hash_algorithm": signature.hash_algorithm}
    try:
        signers = _signer_infos(bytes(data[size:len(data) - len(MAGIC) - TRAILER.size]))
    except _Refused as refused:
        return SignatureCheck(refused.errno, refused.message, **described)
    if trust is None:
        return SignatureCheck("ok", "signed (not verified: no trusted keys given)", **described)
    outcome = SignatureCheck("ENOKEY", "no trusted key matches the signer (module with unavailable key)",
                             **described)
    # pkcs7_validate_trust(): one trusted signer is enough; a key that matches but does not
    # verify is fatal at once; ENOPKG wins over ENOKEY.
    for signer in signers:
        result = _verify_signer(signer, data, size, trust, policy, now)
        if result[0] == "ok":
            return SignatureCheck("ok", f"verified by '{result[1].subject}' ({result[1].source})",
                                  trusted_by=result[1].subject, **described)
        if result[0] in ("ENOKEY", "ENOPKG"):
            if result[0] == "ENOPKG" or outcome.result == "ENOKEY":
                outcome = SignatureCheck(result[0], result[1], **described)
            continue
        return SignatureCheck(result[0], result[1], **described)
    return outcome


def key_check(signature: ModuleSignature | None, trust: list[TrustedCert]) -> SignatureCheck:
    """mod_verify_sig() from a signature's fields alone, as a store keeps a module (not its bytes):
    unsigned (ENODATA), a defect (its errno), else the trusted key asymmetric_key_id_same() finds
    for the signer (sign-file's issuer and serial, or subject key id), or ENOKEY. Whether the
    signature verifies with that key (EKEYREJECTED) needs the module's bytes: verify_module()."""
    if signature is None:
        return SignatureCheck("ENODATA", "unsigned module")
    described = {"signer": signature.signer, "key_id": signature.key_id, "hash_algorithm": signature.hash_algorithm}
    if signature.defect:
        return SignatureCheck(signature.defect.split(":", 1)[0], signature.defect, **described)
    key_id = bytes.fromhex(signature.key_id.replace(":", ""))
    for key in trust:
        certificate = key.certificate
        by_serial = signature.signer and common_name(certificate.issuer) == signature.signer and \
            _serial_bytes(certificate.serial_number) == key_id
        if by_serial or (not signature.signer and key_id in key.ids):
            return SignatureCheck("ok", f"signed by a trusted key '{key.subject}' ({key.source})",
                                  trusted_by=key.subject, **described)
    return SignatureCheck("ENOKEY", "no trusted key matches the signer (module with unavailable key)", **described)


def _serial_bytes(serial: int) -> bytes:
    """A serial number as modsig reads it: big-endian, no leading zero bytes."""
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")


class _Refused(Exception):
    def __init__(self, errno: str, message: str):
        super().__init__(message)
        self.errno, self.message = errno, message


@dataclass(frozen=True)
class _SignerInfo:
    key_id: bytes  # serial + issuer, or the subject key id
    hash_name: str
    algorithm: str  # "rsa" or "ecdsa"
    signature: bytes


def _signer_infos(cms: bytes) -> list[_SignerInfo]:
    """pkcs7_parse_message() and pkcs7_verify()'s checks for VERIFYING_MODULE_SIGNATURE."""
    try:
        content_type, content = parse(cms).expect(SEQUENCE, "ContentInfo").children()[:2]
        if oid_text(content_type) != SIGNED_DATA:
            raise _Refused("EBADMSG", "not a PKCS#7 signedData message")
        fields = content.expect(CONTEXT_0, "content").children()[0].expect(SEQUENCE, "SignedData").children()
        encapsulated = fields[2].expect(SEQUENCE, "encapContentInfo").children()
        if oid_text(encapsulated[0]) != DATA:
            raise _Refused("EKEYREJECTED", "Invalid module sig (not pkcs7-data)")
        if len(encapsulated) > 1:  # pkcs7_supply_detached_data()
            raise _Refused("EINVAL", "the signature carries its content (Data already supplied)")
        signers = []
        for info in fields[-1].expect(SET, "signerInfos").children():
            signers.append(_signer_info(info.expect(SEQUENCE, "SignerInfo").children()))
    except (DerError, ValueError, IndexError) as error:
        raise _Refused("EBADMSG", f"unparseable PKCS#7 message ({error})") from None
    if not signers:
        raise _Refused("EBADMSG", "PKCS#7 message has no signer")
    return signers


def _signer_info(fields: list[Element]) -> _SignerInfo:
    _version, sid, digest_algorithm, *rest = fields
    if sid.tag == SEQUENCE:
        issuer, serial = sid.children()
        key_id = serial.expect(INTEGER, "serialNumber").content + tlv(issuer.expect(SEQUENCE, "issuer"))
    elif sid.tag == CONTEXT_0_PRIMITIVE:
        key_id = sid.content
    else:
        raise DerError(f"unknown signer identifier tag 0x{sid.tag:02x}")
    if rest and rest[0].tag == CONTEXT_0:
        raise _Refused("EKEYREJECTED", "Invalid module sig (has authattrs)")
    signature_algorithm, signature = rest[0].expect(SEQUENCE, "signatureAlgorithm"), rest[1]
    digest_oid = oid_text(digest_algorithm.expect(SEQUENCE, "digestAlgorithm").children()[0])
    hash_name = DIGEST_NAMES.get(digest_oid)
    if hash_name not in _VERIFY_HASHES:  # pkcs7_sig_note_digest_algo()
        raise _Refused("ENOPKG", f"Unsupported digest algo: {hash_name or digest_oid}")
    algorithm_oid = oid_text(signature_algorithm.children()[0])
    if algorithm_oid == RSA_ENCRYPTION:  # pkcs7_sig_note_pkey_algo(): not sha256WithRSAEncryption
        algorithm = "rsa"
    elif algorithm_oid in ECDSA_WITH.values():
        algorithm = "ecdsa"
    else:
        raise _Refused("ENOPKG", f"Unsupported pkey algo: {algorithm_oid}")
    return _SignerInfo(key_id, hash_name, algorithm, signature.expect(OCTET_STRING, "signature").content)


def _verify_signer(signer: _SignerInfo, data, size: int, trust: list[TrustedCert], policy: TrustPolicy,
                   now: datetime.datetime | None):
    """pkcs7_validate_trust_one()'s last resort, the only path for sign-file's certificate-less
    messages: the trusted key whose id is the signer's, then verify_signature()."""
    key = next((t for t in trust if signer.key_id in t.ids), None)
    if key is None:
        return "ENOKEY", "no trusted key matches the signer (module with unavailable key)"
    refusal = _policy_refusal(key, policy, now)
    if refusal:
        return "ENOKEY", refusal
    public_key = key.certificate.public_key()
    digest = hashes.Hash(_VERIFY_HASHES[signer.hash_name]())
    for chunk in chunks(data, size):
        digest.update(chunk)
    prehashed = Prehashed(_VERIFY_HASHES[signer.hash_name]())
    try:
        if signer.algorithm == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signer.signature, digest.finalize(), padding.PKCS1v15(), prehashed)
        elif signer.algorithm == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signer.signature, digest.finalize(), ec.ECDSA(prehashed))
        else:
            return "EKEYREJECTED", f"{signer.algorithm} signature but '{key.subject}' holds another key type"
    except InvalidSignature:
        return "EKEYREJECTED", f"the signature does not verify with '{key.subject}' (Key was rejected by service)"
    return "ok", key


def _policy_refusal(key: TrustedCert, policy: TrustPolicy, now: datetime.datetime | None) -> str | None:
    certificate = key.certificate
    if policy.reject_expired:
        now = now or datetime.datetime.now(datetime.UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            return f"'{key.subject}' is not valid now ({certificate.not_valid_before_utc:%Y-%m-%d} to " \
                   f"{certificate.not_valid_after_utc:%Y-%m-%d})"
    if policy.require_codesigning:
        try:
            usages = set(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            usages = set()
        accepted = {ExtendedKeyUsageOID.CODE_SIGNING} | ({MODULE_SIGNING_OID} if policy.accept_module_signing_oid
                                                         else set())
        if not usages & accepted:
            return f"'{key.subject}' is not CodeSigning (no codeSigning extended key usage)"
    return None

