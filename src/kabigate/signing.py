"""Module signing: keys and certificates, the signature scripts/sign-file appends, and the
kernel's verification of it against its trusted keys.

Signing emulates scripts/sign-file.c (CMS_sign + CMS_add1_signer with CMS_NOCERTS | CMS_BINARY |
CMS_NOSMIMECAP | CMS_NOATTR, then i2d_CMS_bio_stream: DER, detached, no certificates, no signed
attributes). Verification emulates kernel/module/signing.c mod_verify_sig() ->
certs/system_keyring.c verify_pkcs7_signature() -> crypto/asymmetric_keys/pkcs7_parser.c,
pkcs7_verify.c and pkcs7_trust.c. Key material never leaves this module's objects: nothing here
prints, logs or puts it in an error message.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import lzma
import mmap
import multiprocessing
import os
import secrets
import shutil
import signal
import tempfile
from dataclasses import dataclass

import zstandard
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kabigate.errors import InputError, open_regular, read_capped
from kabigate.formats.bzimage import MAX_KERNEL_IMAGE, kernel_image
from kabigate.formats.certlist import system_certificates
from kabigate.formats.compression import MAX_DECOMPRESSED, compression_of, decompress, decompress_into
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
    read_element,
)
from kabigate.formats.elf import ElfFile
from kabigate.formats.modsig import DIGEST_NAMES, MAGIC, PKEY_ID_PKCS7, TRAILER, split_signature
from kabigate.model import SignatureCheck

# Red Hat's "module signing only" extended key usage: RHEL kernels accept it, shim refuses
# certificates carrying it for boot images.
MODULE_SIGNING_OID = x509.ObjectIdentifier("1.3.6.1.4.1.2312.16.1.2")
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384,
                                                 "sha512": hashes.SHA512}
# Digests the 6.1 kernel's pkcs7_sig_note_digest_algo() knows, that `cryptography` computes.
_VERIFY_HASHES = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, **HASHES, "sm3": hashes.SM3}
_DIGEST_OIDS = {name: oid for oid, name in DIGEST_NAMES.items()}
_SIGNED_DATA, _DATA = "1.2.840.113549.1.7.2", "1.2.840.113549.1.7.1"
_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
_ECDSA_WITH = {"sha1": "1.2.840.10045.4.1", "sha224": "1.2.840.10045.4.3.1", "sha256": "1.2.840.10045.4.3.2",
               "sha384": "1.2.840.10045.4.3.3", "sha512": "1.2.840.10045.4.3.4"}
CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}
RSA_BITS = (2048, 3072, 4096)
MAX_KEY_FILE = 1 << 20
PASSPHRASE_ENV = "KBUILD_SIGN_PIN"  # what sign-file reads


# -- DER: what `cryptography` cannot write byte for byte -------------------------------------
# Its PKCS7SignatureBuilder (NoAttributes, NoCerts, DetachedSignature, Binary) gives the digest
# AlgorithmIdentifiers NULL parameters where OpenSSL's CMS, and so sign-file, omits them.

def _der(tag: int, *parts: bytes) -> bytes:
    content = b"".join(parts)
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _oid(dotted: str) -> bytes:
    first, second, *rest = map(int, dotted.split("."))
    body = bytearray([40 * first + second])
    for value in rest:
        chunk = [value & 0x7F]
        while value > 0x7F:
            value >>= 7
            chunk.append(0x80 | (value & 0x7F))
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _tlv(element: Element) -> bytes:
    """The whole encoding (tag, length, content) of an element, from its parent's bytes."""
    header = 2 if element.end - element.start < 0x80 else 2 + ((element.end - element.start).bit_length() + 7) // 8
    return element.data[element.start - header:element.end]


def _children_tlv(element: Element) -> list[tuple[Element, bytes]]:
    items, offset = [], element.start
    while offset < element.end:
        item = read_element(element.data, offset, element.end)
        items.append((item, element.data[offset:item.end]))
        offset = item.end
    return items


# -- keys --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    issuer_and_serial: bytes  # the certificate's issuer Name and serialNumber INTEGER, raw DER
    subject_key_id: bytes | None

    @property
    def signer(self) -> str:
        return _common_name(self.certificate.subject)


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
    issuer, serial = _issuer_and_serial(certificate)
    return SigningKey(private_key, certificate, issuer + serial, _subject_key_id(certificate))


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
    except _CERTIFICATE_ERRORS as error:
        raise InputError(f"{what}: not a usable X.509 certificate (PEM or DER): {_reason(error)}") from None
    return usable_certificate(certificate, what)


