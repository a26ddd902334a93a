"""Build a Kernel from what a user points at: a symvers file, a headers/build tree,
an installed module tree (/lib/modules/<kver>), an extracted package root, or kernel packages
(RPM or deb files or URLs: kernel-core, kernel-modules, kernel-devel, linux-image, linux-headers),
read without unpacking them (packages.PackageTree gives them the same tree shape).

Several paths may describe one kernel (e.g. Debian's linux-image tree for the vermagic
plus linux-headers for Module.symvers); they are merged and must agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from kabigate.errors import InputError, not_regular, open_regular, read_capped
from kabigate.formats.btf import STRUCT as BTF_STRUCT
from kabigate.formats.btf import parse_btf
from kabigate.formats.bzimage import IMAGE_HEAD, MAX_KERNEL_IMAGE, kernel_image, looks_like_kernel_image
from kabigate.formats.compression import MAX_TEXT, text_lines
from kabigate.formats.kconfig import looks_like_kconfig, machine_of_config, parse_kconfig
from kabigate.formats.module import parse_module, read_module
from kabigate.formats.symvers import looks_like_symvers, parse_symvers
from kabigate.formats.vmlinux import image_abi, image_release, image_vermagic
from kabigate.inputs.modules import walk_files
from kabigate.inputs.packages import (
    Package,
    PackagePath,
    PackageTree,
    exports_from_provides,
    is_package_file,
    is_url,
)
from kabigate.model import MODULE_SUFFIXES, Export, Kernel

# A path on disk, or in packages read as the tree installing them would make.
TreePath = Path | PackagePath

SYMVERS_NAMES = ("Module.symvers", "symvers.gz", "symvers.xz", "symvers.zst", "symvers")
# Debian's include/config/kernel.release holds the upstream version; utsrelease.h has the real one.
_UTS_RELEASE = re.compile(r'#define\s+UTS_RELEASE\s+"([^"]+)"')
_RANDSTRUCT_SEED = re.compile(r'#define\s+RANDSTRUCT_HASHED_SEED\s+"([^"]+)"')


class _Facts:
    """What one path tells about a kernel; merged across paths by load_kernel()."""

    def __init__(self, source: str):
        self.source = source
        self.release: str | None = None
        self.vermagic: str | None = None
        self.machine: str | None = None
        self.exports: dict[str, Export] | None = None
        self.config: dict[str, str] = {}
        self.headers_dir: TreePath | None = None
        self.package_version: str | None = None
        self.image: str | None = None
        self.module_struct_size: int | None = None


def load_kernel(paths: list[str], vermagic: str | None = None,
                advance: Callable[[], None] = lambda: None) -> Kernel:
    """`advance` is called once per package read (progress bars)."""
    package_paths = [p for p in paths if is_url(p) or is_package_file(p)]
    facts = [_facts_of(Path(p)) for p in paths if p not in package_paths]
    if package_paths:
        facts.append(_facts_of_packages(package_paths, advance))
    kernel = Kernel(release=None, vermagic=None, machine=None, exports={}, config={}, sources=[])
    for fact in facts:
        kernel.sources.append(fact.source)
        kernel.release = _agree(kernel.release, fact.release, "kernel release", fact.source)
        kernel.machine = _agree(kernel.machine, fact.machine, "architecture", fact.source)
        kernel.vermagic = _agree(kernel.vermagic, fact.vermagic, "vermagic", fact.source)
        kernel.config.update(fact.config)
        kernel.package_version = kernel.package_version or fact.package_version
        kernel.image = kernel.image or fact.image
        kernel.module_struct_size = kernel.module_struct_size or fact.module_struct_size
        for name, export in (fact.exports or {}).items():
            known = kernel.exports.get(name)
            if known is not None and known.crc != export.crc:
                raise InputError(f"{fact.source}: CRC of {name} differs from {kernel.sources[0]}: "
                                 "these paths describe different kernels")
            kernel.exports[name] = export
    if not any(f.exports is not None for f in facts):
        raise InputError(f"{', '.join(paths)}: no Module.symvers, symvers file or kernel image found; "
                         "give the kernel's headers/build tree, its symvers file or its vmlinuz too")
    if kernel.vermagic is None:
        kernel.vermagic = next((v for f in facts if f.headers_dir and (v := _vermagic_from_headers(f, kernel))),
                               None)
    if vermagic is not None:
        kernel.vermagic = vermagic
    if kernel.release is None and kernel.vermagic:
        kernel.release = kernel.vermagic.split(" ", 1)[0]
    return kernel


def _agree(known: str | None, new: str | None, what: str, source: str) -> str | None:
    if known is not None and new is not None and known != new:
        raise InputError(f"{source}: {what} {new!r} differs from {known!r}: these paths describe different kernels")
    return known if known is not None else new


def _facts_of(path: Path) -> _Facts:
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_file():
        return _facts_of_file(path)
    if not path.is_dir():
        raise InputError(f"{path}: {not_regular(os.stat(path).st_mode)}, not a kernel")
    root_kernel = _single_kernel_in_root(path)
    if root_kernel is not None:
        return _facts_of_root(path, root_kernel)
    if (path / "Module.symvers").is_file():
        return _facts_of_headers(path)
    if (path / "kernel").is_dir() or (path / "modules.order").is_file() or (path / "modules.dep").is_file():
        return _facts_of_module_tree(path, root=None)
    raise InputError(f"{path}: not a kernel: expected a symvers file, a headers tree with Module.symvers, "
                     "a module tree /lib/modules/<kver>, or an extracted package root")


def _facts_of_file(path: Path) -> _Facts:
    if is_kernel_image(path):
        return _facts_of_image(path)
    facts = _Facts(str(path))
    data = _read(path)
    text = _text(data, path)
    if looks_like_symvers(text[:65536]):
        facts.exports = parse_symvers(data, str(path))
    elif looks_like_kconfig(text[:65536]):
        facts.config = parse_kconfig(text, str(path))
    else:
        raise InputError(f"{path}: not a symvers file or kernel config")
    return facts


def _facts_of_headers(path: TreePath, config_known: bool = False) -> _Facts:
    """`config_known`: the caller reads the kernel's config elsewhere (its own wins): not parsed here."""
    facts = _Facts(str(path))
    facts.headers_dir = path
    facts.exports = parse_symvers(_read(path / "Module.symvers"), str(path / "Module.symvers"))
    for config in (path / ".config", path / "include" / "config" / "auto.conf"):
        if config_known:
            break
        if config.is_file():
            facts.config = parse_kconfig(_text(_read(config), config), str(config))
            break
    uts = path / "include" / "generated" / "utsrelease.h"
    if uts.is_file():
        match = _UTS_RELEASE.search(_text(_read(uts), uts))
        facts.release = match.group(1) if match else None
    facts.machine = machine_of_config(facts.config)
    return facts


