"""Signing modules as scripts/sign-file does: the unsigned size, the signed bytes streamed into a
temporary file beside the module, recompression, signing in forked workers, and committing
every file or none."""

from __future__ import annotations

import contextlib
import gzip
import lzma
import multiprocessing
import os
import secrets
import shutil
import signal
import tempfile
from dataclasses import dataclass

import zstandard
from cryptography.hazmat.primitives import hashes

from kabigate.errors import InputError, read_capped
from kabigate.formats.compression import MAX_DECOMPRESSED, decompress
from kabigate.formats.elf import ElfFile
from kabigate.formats.modsig import split_signature
from kabigate.signing.cms import cms_signature, signature_block
from kabigate.signing.image import CHUNK, SPOOL_IN_MEMORY, chunks, module_image
from kabigate.signing.keys import HASHES, SigningKey


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
    for chunk in chunks(image, size):
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
    assert _worker_job is not None, "set by sign_files() before the workers fork"
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
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def discard(signed: SignedFile) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(signed.temporary)


