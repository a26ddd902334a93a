"""kabigate weak-modules on fake systems laid out the RHEL way from the real Debian kernels and DKMS
builds (tests/support/weakroot.py), against what `depmod -naeE` (RHEL's weak-modules' only check) says.

The real kernels of the test data each have their own kABI (module_layout differs between all of
them), so the one kernel a build can be reused on is the same kernel installed under a second
release, as RHEL's z-stream kernels of one kABI are: RESPIN. There depmod accepts every build of
6.1.0-47; the kernel does not (GPL-only, namespaces), and kabigate says so."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest
from support import weakroot

from kabigate.host import weakmodules as wm

pytestmark = pytest.mark.realdata

OLD, MID, NEW, RT = "6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64", "6.1.0-47-rt-amd64"
RESPIN = "6.1.0-47.1-amd64"  # OLD's files under another release
DRIVERS = ("acpi-call", "jool", "v4l2loopback", "xtables-addons", "dahdi")
KABIGATE = [sys.executable, "-m", "kabigate"]


def _kabigate(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*KABIGATE, *args], check=False, input=stdin, capture_output=True, text=True, env=env)


@pytest.fixture
def system(tmp_path, testdata, synthetic_modules):
    """OLD, MID, NEW and RESPIN installed; OLD's kmods (the five drivers, plus the synthetic modules
    the kernel refuses for GPL-only and namespace reasons) in OLD's extra/; NEW's acpi-call build in
    NEW's extra/."""
    base = tmp_path / "root"
    for krel in (OLD, MID, NEW):
        weakroot.add_kernel(base, testdata, krel)
    weakroot.add_kernel(base, testdata, OLD, release=RESPIN, symvers_in_boot=False)  # RHEL 9's place
    for driver in DRIVERS:
        weakroot.add_driver(base, testdata, driver, OLD)
    weakroot.add_driver(base, testdata, "acpi-call", NEW)
    for name in ("proprietary_gpl", "ns_missing"):
        weakroot.add_module_file(base, OLD, synthetic_modules[name], "synthetic")
    return base


def _weak_modules(base: Path, *args: str, stdin: str = "") -> tuple[int, dict]:
    result = _kabigate("weak-modules", "--basedir", str(base), "--no-initramfs", "--json", *args, stdin=stdin)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _links(base: Path, krel: str) -> dict[str, str]:
    return wm.Root(str(base)).links(krel)


DEPMOD_WARNING = re.compile(r"^depmod: WARNING: (?P<path>/\S+\.ko) (?P<what>needs unknown symbol|disagrees "
                            r"about version of symbol) (?P<symbol>\S+)$")


def _depmod_view(base: Path, krel: str, modules: list[str]) -> dict[str, set[tuple[str, str]]]:
    """What weak-modules' validate_weak_links() reads: every module linked into a scratch copy of
    `krel`'s weak-updates/, `depmod -naeE symvers`; -> module (as seen in the root) -> problems."""
    root = wm.Root(str(base))
    scratch = base / "lib" / "modules" / krel / "weak-updates"
    assert not scratch.exists()
    links = {}
    for module in modules:
        link = scratch / root.weak_link(module, OLD if f"/{OLD}/" in module else NEW)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(root.host(module))
        links[str(link)] = module
    symvers = base / "symvers"
    symvers.write_bytes(gzip.decompress(root.symvers(krel).read_bytes()))
    try:
        result = subprocess.run(["depmod", "-b", str(base), "-naeE", str(symvers), krel],
                                capture_output=True, text=True, check=True)
    finally:
        shutil.rmtree(scratch)
        symvers.unlink()
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for line in result.stderr.splitlines():
        match = DEPMOD_WARNING.match(line)
        if match and match["path"] in links:
            kind = "missing" if match["what"].startswith("needs") else "crc"
            found[links[match["path"]]].add((kind, match["symbol"]))
    return found


PRESENCE_AND_CRC = {"missing-symbol": "missing", "crc-mismatch": "crc", "module-layout-mismatch": "crc"}


