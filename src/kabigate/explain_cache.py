"""A kernel's types for `kabigate explain`, read from its vmlinuz/vmlinux, and its headers' index,
kept in a cache outside the clone (`$KABIGATE_CACHE` or the user's cache directory, `btf/`), so
that the second question about a kernel does not decompress, parse or scan it again.

An entry is keyed by its files' paths, sizes and mtimes and by FORMAT (bumped when KernelTypes,
HeaderIndex or their rendering change); it is written to a temporary file and renamed, so a reader never sees half
of one. Entries are pickles kabigate wrote itself: the cache directory is the user's own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tempfile
from pathlib import Path

import platformdirs

from kabigate.errors import InputError, read_capped
from kabigate.explain import KernelTypes, SymbolExplanation, explain, kernel_types
from kabigate.formats.btf import parse_btf
from kabigate.formats.bzimage import MAX_KERNEL_IMAGE, kernel_image
from kabigate.formats.cheaders import HeaderIndex, index_headers
from kabigate.formats.elf import ElfFile
from kabigate.formats.vmlinux import image_exports, image_release
from kabigate.model import Kernel

FORMAT = 2
MAX_HEADER = 4 << 20  # the largest 6.1 header is under 1 MiB; bigger ones are not headers
MAX_HEADERS = 200_000


def cache_dir() -> Path:
    return Path(os.environ.get("KABIGATE_CACHE") or platformdirs.user_cache_dir("kabigate")) / "btf"


def load_types(image_path: str, use_cache: bool = True) -> KernelTypes:
    """The KernelTypes of the kernel image at `image_path` (vmlinuz or vmlinux)."""
    try:
        stat = os.stat(image_path)
    except OSError as error:
        raise InputError(f"{image_path}: {error.strerror}") from None
    return _cached(f"{os.path.abspath(image_path)}\0{stat.st_size}\0{stat.st_mtime_ns}",
                   lambda: _read(image_path), use_cache)


def kernel_types_of(kernel: Kernel, use_cache: bool = True) -> KernelTypes:
    """A loaded kernel's types (from its image's BTF), with all its exports (modules' too)."""
    if kernel.image is None:
        raise InputError(f"{', '.join(kernel.sources)}: no kernel image (vmlinuz/vmlinux) found: its BTF is "
                         "what explains CRC changes; give the kernel's /boot/vmlinuz-<kver> too")
    types = load_types(kernel.image, use_cache)
    return dataclasses.replace(types, exports=kernel.exports, release=kernel.release or types.release)


def header_trees(paths: list[str]) -> list[Path]:
    """The headers trees (a folder with include/linux) a kernel's paths name or hold: a headers or
    source tree itself, an extracted package root's usr/src/*, a module tree's build/source links."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            continue
        candidates = [path, path / "build", path / "source"]
        for parent in (path / "usr" / "src", path / "usr" / "src" / "kernels"):
            if parent.is_dir():
                candidates += sorted(parent.iterdir())
        for candidate in candidates:
            if (candidate / "include" / "linux").is_dir() and candidate.resolve() not in found:
                found.append(candidate.resolve())
    return found


def load_headers(trees: list[Path], arch: str = "x86", use_cache: bool = True) -> HeaderIndex | None:
    """The HeaderIndex of the .h files under include/ and arch/<arch>/include of `trees` (merged:
    Debian splits them between linux-headers-<kver>-common and the flavour's), None if none."""
    files: dict[str, tuple[Path, os.stat_result]] = {}
    for tree in trees:
        for top in (tree / "include", tree / "arch" / arch / "include"):
            for directory, _dirs, names in os.walk(top):
                for name in names:
                    if name.endswith(".h") and len(files) < MAX_HEADERS:
                        path = Path(directory) / name
                        stat = path.stat() if path.is_file() else None
                        if stat is not None and stat.st_size <= MAX_HEADER:
                            files.setdefault(path.relative_to(tree).as_posix(), (path, stat))
    if not files:
        return None
    listing = "\0".join(f"{name}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
                        for name, (path, stat) in sorted(files.items()))
    return _cached(listing, lambda: index_headers({name: path.read_bytes() for name, (path, _s) in files.items()},
                                                  arch), use_cache)


def _cached(identity: str, compute, use_cache: bool):
    digest = hashlib.sha256(f"{FORMAT}\0{identity}".encode()).hexdigest()
    entry = cache_dir() / f"{digest}.pickle"
    if use_cache and entry.is_file():
        try:
            with open(entry, "rb") as file:
                return pickle.load(file)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            pass  # unreadable or from another kabigate: computed again below
    value = compute()
    if use_cache:
        _store(entry, value)
    return value


def _read(image_path: str) -> KernelTypes:
    data = read_capped(image_path, MAX_KERNEL_IMAGE, f"larger than {MAX_KERNEL_IMAGE >> 20} MiB, not a kernel image")
    image = kernel_image(data, image_path)
    elf = ElfFile(image, image_path)
    section = elf.section(".BTF")
    if section is None:
        raise InputError(f"{image_path}: no .BTF section (a kernel built without CONFIG_DEBUG_INFO_BTF)")
    btf = parse_btf(elf.section_bytes(section), f"{image_path} (.BTF)")
    release = image_release(image) or os.path.basename(image_path)
    return kernel_types(btf, release, image_exports(elf))


def _store(entry: Path, value) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".btf-", dir=entry.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                pickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, entry)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        pass  # a read-only or full cache only costs time


def explain_symbols(old: Kernel, new: Kernel, symbols: list[str],
                    use_cache: bool = True) -> dict[str, SymbolExplanation] | None:
    """Each symbol's explanation from `old` to `new` (headers found in the old kernel's paths),
    or None when either kernel's image, hence its BTF, is unknown."""
    if old.image is None or new.image is None or not symbols:
        return None
    result = explain(kernel_types_of(old, use_cache), kernel_types_of(new, use_cache), sorted(set(symbols)),
                     load_headers(header_trees(old.sources), use_cache=use_cache))
    return {explained.symbol: explained for explained in result.symbols}