# What `cryptography` raises for a malformed certificate, at load or when a part is first read.
_CERTIFICATE_ERRORS = (ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, UnsupportedAlgorithm)


def _reason(error: Exception) -> str:
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
    except _CERTIFICATE_ERRORS as error:
        raise InputError(f"{what}: unusable X.509 certificate: {_reason(error)}") from None
    return certificate


def _read_small(path: str, what: str) -> bytes:
    return read_capped(path, MAX_KEY_FILE, f"too large for a {what} file")


def _issuer_and_serial(certificate: x509.Certificate) -> tuple[bytes, bytes]:
    """The raw issuer Name and serialNumber INTEGER encodings: copied, not re-encoded, as
    OpenSSL copies them into the SignerInfo and the kernel's x509_cert_parser keeps them
    (asymmetric_key_generate_id(serial, issuer) is the key's id)."""
    try:
        tbs = parse(certificate.public_bytes(serialization.Encoding.DER)).children()[0]
        fields = _children_tlv(tbs)
        if fields[0][0].tag == CONTEXT_0:  # [0] version
            fields = fields[1:]
        (serial, serial_tlv), _signature, (issuer, issuer_tlv) = fields[:3]
        serial.expect(INTEGER, "serialNumber")
        issuer.expect(SEQUENCE, "issuer")
    except (DerError, ValueError) as error:
        raise InputError(f"certificate {certificate.subject.rfc4514_string()}: {error}") from None
    return issuer_tlv, serial_tlv


def _subject_key_id(certificate: x509.Certificate) -> bytes | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _common_name(name: x509.Name) -> str:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else name.rfc4514_string()


# -- signing -----------------------------------------------------------------------------------

CHUNK = 1 << 20  # bytes of a module hashed and copied at a time
# A decompressed module up to this size is kept in memory while being signed, a larger one in an
# unlinked temporary file (beside the module when signing, in $TMPDIR when verifying).
SPOOL_IN_MEMORY = 16 << 20


def cms_signature(key: SigningKey, digest: bytes, hash_name: str, use_key_id: bool = False) -> bytes:
    """sign-file's PKCS#7 (CMS) message for content whose `hash_name` digest is `digest`, byte for
    byte: without signed attributes (CMS_NOATTR) the signature is over the content's digest
    itself, so the content is hashed as it streams past and need not be in memory. RSA PKCS#1
    v1.5 signatures are deterministic, so the whole message is; ECDSA signature values are random."""
    prehashed = Prehashed(HASHES[hash_name]())
    digest_algorithm = _der(SEQUENCE, _oid(_DIGEST_OIDS[hash_name]))  # parameters absent, as OpenSSL writes
    if isinstance(key.private_key, rsa.RSAPrivateKey):
        signature = key.private_key.sign(digest, padding.PKCS1v15(), prehashed)
        signature_algorithm = _der(SEQUENCE, _oid(_RSA_ENCRYPTION), b"\x05\x00")
    else:
        signature = key.private_key.sign(digest, ec.ECDSA(prehashed))
        signature_algorithm = _der(SEQUENCE, _oid(_ECDSA_WITH[hash_name]))
    if use_key_id:  # sign-file -k: CMS_USE_KEYID, SignerInfo and SignedData version 3
        if key.subject_key_id is None:
            raise InputError("the certificate has no subjectKeyIdentifier to sign with (-k / --key-id)")
        version, sid = b"\x02\x01\x03", _der(CONTEXT_0_PRIMITIVE, key.subject_key_id)
    else:
        version, sid = b"\x02\x01\x01", _der(SEQUENCE, key.issuer_and_serial)
    signer_info = _der(SEQUENCE, version, sid, digest_algorithm, signature_algorithm,
                       _der(OCTET_STRING, signature))
    signed_data = _der(SEQUENCE, version, _der(SET, digest_algorithm), _der(SEQUENCE, _oid(_DATA)),
                       _der(SET, signer_info))
    return _der(SEQUENCE, _oid(_SIGNED_DATA), _der(CONTEXT_0, signed_data))


def signature_block(cms: bytes) -> bytes:
    """What sign-file appends to the module: the CMS, struct module_signature (only id_type and
    sig_len set), the magic."""
    return b"".join((cms, TRAILER.pack(0, 0, PKEY_ID_PKCS7, 0, 0, b"\0\0\0", len(cms)), MAGIC))