def _compare_with_depmod(base: Path, krel: str, report: dict, candidates: list[str]) -> set[str]:
    """Linked modules: depmod finds nothing wrong. Refused ones: depmod finds exactly kabigate's
    presence/CRC problems, or none when kabigate refused for a reason depmod does not check
    (-> those modules)."""
    depmod = _depmod_view(base, krel, candidates)
    plan = next(k for k in report["kernels"] if k["kernel"] == krel)
    linked = set(plan["links"].values())
    refused = {r["module"]: r for r in report["refused"] if r["kernel"] == krel}
    assert linked | refused.keys() == set(candidates)
    for module in linked:
        assert not depmod.get(module), (module, depmod.get(module))
    only_kabigate = set()
    for module, refusal in refused.items():
        ours = {(PRESENCE_AND_CRC[r["code"]], r["symbol"]) for r in refusal["reasons"] if r["code"] in PRESENCE_AND_CRC}
        if ours:
            assert ours == depmod.get(module, set()), (module, ours ^ depmod.get(module, set()))
        elif refusal["reasons"][0]["code"] == "dependency-fails":
            pass  # depmod resolves it; weak-modules' loop drops it once its provider's link is gone
        else:
            assert not depmod.get(module), (module, depmod[module])
            only_kabigate.add(module)
    return only_kabigate


def _extra(base: Path, krel: str) -> list[str]:
    return [wm.Root(str(base)).inside(p) for p in wm.Root(str(base)).module_files(krel, "extra")]


def test_add_kernel_respin_links_what_loads_and_refuses_what_depmod_accepts(system):
    code, report = _weak_modules(system, "--add-kernel", RESPIN)
    assert code == 1  # something was refused
    links = _links(system, RESPIN)
    targets = set(links.values())
    # NEW's acpi_call (newest first, as `ln -sf` leaves it) fails on module_layout: OLD's is tried and linked.
    assert links["acpi-call/acpi_call.ko"] == f"/lib/modules/{OLD}/extra/acpi-call/acpi_call.ko"
    assert {f"/lib/modules/{OLD}/extra/jool/{m}.ko" for m in ("jool", "jool_common", "jool_siit")} <= targets
    reasons = {Path(r["module"]).name: r["reasons"][0]["code"] for r in report["refused"]}
    assert reasons == {"proprietary_gpl.ko": "gpl-only", "ns_missing.ko": "namespace-not-imported",
                       "dahdi_echocan_oslec.ko": "missing-symbol"}
    # The links are relative: right on the installed system and under --basedir alike.
    link = system / "lib" / "modules" / RESPIN / "weak-updates" / "acpi-call" / "acpi_call.ko"
    assert os.readlink(link) == f"../../../{OLD}/extra/acpi-call/acpi_call.ko" and link.resolve().is_file()
    # depmod ran on the changed kernel: modules.dep lists the weak links.
    dep = (system / "lib" / "modules" / RESPIN / "modules.dep").read_text()
    assert "weak-updates/jool/jool.ko: weak-updates/jool/jool_common.ko" in dep

    candidates = [m for m in _extra(system, OLD)]
    only_kabigate = _compare_with_depmod_after(system, RESPIN, report, candidates)
    assert {Path(m).name for m in only_kabigate} == {"proprietary_gpl.ko", "ns_missing.ko"}


def _compare_with_depmod_after(base: Path, krel: str, report: dict, candidates: list[str]) -> set[str]:
    """_compare_with_depmod() on a tree whose weak-updates/ kabigate wrote: moved aside meanwhile."""
    weak = base / "lib" / "modules" / krel / "weak-updates"
    aside = weak.with_name("weak-aside")
    weak.rename(aside)
    try:
        return _compare_with_depmod(base, krel, report, candidates)
    finally:
        aside.rename(weak)


@pytest.mark.parametrize("target", [MID, NEW])
def test_add_kernel_across_module_layout_changes_agrees_with_depmod(system, target):
    code, report = _weak_modules(system, "--add-kernel", target)
    assert code == 1 and not _links(system, target)
    candidates = _extra(system, OLD) + ([] if target == NEW else _extra(system, NEW))
    candidates = [m for m in candidates if f"/{target}/" not in m]
    # Only the latest build of each name is judged to the end; the refused report names the last one tried.
    judged = [r["module"] for r in report["refused"] if r["kernel"] == target]
    assert all(r["reasons"][0]["code"] == "module-layout-mismatch" for r in report["refused"])
    _compare_with_depmod(system, target, report, judged)
    shadowed = next(k for k in report["kernels"] if k["kernel"] == target)["shadowed"]
    by = [f"/lib/modules/{NEW}/extra/acpi-call/acpi_call.ko"] if target == NEW else []
    assert [s["by"] for s in shadowed] == by
    assert len(judged) + len(shadowed) == len({wm.module_name(m) for m in candidates})


