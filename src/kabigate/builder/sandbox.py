"""The sandbox every build runs in: driver source is untrusted code (its Makefile, configure and
dkms.conf are shell that runs at build time).

bubblewrap builds an empty root holding only the host's /usr and /etc (read-only: no /root, /home,
/var, nor the work folders of other builds), a private writable work folder at /build, the
kernel's build tree read-only at /kernel, and a private /tmp (and /var/tmp, rpmbuild's) of bounded
size; no network (a network namespace with only loopback), its own PID namespace (killing bwrap
kills every process of the build), and an unprivileged uid: run as root, bwrap sets up the mounts
and setpriv drops to nobody (65534) before the build starts, so the kernel counts the build's
processes against RLIMIT_NPROC (root's are never counted); run as another user, a user namespace
maps that user to nobody.

Limits: wall time (the whole process group is killed), address space (RLIMIT_AS, per process),
processes (RLIMIT_NPROC), the size of one file (RLIMIT_FSIZE) and of what the build prints (the
log keeps its head and tail; past `output_bytes` the build is killed). A build that hits a limit
is a failed build saying which, never a hung worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kabigate.builder.buildlog import BoundedLog
from kabigate.errors import InputError

NOBODY = 65534
WORK = "/build"  # the writable work folder, inside the sandbox
KERNEL = "/kernel"  # the kernel's build tree, inside the sandbox
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Top-level names of the host's root that programs need: /usr's compatibility links (a merged /usr
# has them as symlinks) and /etc (os-release, ld.so.cache, dkms's framework.conf).
HOST_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 1800.0
    memory_bytes: int = 4 << 30  # address space of each process: cc1 on a big driver needs about 1 GiB
    processes: int = 512
    file_bytes: int = 1 << 30  # one file written (a runaway make.log)
    tmp_bytes: int = 1 << 30  # the private /tmp (memory-backed)
    output_bytes: int = 256 << 20  # printed in all; the log keeps its head and tail (buildlog)


@dataclass
class Run:
    """What one command did in the sandbox: its exit status (None when a limit stopped it), the limit
    it hit ("timed out after 600 s"), its bounded output and wall time."""

    status: int | None
    limit: str | None
    log: BoundedLog
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass
class Sandbox:
    """A work folder (host path) and what else the build sees: the kernel tree, read-only binds
    (host path -> sandbox path), symlinks (target, sandbox path), environment variables (over the
    defaults: PATH, HOME, LANG, TMPDIR)."""

    work: Path
    kernel_root: Path | None = None
    binds: list[tuple[Path, str]] = field(default_factory=list)
    symlinks: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)

    def argv(self, command: list[str], cwd: str) -> list[str]:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise InputError("building needs bubblewrap (bwrap): apt-get install bubblewrap")
        argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        for name in HOST_DIRS:
            host = Path("/", name)
            if host.is_symlink():
                argv += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                argv += ["--ro-bind", str(host), str(host)]
        argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(self.limits.tmp_bytes),
                 "--tmpfs", "/tmp", *_parent("/var/tmp"), "--symlink", "/tmp", "/var/tmp",
                 "--bind", str(self.work), WORK]
        if self.kernel_root is not None:
            argv += ["--ro-bind", str(self.kernel_root), KERNEL]
        for host, inside in self.binds:
            argv += _parent(inside) + ["--ro-bind", str(host), inside]
        # The host's modules and headers are no business of the build: where it finds the kernel's
        # (/lib/modules/RELEASE/build, a kernel-devel's /usr/src/kernels/RELEASE), only the kernel's.
        for folder, host_folder in (("/lib/modules/", "/usr/lib/modules"), ("/usr/src/", "/usr/src")):
            if any(inside.startswith(folder) for _target, inside in self.symlinks) and Path(host_folder).is_dir():
                argv += ["--tmpfs", host_folder]
        for target, inside in self.symlinks:
            argv += _parent(inside) + ["--symlink", target, inside]
        argv.append("--clearenv")
        for name, value in ({"PATH": PATH, "HOME": WORK, "LANG": "C.UTF-8", "TMPDIR": "/tmp"} | self.env).items():
            argv += ["--setenv", name, value]
        argv += ["--chdir", cwd]
        if os.geteuid() == 0:
            argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "setpriv", f"--reuid={NOBODY}",
                     f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
                     "--no-new-privs", "--"]
        else:
            argv[1:1] = ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns"]
        return argv + command

    def run(self, command: list[str], cwd: str = WORK) -> Run:
        """Run `command` in the sandbox, its output (stdout and stderr) into a bounded log."""
        if os.geteuid() == 0:
            _chown_tree(self.work)  # nobody builds in it
        limits = self.limits
        started = time.monotonic()
        # prlimit (util-linux) sets the limits bwrap and every process of the build inherit
        limited = [shutil.which("prlimit") or "/usr/bin/prlimit", f"--as={limits.memory_bytes}",
                   f"--nproc={limits.processes}", f"--fsize={limits.file_bytes}", "--core=0", "--"]
        # bwrap says its namespace's init (--info-fd): bwrap itself returns when the build's first
        # process exits, before the kernel has killed what else runs in the namespace.
        info_read, info_write = os.pipe()
        argv = self.argv(command, cwd)
        argv[1:1] = ["--info-fd", str(info_write)]
        try:
            proc = subprocess.Popen(limited + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(info_write,))
        finally:
            os.close(info_write)
        log = BoundedLog()
        limit = _drain(proc, log, started + limits.wall_seconds, limits)
        if limit is not None:
            _kill(proc)
            _wait_for_eof(proc)
        status = proc.wait()
        _output(proc).close()
        _wait_for_namespace_end(info_read)
        seconds = time.monotonic() - started
        if limit is not None:
            log.write(f"\n# kabigate: {limit}\n".encode())
        return Run(None if limit is not None else status, limit, log, seconds)


def _wait_for_namespace_end(info: int, bound: float = 60.0) -> None:
    """Wait until the build's PID namespace is gone: its init exits only after every other process
    in it (zap_pid_ns_processes()), so a daemon the build left never outlives run()."""
    with os.fdopen(info, "rb") as pipe:
        text = pipe.read(4096)
    try:
        init = int(json.loads(text)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return  # bwrap did not start: no namespace
    deadline = time.monotonic() + bound
    while not _exited(init) and time.monotonic() < deadline:
        time.sleep(0.01)


def _exited(pid: int) -> bool:
    """Gone, or a zombie: exit_notify() zaps the namespace (zap_pid_ns_processes(), from
    forget_original_parent()) before it makes init a zombie. Orphaned when bwrap returned, the
    zombie waits for the host's init to reap it, which can take seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat.rsplit(b")", 1)[-1].split()[:1] in ([b"Z"], [b"X"])