class ModuleImage:
    """A module's bytes read from its file on demand, sliced like bytes: ElfFile and
    split_signature read its headers and its end, and signing streams the rest, so a module of
    hundreds of MiB is neither held in memory nor mapped (a mapping counts against RLIMIT_AS
    as a copy does)."""

    def __init__(self, file, size: int, what: str):
        self.file, self.size, self.what = file, size, what

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise TypeError("a module image is sliced in steps of 1")
            start, stop, _ = key.indices(self.size)
            return self.read(start, stop - start)
        index = key + self.size if key < 0 else key
        if not 0 <= index < self.size:
            raise IndexError("module image index out of range")
        return self.read(index, 1)[0]

    def read(self, offset: int, size: int) -> bytes:
        if size <= 0:
            return b""
        try:
            self.file.seek(offset)
            data = self.file.read(size)
        except OSError as error:
            raise InputError(f"{self.what}: {error.strerror}") from None
        if len(data) != size:
            raise InputError(f"{self.what}: changed while being read")
        return data


def _chunks(data, end: int):
    """data[:end] a step at a time, never copied whole (bytes, an mmap or a ModuleImage)."""
    view = data if isinstance(data, ModuleImage) else memoryview(data)
    for start in range(0, end, CHUNK):
        yield view[start:min(start + CHUNK, end)]


@contextlib.contextmanager
def module_image(path: str, spool_directory: str | None = None):
    """(the module file's bytes as a ModuleImage, its compression): a compressed module is
    decompressed (with the cap) from a mapping of the file (the compressed bytes, a fraction of
    the module's) into a temporary file, spooled to `spool_directory` when large."""
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size > MAX_DECOMPRESSED:
            raise InputError(f"{path}: larger than {MAX_DECOMPRESSED >> 20} MiB, not a module")
        kind = compression_of(file.read(6))
        if kind is None:
            yield ModuleImage(file, size, path), None
            return
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, dir=spool_directory) as spool:
            try:
                with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as compressed:
                    decompress_into(compressed, spool, path)
            except OSError as error:
                raise InputError(f"{path}: cannot decompress it into a temporary file: {error.strerror}") from None
            yield ModuleImage(spool, spool.tell(), path), kind


def unsigned_size(image, what: str, replace: bool) -> tuple[int, bool]:
    """The size of the module to sign (an existing signature cut off when `replace`) and whether
    it was signed."""
    size, signature = split_signature(image)
    if signature is not None:
        if signature.defect and signature.defect.startswith("EBADMSG"):
            raise InputError(f"{what}: malformed module signature ({signature.defect}); "
                             "cannot tell where the module ends")
        if not replace:
            raise InputError(f"{what}: already signed (by '{signature.signer}'); use --replace to re-sign")
    if ElfFile(image, what, size).section(".gnu.linkonce.this_module") is None:
        raise InputError(f"{what}: not a kernel module (no .gnu.linkonce.this_module section)")
    return size, signature is not None


def _write_signed(image, size: int, write, key: SigningKey, hash_name: str, use_key_id: bool) -> int:
    """image[:size] and its signature through `write`, hashed in the same pass that copies it
    (so the signature is over the bytes written, even if the file changes meanwhile); the CMS's size."""
    digest = hashes.Hash(HASHES[hash_name]())
    for chunk in _chunks(image, size):
        digest.update(chunk)
        write(chunk)
    cms = cms_signature(key, digest.finalize(), hash_name, use_key_id)
    write(signature_block(cms))
    return len(cms)


@dataclass(frozen=True)
class SignedFile:
    path: str
    compression: str | None
    replaced: bool
    signature_size: int
    temporary: str  # the signed file, written next to `path`, waiting for commit()


def sign_file(path: str, key: SigningKey, hash_name: str, replace: bool = False,
              use_key_id: bool = False) -> SignedFile:
    """Sign a module file (decompressing and recompressing .ko.xz/.zst/.gz) into a temporary
    file beside it; commit() renames it over the module. Nothing is changed on error. Memory
    stays bounded whatever the module's size: it is streamed CHUNK by CHUNK, and a compressed
    one's decompressed and signed bytes go through temporary files spooled beside it."""
    directory = os.path.dirname(os.path.abspath(path))
    with module_image(path, directory) as (image, kind):
        size, replaced = unsigned_size(image, path, replace)
        with _temporary_beside(path) as (output, temporary):
            if kind is None:
                signature_size = _write_signed(image, size, output.write, key, hash_name, use_key_id)
            else:
                with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY, dir=directory) as signed:
                    signature_size = _write_signed(image, size, signed.write, key, hash_name, use_key_id)
                    compress_into(signed, output, kind)
    return SignedFile(path, kind, replaced, signature_size, temporary)


