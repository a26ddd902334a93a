"""The kernel's built-in trusted certificates, found in a decompressed vmlinux.

certs/system_certificates.S lays out, in .init.rodata:
    system_certificate_list: the DER certificates, concatenated (certs/signing_key.x509 first,
                             then CONFIG_SYSTEM_TRUSTED_KEYS)
    [CONFIG_SYSTEM_EXTRA_CERTIFICATE: a zero-filled reserve and an int]
    module_cert_size, system_certificate_list_size: each .align 8 (.quad, or .long on 32-bit)
Distribution images are stripped, so the list is found by scanning for runs of certificates
that those two size words confirm; a certificate embedded elsewhere (the revocation list,
CONFIG_SYSTEM_REVOCATION_KEYS, a driver's key) is not followed by them and is not trusted.
"""

from __future__ import annotations

import struct

from kabigate.errors import InputError

CERT_HEADER = b"\x30\x82"  # SEQUENCE with a two-byte length: what x509_load_certificate_list() expects
# Room for CONFIG_SYSTEM_EXTRA_CERTIFICATE_SIZE (default 4096) between the list and its sizes.
_MAX_GAP = 64 * 1024
_WORDS = [struct.Struct(f) for f in ("<Q", ">Q", "<I", ">I")]


def system_certificates(image: bytes, what: str) -> list[bytes]:
    """Each certificate's DER, as load_system_certificate_list() (certs/system_keyring.c) hands
    them to the builtin trusted keyring."""
    start = image.find(CERT_HEADER)
    while start != -1:
        run = _certificate_run(image, start)
        if run and _sizes_follow(image, start, run):
            return run
        start = image.find(CERT_HEADER, start + 1)
    raise InputError(f"{what}: no built-in certificate list (system_certificate_list) in the kernel image")


def _certificate_run(image: bytes, offset: int) -> list[bytes]:
    """x509_load_certificate_list() (certs/common.c): certificates back to back, each a SEQUENCE
    with a two-byte length; here also required to open with the tbsCertificate SEQUENCE."""
    run = []
    while image[offset:offset + 2] == CERT_HEADER and image[offset + 4:offset + 6] == CERT_HEADER:
        size = int.from_bytes(image[offset + 2:offset + 4], "big") + 4
        if offset + size > len(image):
            break
        run.append(image[offset:offset + size])
        offset += size
    return run


def _sizes_follow(image: bytes, start: int, run: list[bytes]) -> bool:
    """module_cert_size (the first certificate's size, 0 without CONFIG_MODULE_SIG) and
    system_certificate_list_size, 8-byte aligned after the list."""
    total = sum(map(len, run))
    end = start + total
    first = (end + 7) & ~7
    for at in range(first + 8, min(end + _MAX_GAP, len(image) - 8) + 1, 8):
        for word in _WORDS:
            if word.unpack_from(image, at)[0] == total and word.unpack_from(image, at - 8)[0] in (0, len(run[0])):
                return True
    return False