def is_kernel_image(path: TreePath) -> bool:
    """Whether a file is a vmlinuz (bzImage, arm64 Image or zboot, s390 image, or a compressed
    payload) or a vmlinux, by its first bytes."""
    if isinstance(path, PackagePath):
        return False
    with open_regular(str(path)) as file:
        return looks_like_kernel_image(file.read(IMAGE_HEAD))


def _facts_of_image(path: TreePath) -> _Facts:
    """A vmlinuz or vmlinux alone: the whole ABI of vmlinux (its exports and CRCs), its release,
    vermagic and sizeof(struct module) (from its BTF); no module's exports."""
    data = read_capped(str(path), MAX_KERNEL_IMAGE, f"larger than {MAX_KERNEL_IMAGE >> 20} MiB, not a kernel image")
    facts = _facts_of_image_data(data, str(path))
    facts.image = str(path)
    return facts


def _facts_of_image_data(data: bytes, what: str) -> _Facts:
    facts = _Facts(what)
    image = kernel_image(data, what)
    facts.machine, facts.exports, btf = image_abi(data, image, what)
    facts.release = image_release(image)
    facts.vermagic = image_vermagic(image, facts.release) if facts.release else None
    facts.module_struct_size = _module_struct_size(btf, what) if btf is not None else None
    return facts


