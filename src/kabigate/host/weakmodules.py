"""weak-modules with the kernel's loader rules: which out-of-tree modules built for one kernel are
linked into another kernel's /lib/modules/<krel>/weak-updates/.

Follows RHEL's `weak-modules` (the kmod package's /usr/sbin/weak-modules, CentOS Stream dist-git
`kmod`) function by function, and names them: the same actions, the same file layout, the same
precedence. Where that script asks `depmod -naeE` (presence and CRC of symbols only) this module
asks rules.check_modules(), so a module the kernel's load_module() would refuse (vermagic,
GPL-only, namespaces, ...) is not linked, with the kernel's reason.

Two deliberate differences, both where the script's result is not what it means to do:
* links are relative (`../../<krel>/extra/x.ko`), so a tree built under --basedir is right once
  it is the real root, and depmod -b sees the same modules as the booted system;
* a link depmod would never use (a module of the same name in the kernel's own updates/, extra/
  or kernel/: dist.conf's `search updates extra built-in weak-updates`) is not made.

Changes are all or nothing across every kernel a run touches (`Transaction`): each kernel's new
weak-updates/ is built beside the old one, a journal names them, then each is swapped in with
renameat2(RENAME_EXCHANGE); a run killed at any point leaves the old trees, or its journal, which
the next run finishes (with its depmod and initramfs steps) before doing anything else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kabigate.errors import InputError, not_regular
from kabigate.formats.module import read_module
from kabigate.inputs.kernels import load_kernel
from kabigate.model import MODULE_SUFFIXES, Kernel, Module, Reason, ReasonCode, module_name, version_key
from kabigate.rules import check_modules

WEAK = "weak-updates"
STAGED = ".weak-updates.kabigate"  # the next weak-updates/, built beside it
SWAPPED = ".weak-updates.kabigate-old"  # only when RENAME_EXCHANGE is not supported
MARKER = ".kabigate-transaction"  # inside a staged tree: which transaction built it
JOURNAL = ".kabigate-weak-modules.journal"
JOURNAL_TEMP = ".kabigate-weak-modules.tmp"
LOCK = ".kabigate-weak-modules.lock"
MAX_JOURNAL = 1 << 20  # kabigate's are a few hundred bytes
MAX_LINKS = 40  # symbolic links followed resolving one path: the kernel's MAXSYMLINKS

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO planted at the name does not block


def name_problem(path: str) -> str | None:
    """Why a module path or file name is not used, or None: depmod writes paths into modules.dep
    separated by white space, one a line (link names with a line break or bytes that are not UTF-8
    made it crash), and the script splits them on white space too."""
    try:
        path.encode("utf-8")  # the bytes of a name that is not UTF-8 are lone surrogates here
    except UnicodeEncodeError:
        return "a name that is not UTF-8"
    if any(c.isspace() or not c.isprintable() for c in path):
        return "white space or a control character in the name"
    return None


def check_release(krel: str) -> str:
    """A kernel release as a name in /lib/modules: one plain path component."""
    if "/" in krel or krel.startswith(".") or not krel or name_problem(krel):
        raise InputError(f"{krel!r}: not a kernel release")
    return krel


def _exists(directory: int, name: str) -> bool:
    """`name` is there, whatever it is (a dangling link too)."""
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _is_dir(directory: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _remove(directory: int, name: str) -> None:
    """`name` and, if it is a real directory, everything below it; a symbolic link is removed, never
    followed (shutil.rmtree with dir_fd walks by descriptors opened O_NOFOLLOW)."""
    if _is_dir(directory, name):
        shutil.rmtree(name, dir_fd=directory)
    else:
        os.unlink(name, dir_fd=directory)


@contextmanager
def _opened(name: str, directory: int) -> Iterator[int]:
    """The real directory `name` in `directory` (not a link to one)."""
    fd = os.open(name, _DIRECTORY, dir_fd=directory)
    try:
        yield fd
    finally:
        os.close(fd)


def _read_file(name: str, directory: int, limit: int) -> bytes:
    """The regular file `name` in `directory`, up to limit + 1 bytes. FileNotFoundError when it is
    not there; InputError saying what it is when it is a link or not a regular file."""
    try:
        fd = os.open(name, _READ, dir_fd=directory)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError("a symbolic link") from None
        raise
    if kind := not_regular(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(kind)
    with os.fdopen(fd, "rb") as file:
        return file.read(limit + 1)


class Root:
    """A system's module trees, at `basedir` (weak-modules --basedir).

    Paths are named as the system sees them (/lib/modules/...), read through whatever links the
    tree has (reading a module a weak link leads to is what the kernel will do), and written only
    relative to directory descriptors that were reached inside the root (open_dir()), with
    O_NOFOLLOW, so that a tree someone else prepared (an image build, a chroot) cannot make a run
    as root write, create or remove anything outside it."""

    def __init__(self, basedir: str = "/"):
        self.base = Path(basedir).resolve()
        self.modules = self.base / "lib" / "modules"
        self.rejected: dict[str, str] = {}  # module path or link (as seen in the root) -> why it is not used
        self.unclean: set[str] = set()  # kernels whose weak-updates/ holds what kabigate does not keep
        try:
            os.close(self.open_dir("lib/modules"))
        except (FileNotFoundError, NotADirectoryError):
            raise InputError(f"{self.modules}: no such directory (not a system root)") from None
        except OSError as error:
            raise InputError(f"{self.modules}: {error.strerror}") from None

    def open_dir(self, relative: str) -> int:
        """A descriptor of the directory at `relative` (a path in the root), reached one component
        at a time with O_NOFOLLOW from the root's own directory. A symbolic link on the way is
        followed where it leads as the host sees it (as depmod -b and dracut will follow it), and
        only while that stays inside the root: RHEL's lib -> usr/lib works; lib -> /usr/lib under
        --basedir is the host's tree and is refused. Written out rather than openat2(RESOLVE_BENEATH),
        which refuses every absolute link, also one that stays in the root, and has no glibc wrapper."""
        base = str(self.base)
        fds = [os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        names: list[str] = []
        pending = relative.split("/")
        link, target = "", ""  # the last link followed: only a link's target can hold `..` or lead out
        followed = 0
        try:
            while pending:
                part = pending.pop(0)
                if part in ("", ".") or (part == ".." and not names and base == "/"):
                    continue
                if part == "..":
                    if not names:
                        raise InputError(f"{link}: a symbolic link to {target}, which leads out of {base}")
                    os.close(fds.pop())
                    names.pop()
                    continue
                try:
                    fds.append(os.open(part, _DIRECTORY, dir_fd=fds[-1]))
                    names.append(part)
                    continue
                except NotADirectoryError:
                    if not stat.S_ISLNK(os.stat(part, dir_fd=fds[-1], follow_symlinks=False).st_mode):
                        raise
                link, target = os.path.join(base, *names, part), os.readlink(part, dir_fd=fds[-1])
                followed += 1
                if followed > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), link)
                if target.startswith("/"):
                    if not (base == "/" or target == base or target.startswith(base + "/")):
                        raise InputError(f"{link}: a symbolic link to {target}, which leads out of {base}")
                    for fd in fds[1:]:
                        os.close(fd)
                    del fds[1:], names[:]
                    pending[:0] = target[len(base) if base != "/" else 0:].split("/")
                else:
                    pending[:0] = target.split("/")
            return fds.pop()
        finally:
            for fd in fds:
                os.close(fd)

    @contextmanager
    def directory(self, relative: str) -> Iterator[int]:
        fd = self.open_dir(relative)
        try:
            yield fd
        finally:
            os.close(fd)

    def kernel_dir(self, krel: str):
        """/lib/modules/<krel>, reached inside the root (see open_dir())."""
        return self.directory(f"lib/modules/{check_release(krel)}")

    def host(self, path: str) -> Path:
        """A path as seen in the root -> the same file here (`..` stops at the root, as it does there)."""
        return self.base / os.path.normpath("/" + path).lstrip("/")

    def inside(self, path: Path) -> str:
        """A file here -> its path as seen in the root."""
        return "/" + str(path.relative_to(self.base))

    def kernels(self) -> list[str]:
        """find_installed_kernels(): the folders of /lib/modules, in rpmsort order. One that is a
        link out of the root is refused (InputError), as a root whose lib/ leads out is."""
        with self.directory("lib/modules") as modules:
            found = []
            with os.scandir(modules) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or name_problem(entry.name) or not entry.is_dir():
                        continue
                    if entry.is_symlink():
                        os.close(self.open_dir(f"lib/modules/{entry.name}"))
                    found.append(entry.name)
        return sorted(found, key=version_key)

    def symvers(self, krel: str) -> Path | None:
        """is_kernel_installed(): /boot/symvers-<krel>.gz (RHEL 8), /lib/modules/<krel>/symvers.gz (RHEL 9+)."""
        for candidate in (self.base / "boot" / f"symvers-{krel}.gz", self.modules / krel / "symvers.gz"):
            if candidate.is_file():
                return candidate
        return None

    def system_map(self, krel: str) -> Path | None:
        """/boot/System.map-<krel>; Debian's is a one-line placeholder (the real one is in -dbg)."""
        for candidate in (self.base / "boot" / f"System.map-{krel}", self.modules / krel / "System.map"):
            if candidate.is_file() and candidate.stat().st_size > 4096:
                return candidate
        return None

    def weak_dir(self, krel: str) -> Path:
        return self.modules / krel / WEAK

    def module_files(self, krel: str, top: str | None = None) -> list[Path]:
        """find_modules(): module files under /lib/modules/<krel>[/top], weak-updates/ and kernel/
        left out when `top` is None (the kernel's own out-of-tree modules: extra/, updates/, DKMS).
        Names depmod cannot take (name_problem()) are left out too, and noted in `rejected`."""
        base = self.modules / krel
        if not base.is_dir():
            return []
        roots = [base / top] if top else [p for p in sorted(base.iterdir()) if p.is_dir() and not p.is_symlink()
                                          and p.name not in (WEAK, "kernel", "build", "source")
                                          and not p.name.startswith(".")]
        found = []
        for root in roots:
            for directory, folders, files in os.walk(root):
                folders[:] = sorted(f for f in folders if self._usable(Path(directory) / f))
                found += [Path(directory) / f for f in sorted(files) if f.endswith(MODULE_SUFFIXES)
                          and os.path.isfile(os.path.join(directory, f)) and self._usable(Path(directory) / f)]
        return found

    def _usable(self, path: Path) -> bool:
        problem = name_problem(self.inside(path))
        if problem:
            self.rejected[self.inside(path)] = problem
        return problem is None

    def in_tree_names(self, krel: str) -> set[str]:
        """Module names of kernel/ (modules.order) and built into the image (modules.builtin)."""
        names = set()
        for listing in ("modules.order", "modules.builtin"):
            path = self.modules / krel / listing
            if path.is_file():
                names |= {module_name(line.strip()) for line in path.read_text(errors="replace").splitlines()
                          if line.strip()}
        return names

    def links(self, krel: str) -> dict[str, str]:
        """weak-updates/ of `krel`: link path below it -> the module it names, as seen in the root
        (links made by RHEL's script are absolute, with --basedir in front; kabigate's relative).
        A weak-updates/ that is not a directory (a link to one), or links depmod cannot take, are
        not kept: the kernel is `unclean`, and its next tree replaces them."""
        top = self.weak_dir(krel)
        links: dict[str, str] = {}
        if top.is_symlink() or not top.is_dir():
            if os.path.lexists(top):
                self.unclean.add(krel)
            return links
        for directory, folders, files in os.walk(top):
            folders.sort()
            for name in files + [f for f in folders if os.path.islink(os.path.join(directory, f))]:
                path = Path(directory) / name
                if not path.is_symlink() or not name.endswith(MODULE_SUFFIXES):
                    continue
                target = os.readlink(path)
                if os.path.isabs(target):
                    base = str(self.base)
                    if base != "/" and (target == base or target.startswith(base + "/")):
                        target = target[len(base):]
                else:
                    target = os.path.normpath(os.path.join(self.inside(path.parent), target))
                problem = name_problem(self.inside(path)) or name_problem(target)
                if problem:
                    self.rejected[self.inside(path)] = problem
                    self.unclean.add(krel)
                    continue
                links[str(path.relative_to(top))] = target
        return links

    def weak_link(self, module: str, module_krel: str) -> str:
        """module_weak_link(): /lib/modules/<module_krel>/<dir>/<rest> -> <rest>; a module
        elsewhere keeps its whole path."""
        match = re.match(rf"^(?:/usr)?/lib/modules/{re.escape(module_krel)}/[^/]*/(.+)$", module)
        return match.group(1) if match else module.lstrip("/")