def compress_into(source, output, kind: str) -> None:
    """All of `source` (a binary file) compressed into `output` as
    scripts/Makefile.modinst compresses modules: `xz --check=crc32 --lzma2=dict=1MiB` (the
    kernel's own decompressor, CONFIG_MODULE_DECOMPRESS, checks only CRC32), `zstd` at its default
    level with the content size in the frame header, `gzip -n`."""
    size = source.seek(0, os.SEEK_END)
    source.seek(0)
    with _compressor(output, kind, size) as writer:
        shutil.copyfileobj(source, writer, CHUNK)


def _compressor(output, kind: str, size: int):
    if kind == "xz":
        return lzma.LZMAFile(output, "wb", format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                             filters=[{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 20}])
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=3).stream_writer(output, size=size, closefd=False)
    return gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=output, mtime=0)


def read_module_data(path: str) -> bytes:
    """A module file's bytes, decompressed (with the cap)."""
    return decompress(read_capped(path, MAX_DECOMPRESSED, f"larger than {MAX_DECOMPRESSED >> 20} MiB, not a module"),
                      path)


@contextlib.contextmanager
def _temporary_beside(path: str):
    """(a binary file, its name): a new file beside `path`, given its mode once written, removed on error."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".kabigate", dir=directory)
    except OSError as error:
        raise InputError(f"{path}: cannot write beside it: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            yield file, temporary
        os.chmod(temporary, mode)
    except BaseException as error:
        os.unlink(temporary)
        if isinstance(error, OSError):
            raise InputError(f"{path}: cannot write the signed module: {error.strerror}") from None
        raise


# What forked signing workers share with their parent: set before the fork, so that the key is
# inherited and never crosses a pipe.
_worker_job: tuple | None = None


def sign_files(paths: list[str], key: SigningKey, hash_name: str, replace: bool = False, use_key_id: bool = False,
               advance=lambda: None) -> list[SignedFile]:
    """sign_file() for every path, in one worker process per CPU (RSA, hashing, ELF checks and
    I/O in parallel), all or none: on the first error or an interrupt the other workers stop,
    every temporary is removed and the error is raised. The caller commit()s the result."""
    global _worker_job
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    _worker_job = (key, hash_name, replace, use_key_id, stop)
    done: dict[str, SignedFile] = {}
    failure: BaseException | None = None
    try:
        with context.Pool(max(1, min(len(paths), os.cpu_count() or 1)), initializer=_ignore_sigint) as pool:
            results = pool.imap_unordered(_sign_in_worker, paths, chunksize=4)
            while True:
                try:
                    path, signed, error = next(results)
                except StopIteration:
                    break
                except BaseException as raised:  # noqa: BLE001 - a worker's bug, or ^C: drain, clean up, re-raise
                    failure = failure or raised
                    stop.set()
                    continue
                if signed is not None:
                    done[path] = signed
                if error is not None and failure is None:
                    failure = InputError(error)
                    stop.set()
                advance()
    finally:
        _worker_job = None
    if failure is not None:
        for signed in done.values():
            discard(signed)
        raise failure
    return [done[path] for path in paths]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and cleans up


def _sign_in_worker(path: str) -> tuple[str, SignedFile | None, str | None]:
    key, hash_name, replace, use_key_id, stop = _worker_job
    if stop.is_set():
        return path, None, None
    try:
        return path, sign_file(path, key, hash_name, replace, use_key_id), None
    except InputError as error:
        return path, None, str(error)


def commit(signed_files: list[SignedFile]) -> None:
    """Rename the signed temporaries over their modules, once all of them are on disk (one
    sync(2) for the lot: an fsync(2) per module costs more than signing it). All or none: each
    module is first hard-linked (or copied) aside, so that when a rename fails, or on ^C, the
    modules already replaced are put back; temporaries and backups are removed either way."""
    os.sync()
    backups: list[tuple[str, str]] = []  # (backup, module)
    replaced: list[tuple[str, str]] = []
    try:
        for signed in signed_files:
            backups.append((_backup(signed.path), signed.path))
        for signed in signed_files:
            os.replace(signed.temporary, signed.path)
            replaced.append((signed.temporary, signed.path))
    except BaseException as error:
        restored = dict(backups)
        for _, path in reversed(replaced):
            backup = next(b for b, p in backups if p == path)
            try:
                os.replace(backup, path)
                restored.pop(backup)
            except OSError:
                pass  # left beside it under its backup name, which the error names below
        for backup in restored:
            _remove(backup)
        for signed in signed_files:
            _remove(signed.temporary)
        if isinstance(error, OSError):
            raise InputError(f"{error.filename or 'module'}: cannot replace it with the signed module "
                             f"({error.strerror}); no module was changed") from None
        raise
    for backup, _ in backups:
        _remove(backup)


def _backup(path: str) -> str:
    directory, name = os.path.split(os.path.abspath(path))
    backup = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.kabigate-backup")
    try:
        os.link(path, backup)
    except OSError:
        shutil.copy2(path, backup)  # no hard links on this file system: a copy
    return backup


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def discard(signed: SignedFile) -> None:
    try:
        os.unlink(signed.temporary)
    except FileNotFoundError:
        pass


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


# -- trust -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrustedCert:
    certificate: x509.Certificate
    source: str  # the file it came from
    ids: frozenset[bytes]  # the kernel's key ids: serial + issuer, and the subject key id

    @property
    def subject(self) -> str:
        return _common_name(self.certificate.subject)


@dataclass(frozen=True)
class TrustPolicy:
    """Distribution rules on top of upstream's: upstream checks neither usage nor validity."""

    require_codesigning: bool = False  # SUSE: the signing certificate must have the codeSigning EKU
    accept_module_signing_oid: bool = False  # ...or Red Hat's module-signing-only EKU
    reject_expired: bool = False


