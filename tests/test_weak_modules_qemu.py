"""The real kernel judges kabigate weak-modules: boot the target kernel in qemu with the
/lib/modules tree `weak-modules --add-kernel` wrote (weak-updates/ links, depmod's modules.dep)
and modprobe the linked modules by name, as the booted system would; insmod the modules it
refused (which depmod accepts) and see the kernel refuse them too.

The target is 6.1.0-47's own files installed as another release (RESPIN, one kABI: see
test_weak_modules.py); in the guest its tree is /lib/modules/<uname -r>, which is where the
relative links lead back to the builds in extra/."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

import pytest
import weakroot
from test_weak_modules import _weak_modules

try:  # the qemu harness is moving from tests/realkernel.py into the package (kabigate.qemu)
    from kabigate.qemu import BUSYBOX, _boot, _Cpio, _kvm_usable, _parse_report, _qemu_cmd, _tail, qemu_available
except ImportError:
    from realkernel import BUSYBOX, _boot, _Cpio, _kvm_usable, _parse_report, _qemu_cmd, _tail, qemu_available

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]

OLD, RESPIN = "6.1.0-47-amd64", "6.1.0-47.1-amd64"
PROBED = ("acpi_call", "v4l2loopback", "jool", "jool_siit", "wctdm24xxp", "xt_ECHO")
REFUSED = {"proprietary_gpl": "gpl-only", "ns_missing": "namespace-not-imported"}


def _initramfs(base: Path, probe: list[str], insmod: list[Path], marker: str) -> bytes:
    """busybox, RESPIN's modules.dep and weak-updates/ (symlinks, as written), the builds they
    lead to, and the in-tree modules modules.dep says they need, under /lib/modules/<OLD>."""
    tree = base / "lib" / "modules" / RESPIN
    dep = {}
    for line in (tree / "modules.dep").read_text().splitlines():
        name, _, needs = line.partition(":")
        dep[name] = needs.split()
    by_name = {Path(p).name.split(".ko")[0].replace("-", "_"): p for p in dep}
    wanted, stack = set(), [by_name[n] for n in probe]
    while stack:
        path = stack.pop()
        if path not in wanted:
            wanted.add(path)
            stack += dep[path]
    archive = _Cpio()
    directories = {"bin", "dev", "proc", "lib", "lib/modules", f"lib/modules/{OLD}", "refused"}
    for path in sorted(wanted | {f"extra/{p}" for p in _extra_targets(tree, wanted)}):
        parts = Path(path).parts
        directories |= {f"lib/modules/{OLD}/" + "/".join(parts[:i]) for i in range(1, len(parts))}
    for directory in sorted(directories, key=lambda d: d.count("/")):
        archive.add(directory, 0o040755)
    archive.add("dev/console", 0o020600, rdev=(5, 1))
    archive.add("bin/busybox", 0o100755, BUSYBOX.read_bytes())
    for applet in ("sh", "mount", "modprobe", "insmod", "dmesg", "poweroff"):
        archive.add(f"bin/{applet}", 0o120777, b"busybox")
    archive.add(f"lib/modules/{OLD}/modules.dep", 0o100644,
                "".join(f"{p}: {' '.join(dep[p])}\n" for p in sorted(wanted)).encode())
    for path in sorted(wanted):
        source = tree / path
        if source.is_symlink():  # a weak link: kept as the link kabigate wrote
            archive.add(f"lib/modules/{OLD}/{path}", 0o120777, str(source.readlink()).encode())
        else:
            archive.add(f"lib/modules/{OLD}/{path}", 0o100644, source.resolve().read_bytes())
    for relative in _extra_targets(tree, wanted):
        archive.add(f"lib/modules/{OLD}/extra/{relative}", 0o100644,
                    (base / "lib" / "modules" / OLD / "extra" / relative).read_bytes())
    for module in insmod:
        archive.add(f"refused/{module.name}", 0o100644, module.read_bytes())
    script = ["#!/bin/sh", f'echo "{marker} init"', "mount -t proc proc /proc", "dmesg -n 1", "dmesg -c >/dev/null"]
    # modprobe finds a module only through modules.dep: the refused ones were not linked.
    steps = ([f"modprobe {name}" for name in probe] + [f"modprobe {m.name.split('.ko')[0]}" for m in insmod]
             + [f"insmod /refused/{m.name}" for m in insmod])
    for i, step in enumerate(steps):
        script += [step, f'echo "{marker} rc {i} $?"',
                   f'dmesg -c | while IFS= read -r l; do echo "{marker} msg {i} $l"; done', f'echo "{marker} end {i}"']
    script += [f'echo "{marker} done"', "poweroff -f"]
    archive.add("init", 0o100755, ("\n".join(script) + "\n").encode())
    return archive.finish()


def _extra_targets(tree: Path, wanted: set[str]) -> list[str]:
    """The builds the wanted weak links point to, relative to OLD's extra/."""
    prefix = f"../../../{OLD}/extra/"
    targets = []
    for path in sorted(wanted):
        link = tree / path
        if link.is_symlink():
            text = str(link.readlink())
            assert text.startswith(prefix), text
            targets.append(text[len(prefix):])
    return targets


