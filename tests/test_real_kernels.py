"""Kernels and drivers from Debian's archive: the RHEL 8.2 -> 8.3 situation (ABI 47 -> 56)
and the RHEL vs Stream situation (flavors amd64 / rt / cloud)."""

from __future__ import annotations

import dataclasses
import subprocess
from collections import Counter

import pytest

from kabigate.formats.module import read_module
from kabigate.formats.symvers import parse_symvers
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import read_modules
from kabigate.rules import check_modules

OLD, NEW, RT, CLOUD = "6.1.0-47-amd64", "6.1.0-56-amd64", "6.1.0-47-rt-amd64", "6.1.0-47-cloud-amd64"


@pytest.fixture(scope="module")
def kernels(testdata):
    return {release: load_kernel([str(testdata.kernel_root(release))]) for release in testdata.manifest["kernels"]}


def dump_modversions(path) -> dict[str, int]:
    """kmod's view of a module's __versions table."""
    output = subprocess.run(["modprobe", "--dump-modversions", str(path)], check=True,
                            capture_output=True, text=True).stdout
    return {name: int(crc, 16) for crc, name in (line.split("\t") for line in output.splitlines())}


def test_every_way_of_naming_a_kernel_gives_the_same_kernel(testdata, kernels):
    for release, from_root in kernels.items():
        from_headers = load_kernel([str(testdata.headers(release))])
        from_module_tree = load_kernel([str(testdata.modules_dir(release))])
        from_symvers = load_kernel([str(testdata.headers(release) / "Module.symvers"),
                                    str(testdata.modules_dir(release))])
        for other in (from_headers, from_module_tree, from_symvers):
            assert other.exports == from_root.exports
            assert other.release == from_root.release == release
            assert other.machine == "x86_64"
        # Vermagic computed from the build config (headers only) equals the in-tree modules' own.
        assert from_headers.vermagic == from_root.vermagic
        assert from_root.vermagic == read_module(str(next(testdata.modules_dir(release).rglob("*.ko")))).vermagic
    assert kernels[RT].vermagic == f"{RT} SMP preempt_rt mod_unload modversions "


def test_in_tree_modules_load_on_their_own_kernel_and_not_on_the_next_abi(testdata, kernels):
    modules = read_modules([str(testdata.modules_dir(OLD) / "kernel")])
    assert len(modules) > 3000
    own = check_modules(modules, kernels[OLD])
    assert all(v.loads for v in own), [(v.module.name, v.reasons[:1]) for v in own if not v.loads]
    assert all(w.code == "taint-staging" for v in own for w in v.warnings)  # signed, in-tree, retpoline
    newer = check_modules(modules[:200], kernels[NEW])
    assert all(v.reasons[0].code == "module-layout-mismatch" for v in newer)


def test_driver_built_for_old_abi_fails_on_new_abi_with_exact_crcs(testdata, kernels):
    module_path = testdata.driver_dir("v4l2loopback", OLD) / "v4l2loopback.ko"
    module = read_module(str(module_path))
    assert check_modules([module], kernels[OLD])[0].loads
    verdict = check_modules([module], kernels[NEW])[0]
    assert not verdict.loads
    new_symvers = parse_symvers((testdata.headers(NEW) / "Module.symvers").read_bytes(), "symvers")
    built_with = dump_modversions(module_path)
    by_symbol = {r.symbol: r for r in verdict.reasons if r.code == "crc-mismatch"}
    assert "video_ioctl2" in by_symbol
    expected = {name for name, crc in built_with.items()
                if name != "module_layout" and name in new_symvers and new_symvers[name].crc != crc}
    assert set(by_symbol) == expected
    for symbol, reason in by_symbol.items():
        assert reason.module_crc == built_with[symbol]
        assert reason.kernel_crc == new_symvers[symbol].crc
    assert verdict.reasons[0].code == "module-layout-mismatch"


def test_flavors_differ_like_rhel_and_stream(testdata, kernels):
    module = read_module(str(testdata.driver_dir("v4l2loopback", OLD) / "v4l2loopback.ko"))
    rt = check_modules([module], kernels[RT])[0]
    assert "vermagic-mismatch" in {r.code for r in rt.reasons}
    vermagic = next(r for r in rt.reasons if r.code == "vermagic-mismatch")
    assert "preempt_rt" in vermagic.message
    # The cloud flavor builds no V4L2 core: its symbols are simply not there.
    cloud = check_modules([module], kernels[CLOUD])[0]
    missing = {r.symbol for r in cloud.reasons if r.code == "missing-symbol"}
    assert "video_ioctl2" in missing
    assert all(name not in kernels[CLOUD].exports for name in missing)


