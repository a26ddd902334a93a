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
# Places where a certificate list could start ("30 82 .. .. 30 82"): one in Debian's vmlinux.
# More than this many is not a kernel image (and would only cost time).
MAX_CANDIDATES = 1 << 16


def system_certificates(image, what: str) -> list[bytes]:
    """Each certificate's DER, as load_system_certificate_list() (certs/system_keyring.c) hands
    them to the builtin trusted keyring: the first place in the image where certificates run back
    to back and are followed by the two size words.

    In linear time: each candidate start is walked once (a run from an earlier start that reaches
    it reuses its walk), and the size words are looked for in one pass over the places after the
    runs' ends, not once per start (a crafted image of back-to-back headers made that quadratic)."""
    starts, seen = [], 0
    at = image.find(CERT_HEADER)
    while at != -1:
        seen += 1
        if image[at + 4:at + 6] == CERT_HEADER:
            starts.append(at)
        if len(starts) > MAX_CANDIDATES or seen > 16 * MAX_CANDIDATES:
            raise InputError(f"{what}: more than {len(starts)} certificate-like headers: "
                             "not a kernel image kabigate reads")
        at = image.find(CERT_HEADER, at + 1)
    size = len(image)
    step: dict[int, int] = {}  # start -> size of the certificate there (only where it fits)
    for start in starts:
        length = int.from_bytes(image[start + 2:start + 4], "big") + 4
        if start + length <= size:
            step[start] = length
    end_of: dict[int, int] = {}  # start -> end of the run of certificates from there
    for start in sorted(step, reverse=True):  # a run continues at a higher offset
        following = start + step[start]
        end_of[start] = end_of.get(following, following)
    # One question per start: is there, after its run's end, an aligned size word equal to the
    # run's total, preceded 8 bytes earlier by 0 or the first certificate's size?
    wanted: list[set[tuple[int, int]]] = [set() for _ in _WORDS]
    questions = []  # (last place to look, first place to look, start)
    for start, end in end_of.items():
        total, first = end - start, step[start]
        low = ((end + 7) & ~7) + 8
        high = min(end + _MAX_GAP, size - 8)
        if low > high:
            continue
        questions.append((high, low, start))
        for keys in wanted:
            keys.add((0, total))
            keys.add((first, total))
    answers = _size_words(image, questions, wanted, step, end_of)
    if answers:
        start = min(answers)
        run, offset = [], start
        while offset in step and offset < end_of[start]:
            run.append(bytes(image[offset:offset + step[offset]]))
            offset += step[offset]
        return run
    raise InputError(f"{what}: no built-in certificate list (system_certificate_list) in the kernel image")


def _size_words(image, questions, wanted, step, end_of) -> set[int]:
    """The starts whose question has an answer: one sweep over the aligned places of the union
    of the windows, remembering where each (previous word, word) pair was last seen."""
    questions.sort()
    windows = sorted((low, high) for high, low, _ in questions)
    last_seen: dict[tuple[int, int, int], int] = {}
    answered: set[int] = set()
    pending = 0
    position = -1
    for low, high in windows:
        at = max(low, position + 8)
        while at <= high:
            while pending < len(questions) and questions[pending][0] < at:  # windows already swept
                _answer(questions[pending], last_seen, step, end_of, answered)
                pending += 1
            for index, word in enumerate(_WORDS):
                pair = (word.unpack_from(image, at - 8)[0], word.unpack_from(image, at)[0])
                if pair in wanted[index]:
                    last_seen[(index, *pair)] = at
            position = at
            at += 8
    while pending < len(questions):
        _answer(questions[pending], last_seen, step, end_of, answered)
        pending += 1
    return answered


def _answer(question, last_seen, step, end_of, answered: set[int]) -> None:
    _high, low, start = question
    total, first = end_of[start] - start, step[start]
    for index in range(len(_WORDS)):
        for previous in (0, first):
            if last_seen.get((index, previous, total), -1) >= low:
                answered.add(start)
                return
