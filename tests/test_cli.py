"""The command line on real Debian kernels and drivers: JSON shapes, exit statuses, options."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kabigate.formats.module import read_module
from kabigate.formats.symvers import parse_symvers

pytestmark = pytest.mark.realdata
OLD, NEW = "6.1.0-47-amd64", "6.1.0-56-amd64"
KABI = Path(__file__).parent / "data" / "kabi"


def kabigate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kabigate", *map(str, args)], capture_output=True, text=True)


def test_check_json_shape_and_exit_status(testdata):
    loads = kabigate("check", "--json", "-k", testdata.kernel_root(OLD), testdata.driver_dir("jool", OLD))
    assert loads.returncode == 0, loads.stderr
    report = json.loads(loads.stdout)
    assert set(report) == {"kernel", "modules"}
    assert report["kernel"]["release"] == OLD and report["kernel"]["machine"] == "x86_64"
    assert [m["name"] for m in report["modules"]] == ["jool", "jool_common", "jool_siit"]
    for module in report["modules"]:
        assert set(module) == {"path", "name", "verdict", "reasons", "warnings"}
        assert module["verdict"] == "loads" and module["reasons"] == []
        assert {w["code"] for w in module["warnings"]} == {"unsigned", "taint-out-of-tree"}

    fails = kabigate("check", "--json", "-k", testdata.kernel_root(NEW), testdata.driver_dir("acpi-call", OLD))
    assert fails.returncode == 1
    [module] = json.loads(fails.stdout)["modules"]
    assert module["verdict"] == "fails"
    layout = module["reasons"][0]
    assert set(layout) == {"code", "symbol", "module_crc", "kernel_crc", "message"}
    symvers = parse_symvers((testdata.headers(NEW) / "Module.symvers").read_bytes(), "s")
    driver = read_module(str(testdata.driver_dir("acpi-call", OLD) / "acpi_call.ko"))
    assert layout == {"code": "module-layout-mismatch", "symbol": "module_layout",
                      "module_crc": f"0x{driver.version_of('module_layout').crc:08x}",
                      "kernel_crc": f"0x{symvers['module_layout'].crc:08x}",
                      "message": "disagrees about version of symbol module_layout"}


def test_check_stablelist_coverage_like_ksc(testdata):
    stablelist = KABI / "rhel-9.3-Module.kabi_x86_64"
    result = kabigate("check", "--json", "--stablelist", stablelist, "-k", testdata.kernel_root(OLD),
                      testdata.driver_dir("jool", OLD))
    listed = set(parse_symvers(stablelist.read_bytes(), "s"))
    modules = {m["name"]: m for m in json.loads(result.stdout)["modules"]}
    jool_common = read_module(str(testdata.driver_dir("jool", OLD) / "jool_common.ko"))
    coverage = modules["jool_common"]["stablelist"]
    kernel_imports = {i.name for i in jool_common.imports}
    assert set(coverage["on"]) | set(coverage["off"]) == kernel_imports
    assert set(coverage["on"]) == kernel_imports & listed and coverage["on"] and coverage["off"]
    # jool imports jool_common's exports: those are not kernel ABI, so not counted.
    provided = {e.name for e in jool_common.exports}
    jool = modules["jool"]["stablelist"]
    assert provided.isdisjoint(jool["on"]) and provided.isdisjoint(jool["off"])


def test_vermagic_option_overrides_the_kernels(testdata):
    module = testdata.driver_dir("acpi-call", OLD) / "acpi_call.ko"
    result = kabigate("check", "--json", "--vermagic", f"{OLD} SMP preempt_rt mod_unload modversions ",
                      "-k", testdata.kernel_root(OLD), module)
    assert result.returncode == 1
    assert [r["code"] for r in json.loads(result.stdout)["modules"][0]["reasons"]] == ["vermagic-mismatch"]


def test_compressed_modules_read_like_the_plain_one(testdata, tmp_path):
    original = testdata.driver_dir("v4l2loopback", OLD) / "v4l2loopback.ko"
    plain = read_module(str(original))
    for tool, suffix in (("xz", ".xz"), ("zstd", ".zst"), ("gzip", ".gz")):
        target = tmp_path / f"v4l2loopback.ko{suffix}"
        with open(target, "wb") as out:
            subprocess.run([tool, "-c", str(original)], stdout=out, check=True)
        packed = read_module(str(target))
        assert (packed.modinfo, packed.versions, packed.imports, packed.exports) == \
            (plain.modinfo, plain.versions, plain.imports, plain.exports)
        assert packed.compression == {"xz": "xz", "zstd": "zstd", "gzip": "gzip"}[tool]
    # Three copies of one module in one set: the first loads, the kernel refuses the others by name.
    result = kabigate("check", "--json", "-k", testdata.kernel_root(OLD), tmp_path)
    verdicts = [(m["verdict"], [r["code"] for r in m["reasons"]]) for m in json.loads(result.stdout)["modules"]]
    assert result.returncode == 1
    assert verdicts == [("loads", []), ("fails", ["already-loaded"]), ("fails", ["already-loaded"])]


def test_rhel_style_module_tree_with_symvers_gz(testdata, tmp_path):
    """RHEL keeps symvers.gz in /lib/modules/<kver> and /boot/symvers-<kver>.gz: lay out the Debian
    kernel that way and get the same kernel."""
    release = OLD
    for where in ("lib-modules", "boot"):
        root = tmp_path / where
        tree = root / "lib" / "modules" / release
        shutil.copytree(testdata.modules_dir(release) / "kernel" / "net" / "key", tree / "kernel" / "net" / "key")
        symvers = (testdata.headers(release) / "Module.symvers").read_bytes()
        target = tree / "symvers.gz" if where == "lib-modules" else root / "boot" / f"symvers-{release}.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gzip.compress(symvers))
        result = kabigate("check", "--json", "-k", tree, testdata.driver_dir("acpi-call", OLD))
        assert result.returncode == 0, result.stderr
        kernel = json.loads(result.stdout)["kernel"]
        assert (kernel["release"], kernel["exports"]) == (release, len(parse_symvers(symvers, "s")))
        assert kernel["vermagic"] == f"{release} SMP preempt mod_unload modversions "


def test_diff_real_abi_bump(testdata, tmp_path):
    result = kabigate("diff", "--json", testdata.headers(OLD) / "Module.symvers", testdata.kernel_root(NEW))
    assert result.returncode == 1
    report = json.loads(result.stdout)
    old = parse_symvers((testdata.headers(OLD) / "Module.symvers").read_bytes(), "o")
    new = parse_symvers((testdata.headers(NEW) / "Module.symvers").read_bytes(), "n")
    assert {c["symbol"] for c in report["removed"]} == old.keys() - new.keys()
    assert {c["symbol"] for c in report["added"]} == new.keys() - old.keys()
    assert {c["symbol"] for c in report["crc_changed"]} == {n for n in old.keys() & new.keys()
                                                           if old[n].crc != new[n].crc}
    assert "module_layout" in {c["symbol"] for c in report["crc_changed"]}

    unchanged = sorted(n for n in old.keys() & new.keys() if old[n] == new[n])[:5]
    stable = tmp_path / "stablelist"
    stable.write_text("\n".join(unchanged) + "\n")
    clean = kabigate("diff", "--stablelist", stable, testdata.kernel_root(OLD), testdata.kernel_root(NEW))
    assert clean.returncode == 0, clean.stdout
    stable.write_text("\n".join(unchanged + ["module_layout"]) + "\n")
    broken = kabigate("diff", "--json", "--stablelist", stable, testdata.kernel_root(OLD), testdata.kernel_root(NEW))
    assert broken.returncode == 1
    assert [c["symbol"] for c in json.loads(broken.stdout)["stablelist_violations"]] == ["module_layout"]


def test_inspect_json(testdata):
    module = testdata.in_tree(OLD, "drivers/media/v4l2-core/videodev.ko")
    result = kabigate("inspect", "--json", module)
    assert result.returncode == 0
    [report] = json.loads(result.stdout)["modules"]
    assert report["name"] == "videodev" and report["depends"] == ["mc"] and report["intree"]
    assert report["signature"]["signer"] == "Build time autogenerated kernel key"
    assert report["signature"]["hash_algorithm"] == "sha256"
    exports = {e["symbol"]: e for e in report["exports"]}
    symvers = parse_symvers((testdata.headers(OLD) / "Module.symvers").read_bytes(), "s")
    assert exports["video_ioctl2"]["crc"] == f"0x{symvers['video_ioctl2'].crc:08x}"
    assert len(exports) == sum(1 for e in symvers.values() if e.owner == "drivers/media/v4l2-core/videodev")


def test_module_commands_do_not_load_the_store(testdata):
    """Commands are imported when used: `inspect` and `check` start without SQLAlchemy, Alembic,
    Jinja2 or the web stack."""
    driver = str(testdata.driver_dir("acpi-call", "6.1.0-47-amd64"))
    code = ("import contextlib, sys; from kabigate.cli import main; "
            f"sys.argv = ['kabigate', 'inspect', '--json', {driver!r}]\n"
            "with contextlib.suppress(SystemExit): main()\n"
            "print(sorted(m for m in ('sqlalchemy', 'alembic', 'jinja2', 'fastapi', 'junitparser') "
            "if m in sys.modules), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.strip() == "[]"