def test_rt_vermagic_is_named(system, testdata):
    if RT not in testdata.manifest["kernels"]:
        pytest.skip(f"{RT} not in the test data")
    weakroot.add_kernel(system, testdata, RT)
    code, report = _weak_modules(system, "--add-kernel", RT)
    assert code == 1 and not _links(system, RT)
    for refusal in report["refused"]:
        codes = {r["code"] for r in refusal["reasons"]}
        assert "vermagic-mismatch" in codes, refusal
        message = next(r["message"] for r in refusal["reasons"] if r["code"] == "vermagic-mismatch")
        assert "preempt_rt" in message


def test_add_modules_links_a_set_into_the_kernels_it_loads_on(system, testdata):
    jool = weakroot.add_driver(system, testdata, "jool", OLD, subdir="extra")  # reinstalled: same paths
    code, report = _weak_modules(system, "--add-modules", stdin="\n".join(jool) + "\n")
    assert code == 1  # refused on MID and NEW
    assert sorted(_links(system, RESPIN).values()) == sorted(jool)
    assert not _links(system, MID) and not _links(system, NEW)
    assert {r["kernel"] for r in report["refused"]} == {MID, NEW}

    # The set is judged together: jool.ko alone needs jool_common's exports, and without that
    # module on the system it does not load anywhere; nothing changes.
    (system / "lib" / "modules" / RESPIN / "weak-updates").rename(system / "scratch")
    common = system / jool[[Path(p).name for p in jool].index("jool_common.ko")].lstrip("/")
    common.rename(system / "jool_common.ko")
    only = [p for p in jool if p.endswith("/jool.ko")]
    code, report = _weak_modules(system, "--add-modules", *only)
    assert code == 1 and not _links(system, RESPIN)
    respin = next(r for r in report["refused"] if r["kernel"] == RESPIN)
    assert {r["code"] for r in respin["reasons"]} == {"missing-symbol"}


def test_add_modules_is_all_or_nothing_per_kernel(system):
    """update_modules_for_krel(): when a module of the set does not load, the kernel keeps its old
    state (global_link_state_restore()): the compatible ones are not linked either."""
    modules = [m for m in _extra(system, OLD) if "/synthetic/" in m or "/v4l2loopback/" in m]
    code, report = _weak_modules(system, "--add-modules", *modules)
    assert code == 1
    plan = next(k for k in report["kernels"] if k["kernel"] == RESPIN)
    assert plan["restored"] and not plan["changed"] and not _links(system, RESPIN)
    code, _report = _weak_modules(system, "--add-modules", *[m for m in modules if "/v4l2loopback/" in m])
    assert code == 1  # still refused on MID and NEW
    assert list(_links(system, RESPIN)) == ["v4l2loopback/v4l2loopback.ko"]


def test_own_modules_come_first(system, testdata):
    """depmod's `search updates extra built-in weak-updates`: a kernel's own build of a module is
    used, so no weak link is made for it."""
    weakroot.add_driver(system, testdata, "v4l2loopback", OLD, into=RESPIN)
    _code, report = _weak_modules(system, "--add-kernel", RESPIN)
    plan = next(k for k in report["kernels"] if k["kernel"] == RESPIN)
    assert not any(t.endswith("/v4l2loopback.ko") for t in plan["links"].values())
    assert [s["by"] for s in plan["shadowed"]] == [f"/lib/modules/{RESPIN}/extra/v4l2loopback/v4l2loopback.ko"]


