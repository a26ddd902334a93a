"""kabigate boot-check: boot the real kernel in qemu, insmod the modules in dependency order, and
set the kernel's verdict beside kabigate's prediction for each one.

The prediction is made for the booted system as insmod meets it: vmlinux's exports, plus the
modules inserted before (the given ones and the in-tree modules they depend on, taken from the
kernel package). A disagreement is a module the kernel loads and kabigate refuses, or the
reverse, or a different first reason.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kabigate.boot import qemu
from kabigate.errors import InputError
from kabigate.formats.compression import compression_of, decompress
from kabigate.formats.module import parse_module
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.packages import Package, is_package_file, is_url, module_files
from kabigate.model import MODULE_SUFFIXES, Kernel, Module, Verdict
from kabigate.rules import check_modules


@dataclass(frozen=True)
class BootCheckEntry:
    module: Module
    in_tree: bool  # an in-tree dependency inserted first, not one the user named
    verdict: Verdict  # kabigate's prediction
    result: qemu.InsmodResult  # what the kernel did
    kernel_reason: qemu.KernelReason | None  # None: the kernel loaded it

    @property
    def accepted(self) -> bool:
        """The loader took the module (its init function may still have failed)."""
        return self.kernel_reason is None or self.kernel_reason.code == qemu.INIT_FAILED

    @property
    def agrees(self) -> bool:
        said = self.kernel_reason
        if self.verdict.loads or self.accepted or said is None:  # None: accepted
            return self.verdict.loads == self.accepted
        first = self.verdict.reasons[0]
        return first.code == said.code and (said.symbol is None or first.symbol == said.symbol)


@dataclass(frozen=True)
class BootCheck:
    kernel: Kernel
    image: str
    entries: list[BootCheckEntry]

    @property
    def disagreements(self) -> list[BootCheckEntry]:
        return [e for e in self.entries if not e.agrees]


def boot_check(image: str, kernel_paths: list[str], modules: list[Module], *, timeout: float = 300,
               advance: Callable[[], None] = lambda: None) -> BootCheck:
    """Boot `image` (a vmlinuz or a kernel package) and insmod `modules` (files) in dependency order."""
    if not modules:
        raise InputError("no modules to insert")
    with tempfile.TemporaryDirectory(prefix="kabigate-boot-") as tmp:
        directory = Path(tmp)
        vmlinuz = qemu.kernel_image(image, directory)
        advance()
        packaged = is_url(image) or is_package_file(image)
        kernel = load_kernel(kernel_paths or ([image, str(vmlinuz)] if packaged else [image]))
        advance()
        in_tree = dict(_in_tree_dependencies(image, modules)) if packaged else {}
        advance()
        ordered = _dependency_order([*in_tree, *modules])
        payloads = {**in_tree, **module_files(modules)}
        files = []
        for i, module in enumerate(ordered):
            # busybox insmod gets the plain ELF file, as kmod hands it to the kernel
            data = payloads[module]
            target = directory / f"{i}-{module.name}.ko"
            target.write_bytes(decompress(data, module.path) if compression_of(data) else data)
            files.append(target)
        try:
            results = qemu.insmod_in_qemu(vmlinuz, files, timeout=timeout)
        except qemu.RealKernelError as error:
            # the console tail stays out of the one-line error
            raise InputError(f"{image}: {str(error).splitlines()[0]}") from None
        advance()
    # insmod sees vmlinux and what was inserted before; the rules resolve symbols inside the set
    booted = dataclasses.replace(kernel, exports={n: e for n, e in kernel.exports.items() if e.owner == "vmlinux"})
    verdicts = check_modules(ordered, booted)
    entries = [BootCheckEntry(m, m in in_tree, v, r, qemu.kernel_reason(r))
               for m, v, r in zip(ordered, verdicts, results)]
    return BootCheck(kernel, image, entries)


def _in_tree_dependencies(image: str, modules: list[Module]) -> list[tuple[Module, bytes]]:
    """The in-tree modules the given ones depend on (modinfo `depends`, transitively), from the
    kernel package: Debian's linux-image has no modules.dep (depmod makes it on install), so
    every module's depends is read in one pass and the needed ones in a second."""
    given = {m.name for m in modules}
    wanted = {d for m in modules for d in m.depends} - given
    if not wanted:
        return []
    depends: dict[str, tuple[str, list[str]]] = {}  # name -> (member path, depends)
    for path, data in _package_modules(image, None):
        module = parse_module(data, path)
        depends.setdefault(module.name, (path, module.depends))
    needed, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name in needed or name in given or name not in depends:
            continue
        needed.add(name)
        todo.extend(depends[name][1])
    paths = {depends[name][0] for name in needed}
    return [(parse_module(data, path), data) for path, data in _package_modules(image, paths)]


def _package_modules(image: str, only: set[str] | None):
    package = Package(image)
    try:
        for member, read in package.members():
            if member.kind == "file" and "/kernel/" in member.path and member.path.endswith(MODULE_SUFFIXES) \
                    and (only is None or member.path in only):
                yield member.path, read()
    finally:
        package.close()


def _dependency_order(modules: list[Module]) -> list[Module]:
    """Providers before users (modinfo `depends` and the symbols the set exports), otherwise in
    the order given; a cycle keeps the given order."""
    by_name = {m.name: m for m in modules}
    exporter = {e.name: m.name for m in modules for e in m.exports}
    needs = {m.name: ({d for d in m.depends if d in by_name}
                      | {exporter[i.name] for i in m.imports if i.name in exporter}) - {m.name}
             for m in modules}
    ordered: list[Module] = []
    placed: set[int] = set()
    while len(ordered) < len(modules):
        ready = [m for m in modules if id(m) not in placed and needs[m.name] <= {o.name for o in ordered}]
        if not ready:  # a cycle: the rest as given
            ready = [m for m in modules if id(m) not in placed]
        ordered.append(ready[0])
        placed.add(id(ready[0]))
    return ordered
