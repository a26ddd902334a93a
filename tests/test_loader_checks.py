"""The loader's pre-resolution checks (docs/loader-checks.md) on real modules and kernels, without
qemu: 6.1 and 6.12 differ where the kernel source says they do (tests/test_series_qemu.py boots
the same cases)."""

from __future__ import annotations

import bz2
import dataclasses
import lzma
import subprocess
import sys

import pytest
from support.elfedit import EDITS, with_crc

from kabigate.formats.module import parse_module
from kabigate.inputs.kernels import load_kernel
from kabigate.rules import RULES_VERSION, LoadOptions, check_modules, kernel_series
from kabigate.store.codec import module_facts, module_from_facts

pytestmark = pytest.mark.realdata
OLD_61, NEW_61, OLD_612, NEW_612 = ("6.1.0-47-amd64", "6.1.0-56-amd64", "6.12.107+deb12-amd64",
                                    "6.12.117+deb12-amd64")


@pytest.fixture(scope="module")
def kernels(testdata):
    debs = testdata.manifest["stream_kernels"][NEW_612]["debs"]
    return {NEW_61: load_kernel([str(testdata.kernel_root(NEW_61))]),
            NEW_612: load_kernel([str(testdata.root / deb) for deb in debs])}


def module(testdata, driver: str, built_for: str, name: str, edit: str | None = None):
    path = testdata.root / testdata.manifest["drivers"][driver][built_for]["dir"] / name
    data = path.read_bytes()
    return parse_module(EDITS[edit](data) if edit else data, f"{path}{'+' + edit if edit else ''}")


def first(module_, kernel):
    verdict = check_modules([module_], kernel)[0]
    return verdict.reasons[0].code if verdict.reasons else None


def test_struct_module_size_is_checked_from_64_on_only(testdata, kernels):
    for_61 = module(testdata, "acpi-call", OLD_61, "acpi_call.ko")
    for_612 = module(testdata, "acpi-call", OLD_612, "acpi_call.ko")
    assert (for_61.layout.this_module_size, for_612.layout.this_module_size) == (896, 1280)
    assert kernels[NEW_612].module_struct_size == 1280 and kernels[NEW_61].module_struct_size == 896
    reason = check_modules([for_61], kernels[NEW_612])[0].reasons[0]
    assert reason.code == "module-struct-size"
    assert reason.message == (".gnu.linkonce.this_module section size must match the kernel's built struct module "
                              "size at run time (module: 896 bytes, kernel: 1280)")
    # 6.1 has no such check: a 6.12 module fails there on module_layout.
    assert first(for_612, kernels[NEW_61]) == "module-layout-mismatch"
    assert first(for_612, kernels[NEW_612]) == "module-layout-mismatch"


def test_unknown_struct_module_size_is_said(testdata):
    """Module.symvers alone does not carry sizeof(struct module): not compared, and the verdict says so."""
    headers = testdata.root / testdata.manifest["build_kernels"][OLD_612]["symvers"]
    kernel = load_kernel([str(headers)], vermagic=f"{OLD_612} SMP preempt mod_unload modversions ")
    assert kernel.module_struct_size is None and kernel_series(kernel) == (6, 12)
    verdict = check_modules([module(testdata, "acpi-call", OLD_61, "acpi_call.ko")], kernel)[0]
    assert "module-struct-size" not in {r.code for r in verdict.reasons}
    assert "module-struct-unknown" in {w.code for w in verdict.warnings}