def _module_struct_size(data: bytes, what: str) -> int | None:
    """sizeof(struct module) from vmlinux's BTF (CONFIG_DEBUG_INFO_BTF; 0.7 s for 6.12's)."""
    btf = parse_btf(data, f"{what}: .BTF")
    return next((btf.types[i].size for i in btf.by_name("module") if btf.types[i].kind == BTF_STRUCT), None)


def kernel_image_in(boot: TreePath, release: str) -> Path | None:
    """boot/vmlinuz-<release>, else boot/vmlinux-<release>: the image of `release` in a boot folder."""
    if isinstance(boot, PackagePath):
        return None
    return next((p for p in (boot / f"vmlinuz-{release}", boot / f"vmlinux-{release}") if p.is_file()), None)


def kernel_image_at(path: Path, release: str) -> Path | None:
    """The image of `release` that a kernel's file or folder source is or holds: the file itself, the
    boot/ image of a package root, or of the root above a module tree (<root>/lib/modules/<release>)."""
    if path.is_file():
        return path if is_kernel_image(path) else None
    for boot in (path / "boot", path.parent.parent.parent / "boot"):
        image = kernel_image_in(boot, release)
        if image is not None and is_kernel_image(image):
            return image
    return None


def _module_exports(path: TreePath) -> dict[str, Export]:
    """The exports of the kernel's own modules (/lib/modules/<kver>/kernel, not DKMS's updates/),
    owned by their path the way Module.symvers names it (kernel/drivers/x/y.ko -> drivers/x/y)."""
    exports: dict[str, Export] = {}
    top = path / "kernel"
    if not top.is_dir():
        return exports
    for found in walk_files(str(top)):
        if not found.endswith(MODULE_SUFFIXES):
            continue
        owner = os.path.relpath(found, str(top)).split(".ko", 1)[0]
        for export in read_module(found).exports:
            exports[export.name] = Export(export.name, export.crc, owner, export.export_type, export.namespace)
    return exports


def _facts_of_module_tree(path: TreePath, root: TreePath | None) -> _Facts:
    """/lib/modules/<kver>: vermagic from an in-tree module, symvers from RHEL's symvers.gz,
    /boot/symvers-<kver>.gz, or the `build` link to the headers; without those, the exports of
    /boot/vmlinuz-<kver> and of the tree's modules (the image alone is the whole ABI)."""
    facts = _Facts(str(path))
    facts.release = path.name
    module = _first_in_tree_module(path)
    if module is not None:
        facts.vermagic = module.vermagic
        facts.machine = module.machine
        # sizeof(struct module) of this kernel: 6.4+ refuses modules built with another one.
        facts.module_struct_size = module.layout.this_module_size
    boot = (root / "boot") if root is not None else path.parent.parent.parent / "boot"
    candidates = [path / name for name in SYMVERS_NAMES[1:]]
    candidates += [boot / f"symvers-{path.name}{suffix}" for suffix in (".gz", ".xz", ".zst", "")]
    symvers = next((c for c in candidates if c.is_file()), None)
    build = _resolve_link(path / "build", root)
    config = next((c for c in (path / "config", boot / f"config-{path.name}") if c.is_file()), None)
    if symvers is not None:
        facts.exports = parse_symvers(_read(symvers), str(symvers))
    elif build is not None and (build / "Module.symvers").is_file():
        headers = _facts_of_headers(build, config_known=config is not None)
        facts.exports, facts.headers_dir = headers.exports, build
        facts.config = headers.config
        facts.machine = facts.machine or headers.machine
    image = kernel_image_in(boot, path.name)
    if image is not None:
        facts.image = str(image)
        if facts.exports is None and not (root is not None and _headers_in(root, path.name)):
            facts.exports = {**(_facts_of_image(image).exports or {}), **_module_exports(path)}
    if config is not None:
        facts.config = parse_kconfig(_text(_read(config), config), str(config))
        if facts.headers_dir is not None:  # the headers' machine, from the config they were not asked to read
            facts.machine = facts.machine or machine_of_config(facts.config)
    return facts


