"""Loader rules depmod does not check, on tiny modules really built against Debian's 6.1.0-47
headers (tests/synthetic, built by the synthetic_modules fixture): one module per rule."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic.build import TEST_KERNEL

from kabigate.formats.module import read_module
from kabigate.inputs.kernels import load_kernel
from kabigate.model import Import, Kernel, Verdict
from kabigate.rules import check_modules

pytestmark = pytest.mark.realdata
KABIGATE = Path(sys.executable).with_name("kabigate")
# What every unsigned out-of-tree module gets on the Debian kernel, besides its own findings.
BASE_WARNINGS = {"unsigned", "taint-out-of-tree"}


@pytest.fixture(scope="module")
def kernel(testdata) -> Kernel:
    return load_kernel([str(testdata.kernel_root(TEST_KERNEL))])


@pytest.fixture(scope="module")
def kernel_symvers(testdata) -> dict[str, tuple[int, str, str]]:
    return read_symvers(testdata.root / testdata.manifest["kernels"][TEST_KERNEL]["symvers"])


def read_symvers(path: Path) -> dict[str, tuple[int, str, str]]:
    """Module.symvers: symbol -> (crc, export type, namespace)."""
    symvers = {}
    for line in path.read_text().splitlines():
        crc, name, _owner, export_type, namespace = line.split("\t")
        symvers[name] = (int(crc, 16), export_type, namespace)
    return symvers


def dump_modversions(path: Path) -> dict[str, int]:
    """The module's __versions as kmod reads them."""
    modprobe = shutil.which("modprobe") or shutil.which("modprobe", path="/usr/sbin:/sbin")
    if modprobe is None:
        pytest.skip("kmod's modprobe not found (apt-get install kmod)")
    out = subprocess.run([modprobe, "--dump-modversions", str(path)], capture_output=True, text=True, check=True)
    return {name: int(crc, 16) for crc, name in (line.split("\t") for line in out.stdout.splitlines())}


def check(modules: dict[str, Path], *names: str, kernel: Kernel) -> list[Verdict]:
    return check_modules([read_module(str(modules[name])) for name in names], kernel)


def codes(reasons) -> list[str]:
    return [reason.code for reason in reasons]


