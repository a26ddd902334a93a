"""Module-signing keys and certificates: loading sign-file's key and certificate, the kernel's key
ids of a certificate, and keygen (a key and its self-signed certificate, written atomically). Key
material never leaves these objects: nothing here prints, logs or puts it in an error message.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kabigate.errors import InputError, read_capped
from kabigate.formats.der import (
    CONTEXT_0,
    INTEGER,
    SEQUENCE,
    DerError,
    children_tlv,
    parse,
)

# Red Hat's "module signing only" extended key usage: RHEL kernels accept it, shim refuses
# certificates carrying it for boot images.
MODULE_SIGNING_OID = x509.ObjectIdentifier("1.3.6.1.4.1.2312.16.1.2")
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                 "sha512": hashes.SHA512}
CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}
RSA_BITS = (2048, 3072, 4096)
MAX_KEY_FILE = 1 << 20
PASSPHRASE_ENV = "KBUILD_SIGN_PIN"  # what sign-file reads


# -- keys --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    issuer_and_serial: bytes  # the certificate's issuer Name and serialNumber INTEGER, raw DER
    subject_key_id: bytes | None

    @property
    def signer(self) -> str:
        return common_name(self.certificate.subject)


def load_signing_key(key_path: str, cert_path: str, passphrase: bytes | None) -> SigningKey:
    """sign-file's read_private_key() and read_x509(): PEM or DER, the key optionally encrypted
    (the passphrase comes from the caller: environment or file, never the command line)."""
    key_data = _read_small(key_path, "private key")
    private_key = _load_private_key(key_data, key_path, passphrase)
    if not isinstance(private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise InputError(f"{key_path}: {type(private_key).__name__} keys cannot sign modules (RSA or ECDSA)")
    certificate = load_certificate(_read_small(cert_path, "certificate"), cert_path)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (certificate.public_key().public_bytes(serialization.Encoding.DER, spki)
            != private_key.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise InputError(f"{cert_path}: the certificate does not match the private key {key_path}")
    issuer, serial = issuer_and_serial(certificate)
    return SigningKey(private_key, certificate, issuer + serial, subject_key_id(certificate))


def _load_private_key(data: bytes, path: str, passphrase: bytes | None):
    pem = b"-----BEGIN" in data
    load = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    try:
        return load(data, passphrase)
    except TypeError:
        if passphrase is None:
            raise InputError(f"{path}: the private key is encrypted: set {PASSPHRASE_ENV} or give "
                             "--passphrase-file") from None
        try:  # a passphrase for an unencrypted key is ignored, as sign-file ignores KBUILD_SIGN_PIN
            return load(data, None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise InputError(f"{path}: not a readable private key") from None
    except (ValueError, UnsupportedAlgorithm):
        if passphrase is not None and (b"ENCRYPTED" in data or not pem):
            raise InputError(f"{path}: cannot decrypt the private key: wrong passphrase") from None
        raise InputError(f"{path}: not a readable private key (PEM or DER)") from None


def load_certificate(data: bytes, what: str) -> x509.Certificate:
    """The first certificate of a PEM file (which may also hold the key, like the kernel's
    signing_key.pem) or a DER certificate."""
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            certificate = x509.load_pem_x509_certificates(data)[0]
        else:
            certificate = x509.load_der_x509_certificate(bytes(data))
    except CERTIFICATE_ERRORS as error:
        raise InputError(f"{what}: not a usable X.509 certificate (PEM or DER): {certificate_error(error)}") from None
    return usable_certificate(certificate, what)


# What `cryptography` raises for a malformed certificate, at load or when a part is first read.
CERTIFICATE_ERRORS = (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, UnsupportedAlgorithm)


def certificate_error(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def usable_certificate(certificate: x509.Certificate, what: str) -> x509.Certificate:
    """The certificate, once every part kabigate reads has parsed: `cryptography` parses
    extensions, the key and the names lazily and raises on first use (duplicate or malformed
    extensions, an unknown key type), which must not happen in the middle of a report."""
    try:
        certificate.extensions  # noqa: B018 - parsed for its errors
        certificate.public_key()
        certificate.subject.rfc4514_string()
        certificate.issuer.rfc4514_string()
        certificate.not_valid_before_utc  # noqa: B018
        certificate.not_valid_after_utc  # noqa: B018
        certificate.serial_number  # noqa: B018
    except CERTIFICATE_ERRORS as error:
        raise InputError(f"{what}: unusable X.509 certificate: {certificate_error(error)}") from None
    return certificate


def _read_small(path: str, what: str) -> bytes:
    return read_capped(path, MAX_KEY_FILE, f"too large for a {what} file")


def issuer_and_serial(certificate: x509.Certificate) -> tuple[bytes, bytes]:
    """The raw issuer Name and serialNumber INTEGER encodings: copied, not re-encoded, as
    OpenSSL copies them into the SignerInfo and the kernel's x509_cert_parser keeps them
    (asymmetric_key_generate_id(serial, issuer) is the key's id)."""
    try:
        tbs = parse(certificate.public_bytes(serialization.Encoding.DER)).children()[0]
        fields = children_tlv(tbs)
        if fields[0][0].tag == CONTEXT_0:  # [0] version
            fields = fields[1:]
        (serial, serial_tlv), _signature, (issuer, issuer_tlv) = fields[:3]
        serial.expect(INTEGER, "serialNumber")
        issuer.expect(SEQUENCE, "issuer")
    except (DerError, ValueError) as error:
        raise InputError(f"certificate {certificate.subject.rfc4514_string()}: {error}") from None
    return issuer_tlv, serial_tlv


def subject_key_id(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def common_name(name: x509.Name) -> str:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else name.rfc4514_string()



# -- keygen ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeygenSpec:
    key_type: str = "rsa"  # "rsa" or "ecdsa"
    bits: int = 4096
    curve: str = "p384"
    subject: str = "CN=kabigate module signing key"  # RFC 4514
    days: int = 3650
    codesigning: bool = True  # extendedKeyUsage codeSigning: SUSE kernels require it
    module_signing_oid: bool = False  # Red Hat's 1.3.6.1.4.1.2312.16.1.2


def generate_key(spec: KeygenSpec, now: datetime.datetime | None = None):
    """A private key and its self-signed certificate, with the extensions certs/default_x509.genkey
    gives the kernel's own key (CA:FALSE, digitalSignature, subject and authority key ids) plus
    the extended key usage `spec` asks for."""
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    digest: hashes.SHA256 | hashes.SHA384
    if spec.key_type == "rsa":
        if spec.bits not in RSA_BITS:
            raise InputError(f"RSA keys of {spec.bits} bits are not offered ({', '.join(map(str, RSA_BITS))})")
        private_key = rsa.generate_private_key(65537, spec.bits)
        digest = hashes.SHA256()
    elif spec.key_type == "ecdsa":
        if spec.curve not in CURVES:
            raise InputError(f"unknown curve {spec.curve} ({', '.join(CURVES)})")
        private_key = ec.generate_private_key(CURVES[spec.curve]())
        digest = hashes.SHA384() if spec.curve == "p384" else hashes.SHA256()
    else:
        raise InputError(f"unknown key type {spec.key_type} (rsa, ecdsa)")
    try:
        name = x509.Name.from_rfc4514_string(spec.subject)
    except ValueError as error:
        raise InputError(f"subject {spec.subject!r}: {error}") from None
    if not name.rdns:
        raise InputError("the subject is empty")
    if spec.days < 1:
        raise InputError("--days must be at least 1")
    now = now or datetime.datetime.now(datetime.UTC)
    public_key = private_key.public_key()
    usages = ([ExtendedKeyUsageOID.CODE_SIGNING] if spec.codesigning else []) + \
             ([MODULE_SIGNING_OID] if spec.module_signing_oid else [])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=spec.days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=False, crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False))
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return private_key, builder.sign(private_key, digest)


def private_key_pem(private_key, passphrase: bytes | None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def write_files_atomically(files: list[tuple[str, bytes, int]], overwrite: bool) -> None:
    """Write every (path, data, mode) or none: temporaries first, then renames."""
    if not overwrite:
        existing = [path for path, _, _ in files if os.path.lexists(path)]
        if existing:
            raise InputError(f"{existing[0]}: already exists (use --force to overwrite)")
    written: list[tuple[str, str]] = []
    try:
        for path, data, mode in files:
            directory = os.path.dirname(os.path.abspath(path))
            fd, temporary = tempfile.mkstemp(prefix=".kabigate-", dir=directory)  # mode 0600 from the start
            written.append((temporary, path))
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.chmod(temporary, mode)
    except OSError as error:
        for temporary, _ in written:
            os.unlink(temporary)
        raise InputError(f"{error.filename or 'output'}: {error.strerror}") from None
    for temporary, path in written:
        os.replace(temporary, path)


