"""The real kernel as the judge: load modules into a kernel booted in qemu.

One call boots ``vmlinuz`` once with a busybox initramfs whose /init runs the
given steps in order (`insmod_in_qemu`: insmod each module; `run_in_qemu`: any
busybox command over any files, e.g. modprobe through a module tree) and reports,
for each one, its exit status and the kernel messages it caused.  The report travels over the serial console as
lines tagged with a per-boot random marker, so stray console output can never
be mistaken for it.  `kabigate boot-check` and the qemu tests use it;
`kernel_reason()` reads the kernel's refusal back as a kabigate reason code.
"""

from __future__ import annotations

import errno
import lzma
import os
import platform
import posixpath
import re
import secrets
import select
import shutil
import struct
import subprocess
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kabigate.errors import InputError
from kabigate.formats.bzimage import MAX_KERNEL_IMAGE
from kabigate.formats.rawimage import ARM64_MAGIC, ARM64_MAGIC_OFFSET, S390_EP, S390_EP_OFFSET
from kabigate.inputs.packages import Package, is_package_file, is_url
from kabigate.model import ReasonCode

BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"
_APPLETS = ("sh", "mount", "insmod", "modprobe", "dmesg", "poweroff")
# "quiet" keeps the boot short on the console but still shows errors if the
# boot itself fails; /init then silences the console entirely.
_BASE_KERNEL_ARGS = "panic=-1 quiet"


@dataclass(frozen=True)
class Guest:
    """How qemu boots a kernel of one architecture: TCG, or KVM on a host of that architecture."""

    machine: str  # `uname -m`
    qemu: str
    package: str  # the Debian package with `qemu`
    tcg: tuple[str, ...]  # the board and CPU emulated
    console: str  # the board's serial port as the kernel names it

    @property
    def busybox_env(self) -> str:
        """A static busybox of another architecture cannot sit at /bin/busybox beside the host's
        (busybox-static is not Multi-Arch: same): `dpkg-deb -x busybox-static_*_arm64.deb` and
        name its bin/busybox in $KABIGATE_BUSYBOX_AARCH64 (_PPC64LE, ...)."""
        return f"KABIGATE_BUSYBOX_{self.machine.upper()}"

    def busybox(self) -> Path:
        if self.machine == "x86_64":
            return BUSYBOX
        return Path(os.environ.get(self.busybox_env, ""))


GUESTS = {
    "x86_64": Guest("x86_64", QEMU, "qemu-system-x86", ("-cpu", "max"), "ttyS0"),
    # qemu's virt board, its PL011 UART ttyAMA0 (Debian's arm64 config builds CONFIG_SERIAL_AMBA_PL011)
    "aarch64": Guest("aarch64", "qemu-system-aarch64", "qemu-system-arm", ("-M", "virt", "-cpu", "cortex-a57"),
                     "ttyAMA0"),
    # PAPR's virtual console hvc0; SLOF loads the ELF vmlinux Debian's ppc64el ships
    "ppc64le": Guest("ppc64le", "qemu-system-ppc64", "qemu-system-ppc", ("-M", "pseries"), "hvc0"),
    # the SCLP line-mode console ttysclp0; qemu loads the s390 image (its decompressor) as is
    "s390x": Guest("s390x", "qemu-system-s390x", "qemu-system-misc", ("-M", "s390-ccw-virtio"), "ttysclp0"),
}
_EM_PPC64 = 21


def guest_of(vmlinuz: Path) -> Guest:
    """The guest a kernel image needs: an arm64 Image (its "ARM\\x64" magic), an s390 image
    ("S390EP"), a little-endian ppc64 ELF vmlinux, else an x86 bzImage."""
    with vmlinuz.open("rb") as file:
        head = file.read(S390_EP_OFFSET + len(S390_EP))
    if head[ARM64_MAGIC_OFFSET:ARM64_MAGIC_OFFSET + 4] == ARM64_MAGIC:
        return GUESTS["aarch64"]
    if head[S390_EP_OFFSET:] == S390_EP:
        return GUESTS["s390x"]
    if head[:6] == b"\x7fELF\x02\x01" and struct.unpack_from("<H", head, 18)[0] == _EM_PPC64:
        return GUESTS["ppc64le"]
    return GUESTS["x86_64"]
_TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\] ?")


@dataclass(frozen=True)
class InsmodResult:
    module: str  # file name as given (run_in_qemu: the step's label)
    exit_status: int  # busybox insmod's exit status: 0 = loaded, else the errno (2 = ENOENT...)
    # dmesg lines emitted during this insmod, without timestamp.  On failure
    # busybox tries finit_module and then init_module, so the kernel's
    # complaints usually appear twice.
    kernel_messages: list[str]


class RealKernelError(RuntimeError):
    """The VM did not produce a complete report (timeout, panic, bad kernel...)."""


@dataclass(frozen=True)
class GuestFile:
    """A file of the initramfs: `data`, or a symbolic link to `link`; its folders are made."""
    path: str  # relative to the guest's /
    data: bytes = b""
    link: str | None = None


def qemu_available(machine: str = "x86_64") -> str | None:
    """Return None if insmod_in_qemu can run kernels of `machine` here, else why not (for pytest.skip)."""
    guest = GUESTS[machine]
    if shutil.which(guest.qemu) is None:
        return f"{guest.qemu} not found (apt-get install {guest.package})"
    busybox = guest.busybox()
    if guest.machine != "x86_64" and not os.environ.get(guest.busybox_env):
        return f"no {machine} busybox: set {guest.busybox_env} to the static busybox of busybox-static"
    if not busybox.is_file():
        return f"{busybox} not found (apt-get install busybox-static)"
    if not _is_static_elf(busybox):
        return f"{busybox} is dynamically linked (apt-get install busybox-static)"
    return None


def insmod_in_qemu(
    vmlinuz: Path, modules: list[Path], *, kernel_args: str = "", timeout: float = 180
) -> list[InsmodResult]:
    """Boot ``vmlinuz`` once, insmod ``modules`` in order, report each insmod."""
    files = []
    for i, module in enumerate(modules):
        data = module.read_bytes()
        # busybox would decompress too, but only after a failed finit_module
        # that logs a spurious "Invalid ELF header magic".
        if module.suffix == ".xz":
            data = lzma.decompress(data)
        files.append(GuestFile(f"modules/{i}-{module.name}", data))
    steps = [(module.name, f"insmod /modules/{i}-{module.name}") for i, module in enumerate(modules)]
    return run_in_qemu(vmlinuz, steps, files, kernel_args=kernel_args, timeout=timeout)


def run_in_qemu(
    vmlinuz: Path, steps: list[tuple[str, str]], files: Sequence[GuestFile] = (), *,
    kernel_args: str = "", timeout: float = 180,
) -> list[InsmodResult]:
    """Boot ``vmlinuz`` once with ``files`` in its initramfs, run each (label, shell command)
    step in order, report each one's exit status and kernel messages under its label."""
    guest = guest_of(vmlinuz)
    reason = qemu_available(guest.machine)
    if reason is not None:
        raise RealKernelError(reason)
    marker = f"@@kabigate-{secrets.token_hex(8)}"
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="kabigate-qemu-") as tmp:
        initrd = Path(tmp) / "initramfs.cpio"
        initrd.write_bytes(_initramfs(files, [command for _, command in steps], marker, guest.busybox()))
        append = f"console={guest.console} {_BASE_KERNEL_ARGS} {kernel_args}"
        boot = None
        if guest.machine == platform.machine() and _kvm_usable():
            init_deadline = min(deadline, time.monotonic() + _KVM_INIT_SECONDS)
            cmd = _qemu_cmd(guest, vmlinuz, initrd, append, kvm=True)
            boot = _boot(cmd, marker, deadline, init_deadline)
            if not boot.reached_init:
                _mark_kvm_broken(boot)
                boot = None
        if boot is None:
            boot = _boot(_qemu_cmd(guest, vmlinuz, initrd, append, kvm=False), marker, deadline, deadline)
    if not boot.reached_init:
        why = f"within {timeout:.0f}s" if boot.timed_out else "before qemu exited"
        raise RealKernelError(
            f"kernel did not start /init {why}; console tail:\n{_tail(boot.console)}"
        )
    if boot.timed_out:
        raise RealKernelError(
            f"qemu did not finish within {timeout:.0f}s; console tail:\n{_tail(boot.console)}"
        )
    return _parse_report(boot.console, marker, [label for label, _ in steps])