def _facts_of_root(root: TreePath, release: str) -> _Facts:
    """An extracted package root (dpkg-deb -x / rpm2cpio) holding one kernel release."""
    modules = root / "lib" / "modules" / release
    if modules.is_dir():
        facts = _facts_of_module_tree(modules, root)
    else:
        facts = _Facts(str(root))
        facts.release = release
    facts.source = str(root)
    if facts.exports is None:
        headers = _headers_in(root, release)
        if headers is not None:
            found = _facts_of_headers(headers)
            facts.exports, facts.headers_dir = found.exports, headers
            facts.config = facts.config or found.config
            facts.machine = facts.machine or found.machine
    return facts


def _headers_in(root: TreePath, release: str) -> TreePath | None:
    return next((headers for headers in (root / "usr" / "src" / f"linux-headers-{release}",
                                         root / "usr" / "src" / "kernels" / release)
                 if (headers / "Module.symvers").is_file()), None)


def _facts_of_packages(paths: list[str], advance: Callable[[], None]) -> _Facts:
    """Several packages of one kernel, read together as the tree installing them would make."""
    tree = PackageTree.of(paths, advance)
    root = PackagePath(tree)
    release = _single_kernel_in_root(root)
    if release is None:
        raise InputError(f"{tree.label}: no kernel in these packages (no /lib/modules/<kver>, "
                         "/usr/src/kernels/<kver> or /usr/src/linux-headers-<kver>)")
    facts = _facts_of_root(root, release)
    facts.package_version = tree.packages[0].version
    if facts.exports is None:
        # RHEL kernel RPMs Provide kernel(sym) = 0x<crc> for their exports (find-provides.ksyms).
        provided = {}
        for package in tree.packages:
            provided.update(exports_from_provides(package.provides, "vmlinux"))
        facts.exports = provided or None
    if facts.exports is None:
        image = _image_in_packages(paths, release)
        if image is not None:
            facts.exports = image.exports
            facts.machine = facts.machine or image.machine
            facts.vermagic = facts.vermagic or image.vermagic
            facts.module_struct_size = facts.module_struct_size or image.module_struct_size
    return facts


def _image_in_packages(paths: list[str], release: str) -> _Facts | None:
    """The image package alone (linux-image-*.deb, kernel-core without Provides): the whole ABI, as
    from an installed tree without headers, from /boot/vmlinuz-<release> and the in-tree modules'
    exports, read as the packages stream past a second time (nothing of them kept in memory)."""
    images = {f"/boot/vmlinuz-{release}", f"/boot/vmlinux-{release}"}
    in_tree = f"/lib/modules/{release}/kernel/"
    found: _Facts | None = None
    module_exports: dict[str, Export] = {}
    for source in paths:
        package = Package(source)
        try:
            for member, read in package.members():
                if member.kind != "file":
                    continue
                if member.path in images and found is None:
                    found = _facts_of_image_data(read(), f"{source}:{member.path}")
                elif member.path.startswith(in_tree) and member.path.endswith(MODULE_SUFFIXES):
                    owner = member.path[len(in_tree):].split(".ko", 1)[0]
                    for export in parse_module(read(), f"{source}:{member.path}").exports:
                        module_exports[export.name] = Export(export.name, export.crc, owner, export.export_type,
                                                             export.namespace)
        finally:
            package.close()
    if found is not None and found.exports is not None:
        found.exports.update(module_exports)
    return found


def _single_kernel_in_root(path: TreePath) -> str | None:
    releases = set()
    if (path / "lib" / "modules").is_dir():
        # kabi-*: kernel-abi-stablelists' /lib/modules/kabi-rhel90/, not a kernel.
        releases |= {p.name for p in (path / "lib" / "modules").iterdir()
                     if p.is_dir() and not p.name.startswith("kabi-")}
    for headers_parent, prefix in ((path / "usr" / "src", "linux-headers-"), (path / "usr" / "src" / "kernels", "")):
        if headers_parent.is_dir():
            releases |= {p.name[len(prefix):] for p in headers_parent.iterdir()
                         if p.name.startswith(prefix) and (p / "Module.symvers").is_file()}
    if len(releases) > 1:
        raise InputError(f"{path}: holds several kernels ({', '.join(sorted(releases))}); "
                         "point at one lib/modules/<kver> or headers tree")
    return releases.pop() if releases else None