def trusted_cert(certificate: x509.Certificate, source: str) -> TrustedCert:
    issuer, serial = _issuer_and_serial(certificate)
    ids = {parse(serial).content + issuer}
    skid = _subject_key_id(certificate)
    if skid is not None:
        ids.add(skid)
    return TrustedCert(certificate, source, frozenset(ids))


def load_trust(paths: list[str]) -> list[TrustedCert]:
    """Trusted certificates from certificate files (PEM, several per file, or DER), kernel images
    (vmlinuz, vmlinux: their built-in keys), or a kernel root / module tree whose vmlinuz is found."""
    trusted = []
    for path in paths:
        source = _kernel_image_of(path) if os.path.isdir(path) else path
        data = read_capped(source, MAX_KERNEL_IMAGE, "too large for a certificate or kernel image")
        if b"-----BEGIN CERTIFICATE-----" in data:
            try:
                certificates = x509.load_pem_x509_certificates(data)
            except _CERTIFICATE_ERRORS as error:
                raise InputError(f"{source}: unreadable PEM certificate: {_reason(error)}") from None
            certificates = [usable_certificate(c, source) for c in certificates]
        elif data[:2] == b"\x30\x82" and len(data) == int.from_bytes(data[2:4], "big") + 4:
            certificates = [load_certificate(data, source)]
        else:
            certificates = []
            for der in system_certificates(kernel_image(data, source), source):
                try:  # x509_load_certificate_list() skips what it cannot parse, so does this
                    certificates.append(usable_certificate(x509.load_der_x509_certificate(bytes(der)), source))
                except (InputError, *_CERTIFICATE_ERRORS):
                    continue
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
        if oid_text(content_type) != _SIGNED_DATA:
            raise _Refused("EBADMSG", "not a PKCS#7 signedData message")
        fields = content.expect(CONTEXT_0, "content").children()[0].expect(SEQUENCE, "SignedData").children()
        encapsulated = fields[2].expect(SEQUENCE, "encapContentInfo").children()
        if oid_text(encapsulated[0]) != _DATA:
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
        key_id = serial.expect(INTEGER, "serialNumber").content + _tlv(issuer.expect(SEQUENCE, "issuer"))
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
    if algorithm_oid == _RSA_ENCRYPTION:  # pkcs7_sig_note_pkey_algo(): not sha256WithRSAEncryption
        algorithm = "rsa"
    elif algorithm_oid in _ECDSA_WITH.values():
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
    for chunk in _chunks(data, size):
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