@dataclass
class Refusal:
    kernel: str
    module: str  # as seen in the root
    module_kernel: str
    reasons: tuple[Reason, ...]

    def to_json(self) -> dict:
        return {"kernel": self.kernel, "module": self.module, "module_kernel": self.module_kernel,
                "reasons": [{"code": r.code, "message": r.message, "symbol": r.symbol} for r in self.reasons]}


@dataclass
class KernelPlan:
    kernel: str
    before: dict[str, str]
    after: dict[str, str]
    compatible: list[str] = field(default_factory=list)  # modules of this run linked (or kept linked)
    refused: list[Refusal] = field(default_factory=list)
    shadowed: list[tuple[str, str]] = field(default_factory=list)  # (module, the kernel's own module)
    restored: bool = False  # add-modules: the new set did not load whole, the old state was kept
    rewrite: bool = False  # weak-updates/ holds what is not kept (Root.unclean): written anew

    @property
    def changed(self) -> bool:
        return self.before != self.after or self.rewrite


@dataclass
class Outcome:
    action: str
    plans: list[KernelPlan]
    messages: list[str]  # the script's --verbose lines
    commands: list[list[str]] = field(default_factory=list)  # depmod and initramfs runs, in order
    initramfs_kernels: list[str] = field(default_factory=list)
    initramfs_replaced: list[str] = field(default_factory=list)  # images whose module set changed
    errors: list[str] = field(default_factory=list)  # depmod or initramfs runs that failed
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (module or link, why): names not used

    @property
    def refused(self) -> list[Refusal]:
        return [r for plan in self.plans for r in plan.refused]

    def to_json(self) -> dict:
        return {"action": self.action,
                "kernels": [{"kernel": p.kernel, "changed": p.changed, "restored": p.restored,
                             "links": {link: p.after[link] for link in sorted(p.after)},
                             "added": sorted(p.after.keys() - p.before.keys()),
                             "removed": sorted(p.before.keys() - p.after.keys()),
                             "compatible": p.compatible,
                             "shadowed": [{"module": m, "by": by} for m, by in p.shadowed]}
                            for p in self.plans],
                "refused": [r.to_json() for r in self.refused],
                "skipped": [{"module": m, "reason": why} for m, why in self.skipped],
                "commands": self.commands, "initramfs_replaced": self.initramfs_replaced, "errors": self.errors}