def test_remove_modules_then_dependents_and_remove_kernel(system):
    _weak_modules(system, "--add-kernel", RESPIN)
    links = _links(system, RESPIN)
    jool_common = next(t for t in links.values() if t.endswith("/jool_common.ko"))
    (system / jool_common.lstrip("/")).unlink()  # the package removed the file, then calls weak-modules
    code, report = _weak_modules(system, "--remove-modules", stdin=jool_common + "\n")
    after = _links(system, RESPIN)
    # jool and jool_siit needed it: they no longer load, and are unlinked (exit 1: something stopped loading).
    assert code == 1 and not any("/jool/" in t for t in after.values())
    assert {(Path(r["module"]).name, r["reasons"][0]["code"]) for r in report["refused"]} == {
        ("jool.ko", "missing-symbol"), ("jool_siit.ko", "missing-symbol")}
    assert set(after) == set(links) - {"jool/jool.ko", "jool/jool_common.ko", "jool/jool_siit.ko"}

    # A module that is still there (an update reinstalled it) keeps its link.
    acpi = links["acpi-call/acpi_call.ko"]
    code, _report = _weak_modules(system, "--remove-modules", acpi)
    assert code == 0 and _links(system, RESPIN)["acpi-call/acpi_call.ko"] == acpi

    code, report = _weak_modules(system, "--remove-kernel", RESPIN)
    assert code == 0 and not _links(system, RESPIN)
    assert (system / "lib" / "modules" / RESPIN / "weak-updates").is_dir()


def test_dry_run_changes_nothing(system):
    code, report = _weak_modules(system, "--add-kernel", RESPIN, "--dry-run")
    assert code == 1 and report["dry_run"] and report["kernels"][0]["added"]
    assert not (system / "lib" / "modules" / RESPIN / "weak-updates").exists()
    assert report["commands"][0][:3] == ["depmod", "-b", str(system)]