@pytest.mark.parametrize("edit, on_61, on_612", [
    ("write-exec", "write-exec-section", "write-exec-section"),
    ("two-modinfo", None, "invalid-elf"),
    ("two-this-module", None, "invalid-elf"),
    ("this-module-not-alloc", "invalid-elf", "invalid-elf"),
    ("stripped", "invalid-elf", "invalid-elf"),
    ("common", "common-symbol", "common-symbol"),
    ("stripped-this-module-not-alloc", "invalid-elf", "invalid-elf"),
])
def test_each_edit_fails_where_its_series_checks_it(testdata, kernels, edit, on_61, on_612):
    assert first(module(testdata, "acpi-call", NEW_61, "acpi_call.ko", edit), kernels[NEW_61]) == on_61
    edited_612 = module(testdata, "acpi-call", OLD_612, "acpi_call.ko", edit)
    # Judged on the 6.12.117 kernel with 6.12.107's module_layout, to see the edit come first.
    kernel = dataclasses.replace(kernels[NEW_612], exports={
        **kernels[NEW_612].exports, "module_layout": dataclasses.replace(
            kernels[NEW_612].exports["module_layout"], crc=edited_612.version_of("module_layout").crc)})
    assert check_modules([edited_612], kernel)[0].reasons[0].code == on_612


def test_config_and_modinfo_checks(testdata, kernels):
    kernel = kernels[NEW_61]
    own = module(testdata, "acpi-call", NEW_61, "acpi_call.ko")
    assert first(own, kernel) is None

    def with_info(**extra):
        return dataclasses.replace(own, modinfo=own.modinfo + tuple(extra.items()))
    livepatch = with_info(livepatch="Y")
    verdict = check_modules([livepatch], kernel)[0]
    assert verdict.loads and "taint-livepatch" in {w.code for w in verdict.warnings}
    no_livepatch = dataclasses.replace(kernel, config={**kernel.config, "CONFIG_LIVEPATCH": "n"})
    assert first(livepatch, no_livepatch) == "livepatch-unsupported"
    assert "taint-test" in {w.code for w in check_modules([with_info(test="Y")], kernel)[0].warnings}
    # The rwx check is CONFIG_STRICT_MODULE_RWX's: off, the W|X section is let through.
    write_exec = module(testdata, "acpi-call", NEW_61, "acpi_call.ko", "write-exec")
    no_rwx = dataclasses.replace(kernel, config={**kernel.config, "CONFIG_STRICT_MODULE_RWX": "n"})
    assert first(write_exec, no_rwx) is None


def test_driverloader_is_proprietary_whatever_its_license(testdata, kernels):
    """check_module_license_and_versions(): "driverloader was caught wrongly pretending to be under
    GPL": it cannot use GPL-only symbols (acpi_call uses none, so only the taint shows)."""
    own = module(testdata, "acpi-call", NEW_61, "acpi_call.ko")
    renamed = dataclasses.replace(own, modinfo=tuple((k, "driverloader" if k == "name" else v)
                                                     for k, v in own.modinfo))
    warnings = {w.code: w.message for w in check_modules([renamed], kernels[NEW_61])[0].warnings}
    assert warnings["taint-proprietary"] == "module license taints kernel."


def test_signature_is_checked_before_the_architecture(testdata, kernels):
    """load_module() runs module_sig_check() before elf_validity_check(): an unsigned arm64 module
    on an enforcing x86_64 kernel is refused for its signature first."""
    modules = testdata.root / testdata.manifest["foreign_kernels"]["6.1.0-47-arm64"]["modules_dir"]
    foreign = min(modules.rglob("*.ko"))
    data = foreign.read_bytes()
    signed = parse_module(data, str(foreign))
    assert signed.machine == "aarch64" and signed.signature is not None
    unsigned = parse_module(data[:signed.signature.signed_size], str(foreign))
    reasons = check_modules([unsigned], kernels[NEW_61], LoadOptions(require_signature=True))[0].reasons
    assert [r.code for r in reasons] == ["unsigned", "arch-mismatch"]


def test_layout_survives_the_store(testdata):
    own = module(testdata, "acpi-call", OLD_612, "acpi_call.ko", "write-exec")
    again = module_from_facts(module_facts(own), own.path, None)
    assert again.layout == own.layout and again.layout.write_exec_sections