class WeakModules:
    """One run of weak-modules over `root`: plan (pure but for reading the root), then commit."""

    def __init__(self, root: Root, say: Callable[[str], None] = lambda _line: None):
        self.root = root
        self.say = say
        self._modules: dict[str, Module | InputError] = {}
        self._kernels: dict[str, Kernel] = {}
        self.messages: list[str] = []

    def _message(self, line: str) -> None:
        self.messages.append(line)
        self.say(line)

    # ------------------------------------------------------------------ reading

    def module(self, path: str) -> Module | InputError:
        """The module at `path` (as seen in the root); an unreadable one is an InputError value."""
        if path not in self._modules:
            try:
                self._modules[path] = read_module(str(self.root.host(path)))
            except InputError as error:
                self._modules[path] = error
        return self._modules[path]

    def krel_of_module(self, path: str) -> str:
        """krel_of_module(): the first word of its vermagic, else the <krel> of its path."""
        module = self.module(path) if self.root.host(path).is_file() else None
        if isinstance(module, Module) and module.vermagic:
            return module.vermagic.split(" ", 1)[0]
        match = re.match(r"^(?:/usr)?/lib/modules/([^/]+)/", path)
        return match.group(1) if match else ""

    def kernel(self, krel: str) -> Kernel:
        if krel not in self._kernels:
            self._kernels[krel] = load_kernel([str(self.root.modules / krel)])
        return self._kernels[krel]

    def use_kernel(self, krel: str, kernel: Kernel) -> None:
        """Judge `krel` against `kernel` (read elsewhere: packages not installed yet, the store)."""
        self._kernels[krel] = kernel

    def plan_kernel(self, krel: str, modules: list[str]) -> KernelPlan:
        """What add_kernel() would link into `krel` from `modules` (older kernels' first)."""
        return self._plan(krel, modules, set(), force=True)

    def installed(self) -> list[str]:
        """update_modules_for_krel() skips a kernel without symvers."""
        return [k for k in self.root.kernels() if self.root.symvers(k) is not None]

    # ------------------------------------------------------------------ deciding

    def _plan(self, krel: str, adding: list[str], dropping: set[str], force: bool) -> KernelPlan:
        """update_modules_for_krel(): propose the links, validate them with the loader rules
        (validate_weak_links()), and for add-modules fall back to the old state when the new
        modules do not load as a set (global_link_state_restore())."""
        before = self.root.links(krel)
        proposed = {link: target for link, target in before.items() if target not in dropping}
        plan = KernelPlan(krel, before, dict(before), rewrite=krel in self.root.unclean)
        own_paths = [self.root.inside(p) for p in self.root.module_files(krel)]
        own_names = {module_name(p): p for p in own_paths}
        in_tree = self.root.in_tree_names(krel)
        # Builds of each module name, the one to try first first: the later kernel's (add_kernel()
        # reads kernels in rpmsort order and `ln -sf` leaves the last), then older ones, which the
        # script never tries once the later one fails.
        alternates: dict[str, list[str]] = {}
        for module in reversed(adding):
            # add_weak_links(): a module of this kernel itself is not linked to it.
            if re.match(rf"^(?:/usr)?/lib/modules/{re.escape(krel)}/", module):
                continue
            name = module_name(module)
            if name in own_names or name in in_tree:
                plan.shadowed.append((module, own_names.get(name) or f"{name} (in-tree)"))
                self._message(f"Module {name} from kernel {self.krel_of_module(module)} is not linked to "
                              f"kernel {krel}: its own {own_names.get(name) or 'in-tree module'} comes first")
                continue
            if module not in alternates.setdefault(name, []):
                alternates[name].append(module)
        new_links: dict[str, str] = {}  # link -> module name
        for name, builds in alternates.items():
            self._propose(proposed, new_links, name, builds[0])

        own = [m for p in own_paths if isinstance(m := self.module(p), Module)]
        while True:
            accepted, refused = self._validate(krel, own, proposed)
            retry = [(link, new_links[link]) for link in refused if link in new_links
                     and alternates[new_links[link]].index(proposed[link]) + 1 < len(alternates[new_links[link]])]
            if not retry:
                break
            for link, name in retry:
                builds = alternates[name]
                following = builds[builds.index(proposed[link]) + 1]
                self._message(f"Module {name} from kernel {self.krel_of_module(proposed[link])} is not compatible "
                              f"with kernel {krel}: {refused[link][0].code}; trying the one from kernel "
                              f"{self.krel_of_module(following)}")
                del proposed[link], new_links[link]
                self._propose(proposed, new_links, name, following)
        new_refused = [link for link in refused if link in new_links]
        for link, reasons in refused.items():
            target = proposed[link]
            plan.refused.append(Refusal(krel, target, self.krel_of_module(target), reasons))
        if force:
            plan.after = accepted
        elif new_refused:
            plan.after = dict(before)
            plan.restored = True
            self._message(f"Falling back weak-modules state for kernel {krel}")
        else:
            # Links that were there before and fail are left as they were: not this run's change.
            plan.after = {**accepted, **{link: proposed[link] for link in refused if link not in new_links}}
        for link in sorted(new_links):
            if link in plan.after and plan.after[link] == proposed[link]:
                target = proposed[link]
                plan.compatible.append(target)
                self._message(f"Module {module_name(target)} from kernel {self.krel_of_module(target)} "
                              f"is compatible with kernel {krel}")
        for refusal in plan.refused:
            first = refusal.reasons[0]
            self._message(f"Module {module_name(refusal.module)} from kernel {refusal.module_kernel} is not "
                          f"compatible with kernel {krel}: {first.code}: {first.message}")
        for link in sorted(before.keys() - plan.after.keys()):
            self._message(f"Removing compatible module {module_name(before[link])} from kernel {krel}")
        return plan

    def _propose(self, proposed: dict[str, str], new_links: dict[str, str], name: str, module: str) -> None:
        """module_weak_link() for `module`, replacing a link to another build of the same name."""
        link = self.root.weak_link(module, self.krel_of_module(module))
        for other in [lk for lk, target in proposed.items() if module_name(target) == name and lk != link]:
            del proposed[other]
            new_links.pop(other, None)
        proposed[link] = module
        new_links[link] = name

    def _validate(self, krel: str, own: list[Module], proposed: dict[str, str]):
        """validate_weak_links(): drop the links whose module the kernel would refuse, until the
        rest loads as a set (a module whose provider was dropped fails in turn). Dangling links
        are kept unjudged, as depmod cannot read them either."""
        kernel = self.kernel(krel)
        judged = {}
        refused: dict[str, tuple[Reason, ...]] = {}
        for link, target in proposed.items():
            module = self.module(target) if self.root.host(target).is_file() else None
            if isinstance(module, InputError):
                refused[link] = (Reason(ReasonCode.UNREADABLE, str(module)),)
            elif module is not None:
                judged[link] = module
        while True:
            links = list(judged)
            verdicts = check_modules(own + [judged[link] for link in links], kernel)[len(own):]
            failing = [(link, v) for link, v in zip(links, verdicts) if not v.loads]
            if not failing:
                break
            for link, verdict in failing:
                refused[link] = verdict.reasons
                del judged[link]
        accepted = {link: target for link, target in proposed.items() if link not in refused}
        return accepted, refused

    # ------------------------------------------------------------------ the four actions

    def add_modules(self, modules: list[str]) -> Outcome:
        """add_modules(): link the modules into every installed kernel they load on, as a set."""
        for module in modules:
            if not self.root.host(module).is_file():
                raise InputError(f"{module}: no such module file")
            read = self.module(module)
            if isinstance(read, InputError):
                raise read
        plans = [self._plan(k, modules, set(), force=False) for k in self.installed()]
        return self._outcome("add-modules", plans, self._own_kernels(modules))

    def remove_modules(self, modules: list[str]) -> Outcome:
        """remove_modules(): drop the links to modules that are gone (an update reinstalls the
        same path first: that link stays), then drop what no longer loads without them."""
        gone = {m for m in modules if not self.root.host(m).is_file()}
        plans = [self._plan(k, [], gone, force=True) for k in self.installed()]
        return self._outcome("remove-modules", plans, self._own_kernels(modules))

    def add_kernel(self, krel: str) -> Outcome:
        """add_kernel(): every other kernel's extra/ modules, older kernels first so that a later
        build of the same module wins, linked into `krel` where they load."""
        if self.root.symvers(krel) is None:
            raise InputError(f"Symvers dump file {self.root.base / 'boot' / f'symvers-{krel}.gz'} not found")
        candidates = [self.root.inside(p) for k in self.root.kernels() if k != krel
                      for p in self.root.module_files(k, "extra")]
        return self._outcome("add-kernel", [self._plan(krel, candidates, set(), force=True)], [])

    def remove_kernel(self, krel: str) -> Outcome:
        """remove_kernel(): empty its weak-updates/ (the script runs neither depmod nor dracut)."""
        before = self.root.links(krel)
        plan = KernelPlan(krel, before, {}, rewrite=krel in self.root.unclean)
        return self._outcome("remove-kernel", [plan] if os.path.lexists(self.root.weak_dir(krel)) else [], [])

    def _own_kernels(self, modules: list[str]) -> list[str]:
        """update_modules(): the kernel each module was built for gets depmod and initramfs too."""
        return [k for k in dict.fromkeys(self.krel_of_module(m) for m in modules) if k]

    def _outcome(self, action: str, plans: list[KernelPlan], own_kernels: list[str]) -> Outcome:
        outcome = Outcome(action, plans, self.messages)
        touched = [p.kernel for p in plans if p.changed] + own_kernels
        installed = set(self.root.kernels())  # not a module's vermagic that names a path
        outcome.initramfs_kernels = [k for k in dict.fromkeys(touched) if k in installed]
        outcome.skipped = sorted(self.root.rejected.items())
        return outcome