def test_bad_input_is_one_line_and_exit_2(system, tmp_path):
    bogus = system / "lib" / "modules" / OLD / "extra" / "bogus.ko"
    bogus.write_bytes(b"not an ELF file")
    for args in (["--add-modules", f"/lib/modules/{OLD}/extra/bogus.ko"],
                 ["--add-modules", f"/lib/modules/{OLD}/extra/absent.ko"],
                 ["--add-kernel", "9.9.9-nothere"]):
        result = _kabigate("weak-modules", "--basedir", str(system), "--no-initramfs", *args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
    result = _kabigate("weak-modules", "--basedir", str(tmp_path / "nothing"), "--add-kernel", OLD)
    assert result.returncode == 2 and "no such directory" in result.stderr
    for args, stdin in ((["--add-kernel", "../../etc"], ""), (["--remove-kernel", ".."], ""),
                        (["--add-modules"], "/lib/modules/x\0y.ko\n"), (["--add-modules"], "/\udcff" * 3),
                        (["--add-modules", "/" + "x" * 5000 + ".ko"], "")):
        result = subprocess.run([*KABIGATE, "weak-modules", "--basedir", str(system), "--no-initramfs", *args],
                                input=stdin.encode("utf-8", "surrogateescape"), capture_output=True, check=False)
        stderr = result.stderr.decode(errors="replace")
        assert result.returncode == 2 and len(stderr.strip().splitlines()) == 1, (args, stderr)
    assert not (system / "etc").exists()


# --------------------------------------------------------------------------- interrupted runs

KILLER = textwrap.dedent("""
    import atexit, os, signal, shutil
    _left = [int(os.environ["KABIGATE_KILL_AFTER"])]
    _names = []
    atexit.register(lambda: open(os.environ["KABIGATE_COUNT_FILE"], "w").write("\\n".join(_names)))
    def _counting(name, function):
        def wrapper(*args, **kwargs):
            _left[0] -= 1
            if _left[0] < 0:
                os.kill(os.getpid(), signal.SIGKILL)
            _names.append(f"{name} {args[0] if args else ''}")
            return function(*args, **kwargs)
        return wrapper
    # fsencode: renameat2(RENAME_EXCHANGE) goes through ctypes, its paths through os.fsencode.
    for _name in ("symlink", "rename", "replace", "unlink", "mkdir", "fsencode"):
        setattr(os, _name, _counting(_name, getattr(os, _name)))
    shutil.rmtree = _counting("rmtree", shutil.rmtree)
""")


def test_killed_add_kernel_then_rerun_gives_the_uninterrupted_tree(system, tmp_path):
    """SIGKILL after N file operations, for N across the whole run (staging, the journal, the
    swap, the clean-up, depmod), then the same command again: the same weak-updates/ as an
    uninterrupted run, and nothing of kabigate's left behind."""
    # RESPIN already has a weak-updates/ (one kmod installed): the run swaps trees.
    v4l2 = [m for m in _extra(system, OLD) if "/v4l2loopback/" in m]
    assert _weak_modules(system, "--add-modules", *v4l2)[0] == 1
    assert list(_links(system, RESPIN)) == ["v4l2loopback/v4l2loopback.ko"]
    before = weakroot.tree_state(system)["weak"][RESPIN]
    reference = tmp_path / "reference"
    shutil.copytree(system, reference, symlinks=True)
    assert _weak_modules(reference, "--add-kernel", RESPIN)[0] == 1
    expected = weakroot.tree_state(reference)["weak"]
    shutil.rmtree(reference)

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(KILLER)
    env = {**os.environ, "PYTHONPATH": f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "KABIGATE_COUNT_FILE": str(tmp_path / "count")}
    counting = tmp_path / "counting"
    shutil.copytree(system, counting, symlinks=True)
    _kabigate("weak-modules", "--basedir", str(counting), "--no-initramfs", "--add-kernel", RESPIN,
              env={**env, "KABIGATE_KILL_AFTER": "1000000"})
    operations = (tmp_path / "count").read_text().splitlines()  # file operations of a whole run, in order
    shutil.rmtree(counting)
    journal = next(i for i, op in enumerate(operations) if op == f"replace {wm.JOURNAL_TEMP}")
    assert journal > 60 and any(op.startswith("fsencode ") and wm.STAGED in op for op in operations[journal:])
    # Staging starts, half-way through staging, then every operation from the journal's to the end
    # (the swap, the clean-up, depmod, the journal's removal), but subprocess' search of PATH.
    points = sorted({0, journal // 2, *(i for i in range(journal, len(operations))
                                        if not operations[i].startswith("fsencode ")
                                        or "weak-updates" in operations[i] or operations[i] == "fsencode depmod")})
    killed = 0
    for after in points:
        trial = tmp_path / f"trial-{after}"
        shutil.copytree(system, trial, symlinks=True)
        result = _kabigate("weak-modules", "--basedir", str(trial), "--no-initramfs", "--add-kernel", RESPIN,
                           env={**env, "KABIGATE_KILL_AFTER": str(after)})
        if result.returncode == -signal.SIGKILL:
            killed += 1
            state = weakroot.tree_state(trial)["weak"].get(RESPIN)
            state = {k: v for k, v in (state or {}).items() if k != wm.MARKER}
            assert state in (before, expected[RESPIN]), f"killed after {after}: a partial tree"
        assert _weak_modules(trial, "--add-kernel", RESPIN)[0] == 1
        assert weakroot.tree_state(trial) == {"weak": expected, "leftovers": []}, after
        shutil.rmtree(trial)
    assert killed == len(points)


# --------------------------------------------------------------------------- initramfs

GENERATOR = """#!/bin/sh
# Stands in for dracut (-f OUT KREL), which this machine does not run: writes an image laid out as
# dracut's are (an uncompressed early cpio, then a gzip'd one) holding, as a host-only dracut
# would, the one driver this "host" needs (acpi_call) if the kernel's module tree has it.
set -e
out=$2 krel=$3
tmp=$(mktemp -d)
mkdir -p "$tmp/early/kernel/x86/microcode" "$tmp/main/usr/lib/modules/$krel" "$tmp/main/etc/modprobe.d"
echo microcode > "$tmp/early/kernel/x86/microcode/GenuineIntel.bin"
echo "options acpi_call debug=0" > "$tmp/main/etc/modprobe.d/acpi_call.conf"
cd "ROOT/lib/modules/$krel"
find -L . -name acpi_call.ko | cpio --quiet -pdL "$tmp/main/usr/lib/modules/$krel"
(cd "$tmp/early" && find . | cpio --quiet -o -H newc) > "$out"
(cd "$tmp/main" && find . | cpio --quiet -o -H newc | gzip) >> "$out"
rm -rf "$tmp"
echo "$krel" >> ROOT/generator.log
"""


