"""The real kernel judges kabigate weak-modules: boot the target kernel in qemu with the
/lib/modules tree `weak-modules --add-kernel` wrote (weak-updates/ links, depmod's modules.dep)
and modprobe the linked modules by name, as the booted system would; insmod the modules it
refused (which depmod accepts) and see the kernel refuse them too.

The target is 6.1.0-47's own files installed as another release (RESPIN, one kABI: see
test_weak_modules.py); in the guest its tree is /lib/modules/<uname -r>, which is where the
relative links lead back to the builds in extra/."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import weakroot
from test_weak_modules import _weak_modules

from kabigate.boot.qemu import GuestFile, qemu_available, run_in_qemu

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]

OLD, RESPIN = "6.1.0-47-amd64", "6.1.0-47.1-amd64"
PROBED = ("acpi_call", "v4l2loopback", "jool", "jool_siit", "wctdm24xxp", "xt_ECHO")
REFUSED = {"proprietary_gpl": "gpl-only", "ns_missing": "namespace-not-imported"}


def _guest_files(base: Path, probe: list[str], insmod: list[Path]) -> list[GuestFile]:
    """RESPIN's modules.dep and weak-updates/ (symlinks, as written), the builds they lead to,
    and the in-tree modules modules.dep says they need, under /lib/modules/<OLD>."""
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
    guest = f"lib/modules/{OLD}"
    files = [GuestFile(f"{guest}/modules.dep", "".join(f"{p}: {' '.join(dep[p])}\n" for p in sorted(wanted)).encode())]
    for path in sorted(wanted):
        source = tree / path
        if source.is_symlink():  # a weak link: kept as the link kabigate wrote
            files.append(GuestFile(f"{guest}/{path}", link=str(source.readlink())))
        else:
            files.append(GuestFile(f"{guest}/{path}", source.resolve().read_bytes()))
    for relative in _extra_targets(tree, wanted):
        files.append(GuestFile(f"{guest}/extra/{relative}",
                               (base / "lib" / "modules" / OLD / "extra" / relative).read_bytes()))
    files += [GuestFile(f"refused/{module.name}", module.read_bytes()) for module in insmod]
    return files


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

    insmod = [base / p.relative_to("/") for p in refused]
    vmlinuz = testdata.root / testdata.manifest["kernels"][OLD]["vmlinuz"]
    # modprobe finds a module only through modules.dep: the refused ones were not linked.
    steps = ([(name, f"modprobe {name}") for name in PROBED]
             + [(m.name, f"modprobe {m.name.split('.ko')[0]}") for m in insmod]
             + [(m.name, f"insmod /refused/{m.name}") for m in insmod])
    results = run_in_qemu(vmlinuz, steps, _guest_files(base, list(PROBED), insmod), timeout=300)
    for name, result in zip(PROBED, results):
        assert result.exit_status == 0, (name, result.kernel_messages)
    not_linked, inserted = results[len(PROBED):len(PROBED) + len(insmod)], results[len(PROBED) + len(insmod):]
    # the kernel never saw them (its own asynchronous lines, e.g. the TSC's late calibration under TCG,
    # may land in any step's capture)
    assert all(r.exit_status != 0 and not any(name in line for line in r.kernel_messages)
               for name, r in zip(REFUSED, not_linked))
    assert all(r.exit_status != 0 for r in inserted)
    messages = {name: " ".join(r.kernel_messages) for name, r in zip(REFUSED, inserted)}
    assert "Unknown symbol cpu_mitigations_off" in messages["proprietary_gpl"]
    assert "from namespace DMA_BUF, but does not import it" in messages["ns_missing"]