# ---------------------------------------------------------------------- committing


def _renameat2_exchange() -> Callable[[int, str, str], None] | None:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    function = getattr(libc, "renameat2", None)
    if function is None:
        return None
    rename_exchange = 2

    def exchange(directory: int, a: str, b: str) -> None:
        if function(directory, os.fsencode(a), directory, os.fsencode(b), rename_exchange) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), a)
    return exchange


_EXCHANGE = _renameat2_exchange()


@contextmanager
def _naming(where: Path) -> Iterator[None]:
    """OS errors of operations relative to the directory `where` name the file in it."""
    try:
        yield
    except OSError as error:
        name = where / error.filename if isinstance(error.filename, str) else where
        raise InputError(f"{name}: {error.strerror or error}") from None


class Transaction:
    """All of a run's weak-updates/ changes, or none (see the module's docstring). Every file it
    touches is named relative to a directory reached inside the root (Root.open_dir()), never
    followed when it is a link: a link planted at the lock's, the journal's, a staging name or
    at weak-updates/ itself is refused or removed as a link, and nothing outside is written."""

    def __init__(self, root: Root, post: Callable[[dict], None] = lambda _journal: None):
        self.root = root
        self.post = post  # depmod and initramfs, given the journal; run before the journal goes
        self.journal = root.modules / JOURNAL

    def __enter__(self):
        self._modules = self.root.open_dir("lib/modules")
        try:
            with _naming(self.root.modules):
                try:
                    self._lock = os.open(LOCK, _READ | os.O_CREAT, 0o600, dir_fd=self._modules)
                except OSError as error:
                    if error.errno != errno.ELOOP:
                        raise
                    raise InputError(f"{self.root.modules / LOCK}: a symbolic link where kabigate's lock file "
                                     f"belongs; remove it") from None
                if kind := not_regular(os.fstat(self._lock).st_mode):
                    os.close(self._lock)
                    raise InputError(f"{self.root.modules / LOCK}: {kind} where kabigate's lock file belongs; "
                                     f"remove it")
            fcntl.flock(self._lock, fcntl.LOCK_EX)  # two weak-modules at once (rpm + dnf plugin)
        except BaseException:
            os.close(self._modules)
            raise
        try:
            self.recover()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        os.close(self._lock)
        os.close(self._modules)

    def recover(self) -> list[str]:
        """Finish a journaled run (roll forward), remove the trees of one that never got a journal."""
        finished = []
        journal = self._read_journal()
        if journal is not None:
            self._apply(journal)
            finished = journal["kernels"]
        with _naming(self.root.modules):
            if _exists(self._modules, JOURNAL_TEMP):
                os.unlink(JOURNAL_TEMP, dir_fd=self._modules)
        for krel in self.root.kernels():
            with self.root.kernel_dir(krel) as kernel, _naming(self.root.modules / krel):
                for name in (STAGED, SWAPPED):
                    if _exists(kernel, name):
                        _remove(kernel, name)
        return finished

    def _read_journal(self) -> dict | None:
        """The journal, checked: it is read as root, from a tree someone else may have written."""
        kernels = set(self.root.kernels())
        try:
            return _check_journal(_read_file(JOURNAL, self._modules, MAX_JOURNAL), kernels)
        except FileNotFoundError:
            return None
        except InputError as error:
            problem = str(error)
        # Set aside rather than left to stop every later run (each an rpm scriptlet) until someone
        # deletes it, or deleted with the evidence: whatever it is, every kernel's weak-updates/ is
        # whole (each was swapped in by one rename), so the next run can go on from the trees.
        bad = f"{JOURNAL}.bad"
        with _naming(self.root.modules):
            os.replace(JOURNAL, bad, src_dir_fd=self._modules, dst_dir_fd=self._modules)
        raise InputError(f"{self.journal}: not a kabigate journal ({problem}); moved to {bad}: run the command "
                         f"again, and `depmod -a` for any kernel an interrupted run changed")

    def commit(self, trees: dict[str, dict[str, str]], extra: dict) -> None:
        """`trees`: kernel -> its complete new weak-updates/ (link -> module, as seen in the root)."""
        txn = uuid.uuid4().hex
        for krel, links in trees.items():
            with self.root.kernel_dir(krel) as kernel, _naming(self.root.modules / krel):
                os.mkdir(STAGED, 0o755, dir_fd=kernel)
                with _opened(STAGED, kernel) as staged:
                    self._stage(krel, links, staged, txn)
        journal = {"transaction": txn, "kernels": sorted(trees), **extra}
        with _naming(self.root.modules):
            fd = os.open(JOURNAL_TEMP, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=self._modules)
            with os.fdopen(fd, "w") as file:
                json.dump(journal, file)
                file.flush()
                os.fsync(file.fileno())
            # The decision: from here on the run is finished, not undone.
            os.replace(JOURNAL_TEMP, JOURNAL, src_dir_fd=self._modules, dst_dir_fd=self._modules)
            os.fsync(self._modules)
        self._apply(journal)

    def _stage(self, krel: str, links: dict[str, str], staged: int, txn: str) -> None:
        """The links of the new tree in the fresh directory `staged`, then its marker."""
        folders = {"": staged}
        try:
            for link, target in sorted(links.items()):
                parts = link.split("/")
                if any(part in ("", ".", "..") for part in parts):  # the one place names become files
                    raise InputError(f"{link!r}: not a path below weak-updates/")
                folder = ""
                for part in parts[:-1]:
                    inner = f"{folder}/{part}"
                    if inner not in folders:
                        os.mkdir(part, 0o755, dir_fd=folders[folder])
                        folders[inner] = os.open(part, _DIRECTORY, dir_fd=folders[folder])
                    folder = inner
                final_dir = self.root.inside(self.root.weak_dir(krel) / link).rsplit("/", 1)[0]
                os.symlink(os.path.relpath(target, final_dir), parts[-1], dir_fd=folders[folder])
            fd = os.open(MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=staged)
            with os.fdopen(fd, "w") as file:
                file.write(txn)
        finally:
            for fd in list(folders.values())[1:]:
                os.close(fd)

    def _apply(self, journal: dict) -> None:
        txn = journal["transaction"]
        for krel in journal["kernels"]:
            with self.root.kernel_dir(krel) as kernel, _naming(self.root.modules / krel):
                if _exists(kernel, SWAPPED):  # the two-rename fallback was cut short
                    if not _exists(kernel, WEAK) and _is_dir(kernel, SWAPPED):
                        os.rename(SWAPPED, WEAK, src_dir_fd=kernel, dst_dir_fd=kernel)
                    else:
                        _remove(kernel, SWAPPED)
                if _marker(kernel, STAGED) == txn:
                    if not _exists(kernel, WEAK):
                        os.rename(STAGED, WEAK, src_dir_fd=kernel, dst_dir_fd=kernel)
                    else:
                        _exchange(kernel)
                if _marker(kernel, WEAK) == txn:
                    with _opened(WEAK, kernel) as weak:
                        os.unlink(MARKER, dir_fd=weak)
                if _exists(kernel, STAGED):
                    _remove(kernel, STAGED)  # the old tree, or what was at weak-updates/: a link goes, not its target
        self.post(journal)
        with _naming(self.root.modules):
            os.unlink(JOURNAL, dir_fd=self._modules)