def test_initramfs_is_replaced_only_when_its_modules_change(system, tmp_path):
    """check_initramfs(): a new image is built for a kernel whose modules changed, and replaces
    the old one only if their module files or modprobe.d configuration differ."""
    generator = tmp_path / "dracut"
    generator.write_text(GENERATOR.replace("ROOT", str(system)))
    generator.chmod(0o755)
    image = system / "boot" / f"initramfs-{RESPIN}.img"
    subprocess.run([str(generator), "-f", str(image), RESPIN], check=True)
    first = image.read_bytes()

    def run(*args):
        result = _kabigate("weak-modules", "--basedir", str(system), "--dracut", str(generator), "--json", *args)
        assert result.returncode == 1, result.stderr  # refused on MID and NEW
        return json.loads(result.stdout)

    v4l2 = [m for m in _extra(system, OLD) if "/v4l2loopback/" in m]
    report = run("--add-modules", *v4l2)  # RESPIN's links change; its image would not
    assert (system / "generator.log").read_text().split() == [RESPIN, RESPIN]
    assert report["initramfs_replaced"] == [] and image.read_bytes() == first
    assert not list(image.parent.glob("*.kabigate-new"))

    acpi = [m for m in _extra(system, OLD) if "/acpi-call/" in m]
    report = run("--add-modules", *acpi)
    assert report["initramfs_replaced"] == [str(image)] and image.read_bytes() != first
    assert not list(image.parent.glob("*.kabigate-new"))

    result = _kabigate("weak-modules", "--basedir", str(system), "--dracut", str(generator), "--no-initramfs",
                       "--remove-kernel", RESPIN)
    assert result.returncode == 0 and (system / "generator.log").read_text().split() == [RESPIN] * 3


def test_initramfs_reader_on_images_made_by_cpio(system, tmp_path):
    from kabigate.errors import InputError
    from kabigate.formats.initramfs import module_digests

    generator = tmp_path / "dracut"
    generator.write_text(GENERATOR.replace("ROOT", str(system)))
    generator.chmod(0o755)
    _weak_modules(system, "--add-kernel", RESPIN)
    image = tmp_path / "image"
    subprocess.run([str(generator), "-f", str(image), RESPIN], check=True)
    digests = module_digests(image.read_bytes(), "image")
    assert set(digests) == {f"usr/lib/modules/{RESPIN}/weak-updates/acpi-call/acpi_call.ko",
                            "etc/modprobe.d/acpi_call.conf"}
    data = image.read_bytes()
    for bad in (data[:200], data[:-10], b"\x00" * 8 + b"junk", data[:120] + b"zz" + data[122:]):
        with pytest.raises(InputError):
            module_digests(bad, "image")


def test_rhel_drop_in_wrapper_keeps_the_scripts_exit_status(system, tmp_path):
    """contrib/rhel/weak-modules as /usr/sbin/weak-modules (--compat): RHEL's script's statuses.
    Refusals printed, exit 0 (the kernel's %posttrans stops before kernel-install on any other
    status); a kernel without symvers and bad options 1 (the script's `exit 1` and getopt's
    `usage 1`), where kabigate alone says 2; --remove-kernel 0 (the script's `exit 0`)."""
    shim = tmp_path / "bin" / "kabigate"
    shim.parent.mkdir()
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m kabigate \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"}
    wrapper = Path(__file__).resolve().parent.parent / "contrib" / "rhel" / "weak-modules"

    def drop_in(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(wrapper), "--basedir", str(system), "--no-initramfs", *args],
                              capture_output=True, text=True, env=env, check=False)

    result = drop_in("--add-kernel", RESPIN)
    assert result.returncode == 0 and "gpl-only" in result.stderr
    assert _links(system, RESPIN)
    result = drop_in("--add-kernel", "9.9.9-none")
    assert result.returncode == 1 and "Symvers dump file" in result.stderr and "Traceback" not in result.stderr
    assert _kabigate("weak-modules", "--basedir", str(system), "--add-kernel", "9.9.9-none").returncode == 2
    assert drop_in("--add-kernel", RESPIN, "--no-such-option").returncode == 1
    assert drop_in("--add-kernel", "a", "b").returncode == 1
    result = drop_in("--remove-kernel", "../../etc")
    assert result.returncode == 0 and "not a kernel release" in result.stderr
    result = drop_in("--remove-kernel", RESPIN)
    assert result.returncode == 0 and not _links(system, RESPIN)