def _resolve_link(link: TreePath, root: TreePath | None) -> TreePath | None:
    """Follow a symlink inside an extracted tree: absolute targets are taken relative to `root`."""
    if not link.is_symlink():
        return link if link.is_dir() else None
    target = link.readlink()
    if target.is_absolute():
        resolved = Path(target) if root is None else root / target.relative_to("/")
    else:
        resolved = link.parent / target
    return resolved if resolved.is_dir() else None


def _first_in_tree_module(path: TreePath):
    kernel_dir = path / "kernel"
    if not kernel_dir.is_dir():
        return None
    if isinstance(kernel_dir, PackagePath):
        return kernel_dir.first_module()
    for found in walk_files(str(kernel_dir)):
        if found.endswith(MODULE_SUFFIXES) and os.path.isfile(found):
            return read_module(found)
    return None


def _vermagic_from_headers(facts: _Facts, kernel: Kernel) -> str | None:
    """VERMAGIC_STRING (include/linux/vermagic.h) from the build config, where kabigate knows
    the arch part (_arch_vermagic())."""
    config = facts.config or kernel.config
    release = kernel.release or facts.release
    arch_part = _arch_vermagic(config) if config else None
    if not config or not release or arch_part is None:
        return None

    def on(option: str) -> bool:
        return config.get(option) == "y"

    parts = [release + " "]
    parts.append("SMP " if on("CONFIG_SMP") else "")
    # PREEMPT_BUILD is the 5.16+ name; older kernels tested CONFIG_PREEMPT, which implies it.
    if on("CONFIG_PREEMPT_BUILD") or on("CONFIG_PREEMPT"):
        parts.append("preempt ")
    elif on("CONFIG_PREEMPT_RT"):
        parts.append("preempt_rt ")
    parts.append("mod_unload " if on("CONFIG_MODULE_UNLOAD") else "")
    parts.append("modversions " if on("CONFIG_MODVERSIONS") else "")
    parts.append(arch_part)
    if on("CONFIG_RANDSTRUCT_FULL") or on("CONFIG_RANDSTRUCT_PERFORMANCE"):
        if facts.headers_dir is None:
            return None  # the seed is in the headers tree
        seed_file = facts.headers_dir / "include" / "generated" / "randstruct_hash.h"
        # Decoded as module.py decodes .modinfo (UTF-8, replacement characters), so that a module
        # built with the same (odd) seed still has the same vermagic.
        match = _RANDSTRUCT_SEED.search(_text(_read(seed_file), seed_file)) if seed_file.is_file() else None
        if match is None:
            return None
        parts.append("RANDSTRUCT_" + match.group(1))
    return "".join(parts)


def _arch_vermagic(config: dict[str, str]) -> str | None:
    """MODULE_ARCH_VERMAGIC (arch/*/include/asm/vermagic.h, 6.1 and 6.12), which vermagic.h puts
    before MODULE_RANDSTRUCT; None for an architecture kabigate has not read it for."""
    machine = machine_of_config(config)
    if machine in ("x86_64", "s390x"):  # x86_64 defines no MODULE_PROC_FAMILY; s390: asm-generic's ""
        return ""
    if machine == "aarch64":
        return "aarch64"
    if machine in ("ppc64", "ppc64le"):
        ftrace = ("patchable-function-entry " if config.get("CONFIG_ARCH_USING_PATCHABLE_FUNCTION_ENTRY") == "y"
                  else "mprofile-kernel " if config.get("CONFIG_MPROFILE_KERNEL") == "y" else "")
        return ftrace + ("relocatable " if config.get("CONFIG_RELOCATABLE") == "y" else "")
    return None


def _read(path: TreePath) -> bytes:
    """A kernel's text file (symvers, config, generated header), capped; special files refused."""
    if isinstance(path, PackagePath):
        return path.read_bytes()  # read from the package, within its caps
    return read_capped(str(path), MAX_TEXT, f"larger than {MAX_TEXT >> 20} MiB, not a kernel's text file")


def _text(data: bytes, path: TreePath) -> str:
    """Decompressed (if compressed) and decoded, within the caps on size and lines."""
    return "\n".join(text_lines(data, str(path)))