def _check_journal(data: bytes, kernels: set[str]) -> dict:
    """A journal as Transaction.commit() writes it, or InputError saying what is wrong: a plain
    transaction id, and lists of kernels that are folders of this root's /lib/modules."""
    if len(data) > MAX_JOURNAL:
        raise InputError(f"larger than {MAX_JOURNAL} bytes")
    try:
        journal = json.loads(data)
    except (ValueError, RecursionError):
        raise InputError("not JSON") from None
    if not isinstance(journal, dict):
        raise InputError("not a JSON object")
    if not isinstance(journal.get("transaction"), str) or not re.fullmatch(r"[0-9a-f]{32}", journal["transaction"]):
        raise InputError("no transaction id")
    for key in ("kernels", "depmod", "initramfs"):
        value = journal.get(key)
        if not isinstance(value, list):
            raise InputError(f"{key!r} is not a list")
        for krel in value:
            if not isinstance(krel, str) or krel not in kernels:
                raise InputError(f"{key!r}: {krel!r} is not a kernel of this root")
    return journal


def _marker(kernel: int, tree: str) -> str | None:
    """The transaction that built the real directory `tree`, if its marker says one."""
    try:
        with _opened(tree, kernel) as fd:
            return _read_file(MARKER, fd, 64).decode("ascii", "replace")
    except (FileNotFoundError, NotADirectoryError, InputError):
        return None