def run_check(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([str(KABIGATE), "check", "--json", *args], capture_output=True, text=True)
    assert proc.stderr == ""
    return proc.returncode, json.loads(proc.stdout)


def test_plain_module_loads_with_only_the_out_of_tree_taints(synthetic_modules, kernel):
    [verdict] = check(synthetic_modules, "plain", kernel=kernel)
    assert verdict.reasons == ()
    assert set(codes(verdict.warnings)) == BASE_WARNINGS


def test_proprietary_module_cannot_see_gpl_only_export(synthetic_modules, kernel, kernel_symvers):
    crc, export_type, _ = kernel_symvers["cpu_mitigations_off"]
    assert export_type == "EXPORT_SYMBOL_GPL"
    [verdict] = check(synthetic_modules, "proprietary_gpl", kernel=kernel)
    [reason] = verdict.reasons
    assert (reason.code, reason.symbol) == ("gpl-only", "cpu_mitigations_off")
    # The module was built against this very kernel: the CRC matches, only the license stops it.
    assert reason.module_crc == reason.kernel_crc == crc
    assert dump_modversions(synthetic_modules["proprietary_gpl"])["cpu_mitigations_off"] == crc
    assert reason.message.startswith("Unknown symbol cpu_mitigations_off (err -2)")
    assert set(codes(verdict.warnings)) == BASE_WARNINGS | {"taint-proprietary"}


def test_proprietary_module_with_plain_exports_loads_tainted(synthetic_modules, kernel):
    [verdict] = check(synthetic_modules, "proprietary_ok", kernel=kernel)
    assert verdict.reasons == ()
    assert set(codes(verdict.warnings)) == BASE_WARNINGS | {"taint-proprietary"}
    [taint] = [w for w in verdict.warnings if w.code == "taint-proprietary"]
    assert taint.message == "module license 'Proprietary' taints kernel."


def test_namespaced_symbol_without_import_fails(synthetic_modules, kernel, kernel_symvers):
    assert kernel_symvers["dma_buf_get"][2] == "DMA_BUF"
    [verdict] = check(synthetic_modules, "ns_missing", kernel=kernel)
    [reason] = verdict.reasons
    assert (reason.code, reason.symbol) == ("namespace-not-imported", "dma_buf_get")
    assert reason.message == ("module uses symbol (dma_buf_get) from namespace DMA_BUF, "
                              "but does not import it.")


def test_missing_namespace_import_is_a_warning_where_the_kernel_allows_it(synthetic_modules, kernel):
    lenient = dataclasses.replace(kernel, config=kernel.config | {"CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS": "y"})
    [verdict] = check(synthetic_modules, "ns_missing", kernel=lenient)
    assert verdict.reasons == ()
    assert [(w.code, w.symbol) for w in verdict.warnings if w.code not in BASE_WARNINGS] == [
        ("namespace-not-imported", "dma_buf_get")]


def test_namespaced_symbol_with_import_loads(synthetic_modules, kernel):
    module = read_module(str(synthetic_modules["ns_ok"]))
    assert module.imported_namespaces == ["DMA_BUF"]
    [verdict] = check_modules([module], kernel)
    assert verdict.reasons == ()
    assert set(codes(verdict.warnings)) == BASE_WARNINGS


def test_weak_reference_to_unknown_symbol_loads(synthetic_modules, kernel):
    module = read_module(str(synthetic_modules["weak_missing"]))
    assert Import("kabigate_no_such_symbol", weak=True) in module.imports
    [verdict] = check_modules([module], kernel)
    assert verdict.reasons == ()
    assert set(codes(verdict.warnings)) == BASE_WARNINGS


def test_strong_reference_to_unknown_symbol_fails(synthetic_modules, kernel):
    [verdict] = check(synthetic_modules, "unknown_symbol", kernel=kernel)
    [reason] = verdict.reasons
    assert (reason.code, reason.symbol) == ("missing-symbol", "kabigate_no_such_symbol")
    assert reason.message == "Unknown symbol kabigate_no_such_symbol (err -2)"
    # modpost knew no CRC for it, so the module records none.
    assert reason.module_crc is None
    assert "kabigate_no_such_symbol" not in dump_modversions(synthetic_modules["unknown_symbol"])


def test_exporting_a_vmlinux_symbol_again_fails(synthetic_modules, kernel, kernel_symvers):
    [verdict] = check(synthetic_modules, "dup_export", kernel=kernel)
    [reason] = verdict.reasons
    assert (reason.code, reason.symbol) == ("duplicate-export", "cpu_mitigations_auto_nosmt")
    assert reason.kernel_crc == kernel_symvers["cpu_mitigations_auto_nosmt"][0]
    assert reason.message.startswith("exports duplicate symbol cpu_mitigations_auto_nosmt (owned by ")


def test_provider_and_consumer_load_together(synthetic_modules, kernel):
    module_set = check(synthetic_modules, "provider", "consumer", kernel=kernel)
    assert [v.module.name for v in module_set] == ["provider", "consumer"]
    assert all(v.reasons == () for v in module_set)
    assert [e.namespace for e in module_set[0].module.exports] == ["KABIGATE_TEST"]


def test_consumer_without_provider_misses_its_symbol(synthetic_modules, kernel):
    [verdict] = check(synthetic_modules, "consumer", kernel=kernel)
    [reason] = verdict.reasons
    assert (reason.code, reason.symbol) == ("missing-symbol", "kabigate_provided")
    assert reason.module_crc == dump_modversions(synthetic_modules["consumer"])["kabigate_provided"]


def test_consumer_of_a_rebuilt_incompatible_provider_is_crc_mismatch(synthetic_modules, kernel):
    consumer_crc = dump_modversions(synthetic_modules["consumer"])["kabigate_provided"]
    provider_v2_crc = read_symvers(synthetic_modules["provider_v2"].with_name("Module.symvers"))["kabigate_provided"][0]
    assert consumer_crc != provider_v2_crc
    provider, consumer = check(synthetic_modules, "provider_v2", "consumer", kernel=kernel)
    assert provider.reasons == ()
    [reason] = consumer.reasons
    assert (reason.code, reason.symbol) == ("crc-mismatch", "kabigate_provided")
    assert (reason.module_crc, reason.kernel_crc) == (consumer_crc, provider_v2_crc)


def test_gpl_only_user_cannot_use_a_proprietary_modules_export(synthetic_modules, kernel):
    provider, user = check(synthetic_modules, "prop_provider", "gpl_user", kernel=kernel)
    assert provider.reasons == ()
    # The kernel: "gpl_user: module using GPL-only symbols uses symbols kabigate_prop_provided
    # from proprietary module prop_provider." then "Unknown symbol kabigate_prop_provided (err -2)".
    assert not user.loads
    assert "kabigate_prop_provided" in {reason.symbol for reason in user.reasons}


def test_module_without_versions_is_force_loaded_on_debian(synthetic_modules, kernel):
    assert kernel.config_enabled("CONFIG_MODULE_FORCE_LOAD")
    module = read_module(str(synthetic_modules["no_versions"]))
    assert module.versions is None
    [verdict] = check_modules([module], kernel)
    assert verdict.reasons == ()
    assert set(codes(verdict.warnings)) == BASE_WARNINGS | {"taint-forced"}


def test_module_without_versions_fails_without_force_load(synthetic_modules, kernel):
    strict = dataclasses.replace(kernel, config={k: v for k, v in kernel.config.items()
                                                 if k != "CONFIG_MODULE_FORCE_LOAD"})
    [verdict] = check(synthetic_modules, "no_versions", kernel=strict)
    assert codes(verdict.reasons) == ["no-versions"]
    assert "taint-forced" not in codes(verdict.warnings)


# -- the command line -------------------------------------------------------------------------

# Module name -> the reason codes `kabigate check` gives it when all are checked together.
EXPECTED = {
    "plain": [], "proprietary_ok": [], "ns_ok": [], "weak_missing": [], "provider": [], "consumer": [],
    "no_versions": [],  # taint-forced only: Debian has CONFIG_MODULE_FORCE_LOAD
    "proprietary_gpl": ["gpl-only"], "ns_missing": ["namespace-not-imported"],
    "dup_export": ["duplicate-export"], "unknown_symbol": ["missing-symbol"],
}


def test_cli_checks_every_case_at_once(synthetic_modules, testdata):
    status, report = run_check("-k", str(testdata.kernel_root(TEST_KERNEL)),
                               *(str(synthetic_modules[name]) for name in EXPECTED))
    assert status == 1
    assert report["kernel"]["release"] == TEST_KERNEL
    assert report["kernel"]["modversions"] is True
    by_name = {module["name"]: module for module in report["modules"]}
    assert {name: [r["code"] for r in module["reasons"]] for name, module in by_name.items()} == EXPECTED
    for name, module in by_name.items():
        assert set(module) == {"path", "name", "verdict", "reasons", "warnings"}
        assert module["verdict"] == ("fails" if EXPECTED[name] else "loads")
        assert Path(module["path"]) == synthetic_modules[name]
        for reason in module["reasons"] + module["warnings"]:
            assert set(reason) == {"code", "symbol", "module_crc", "kernel_crc", "message"}


def test_cli_reports_both_crcs_of_a_mismatch(synthetic_modules, testdata):
    consumer_crc = dump_modversions(synthetic_modules["consumer"])["kabigate_provided"]
    provider_v2_crc = read_symvers(synthetic_modules["provider_v2"].with_name("Module.symvers"))["kabigate_provided"][0]
    status, report = run_check("-k", str(testdata.kernel_root(TEST_KERNEL)),
                               str(synthetic_modules["provider_v2"]), str(synthetic_modules["consumer"]))
    assert status == 1
    provider, consumer = report["modules"]
    assert (provider["name"], provider["verdict"], provider["reasons"]) == ("provider", "loads", [])
    assert (consumer["name"], consumer["verdict"]) == ("consumer", "fails")
    [reason] = consumer["reasons"]
    assert reason["code"] == "crc-mismatch"
    assert reason["symbol"] == "kabigate_provided"
    assert reason["module_crc"] == f"0x{consumer_crc:08x}"
    assert reason["kernel_crc"] == f"0x{provider_v2_crc:08x}"


def test_cli_module_set_loads_exit_zero(synthetic_modules, testdata):
    status, report = run_check("-k", str(testdata.kernel_root(TEST_KERNEL)),
                               str(synthetic_modules["provider"]), str(synthetic_modules["consumer"]))
    assert status == 0
    assert [(m["name"], m["verdict"]) for m in report["modules"]] == [("provider", "loads"), ("consumer", "loads")]


def test_a_second_module_of_the_same_name_is_already_loaded(synthetic_modules, kernel):
    first, second = check_modules([read_module(str(synthetic_modules[name])) for name in ("provider", "provider_v2")],
                                  kernel)
    assert first.loads
    assert second.reasons[0].code == "already-loaded"
