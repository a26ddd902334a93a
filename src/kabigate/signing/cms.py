"""The signature scripts/sign-file appends: its CMS message written byte for byte as OpenSSL's
CMS_sign + i2d_CMS_bio_stream write it (CMS_NOCERTS | CMS_BINARY | CMS_NOSMIMECAP | CMS_NOATTR: DER,
detached, no certificates, no signed attributes), and the trailer after it."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from kabigate.errors import InputError
from kabigate.formats.der import (
    CONTEXT_0,
    CONTEXT_0_PRIMITIVE,
    OCTET_STRING,
    SEQUENCE,
    SET,
    encode,
    encode_oid,
)
from kabigate.formats.modsig import DIGEST_NAMES, MAGIC, PKEY_ID_PKCS7, TRAILER
from kabigate.signing.keys import HASHES, SigningKey

DIGEST_OIDS = {name: oid for oid, name in DIGEST_NAMES.items()}
SIGNED_DATA, DATA = "1.2.840.113549.1.7.2", "1.2.840.113549.1.7.1"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
ECDSA_WITH = {"sha1": "1.2.840.10045.4.1", "sha224": "1.2.840.10045.4.3.1", "sha256": "1.2.840.10045.4.3.2",
               "sha384": "1.2.840.10045.4.3.3", "sha512": "1.2.840.10045.4.3.4"}


def cms_signature(key: SigningKey, digest: bytes, hash_name: str, use_key_id: bool = False) -> bytes:
    """sign-file's PKCS#7 (CMS) message for content whose `hash_name` digest is `digest`, byte for
    byte: without signed attributes (CMS_NOATTR) the signature is over the content's digest
    itself, so the content is hashed as it streams past and need not be in memory. RSA PKCS#1
    v1.5 signatures are deterministic, so the whole message is; ECDSA signature values are random."""
    prehashed = Prehashed(HASHES[hash_name]())
    digest_algorithm = encode(SEQUENCE, encode_oid(DIGEST_OIDS[hash_name]))  # parameters absent, as OpenSSL writes
    if isinstance(key.private_key, rsa.RSAPrivateKey):
        signature = key.private_key.sign(digest, padding.PKCS1v15(), prehashed)
        signature_algorithm = encode(SEQUENCE, encode_oid(RSA_ENCRYPTION), b"\x05\x00")
    else:
        signature = key.private_key.sign(digest, ec.ECDSA(prehashed))
        signature_algorithm = encode(SEQUENCE, encode_oid(ECDSA_WITH[hash_name]))
    if use_key_id:  # sign-file -k: CMS_USE_KEYID, SignerInfo and SignedData version 3
        if key.subject_key_id is None:
            raise InputError("the certificate has no subjectKeyIdentifier to sign with (-k / --key-id)")
        version, sid = b"\x02\x01\x03", encode(CONTEXT_0_PRIMITIVE, key.subject_key_id)
    else:
        version, sid = b"\x02\x01\x01", encode(SEQUENCE, key.issuer_and_serial)
    signer_info = encode(SEQUENCE, version, sid, digest_algorithm, signature_algorithm,
                       encode(OCTET_STRING, signature))
    signed_data = encode(SEQUENCE, version, encode(SET, digest_algorithm), encode(SEQUENCE, encode_oid(DATA)),
                       encode(SET, signer_info))
    return encode(SEQUENCE, encode_oid(SIGNED_DATA), encode(CONTEXT_0, signed_data))


def signature_block(cms: bytes) -> bytes:
    """What sign-file appends to the module: the CMS, struct module_signature (only id_type and
    sig_len set), the magic."""
    return b"".join((cms, TRAILER.pack(0, 0, PKEY_ID_PKCS7, 0, 0, b"\0\0\0", len(cms)), MAGIC))