def _exchange(kernel: int) -> None:
    """STAGED and WEAK of the kernel's directory swap names, in one step where the filesystem can."""
    if _EXCHANGE is not None:
        try:
            _EXCHANGE(kernel, STAGED, WEAK)
            return
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
    # A filesystem without RENAME_EXCHANGE: two renames, which _apply() finishes if cut short.
    os.rename(WEAK, SWAPPED, src_dir_fd=kernel, dst_dir_fd=kernel)
    os.rename(STAGED, WEAK, src_dir_fd=kernel, dst_dir_fd=kernel)
    os.rename(SWAPPED, STAGED, src_dir_fd=kernel, dst_dir_fd=kernel)


# ---------------------------------------------------------------------- after the change


@dataclass
class Tools:
    dry_run: bool = False
    initramfs: bool = True
    dracut: str = "/sbin/dracut"
    mkinitramfs: str = "mkinitramfs"
    depmod: str = "depmod"
    run: Callable[[list[str]], None] = field(default=lambda argv: _run(argv))


def _run(argv: list[str]) -> None:
    """depmod's and dracut's output is theirs to give only when they fail."""
    result = subprocess.run(argv, check=False, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise InputError(f"{' '.join(argv)}: {last}")


def depmod_commands(root: Root, kernels: list[str], tools: Tools) -> list[list[str]]:
    """The script's cleanup: `depmod -ae -F System.map-<krel> <krel>` for each changed kernel that
    is installed (has symvers); without a System.map, `depmod -a`."""
    commands = []
    basedir = [] if str(root.base) == "/" else ["-b", str(root.base)]
    for krel in kernels:
        if root.symvers(krel) is None:
            continue
        system_map = root.system_map(krel)
        commands.append([tools.depmod, *basedir, *(["-ae", "-F", str(system_map)] if system_map else ["-a"]), krel])
    return commands


def initramfs_commands(root: Root, kernels: list[str], tools: Tools) -> list[tuple[Path, Path, list[str]]]:
    """check_initramfs(): a kernel that has an initramfs gets a new one built beside it, by dracut
    (/boot/initramfs-<krel>.img, RHEL family) or initramfs-tools' mkinitramfs (/boot/initrd.img-<krel>,
    Debian); -> (the image, the new one, the command writing it). None is made where none was."""
    commands: list[tuple[Path, Path, list[str]]] = []
    if not tools.initramfs:
        return commands
    for krel in kernels:
        rhel, debian = root.base / "boot" / f"initramfs-{krel}.img", root.base / "boot" / f"initrd.img-{krel}"
        if rhel.is_file():
            new = Path(f"{rhel}.kabigate-new")
            commands.append((rhel, new, [tools.dracut, "-f", str(new), krel]))
        elif debian.is_file():
            new = Path(f"{debian}.kabigate-new")
            commands.append((debian, new, [tools.mkinitramfs, "-o", str(new), krel]))
    return commands


def _refresh_initramfs(root: Root, image: Path, new: Path, argv: list[str], tools: Tools) -> bool:
    """compare_initramfs_modules(): the new image replaces the old one only when their module
    files or modprobe.d configuration differ; -> replaced. /boot is reached inside the root, and
    whatever is at the new image's name (a link for dracut's cp to write through) goes first."""
    with root.directory("boot") as boot, _naming(image.parent):
        if _exists(boot, new.name):
            _remove(boot, new.name)
        try:
            tools.run(argv)
            from kabigate.formats.initramfs import module_digests

            try:
                changed = module_digests(image.read_bytes(), str(image)) != module_digests(new.read_bytes(), str(new))
            except InputError:
                changed = True  # an image kabigate cannot read (lz4, bzip2...): the script's cmp fails too
            if changed:
                os.replace(new.name, image.name, src_dir_fd=boot, dst_dir_fd=boot)
            return changed
        finally:
            if _exists(boot, new.name):
                os.unlink(new.name, dir_fd=boot)


def run(root: Root, plan: Callable[[], Outcome], tools: Tools) -> Outcome:
    """Plan, write the plans' trees, then depmod and the initramfs. The plan is made under the
    lock, after an interrupted run is finished: two runs at once (two kmod packages) each see
    what the other wrote. --dry-run plans without the lock and changes nothing."""
    errors: list[str] = []
    replaced: list[str] = []

    def post(journal: dict) -> None:
        """Failures are reported, not fatal: the links are in place, and the script goes on too."""
        for argv in depmod_commands(root, journal["depmod"], tools):
            try:
                tools.run(argv)
            except (InputError, OSError) as error:
                errors.append(_failure(argv, error))
        for image, new, argv in initramfs_commands(root, journal["initramfs"], tools):
            try:
                if _refresh_initramfs(root, image, new, argv, tools):
                    replaced.append(str(image))
            except (InputError, OSError) as error:
                errors.append(_failure(argv, error))

    def decide() -> tuple[Outcome, dict[str, dict[str, str]], dict]:
        outcome = plan()
        changed = {p.kernel: p.after for p in outcome.plans if p.changed}
        # module_has_changed() marks a kernel for both; remove_kernel() exits before either runs.
        touched = [] if outcome.action == "remove-kernel" else outcome.initramfs_kernels
        outcome.commands = depmod_commands(root, touched, tools) + [argv for _image, _new, argv in
                                                                  initramfs_commands(root, touched, tools)]
        return outcome, changed, {"depmod": touched, "initramfs": touched}

    if tools.dry_run:
        return decide()[0]
    with Transaction(root, post) as transaction:
        outcome, changed, journal_extra = decide()
        if changed:
            transaction.commit(changed, journal_extra)
        elif journal_extra["depmod"] or journal_extra["initramfs"]:
            post({"kernels": [], **journal_extra})
    outcome.errors += errors
    outcome.initramfs_replaced += replaced
    return outcome


def _failure(argv: list[str], error: InputError | OSError) -> str:
    return str(error) if isinstance(error, InputError) else f"{' '.join(argv)}: {error.strerror}"


def read_module_list(lines: Iterable[str], cwd: str, root: Root) -> list[str]:
    """read_modules_list(): one path a line, relative ones taken from the current directory; the
    paths are of the system (`/lib/modules/...`), also when they are given with --basedir in front.
    Each is normalised (`..` taken away) and must stay in the root; a path depmod could not take
    (name_problem()) is refused."""
    base = str(root.base)
    modules = []
    for line in lines:
        path = line.strip()
        if not path:
            continue
        if "\0" in path:
            raise InputError(f"{path!r}: a module path with a NUL byte")
        path = os.path.join(cwd, path)
        if problem := name_problem(path):
            raise InputError(f"{path!r}: {problem}")
        depth = 0
        for part in path.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise InputError(f"{path!r}: '..' leads out of the root")
            elif part not in ("", "."):
                depth += 1
        normal = "/" + os.path.normpath(path).lstrip("/")
        if base != "/" and path.startswith(base + "/"):
            if not normal.startswith(base + "/"):
                raise InputError(f"{path!r}: '..' leads out of {base}")
            normal = normal[len(base):]
        modules.append(normal)
    return modules