def test_module_set_resolves_symbols_between_its_modules(testdata, kernels):
    directory = testdata.driver_dir("jool", OLD)
    modules = {m.name: m for m in read_modules([str(directory)])}
    together = check_modules(list(modules.values()), kernels[OLD])
    assert all(v.loads for v in together)
    alone = check_modules([modules["jool"]], kernels[OLD])[0]
    codes = Counter(r.code for r in alone.reasons)
    assert set(codes) == {"missing-symbol"}
    provided = {e.name for e in modules["jool_common"].exports}
    assert {r.symbol for r in alone.reasons} <= provided


def test_set_module_crcs_are_checked_like_kernel_crcs(testdata, kernels):
    """jool_common rebuilt for 56 exports other CRCs than the jool built for 47 expects."""
    common_new = read_module(str(testdata.driver_dir("jool", NEW) / "jool_common.ko"))
    jool_old = read_module(str(testdata.driver_dir("jool", OLD) / "jool.ko"))
    verdicts = {v.module.name: v for v in check_modules([common_new, jool_old], kernels[OLD])}
    assert verdicts["jool_common"].reasons[0].code == "module-layout-mismatch"
    provided = {e.name: e.crc for e in common_new.exports}
    from_common = [r for r in verdicts["jool"].reasons if r.symbol in provided and r.code != "dependency-fails"]
    assert from_common and all(r.code == "crc-mismatch" and r.kernel_crc == provided[r.symbol]
                               and "exported by jool_common" in r.message for r in from_common)
    # the first symbol whose CRC agrees is one the kernel lacks, jool_common not loading
    [lacking] = [r for r in verdicts["jool"].reasons if r.code == "dependency-fails"]
    assert lacking.symbol in provided and lacking.symbol not in {r.symbol for r in from_common}


def test_dependency_failure_propagates(testdata):
    """A kernel without one symbol that only jool_common needs: jool_common fails, and jool,
    fine on its own terms, cannot load without it."""
    kernel = load_kernel([str(testdata.kernel_root(OLD))])
    modules = {m.name: m for m in read_modules([str(testdata.driver_dir("jool", OLD))])}
    only_common = ({i.name for i in modules["jool_common"].imports} & set(kernel.exports)) - \
        {i.name for name, m in modules.items() if name != "jool_common" for i in m.imports}
    removed = sorted(only_common)[0]
    del kernel.exports[removed]
    verdicts = {v.module.name: v for v in check_modules(list(modules.values()), kernel)}
    assert [(r.code, r.symbol) for r in verdicts["jool_common"].reasons] == [("missing-symbol", removed)]
    for name in ("jool", "jool_siit"):
        assert [r.code for r in verdicts[name].reasons] == ["dependency-fails"]
        assert "jool_common" in verdicts[name].reasons[0].message


def test_inherited_proprietary_taint_is_followed_through_the_set(testdata, kernels):
    """inherit_taint(): xpp uses dahdi's symbols, xpp_usb uses xpp's (none of dahdi's). With dahdi
    proprietary, xpp inherits the taint when it resolves dahdi's symbols, and xpp_usb inherits
    it from xpp in turn: GPL-only symbols are then hidden from it (find_symbol()'s gplok)."""
    modules = {m.name: m for m in read_modules([str(testdata.driver_dir("dahdi", OLD))])}
    dahdi = modules["dahdi"]
    proprietary = dataclasses.replace(dahdi, modinfo=tuple((k, "Proprietary" if k == "license" else v)
                                                         for k, v in dahdi.modinfo))
    chain = [proprietary, modules["xpp"], modules["xpp_usb"]]
    assert not {e.name for e in dahdi.exports} & {i.name for i in modules["xpp_usb"].imports}
    verdicts = {v.module.name: v for v in check_modules(chain, kernels[OLD])}
    inherited = [w for w in verdicts["xpp_usb"].warnings if "inheriting taint" in w.message]
    assert inherited and "from proprietary module xpp," in inherited[0].message
    # xpp_usb also needs GPL-only usb symbols: hidden from it once it is tainted
    gpl_only = {name for name, e in kernels[OLD].exports.items() if e.gpl_only}
    assert "usb_register_driver" in gpl_only & {i.name for i in modules["xpp_usb"].imports}
    assert not verdicts["xpp_usb"].loads
    # xpp, tainted in turn, is refused its GPL-only symbols too: the kernel then lacks xpp's symbols
    assert {r.code for r in verdicts["xpp"].reasons} == {"gpl-only"}
    assert {r.code for r in verdicts["xpp_usb"].reasons} == {"gpl-only", "dependency-fails"}
    assert "usb_register_driver" in {r.symbol for r in verdicts["xpp_usb"].reasons}
