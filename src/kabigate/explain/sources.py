"""A kernel's types (the BTF of its vmlinuz/vmlinux and of its exporting modules) and its headers'
index, read from what a user names or from a stored kernel's sources (folders, packages), through
the cache; and explaining a stored or loaded pair's CRC changes from them."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from kabigate.errors import InputError, read_capped
from kabigate.explain.cache import CACHED_ONLY, HEADERS, MODULE_TYPES, PROBING, TYPES, NotCached, cached, entry_path
from kabigate.explain.crc import KernelTypes, SymbolExplanation, explain, kernel_types
from kabigate.formats.btf import parse_btf
from kabigate.formats.bzimage import MAX_KERNEL_IMAGE, kernel_image
from kabigate.formats.cheaders import HeaderIndex, index_headers
from kabigate.formats.compression import compression_of, decompress
from kabigate.formats.elf import ElfFile
from kabigate.formats.modsig import split_signature
from kabigate.formats.vmlinux import image_abi, image_release
from kabigate.inputs.kernels import kernel_image_at
from kabigate.inputs.packages import Package, is_package_file, is_url
from kabigate.model import MODULE_SUFFIXES, Kernel

MAX_HEADER = 4 << 20  # the largest 6.1 header is under 1 MiB; bigger ones are not headers
MAX_HEADERS = 200_000


def load_types(image_path: str, use_cache: bool = True) -> KernelTypes:
    """The KernelTypes of the kernel image at `image_path` (vmlinuz or vmlinux)."""
    return cached(_image_identity(image_path), lambda: _read(image_path), use_cache, TYPES)


def load_module_types(image_path: str, modules: tuple[str, tuple[str, ...]], use_cache: bool = True
                      ) -> dict[str, KernelTypes]:
    """The own types of a kernel's exporting modules (`modules`: its module tree's kernel/ folder,
    the owners of module exports), cached apart from vmlinux's: a question about vmlinux's
    exports does not read them."""
    return cached(_image_identity(image_path, modules), lambda: _read_modules(image_path, modules), use_cache,
                   MODULE_TYPES)


def warm(kernels: list[Kernel], header_tree_list: list[Path], with_modules: bool = True) -> None:
    """Fill the cache for these kernels and headers in parallel processes (one per core, two at
    most): reading one kernel is CPU-bound Python (decompress, parse, render), so a pair read
    side by side takes half the time. Each child writes its cache entry; nothing large comes back."""
    todo: list[tuple[Callable[..., object], tuple]] = [(load_types, (kernel.image,)) for kernel in kernels
            if kernel.image and not _cached_already(_image_identity(kernel.image))]
    todo += [(load_module_types, (kernel.image, _modules_of(kernel))) for kernel in kernels
             if with_modules and kernel.image and _modules_of(kernel)
             and not _cached_already(_image_identity(kernel.image, _modules_of(kernel)))]
    if header_tree_list and not _cached_already(_headers_identity(header_tree_list, "x86")[0]):
        todo.append((load_headers, (header_tree_list,)))
    if len(todo) < 2 or (os.cpu_count() or 1) < 2:
        return  # one job: done in-process by the caller
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(_fill, function, args) for function, args in todo]:
            future.result()


def _fill(function, args) -> None:
    function(*args)  # its result is in the cache; the parent reads it there


def _cached_already(identity: str) -> bool:
    return entry_path(identity).is_file()


def _image_identity(image_path: str, modules: tuple[str, tuple[str, ...]] | None = None) -> str:
    try:
        stat = os.stat(image_path)
    except OSError as error:
        raise InputError(f"{image_path}: {error.strerror}") from None
    identity = f"{os.path.abspath(image_path)}\0{stat.st_size}\0{stat.st_mtime_ns}"
    if modules is not None:
        folder = Path(modules[0])
        owners = hashlib.sha256("\0".join(modules[1]).encode()).hexdigest()
        identity += f"\0{folder.resolve()}\0{folder.stat().st_mtime_ns}\0{owners}"
    return identity


def _modules_of(kernel: Kernel) -> tuple[str, tuple[str, ...]] | None:
    """The in-tree module folder beside a kernel's image (<root>/boot/vmlinuz-<kver> ->
    <root>/lib/modules/<kver>/kernel) and the modules that export something."""
    if kernel.image is None or kernel.release is None:
        return None
    folder = Path(kernel.image).parent.parent / "lib" / "modules" / kernel.release / "kernel"
    owners = tuple(sorted({e.owner for e in kernel.exports.values() if e.owner != "vmlinux"}))
    return (str(folder), owners) if folder.is_dir() and owners else None


def kernel_types_of(kernel: Kernel, use_cache: bool = True, with_modules: bool = True) -> KernelTypes:
    """A loaded kernel's types (from its image's BTF), with all its exports (modules' too)."""
    if kernel.image is None and kernel.release:  # read from packages: the image inside linux-image/kernel-core
        types = types_from_sources(kernel.sources, kernel.release, use_cache)
        if types is not None:
            return dataclasses.replace(types, exports=kernel.exports, release=kernel.release)
    if kernel.image is None:
        raise InputError(f"{', '.join(kernel.sources)}: no kernel image (vmlinuz/vmlinux) found: its BTF is "
                         "what explains CRC changes; give the kernel's /boot/vmlinuz-<kver> too")
    types = load_types(kernel.image, use_cache)
    types = dataclasses.replace(types, exports=kernel.exports, release=kernel.release or types.release)
    modules = _modules_of(kernel)
    if with_modules and modules is not None:
        types.modules = load_module_types(kernel.image, modules, use_cache)
    return types


def needs_modules(kernel: Kernel, symbols: list[str] | None) -> bool:
    """Whether explaining `symbols` (None: all) needs the modules' BTF: one is a module's export."""
    return symbols is None or any(kernel.exports[s].owner != "vmlinux" for s in symbols if s in kernel.exports)


def header_trees(paths: list[str]) -> list[Path]:
    """The headers trees (a folder with include/linux) a kernel's paths name or hold: a headers or
    source tree itself, an extracted package root's usr/src/*, a module tree's build/source links;
    a Debian flavor folder stands for the -common tree it includes."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            continue
        candidates = [path, path / "build", path / "source"]
        for parent in (path / "usr" / "src", path / "usr" / "src" / "kernels"):
            if parent.is_dir():
                candidates += sorted(parent.iterdir())
        for candidate in candidates:
            tree = _debian_common_tree(candidate) or candidate
            if (tree / "include" / "linux").is_dir() and tree.resolve() not in found:
                found.append(tree.resolve())
    return found


# Debian's flavor headers (/usr/src/linux-headers-<kver>: generated headers, .config, Module.symvers)
# hold a Makefile that includes the -common package's, where include/linux is.
_COMMON_MAKEFILE = re.compile(r"^include\s+(.*linux-headers-[^/\s]+-common)/Makefile\s*$", re.M)


def _debian_common_tree(folder: Path) -> Path | None:
    """The -common headers tree a Debian flavor headers folder includes, None for any other folder."""
    makefile = folder / "Makefile"
    try:
        if not makefile.is_file() or makefile.stat().st_size > 4096:
            return None
        found = _COMMON_MAKEFILE.search(makefile.read_text(errors="replace"))
    except OSError:
        return None
    if found is None:
        return None
    # `include $(dir $(lastword $(MAKEFILE_LIST)))../linux-headers-...-common/Makefile`: beside this one
    target = found.group(1).replace("$(dir $(lastword $(MAKEFILE_LIST)))", "")
    common = Path(target) if target.startswith("/") else folder / target
    return common if (common / "include" / "linux").is_dir() else None


def load_headers(trees: list[Path], arch: str = "x86", use_cache: bool = True) -> HeaderIndex | None:
    """The HeaderIndex of the .h files under include/ and arch/<arch>/include of `trees` (merged:
    Debian splits them between linux-headers-<kver>-common and the flavour's), None if none."""
    memo = CACHED_ONLY.get()
    key = ("headers", tuple(trees), arch)  # walking a headers tree takes ~0.3 s: once inside cached_only()
    if memo is not None and key in memo:
        identity, files = memo[key]
    else:
        identity, files = _headers_identity(trees, arch)
        if memo is not None:
            memo[key] = identity, files
    if not files:
        return None
    return cached(identity, lambda: index_headers({name: path.read_bytes() for name, (path, _s) in files.items()},
                                                   arch), use_cache, HEADERS)


def _headers_identity(trees: list[Path], arch: str) -> tuple[str, dict[str, tuple[Path, os.stat_result]]]:
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
    listing = "\0".join(f"{name}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}"
                        for name, (path, stat) in sorted(files.items()))
    return f"{arch}\0{listing}", files


def _read(image_path: str) -> KernelTypes:
    data = read_capped(image_path, MAX_KERNEL_IMAGE, f"larger than {MAX_KERNEL_IMAGE >> 20} MiB, not a kernel image")
    return _types_of_image(data, image_path)


def _read_modules(image_path: str, modules: tuple[str, tuple[str, ...]]) -> dict[str, KernelTypes]:
    data = read_capped(image_path, MAX_KERNEL_IMAGE, f"larger than {MAX_KERNEL_IMAGE >> 20} MiB, not a kernel image")
    image, _exports, btf = _image_btf(data, image_path)
    return _module_types(btf, image_release(image) or os.path.basename(image_path), *modules)


def _image_btf(data: bytes, what: str):
    image = kernel_image(data, what)
    _machine, exports, blob = image_abi(data, image, what)
    if blob is None:
        raise InputError(f"{what}: no .BTF section (a kernel built without CONFIG_DEBUG_INFO_BTF)")
    return image, exports, parse_btf(blob, f"{what} (.BTF)")


def _types_of_image(data: bytes, what: str) -> KernelTypes:
    image, exports, btf = _image_btf(data, what)
    release = image_release(image) or os.path.basename(what)
    return kernel_types(btf, release, exports)


def read_module_elf(path: str) -> ElfFile:
    """A module file's ELF image (decompressed, its signature cut off), for its .BTF."""
    raw = read_capped(path, MAX_KERNEL_IMAGE, f"larger than {MAX_KERNEL_IMAGE >> 20} MiB, not a module")
    data = decompress(raw, path) if compression_of(raw) else raw
    size, _signature = split_signature(data)
    return ElfFile(data, path, size)


def _module_types(base, release: str, folder: str, owners: tuple[str, ...]) -> dict[str, KernelTypes]:
    """Each exporting module's own types, from its split BTF on vmlinux's (a module without
    .BTF, or whose file is not there, is left out: its exports say their BTF was not read)."""
    found = {}
    for owner in owners:
        path = next((p for p in (Path(folder) / f"{owner}{suffix}" for suffix in MODULE_SUFFIXES) if p.is_file()),
                    None)
        if path is None:
            continue
        module = read_module_elf(str(path))
        section = module.section(".BTF")
        if section is not None:
            split = parse_btf(module.section_bytes(section), f"{path} (.BTF)", base)
            found[owner] = kernel_types(split, release, {})
    return found


def explain_symbols(old: Kernel, new: Kernel, symbols: list[str], use_cache: bool = True,
                    required: bool = False) -> dict[str, SymbolExplanation] | None:
    """Each symbol's explanation from `old` to `new` (headers found in the old kernel's paths),
    or None when either kernel's image, hence its BTF, is unknown (`required`: an input error)."""
    if not required and (old.image is None or new.image is None):
        return None
    if not symbols:
        return None
    modules = needs_modules(old, symbols)
    result = explain(kernel_types_of(old, use_cache, modules), kernel_types_of(new, use_cache, modules),
                     sorted(set(symbols)), headers_from_sources(old.sources, use_cache=use_cache))
    return {explained.symbol: explained for explained in result.symbols}


# -- a stored kernel's BTF and headers, from the files it was ingested from ----------------------

def types_from_sources(sources: list[str], release: str, use_cache: bool = True) -> KernelTypes | None:
    """The types of `release`'s image among a stored kernel's sources (a vmlinuz, a package root
    or module tree holding boot/vmlinuz-<release>, or a linux-image/kernel-core package), or None."""
    for source in _expanded(sources):
        path = Path(source)
        if is_url(source) or not path.exists():
            continue
        if path.is_file() and is_package_file(source):
            stat = path.stat()
            types = cached(f"package\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{release}",
                            lambda source=source: _types_in_package(source, release), use_cache,
                            dataclasses.replace(TYPES, optional=True))
            if types is not None:
                return types
            continue
        image = kernel_image_at(path, release)
        if image is not None:
            return load_types(str(image), use_cache)
    return None


def types_cached(sources: list[str], release: str) -> bool:
    """Whether the cache holds the types of a stored kernel's image (nothing is decoded)."""
    token = PROBING.set(True)
    try:
        return types_from_sources(sources, release) is not None
    except NotCached:
        return False
    finally:
        PROBING.reset(token)


def _stored_modules(sources: list[str], kernel: Kernel, use_cache: bool) -> dict[str, KernelTypes]:
    """A stored kernel's modules' own types, when one of its sources is a folder with the image and
    the module tree beside it (packages are not read for them)."""
    for source in _expanded(sources):
        path = Path(source)
        image = kernel_image_at(path, kernel.release) if path.is_dir() and kernel.release is not None else None
        modules = _modules_of(dataclasses.replace(kernel, image=str(image))) if image is not None else None
        if modules is not None:
            return load_module_types(str(image), modules, use_cache)
    return {}


def headers_of_sources(sources: list[str]) -> list[str]:
    """What headers_from_sources() reads a kernel's headers from: the headers trees in its folders,
    else its packages (those holding headers among them); [] when it has neither."""
    sources = _expanded(sources)
    trees = header_trees([s for s in sources if Path(s).is_dir()])
    if trees:
        return [str(tree) for tree in trees]
    return [s for s in sources if not is_url(s) and is_package_file(s) and Path(s).is_file()]


def headers_from_sources(sources: list[str], arch: str = "x86", use_cache: bool = True) -> HeaderIndex | None:
    """The header index of a stored kernel: headers trees in its folders, else its headers packages."""
    found = headers_of_sources(sources)
    if found and Path(found[0]).is_dir():
        return load_headers([Path(tree) for tree in found], arch, use_cache)
    packages = found
    if not packages:
        return None
    identity = "\0".join(f"{Path(p).resolve()}\0{Path(p).stat().st_size}\0{Path(p).stat().st_mtime_ns}"
                         for p in packages)
    return cached(f"headers\0{arch}\0{identity}", lambda: _headers_in_packages(packages, arch), use_cache,
                   dataclasses.replace(HEADERS, optional=True))


def sources_identity(sources: list[str]) -> str:
    """A stored kernel's source files as they are now (path, size, mtime; "-" for one gone): what
    an entry derived from them is keyed by."""
    parts = []
    for source in _expanded(sources):
        try:
            stat = os.stat(source)
            parts.append(f"{os.path.abspath(source)}\0{stat.st_size}\0{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{source}\0-")
    return "\0".join(parts)


def _expanded(sources: list[str]) -> list[str]:
    """A kernel read from packages has one source naming them all, joined by ", " (PackageTree's label)."""
    return [part for source in sources
            for part in (source.split(", ") if not Path(source).exists() else [source])]


def _types_in_package(source: str, release: str) -> KernelTypes | None:
    wanted = {f"/boot/vmlinuz-{release}", f"/boot/vmlinux-{release}"}
    package = Package(source)
    try:
        for member, read in package.members():
            if member.kind == "file" and member.path in wanted:
                return _types_of_image(read(), f"{source}:{member.path}")
    finally:
        package.close()
    return None


_HEADER_MEMBER = re.compile(r"^/usr/src/(?:kernels/|linux-headers-)[^/]+/((?:include|arch/[^/]+/include)/.+\.h)$")


def _headers_in_packages(sources: list[str], arch: str) -> HeaderIndex | None:
    """Debian splits a kernel's headers between linux-headers-<kver>-common and the flavour's
    package: their files are indexed together."""
    files: dict[str, bytes] = {}
    for source in sources:
        package = Package(source)
        try:
            for member, read in package.members():
                match = _HEADER_MEMBER.match(member.path)
                if match and member.kind == "file" and member.size <= MAX_HEADER and len(files) < MAX_HEADERS:
                    files.setdefault(match.group(1), read())
        finally:
            package.close()
    return index_headers(files, arch) if files else None


def explain_stored(old: tuple[list[str], Kernel], new: tuple[list[str], Kernel], symbols: list[str],
                   use_cache: bool = True) -> dict[str, SymbolExplanation] | None:
    """explain_symbols() for two stored kernels, each given as (its sources, the Kernel the store
    holds): None when either image is not among its sources any more."""
    (old_sources, old_kernel), (new_sources, new_kernel) = old, new
    old_release, new_release = old_kernel.release, new_kernel.release
    if not symbols or old_release is None or new_release is None:  # a stored kernel's image is found by its release
        return None
    modules = needs_modules(old_kernel, symbols)

    def inputs():
        return (types_from_sources(old_sources, old_release, use_cache),
                types_from_sources(new_sources, new_release, use_cache),
                headers_from_sources(old_sources, use_cache=use_cache),
                (_stored_modules(old_sources, old_kernel, use_cache),
                 _stored_modules(new_sources, new_kernel, use_cache)) if modules else None)

    if CACHED_ONLY.get() is not None:
        # Every entry is looked for before any is decoded: a pair the cache cannot explain
        # costs stats, not seconds of reading the half of it that is there.
        token = PROBING.set(True)
        try:
            inputs()
        finally:
            PROBING.reset(token)
    old_types, new_types, headers, module_types = inputs()
    if old_types is None or new_types is None:
        return None
    old_types = dataclasses.replace(old_types, exports=old_kernel.exports)
    new_types = dataclasses.replace(new_types, exports=new_kernel.exports)
    if module_types is not None:
        old_types.modules, new_types.modules = module_types
    result = explain(old_types, new_types, sorted(set(symbols)), headers)
    return {explained.symbol: explained for explained in result.symbols}