@pytest.mark.parametrize("kind, compress", [("bzip2", bz2.compress),
                                            ("lzma", lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE))])
def test_modules_compressed_with_kinds_only_packages_use_are_refused_as_such(testdata, tmp_path, kind, compress):
    """One sniffer for module files and package payloads (formats/stream.py): a bzip2 or lzma
    module is refused for its compression, not misread as a broken ELF file."""
    path = testdata.root / testdata.manifest["drivers"]["acpi-call"][NEW_61]["dir"] / "acpi_call.ko"
    target = tmp_path / "acpi_call.ko"
    target.write_bytes(compress(path.read_bytes()))
    result = subprocess.run([sys.executable, "-m", "kabigate", "inspect", str(target)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 2
    assert result.stderr == f"kabigate: error: {target}: {kind}-compressed; modules are xz, zstd or gzip " \
                            "compressed (kmod and the kernel's module_decompress() read no other)\n"


def test_verdicts_recomputed_from_the_store_keep_the_struct_module_check(testdata, kernels, tmp_path, monkeypatch):
    """The store keeps the kernel's sizeof(struct module) (migration 0006): a verdict recomputed
    after a rules change is the one ingest made, not a module_layout one."""
    from kabigate.services import ingest as ingest_service
    from kabigate.services.ingest import ingest_driver_build, ingest_kernel, read_driver_builds
    from kabigate.services.matrix import build_matrix
    from kabigate.store import Store

    with Store.open(f"sqlite:///{tmp_path / 'store.db'}") as store:
        record = ingest_kernel(store, kernels[NEW_612], "debian-6.12").record
        (build,) = read_driver_builds([str(testdata.driver_dir("acpi-call", OLD_61))], "acpi-call", "1")
        ingest_driver_build(store, build)
        assert store.load_kernel(record.id).module_struct_size == 1280
        monkeypatch.setattr(ingest_service, "RULES_VERSION", RULES_VERSION + 1)
        monkeypatch.setattr("kabigate.services.matrix.RULES_VERSION", RULES_VERSION + 1)
        (cell,) = build_matrix(store).cells.values()
        assert (cell.loads, cell.first_reason) == (False, "module-struct-size")


def test_struct_module_size_from_the_kernel_image_btf(testdata, kernels, tmp_path):
    """A vmlinuz alone tells sizeof(struct module) through its BTF: the in-tree modules' size."""
    from kabigate.boot.qemu import kernel_image
    image_612 = kernel_image(str(testdata.root / testdata.manifest["stream_kernels"][NEW_612]["debs"][0]), tmp_path)
    image_61 = testdata.root / testdata.manifest["kernels"][NEW_61]["vmlinuz"]
    for image, release in ((image_612, NEW_612), (image_61, NEW_61)):
        kernel = load_kernel([str(image)])
        assert kernel.module_struct_size == kernels[release].module_struct_size
    verdict = check_modules([module(testdata, "acpi-call", OLD_61, "acpi_call.ko")], load_kernel([str(image_612)]))[0]
    assert verdict.reasons[0].code == "module-struct-size"


def test_a_verdict_resting_on_an_unknown_config_says_so(testdata, kernels):
    """Module.symvers alone has no .config: the stricter reading is taken, and the reason says it."""
    headers = testdata.root / testdata.manifest["build_kernels"][NEW_61]["symvers"]
    kernel = load_kernel([str(headers)], vermagic=kernels[NEW_61].vermagic)
    assert not kernel.config
    write_exec = module(testdata, "acpi-call", NEW_61, "acpi_call.ko", "write-exec")
    (reason,) = [r for r in check_modules([write_exec], kernel)[0].reasons if r.code == "write-exec-section"]
    assert reason.message.endswith("(the kernel's config is unknown: CONFIG_STRICT_MODULE_RWX taken as on)")
    (known,) = [r for r in check_modules([write_exec], kernels[NEW_61])[0].reasons if r.code == "write-exec-section"]
    assert known.message.endswith("has invalid WRITE|EXEC flags")


def test_each_series_meets_the_section_defects_in_its_order(testdata, kernels):
    """6.1's setup_load_info() and v6.4's elf_validity_cache_copy() look for the symbol table
    before .gnu.linkonce.this_module, the split checks of v6.13 (6.12.117) the other way round."""
    both = "stripped-this-module-not-alloc"
    on_61 = check_modules([module(testdata, "acpi-call", NEW_61, "acpi_call.ko", both)], kernels[NEW_61])[0]
    on_612 = check_modules([module(testdata, "acpi-call", OLD_612, "acpi_call.ko", both)], kernels[NEW_612])[0]
    assert [r.message for r in on_61.reasons[:2]] == ["module has no symbols (stripped?)", "No module found in object"]
    assert on_612.reasons[0].message == ".gnu.linkonce.this_module must occupy memory during process execution"
    # 6.12.115 still has v6.4's elf_validity_cache_copy(): the symbol table first
    kernel_115 = dataclasses.replace(kernels[NEW_612], release="6.12.115+deb12-amd64")
    on_115 = check_modules([module(testdata, "acpi-call", OLD_612, "acpi_call.ko", both)], kernel_115)[0]
    assert on_115.reasons[0].message == "module has no symbols (stripped?)"


def test_symbol_reasons_come_in_the_modules_symbol_table_order(testdata, kernels):
    """simplify_symbols() walks the symbol table and check_version() runs as each symbol resolves:
    dahdi_echocan_oslec imports kfree (symbol 32) before oslec_create (33), which no Debian kernel
    exports; with kfree's CRC edited the kernel's first complaint is kfree's CRC, not oslec_create."""
    path = testdata.driver_dir("dahdi", NEW_61) / "dahdi_echocan_oslec.ko"
    dahdi = parse_module((path.parent / "dahdi.ko").read_bytes(), str(path.parent / "dahdi.ko"))
    real = parse_module(path.read_bytes(), str(path))
    _, verdict = check_modules([dahdi, real], kernels[NEW_61])
    assert [(r.code, r.symbol) for r in verdict.reasons] == [
        ("missing-symbol", "oslec_create"), ("missing-symbol", "oslec_update"), ("missing-symbol", "oslec_free")]
    edited = parse_module(with_crc(path.read_bytes(), "kfree", 0x1), f"{path}+kfree-crc")
    _, verdict = check_modules([dahdi, edited], kernels[NEW_61])
    assert [(r.code, r.symbol) for r in verdict.reasons] == [
        ("crc-mismatch", "kfree"), ("missing-symbol", "oslec_create"), ("missing-symbol", "oslec_update"),
        ("missing-symbol", "oslec_free")]


def test_a_symbol_from_a_failing_set_module_is_refused_where_the_walk_meets_it(testdata, kernels):
    """dahdi.ko refused (its module_layout CRC edited): the kernel lacks dahdi_register_echocan_factory
    (symbol 38) and says "Unknown symbol" for it between oslec_update (37) and oslec_free (40)."""
    folder = testdata.driver_dir("dahdi", NEW_61)
    dahdi = parse_module(with_crc((folder / "dahdi.ko").read_bytes(), "module_layout", 0x1), "dahdi.ko+layout-crc")
    oslec = parse_module((folder / "dahdi_echocan_oslec.ko").read_bytes(), "dahdi_echocan_oslec.ko")
    failing, verdict = check_modules([dahdi, oslec], kernels[NEW_61])
    assert failing.reasons[0].code == "module-layout-mismatch"
    assert [(r.code, r.symbol) for r in verdict.reasons] == [
        ("missing-symbol", "oslec_create"), ("missing-symbol", "oslec_update"),
        ("dependency-fails", "dahdi_register_echocan_factory"), ("missing-symbol", "oslec_free")]