# Seconds a KVM guest gets to reach /init (normally ~1s) before KVM is deemed
# broken, e.g. nested virtualisation that exposes /dev/kvm but cannot run a
# stock kernel (PVM) or makes qemu abort on unsupported MSRs.
_KVM_INIT_SECONDS = 20
_kvm_broken = False


def _kvm_usable() -> bool:
    if _kvm_broken:
        return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def _mark_kvm_broken(boot: _Boot) -> None:
    global _kvm_broken
    _kvm_broken = True
    warnings.warn(
        "KVM guest did not reach /init, using slow TCG emulation from now on; "
        f"console tail:\n{_tail(boot.console, 5)}",
        stacklevel=3,
    )


def _qemu_cmd(guest: Guest, vmlinuz: Path, initrd: Path, append: str, *, kvm: bool) -> list[str]:
    return [
        guest.qemu,
        # Expose every CPU feature available, so modules that probe for e.g.
        # AES-NI behave as on a modern host.
        *(["-enable-kvm", "-cpu", "host"] if kvm else guest.tcg),
        "-m", "1024",
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(vmlinuz),
        "-initrd", str(initrd),
        "-append", append,
    ]  # fmt: skip


@dataclass(frozen=True)
class _Boot:
    console: str
    reached_init: bool
    timed_out: bool


def _boot(cmd: list[str], marker: str, deadline: float, init_deadline: float) -> _Boot:
    """Run qemu until it exits, or kill it at init_deadline (if /init has not
    started by then) or deadline."""
    init_tag = f"{marker} init".encode()
    out = bytearray()
    timed_out = False
    with subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        fd = proc.stdout.fileno()
        while True:
            remaining = (deadline if init_tag in out else init_deadline) - time.monotonic()
            if remaining <= 0:
                timed_out = True
                proc.kill()
                break
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out += chunk
    console = out.decode(errors="replace").replace("\r", "")
    return _Boot(console, init_tag in out, timed_out)


def _init_script(commands: list[str], marker: str) -> str:
    lines = [
        "#!/bin/sh",
        f'echo "{marker} init"',
        "mount -t proc proc /proc",
        # Console loglevel 1: kernel messages stay out of the serial stream,
        # dmesg -c per step is where they are read from.
        "dmesg -n 1",
        "dmesg -c >/dev/null",
    ]
    for i, command in enumerate(commands):
        lines += [
            command,
            f'echo "{marker} rc {i} $?"',
            f'dmesg -c | while IFS= read -r l; do echo "{marker} msg {i} $l"; done',
            f'echo "{marker} end {i}"',
        ]
    lines += [f'echo "{marker} done"', "poweroff -f"]
    return "\n".join(lines) + "\n"


def _parse_report(console: str, marker: str, labels: list[str]) -> list[InsmodResult]:
    # search, not match: a kernel message may still be glued in front of a line.
    tagged = re.compile(re.escape(marker) + r" (rc|msg|end) (\d+)(?: (.*))?$")
    statuses: dict[int, int] = {}
    messages: dict[int, list[str]] = {i: [] for i in range(len(labels))}
    ended: set[int] = set()
    for line in console.splitlines():
        m = tagged.search(line)
        if m is None:
            continue
        kind, i, rest = m.group(1), int(m.group(2)), m.group(3) or ""
        if kind == "rc":
            statuses[i] = int(rest)
        elif kind == "msg":
            messages[i].append(_TIMESTAMP.sub("", rest))
        else:
            ended.add(i)
    if len(ended) != len(labels) or f"{marker} done" not in console:
        done = len(ended)
        stuck = f" at {labels[done]}" if done < len(labels) else ""
        raise RealKernelError(
            f"VM stopped after {done} of {len(labels)} steps{stuck}; "
            f"console tail:\n{_tail(console)}"
        )
    return [InsmodResult(label, statuses[i], messages[i]) for i, label in enumerate(labels)]