def _boot_and_report(vmlinuz: Path, initramfs: bytes, marker: str, steps: int, timeout: float = 300):
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="kabigate-qemu-") as tmp:
        initrd = Path(tmp) / "initramfs.cpio"
        initrd.write_bytes(initramfs)
        append = "console=ttyS0 panic=-1 quiet"
        boot = None
        if _kvm_usable():
            boot = _boot(_qemu_cmd(vmlinuz, initrd, append, kvm=True), marker, deadline,
                         min(deadline, time.monotonic() + 20))
            boot = boot if boot.reached_init else None
        if boot is None:
            boot = _boot(_qemu_cmd(vmlinuz, initrd, append, kvm=False), marker, deadline, deadline)
    assert boot.reached_init and not boot.timed_out, _tail(boot.console)
    return _parse_report(boot.console, marker, [Path(f"step{i}") for i in range(steps)])


def test_linked_modules_load_on_the_booted_kernel(tmp_path, testdata, synthetic_modules):
    reason = qemu_available()
    if reason is not None:
        pytest.skip(reason)
    base = tmp_path / "root"
    weakroot.add_kernel(base, testdata, OLD)
    weakroot.add_kernel(base, testdata, OLD, release=RESPIN)
    for driver in ("acpi-call", "v4l2loopback", "jool", "dahdi", "xtables-addons"):
        weakroot.add_driver(base, testdata, driver, OLD)
    refused = [Path(weakroot.add_module_file(base, OLD, synthetic_modules[name], "synthetic")) for name in REFUSED]
    code, report = _weak_modules(base, "--add-kernel", RESPIN)
    assert code == 1
    assert {Path(r["module"]).stem: r["reasons"][0]["code"] for r in report["refused"]
            if Path(r["module"]).stem in REFUSED} == REFUSED
    linked = {Path(t).name.split(".ko")[0] for t in report["kernels"][0]["links"].values()}
    assert set(PROBED) <= linked

    marker = f"@@kabigate-{secrets.token_hex(8)}"
    insmod = [base / p.relative_to("/") for p in refused]
    vmlinuz = testdata.root / testdata.manifest["kernels"][OLD]["vmlinuz"]
    results = _boot_and_report(vmlinuz, _initramfs(base, list(PROBED), insmod, marker), marker,
                               len(PROBED) + 2 * len(insmod))
    for name, result in zip(PROBED, results):
        assert result.exit_status == 0, (name, result.kernel_messages)
    not_linked, inserted = results[len(PROBED):len(PROBED) + len(insmod)], results[len(PROBED) + len(insmod):]
    assert all(r.exit_status != 0 and not r.kernel_messages for r in not_linked)
    assert all(r.exit_status != 0 for r in inserted)
    messages = {name: " ".join(r.kernel_messages) for name, r in zip(REFUSED, inserted)}
    assert "Unknown symbol cpu_mitigations_off" in messages["proprietary_gpl"]
    assert "from namespace DMA_BUF, but does not import it" in messages["ns_missing"]