def require(tool: str, package: str) -> None:
    """The build's tool runs from the host's /usr: missing, it is the host's fault, not the source's."""
    if shutil.which(tool, path=PATH) is None:
        raise InputError(f"this build needs {tool}: apt-get install {package}")


def check_sandbox(work: Path) -> None:
    """An InputError saying why, if this host cannot run the sandbox (no bwrap, no user namespaces
    for a user other than root): the build's own failures are not to be mistaken for that."""
    run = Sandbox(work).run(["true"])
    if not run.ok:
        lines = run.log.text().strip().splitlines()
        raise InputError(f"the build sandbox does not start: {lines[0] if lines else f'exit status {run.status}'}")


def written_by_build(path: Path, work: Path) -> bool:
    """A regular file the build wrote in its work folder: not a link it planted to a host file
    (we read what it leaves with more rights than it had)."""
    return path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(work.resolve())


def _parent(inside: str) -> list[str]:
    """bwrap makes missing parent folders private to root (0700): nobody could not reach through."""
    parent = os.path.dirname(inside)
    return [] if parent == "/" else ["--perms", "0755", "--dir", parent]


def _drain(proc: subprocess.Popen, log: BoundedLog, deadline: float, limits: Limits) -> str | None:
    """Copy the output into the log until it ends; the limit hit first, if one is."""
    output = _output(proc)
    with selectors.DefaultSelector() as selector:
        selector.register(output, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"timed out after {limits.wall_seconds:g} s"
            if not selector.select(left):
                continue
            chunk = os.read(output.fileno(), 1 << 16)
            if not chunk:
                return None
            log.write(chunk)
            if log.total > limits.output_bytes:
                return f"printed more than {limits.output_bytes >> 20} MiB"


def _wait_for_eof(proc: subprocess.Popen, seconds: float = 10.0) -> None:
    """The PID namespace dies after bwrap, not with it: wait until the build's processes, which hold
    the output pipe, are gone (what they still print is dropped), so none outlives run()."""
    deadline = time.monotonic() + seconds
    output = _output(proc)
    with selectors.DefaultSelector() as selector:
        selector.register(output, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if selector.select(left) and not os.read(output.fileno(), 1 << 16):
                return


def _output(proc: subprocess.Popen) -> IO[bytes]:
    if proc.stdout is None:
        raise ValueError("the build runs with stdout=PIPE")
    return proc.stdout


def _kill(proc: subprocess.Popen) -> None:
    """bwrap's process group; the build's processes die with bwrap's PID namespace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _chown_tree(path: Path) -> None:
    os.chown(path, NOBODY, NOBODY)
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), NOBODY, NOBODY, follow_symlinks=False)
