"""A module file's bytes, read on demand (decompressed to a spool when compressed), for signing
and verifying modules of any size in bounded memory."""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile

from kabigate.errors import InputError, open_regular
from kabigate.formats.compression import MAX_DECOMPRESSED, compression_of, decompress_into

CHUNK = 1 << 20  # bytes of a module hashed and copied at a time
# A decompressed module up to this size is kept in memory while being signed, a larger one in an
# unlinked temporary file (beside the module when signing, in $TMPDIR when verifying).
SPOOL_IN_MEMORY = 16 << 20


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


def chunks(data, end: int):
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