def _tail(console: str, lines: int = 40) -> str:
    return "\n".join(console.splitlines()[-lines:])


def _initramfs(files: Sequence[GuestFile], commands: list[str], marker: str, busybox: Path) -> bytes:
    archive = _Cpio()
    folders = {"bin", "dev", "proc"}
    for file in files:
        parts = file.path.split("/")[:-1]
        folders |= {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
    for folder in sorted(folders, key=lambda f: (f.count("/"), f)):
        archive.add(folder, 0o040755)
    # The kernel opens /dev/console for init's stdio before anything can mount devtmpfs.
    archive.add("dev/console", 0o020600, rdev=(5, 1))
    archive.add("bin/busybox", 0o100755, busybox.read_bytes())
    for applet in _APPLETS:
        archive.add(f"bin/{applet}", 0o120777, b"busybox")
    archive.add("init", 0o100755, _init_script(commands, marker).encode())
    for file in files:
        if file.link is not None:
            archive.add(file.path, 0o120777, file.link.encode())
        else:
            archive.add(file.path, 0o100644, file.data)
    return archive.finish()


class _Cpio:
    """Writer for the "newc" cpio format the kernel unpacks as initramfs."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._ino = 0

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        nlink = 2 if mode & 0o170000 == 0o040000 else 1
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, *rdev, len(name) + 1, 0)
        self._out += b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out += name.encode() + b"\0"
        self._pad()
        self._out += data
        self._pad()

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return bytes(self._out)

    def _pad(self) -> None:
        self._out += b"\0" * (-len(self._out) % 4)


def _is_static_elf(path: Path) -> bool:
    """True if the ELF file has no PT_INTERP, i.e. runs without a dynamic loader."""
    with path.open("rb") as f:
        header = f.read(64)
        if header[:5] != b"\x7fELF\x02" or header[5] not in (1, 2):  # 64-bit, either byte order (s390x: big)
            return False
        endian = "<" if header[5] == 1 else ">"
        phoff, = struct.unpack_from(endian + "Q", header, 32)
        phentsize, phnum = struct.unpack_from(endian + "HH", header, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(
        struct.unpack_from(endian + "I", table, i * phentsize)[0] != pt_interp for i in range(phnum)
    )


# Where kernel packages keep the image qemu boots: Debian /boot/vmlinuz-<kver> (ppc64el's is the
# ELF /boot/vmlinux-<kver>), RHEL/Fedora kernel-core /lib/modules/<kver>/vmlinuz, SUSE /boot/vmlinuz-<kver>.
_IMAGE_MEMBER = re.compile(r"^(/boot/vmlinu[xz]-[^/]+|/lib/modules/[^/]+/vmlinuz)$")


def kernel_image(source: str, directory: Path) -> Path:
    """The bootable image `source` names: a vmlinuz file as is, the one of an extracted package
    root, or the one in a kernel package (file or URL), written into `directory`."""
    if not (is_url(source) or is_package_file(source)):
        path = Path(source)
        if path.is_dir():  # an extracted package root
            images = sorted(path.glob("boot/vmlinuz-*")) + sorted(path.glob("lib/modules/*/vmlinuz"))
            if len(images) != 1:
                raise InputError(f"{source}: {len(images)} kernel images in this tree, not one")
            path = images[0]
        if not path.is_file():
            raise InputError(f"{source}: no such kernel image")
        return path
    package = Package(source)
    try:
        for member, read in package.members():
            if member.kind == "file" and _IMAGE_MEMBER.match(member.path):
                if member.size > MAX_KERNEL_IMAGE:
                    raise InputError(f"{source}: {member.path} is larger than {MAX_KERNEL_IMAGE >> 20} MiB")
                target = directory / posixpath.basename(member.path)
                target.write_bytes(read())
                return target
    finally:
        package.close()
    raise InputError(f"{source}: no kernel image in this package (/boot/vmlinu[xz]-* or /lib/modules/*/vmlinuz)")


# The kernel's refusals (kernel/module/main.c, version.c, signing.c), first match wins, as
# kabigate reason codes; the symbol is the message's group 1 where it names one.
_KERNEL_REFUSALS = [(re.compile(pattern), code) for pattern, code in (
    (r"Loading of unsigned module is rejected", ReasonCode.UNSIGNED),
    (r"Loading of module with unsupported crypto is rejected", ReasonCode.UNSUPPORTED_SIGNATURE),
    (r"Loading of module with unavailable key is rejected", ReasonCode.UNTRUSTED_SIGNATURE),
    (r"Invalid (?:module )?architecture in ELF header", ReasonCode.ARCH_MISMATCH),
    (r"\.gnu\.linkonce\.this_module section size must match", ReasonCode.MODULE_STRUCT_SIZE),
    ((r"Only one \.(?:modinfo|gnu\.linkonce\.this_module) section|Exactly one \.gnu\.linkonce\.this_module"
     r"|this_module section must have a size"
     r"|this_module must occupy memory|module has no symbols|No module found in object|Invalid ELF"
     r"|has both \.ctors and \.init_array"), ReasonCode.INVALID_ELF),
    (r"disagrees about version of symbol (module_layout)$", ReasonCode.MODULE_LAYOUT_MISMATCH),
    (r"version magic '.*' should be", ReasonCode.VERMAGIC_MISMATCH),
    (r"livepatch support is disabled", ReasonCode.LIVEPATCH_UNSUPPORTED),
    (r"module PLT section\(s\) missing|doesn't contain \.stubs\.", ReasonCode.ARCH_SECTIONS_MISSING),
    (r"has invalid WRITE\|EXEC flags", ReasonCode.WRITE_EXEC_SECTION),
    (r"please compile with -fno-common", ReasonCode.COMMON_SYMBOL),
    (r"no symbol version for (\S+)$", ReasonCode.NO_SYMBOL_VERSION),
    (r"disagrees about version of symbol (\S+)$", ReasonCode.CRC_MISMATCH),
    # A GPL-only symbol hidden from a proprietary module is "Unknown symbol" too.
    (r"Unknown symbol (\S+) \(err -2\)$", ReasonCode.MISSING_SYMBOL),
    (r"uses symbol \((\S+)\) from namespace .*, but does not import it", ReasonCode.NAMESPACE_NOT_IMPORTED),
    (r"exports duplicate symbol (\S+)", ReasonCode.DUPLICATE_EXPORT),
    (r"module using GPL-only symbols uses symbols (\S+) from proprietary", ReasonCode.GPL_ONLY),
)]


@dataclass(frozen=True)
class KernelReason:
    code: ReasonCode | str  # a ReasonCode, or INIT_FAILED
    symbol: str | None
    message: str  # the kernel's line, without the timestamp


# The module's init function failed after the loader accepted it (do_init_module()).
INIT_FAILED = "init-failed"


def kernel_reason(result: InsmodResult) -> KernelReason | None:
    """What the kernel refused the module for (its first complaint), None when it loaded;
    INIT_FAILED when the loader took it and its init function returned an error."""
    if result.exit_status == 0:
        return None
    for message in result.kernel_messages:
        for pattern, code in _KERNEL_REFUSALS:
            if (match := pattern.search(message)) is not None:
                return KernelReason(code, match.group(1) if match.groups() else None, message)
    if result.exit_status == errno.EEXIST:
        return KernelReason(ReasonCode.ALREADY_LOADED, None, "File exists")
    if result.exit_status in (errno.EKEYREJECTED, errno.EBADMSG):
        # module_sig_check(): a signature that does not verify, or is malformed, is fatal even when
        # signatures are not enforced, and the kernel says so in no message
        return KernelReason(ReasonCode.BAD_SIGNATURE, None, os.strerror(result.exit_status))
    if result.exit_status == errno.ENOEXEC:
        # try_to_force_load() refuses without a word: no __versions, no vermagic, exports without CRCs
        return KernelReason(ReasonCode.NO_VERSIONS, None, "Exec format error (no message: try_to_force_load())")
    return KernelReason(INIT_FAILED, None, f"{os.strerror(result.exit_status)}: the loader took the module, "
                                           "its init function failed")
