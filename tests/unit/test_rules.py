"""The loader rules (src/kabigate/rules.py) on constructed kernels and modules: no corpus, no ELF.

One test per rule and per reason or warning code, in the order of docs/loader-checks.md; the
builders fill only the fields the rules read. tests/test_rules_synthetic.py and
tests/test_kernel_agrees.py check the same rules on real modules and a booted kernel.
"""

from __future__ import annotations

import dataclasses

import pytest

from kabigate.model import (
    ElfLayout,
    Export,
    Import,
    Kernel,
    Module,
    ModuleSignature,
    SignatureCheck,
    SymbolVersion,
    Verdict,
    driver_name,
)
from kabigate.rules import LoadOptions, check_modules, deciding_symbols, same_magic

DEBIAN_61 = "6.1.0-47-amd64"  # generation 0: elf_validity_check() + setup_load_info()
DEBIAN_612 = "6.12.107+deb12-amd64"  # generation 1: v6.4's elf_validity_cache_copy()
DEBIAN_612_SPLIT = "6.12.117+deb12-amd64"  # generation 2: v6.13's elf_validity_cache_*(), backported
FLAGS = " SMP preempt mod_unload modversions "
STRUCT_SIZE = {DEBIAN_61: 896, DEBIAN_612: 1280, DEBIAN_612_SPLIT: 1280}  # sizeof(struct module)
LAYOUT_CRC = 0x1A2B3C4D
KERNEL_EXPORTS = (
    Export("module_layout", LAYOUT_CRC, "vmlinux"),
    Export("_printk", 0x92997ED8, "vmlinux"),
    Export("cpu_mitigations_off", 0x11111111, "vmlinux", "EXPORT_SYMBOL_GPL"),
    Export("old_gpl_future", 0x22222222, "vmlinux", "EXPORT_SYMBOL_GPL_FUTURE"),
    Export("ns_fn", 0x33333333, "vmlinux", "EXPORT_SYMBOL", "DEMO_NS"),
    Export("media_device_init", 0x44444444, "drivers/media/mc/mc"),  # an in-tree module's export
)
CRC = {export.name: export.crc for export in KERNEL_EXPORTS}
# A config that turns on what Debian's does and nothing that changes a verdict by itself.
CONFIG = {"CONFIG_MODVERSIONS": "y", "CONFIG_MODULE_SIG": "y", "CONFIG_STRICT_MODULE_RWX": "y"}
def make_kernel(release: str = DEBIAN_61, *, config: dict[str, str] | None = None, machine: str | None = "x86_64",
                exports: tuple[Export, ...] = KERNEL_EXPORTS, vermagic_known: bool = True,
                struct_size_known: bool = True, **extra_config: str) -> Kernel:
    """A kernel as load_kernel() would read it; `config={}` is an unknown config."""
    return Kernel(release=release,
                  vermagic=release + FLAGS if vermagic_known else None,
                  machine=machine,
                  exports={export.name: export for export in exports},
                  config={**(CONFIG if config is None else config), **extra_config},
                  module_struct_size=STRUCT_SIZE.get(release) if struct_size_known else None)


def make_layout(release: str = DEBIAN_61, **broken: object) -> ElfLayout:
    """A well-formed module's ELF facts, built for `release`; `broken` overrides them."""
    good = ElfLayout(this_module_size=STRUCT_SIZE.get(release, 1280), this_module_sections=1,
                     this_module_nobits=False, this_module_alloc=True, modinfo_sections=1, symbol_tables=1,
                     symbol_strings_ok=True, section_names_ok=True, write_exec_sections=(), common_symbols=(),
                     ctors_and_init_array=False)
    return dataclasses.replace(good, **broken)


def make_module(name: str = "demo", *, imports: tuple[str, ...] = ("_printk",), weak: tuple[str, ...] = (),
                versions: dict[str, int] | None = None, without_versions: bool = False,
                exports: tuple[Export, ...] = (), release: str = DEBIAN_61, vermagic: str | None = None,
                without_vermagic: bool = False, license: str | None = "GPL", info: tuple[tuple[str, str], ...] = (),
                signature: ModuleSignature | None = None, layout: ElfLayout | None = None, machine: str = "x86_64",
                path: str | None = None) -> Module:
    """An out-of-tree module built for `release`: its __versions are `versions`, by default the
    kernel's CRCs of module_layout and of every import the kernel exports."""
    if versions is None:
        versions = {symbol: CRC[symbol] for symbol in ("module_layout", *imports, *weak) if symbol in CRC}
    modinfo = [("name", name)]
    if license is not None:
        modinfo.append(("license", license))
    if not without_vermagic:
        modinfo.append(("vermagic", vermagic or release + FLAGS))
    return Module(path=path or f"/lib/modules/extra/{name}.ko", machine=machine, modinfo=(*modinfo, *info),
                  versions=None if without_versions else tuple(SymbolVersion(s, c) for s, c in versions.items()),
                  imports=tuple(Import(s) for s in imports) + tuple(Import(s, weak=True) for s in weak),
                  exports=exports, signature=signature, layout=layout)


def signed(defect: str | None = None) -> ModuleSignature:
    return ModuleSignature("PKCS#7", "sha256", "Build key", "aa:bb", 512, 4096, defect)


def check_one(module: Module, kernel: Kernel | None = None, options: LoadOptions | None = None) -> Verdict:
    [verdict] = check_modules([module], kernel or make_kernel(), options or LoadOptions())
    return verdict


def codes(reasons) -> list[str]:
    return [reason.code for reason in reasons]


def own_export(name: str, crc: int | None = 0x55555555, export_type: str = "EXPORT_SYMBOL") -> Export:
    return Export(name, crc, "extra/owner", export_type)


# --- a module that loads


def test_well_built_module_loads_with_only_the_unsigned_and_out_of_tree_warnings():
    verdict = check_one(make_module())
    assert verdict.loads and verdict.reasons == ()
    assert codes(verdict.warnings) == ["unsigned", "taint-out-of-tree"]


def test_signed_in_tree_module_loads_without_any_warning():
    verdict = check_one(make_module(signature=signed(), info=(("intree", "Y"),)))
    assert (verdict.reasons, verdict.warnings) == ((), ())


def test_one_verdict_per_module_in_input_order():
    modules = [make_module("b"), make_module("a", imports=("nope",)), make_module("c")]
    verdicts = check_modules(modules, make_kernel())
    assert [v.module for v in verdicts] == modules
    assert [v.loads for v in verdicts] == [True, False, True]


# --- module_sig_check(): first of all


def test_unsigned_module_only_taints_when_signatures_are_not_enforced():
    """module_sig_check(): ENODATA is fatal only when enforced."""
    [warning] = [w for w in check_one(make_module()).warnings if w.code == "unsigned"]
    assert warning.message == "module verification failed: signature and/or required key missing - tainting kernel"


def test_unsigned_module_gets_no_warning_without_module_sig():
    verdict = check_one(make_module(), make_kernel(config={"CONFIG_MODVERSIONS": "y"}))
    assert codes(verdict.warnings) == ["taint-out-of-tree"]


def test_unsigned_module_warns_when_the_config_is_unknown():
    assert "unsigned" in codes(check_one(make_module(), make_kernel(config={})).warnings)


@pytest.mark.parametrize("kernel, options", [
    (make_kernel(), LoadOptions(require_signature=True)),
    (make_kernel(CONFIG_MODULE_SIG_FORCE="y"), LoadOptions()),
], ids=["sig_enforce", "CONFIG_MODULE_SIG_FORCE"])
def test_unsigned_module_is_refused_when_signatures_are_enforced(kernel, options):
    verdict = check_one(make_module(), kernel, options)
    [reason] = verdict.reasons
    assert (reason.code, reason.message) == ("unsigned", "Loading of unsigned module is rejected")
    assert "unsigned" not in codes(verdict.warnings)


def test_malformed_signature_is_refused_first_even_when_not_enforced():
    """module_sig_check(): EBADMSG is fatal whatever the enforcement; it comes before the arch."""
    module = make_module(signature=signed("EBADMSG: truncated signature trailer"), machine="aarch64")
    verdict = check_one(module)
    assert codes(verdict.reasons) == ["bad-signature", "arch-mismatch"]
    assert verdict.reasons[0].message == "module signature is malformed (EBADMSG: truncated signature trailer): " \
                                         "Bad message"


def test_unsupported_crypto_signature_is_forgiven_like_an_unsigned_module_with_its_own_reason():
    """module_sig_check(): ENOPKG taints unless enforced, then 'module with unsupported crypto'."""
    defective = make_module(signature=signed("ENOPKG: not signed with expected PKCS#7 message (PGP)"))
    assert codes(check_one(defective).warnings) == ["unsupported-signature", "taint-out-of-tree"]
    [reason] = check_one(defective, options=LoadOptions(require_signature=True)).reasons
    assert (reason.code, reason.message) == ("unsupported-signature",
                                             "Loading of module with unsupported crypto is rejected")


def test_signature_no_trusted_key_verifies_warns_or_is_refused_when_enforced():
    module = make_module(signature=signed())
    checks = {module.path: SignatureCheck("ENOKEY", "no trusted key matches the signer")}
    assert "untrusted-signature" in codes(check_one(module, options=LoadOptions(signature_checks=checks)).warnings)
    [reason] = check_one(module, options=LoadOptions(require_signature=True, signature_checks=checks)).reasons
    assert (reason.code, reason.message) == ("untrusted-signature",
                                             "Loading of module with unavailable key is rejected")


def test_signature_a_trusted_key_rejects_is_refused_even_when_not_enforced():
    module = make_module(signature=signed())
    checks = {module.path: SignatureCheck("EKEYREJECTED", "the signature does not verify with 'Build key'")}
    [reason] = check_one(module, options=LoadOptions(signature_checks=checks)).reasons
    assert reason.code == "bad-signature"
    assert reason.message == "the signature does not verify with 'Build key': Key was rejected by service"


def test_signature_the_full_pkcs7_parse_finds_malformed_is_refused_even_when_not_enforced():
    """pkcs7_parse_message() -> EBADMSG on a field after the signer's (which modinfo's parse stops
    before): module_sig_check() returns it, whatever the enforcement."""
    module = make_module(signature=signed())
    checks = {module.path: SignatureCheck("EBADMSG", "unparseable PKCS#7 message (a bad signature value)")}
    [reason] = check_one(module, options=LoadOptions(signature_checks=checks)).reasons
    assert (reason.code, reason.message) == ("bad-signature",
                                             "unparseable PKCS#7 message (a bad signature value): Bad message")


def test_verified_signature_loads_when_enforced_and_unchecked_paths_count_as_verified():
    module = make_module(signature=signed(), info=(("intree", "Y"),))
    enforced = LoadOptions(require_signature=True, signature_checks={module.path: SignatureCheck("ok", "verified")})
    assert check_one(module, options=enforced).warnings == ()
    elsewhere = LoadOptions(require_signature=True, signature_checks={"/other.ko": SignatureCheck("ENOKEY", "")})
    assert check_one(module, options=elsewhere).loads


# --- elf_validity_check() / elf_validity_*(): arch and sections


def test_module_of_another_architecture_is_refused_for_that_alone():
    """elf_check_arch(): nothing after it is checked (vermagic, symbols are those of another arch)."""
    verdict = check_one(make_module(machine="aarch64", vermagic="other", imports=("nope",)))
    [reason] = verdict.reasons
    assert reason.code == "arch-mismatch"
    assert reason.message == "module is built for aarch64, the kernel is x86_64: Exec format error"


def test_architecture_is_not_compared_when_the_kernel_machine_is_unknown():
    assert check_one(make_module(machine="aarch64"), make_kernel(machine=None)).loads


@pytest.mark.parametrize("module_machine, kernel_machine", [("s390x", "x86_64"), ("ppc64", "ppc64le"),
                                                            ("aarch64", "s390x")])
def test_module_of_the_other_byte_order_is_an_invalid_elf_type(module_machine, kernel_machine):
    """elf_validity_check() / elf_validity_ehdr() read e_type in the kernel's byte order, before e_machine."""
    verdict = check_one(make_module(machine=module_machine), make_kernel(machine=kernel_machine))
    assert codes(verdict.reasons) == ["invalid-elf"]
    assert verdict.reasons[0].message.startswith("Invalid ELF header type: 256 != 1")


def invalid_elf(release: str, **broken) -> list[str]:
    """The invalid-elf messages of a module built for `release` with broken ELF facts, on it."""
    kernel = make_kernel(release)
    verdict = check_one(make_module(release=release, layout=make_layout(release, **broken)), kernel)
    return [reason.message for reason in verdict.reasons if reason.code == "invalid-elf"]


def test_61_refuses_a_stripped_module_before_a_this_module_it_cannot_find():
    """setup_load_info(): the symbol table, then find_sec(), which sees only SHF_ALLOC sections."""
    assert invalid_elf(DEBIAN_61, symbol_tables=0, this_module_alloc=False) == [
        "module has no symbols (stripped?)", "No module found in object"]


def test_61_does_not_check_duplicate_sections_nor_string_table_types():
    assert invalid_elf(DEBIAN_61, modinfo_sections=2, this_module_sections=2, symbol_tables=1,
                       symbol_strings_ok=False, section_names_ok=False, this_module_nobits=True) == []


def test_612_refuses_a_second_modinfo_section():
    """elf_validity_cache_copy() (v6.4) / elf_validity_cache_index_info() (v6.13)."""
    for release in (DEBIAN_612, DEBIAN_612_SPLIT):
        assert invalid_elf(release, modinfo_sections=2) == ["Only one .modinfo section must exist."]


def test_612_before_117_checks_the_symbol_table_before_this_module():
    """v6.4's elf_validity_cache_copy(): symbol tables counted first."""
    assert invalid_elf(DEBIAN_612, symbol_tables=0, this_module_alloc=False) == [
        "module has no symbols (stripped?)",
        ".gnu.linkonce.this_module must occupy memory during process execution"]


def test_612_117_checks_this_module_before_the_symbol_table():
    """elf_validity_cache_index_mod() before elf_validity_cache_index_sym() (v6.13, 6.12.117)."""
    assert invalid_elf(DEBIAN_612_SPLIT, symbol_tables=0, this_module_alloc=False) == [
        ".gnu.linkonce.this_module must occupy memory during process execution",
        "module has no symbols (stripped?)"]


@pytest.mark.parametrize("broken, before_117, from_117", [
    ({"this_module_sections": 2}, "Only one .gnu.linkonce.this_module section must exist.",
     "Exactly one .gnu.linkonce.this_module section must exist."),
    ({"this_module_nobits": True}, "Only one .gnu.linkonce.this_module section must exist.",
     ".gnu.linkonce.this_module section must have a size set"),
    ({"symbol_tables": 2}, "module has no symbols (stripped?)", "module has no symbols (stripped?)"),
], ids=["two-this-module", "this-module-nobits", "two-symbol-tables"])
def test_612_refuses_this_module_and_symbol_table_defects_in_each_generations_words(broken, before_117, from_117):
    assert invalid_elf(DEBIAN_612, **broken) == [before_117]
    assert invalid_elf(DEBIAN_612_SPLIT, **broken) == [from_117]


def test_612_117_refuses_string_tables_that_are_not_strtab():
    """elf_validity_cache_secstrings(), elf_validity_cache_index_str(): new in 6.12.117."""
    broken = {"section_names_ok": False, "symbol_strings_ok": False}
    assert invalid_elf(DEBIAN_612, **broken) == []
    assert invalid_elf(DEBIAN_612_SPLIT, **broken) == [
        "Invalid ELF section name table type", "Invalid ELF symbol string table type"]


@pytest.mark.parametrize("release, generation_message", [
    ("6.3.13", None), ("6.4.0", "Only one"), ("6.12.116", "Only one"), ("6.12.117", "Exactly one"),
    ("6.13.0", "Exactly one"), ("7.0.1", "Exactly one"),
])
def test_validity_generation_follows_the_release(release, generation_message):
    """_validity_generation(): v6.4 and v6.13, with 6.12.117's backport of the latter."""
    messages = invalid_elf(release, this_module_sections=2)
    assert messages == ([] if generation_message is None
                        else [f"{generation_message} .gnu.linkonce.this_module section must exist."])


def test_module_without_known_layout_gets_no_section_checks():
    verdict = check_one(make_module(release=DEBIAN_612, layout=None), make_kernel(DEBIAN_612))
    assert verdict.loads and "module-struct-unknown" not in codes(verdict.warnings)


def test_612_refuses_a_61_module_for_struct_module_size_before_module_layout():
    """elf_validity_cache_copy() compares sizeof(struct module) before check_modstruct_version()."""
    module = make_module(release=DEBIAN_61, layout=make_layout(DEBIAN_61), versions={"module_layout": 0xDEAD,
                                                                                     "_printk": CRC["_printk"]})
    verdict = check_one(module, make_kernel(DEBIAN_612))
    assert codes(verdict.reasons) == ["module-struct-size", "module-layout-mismatch"]
    assert verdict.reasons[0].message == (".gnu.linkonce.this_module section size must match the kernel's built "
                                          "struct module size at run time (module: 896 bytes, kernel: 1280)")


def test_61_does_not_compare_struct_module_size_and_refuses_a_612_module_for_module_layout():
    module = make_module(release=DEBIAN_612, layout=make_layout(DEBIAN_612), versions={"module_layout": 0xDEAD,
                                                                                       "_printk": CRC["_printk"]})
    assert codes(check_one(module, make_kernel(DEBIAN_61)).reasons) == ["module-layout-mismatch"]


def test_unknown_struct_module_size_is_a_warning_not_a_refusal():
    kernel = make_kernel(DEBIAN_612, struct_size_known=False)
    verdict = check_one(make_module(release=DEBIAN_612, layout=make_layout(DEBIAN_612, this_module_size=1)), kernel)
    assert verdict.loads
    assert "module-struct-unknown" in codes(verdict.warnings)


# --- check_modstruct_version(), check_modinfo()


def test_module_without_versions_is_refused_on_a_modversions_kernel():
    """check_modstruct_version(): no __versions -> try_to_force_load() refuses."""
    verdict = check_one(make_module(without_versions=True))
    [reason] = verdict.reasons
    assert reason.code == "no-versions"
    assert reason.message == ("module has no __versions section but the kernel has CONFIG_MODVERSIONS: "
                              "Exec format error")


def test_module_without_versions_is_forced_in_with_module_force_load():
    """try_to_force_load(): CONFIG_MODULE_FORCE_LOAD makes the refusal a taint."""
    verdict = check_one(make_module(without_versions=True), make_kernel(CONFIG_MODULE_FORCE_LOAD="y"))
    assert verdict.loads
    assert [(w.code, w.message) for w in verdict.warnings if w.code == "taint-forced"] == [
        ("taint-forced", "module_layout: kernel tainted.")]


def test_module_without_versions_loads_on_a_kernel_without_modversions():
    kernel = make_kernel(config={"CONFIG_MODULE_SIG": "y"},
                         exports=tuple(dataclasses.replace(e, crc=None) for e in KERNEL_EXPORTS))
    assert check_one(make_module(without_versions=True), kernel).loads


def test_modversions_is_read_from_the_crcs_when_the_config_is_unknown():
    assert check_one(make_module(without_versions=True), make_kernel(config={})).reasons[0].code == "no-versions"
    crcless = tuple(dataclasses.replace(e, crc=None) for e in KERNEL_EXPORTS)
    assert check_one(make_module(without_versions=True), make_kernel(config={}, exports=crcless)).loads


def test_module_layout_crc_mismatch_names_both_crcs():
    """check_version("module_layout")."""
    verdict = check_one(make_module(versions={"module_layout": 0xDEAD, "_printk": CRC["_printk"]}))
    [reason] = verdict.reasons
    assert (reason.code, reason.symbol, reason.module_crc, reason.kernel_crc) == (
        "module-layout-mismatch", "module_layout", 0xDEAD, LAYOUT_CRC)
    assert reason.message == "disagrees about version of symbol module_layout"


def test_missing_module_layout_record_is_no_symbol_version():
    [reason] = check_one(make_module(versions={"_printk": CRC["_printk"]})).reasons
    assert (reason.code, reason.symbol, reason.module_crc, reason.kernel_crc) == (
        "no-symbol-version", "module_layout", None, LAYOUT_CRC)


def test_module_layout_is_not_compared_when_the_kernel_has_none():
    kernel = make_kernel(exports=tuple(e for e in KERNEL_EXPORTS if e.name != "module_layout"))
    assert check_one(make_module(versions={"module_layout": 0xDEAD, "_printk": CRC["_printk"]}), kernel).loads


def test_same_magic_ignores_the_release_only_with_crcs():
    """same_magic(): with CRCs everything after the first word is compared."""
    assert same_magic("6.1.0-47-amd64 SMP mod_unload ", "6.1.0-48-amd64 SMP mod_unload ", has_crcs=True)
    assert not same_magic("6.1.0-47-amd64 SMP mod_unload ", "6.1.0-48-amd64 SMP mod_unload ", has_crcs=False)
    assert not same_magic("6.1.0-47-amd64 SMP mod_unload ", "6.1.0-47-amd64 SMP preempt mod_unload ",
                          has_crcs=True)
    assert not same_magic("6.1.0-47-amd64 SMP mod_unload", "6.1.0-47-amd64 SMP mod_unload ", has_crcs=True)


def test_vermagic_release_differing_is_accepted_when_the_module_has_versions():
    assert check_one(make_module(vermagic="6.1.0-99-amd64" + FLAGS)).loads


def test_vermagic_flags_differing_are_refused_with_both_magics():
    """check_modinfo() -> same_magic()."""
    module_magic = DEBIAN_61 + " SMP mod_unload modversions "
    [reason] = check_one(make_module(vermagic=module_magic)).reasons
    assert reason.code == "vermagic-mismatch"
    assert reason.message == f"version magic '{module_magic}' should be '{DEBIAN_61 + FLAGS}'"


def test_vermagic_release_is_compared_when_the_module_has_no_versions():
    verdict = check_one(make_module(without_versions=True, vermagic="6.1.0-99-amd64" + FLAGS))
    assert codes(verdict.reasons) == ["no-versions", "vermagic-mismatch"]
    forced = check_one(make_module(without_versions=True, vermagic="6.1.0-99-amd64" + FLAGS),
                       make_kernel(CONFIG_MODULE_FORCE_LOAD="y"))
    assert codes(forced.reasons) == ["vermagic-mismatch"]


def test_vermagic_release_is_compared_on_a_kernel_without_modversions():
    kernel = make_kernel(config={"CONFIG_MODULE_SIG": "y"})
    assert codes(check_one(make_module(vermagic="6.1.0-99-amd64" + FLAGS), kernel).reasons) == ["vermagic-mismatch"]


def test_missing_vermagic_is_refused_unless_forced():
    """check_modinfo(): no vermagic -> try_to_force_load("bad vermagic")."""
    [reason] = check_one(make_module(without_vermagic=True)).reasons
    assert (reason.code, reason.message) == ("vermagic-mismatch", "module has no vermagic: Exec format error")
    forced = check_one(make_module(without_vermagic=True), make_kernel(CONFIG_MODULE_FORCE_LOAD="y"))
    assert forced.loads
    assert "bad vermagic: kernel tainted." in [w.message for w in forced.warnings]


def test_unknown_kernel_vermagic_is_a_warning():
    verdict = check_one(make_module(vermagic="anything"), make_kernel(vermagic_known=False))
    assert verdict.loads and "vermagic-unknown" in codes(verdict.warnings)


def test_livepatch_module_loads_with_a_taint_when_livepatch_is_on():
    """check_modinfo_livepatch()."""
    verdict = check_one(make_module(info=(("livepatch", "Y"),)), make_kernel(CONFIG_LIVEPATCH="y"))
    assert verdict.loads and "taint-livepatch" in codes(verdict.warnings)


def test_livepatch_module_is_refused_when_livepatch_is_off():
    [reason] = check_one(make_module(info=(("livepatch", "Y"),))).reasons
    assert (reason.code, reason.message) == (
        "livepatch-unsupported", "module is marked as livepatch module, but livepatch support is disabled")


def test_livepatch_module_is_refused_when_the_config_is_unknown_and_says_so():
    [reason] = check_one(make_module(info=(("livepatch", "Y"),)), make_kernel(config={})).reasons
    assert reason.code == "livepatch-unsupported"
    assert reason.message.endswith("(the kernel's config is unknown: CONFIG_LIVEPATCH taken as off)")


# --- already loaded, W|X sections, constructors


def test_second_module_of_a_name_is_already_loaded():
    """add_unformed_module() / module_patient_check_exists(): EEXIST."""
    first, second = make_module("dup", path="/a/dup.ko"), make_module("dup", path="/b/dup.ko")
    verdicts = check_modules([first, second], make_kernel())
    assert verdicts[0].loads
    [reason] = verdicts[1].reasons
    assert (reason.code, reason.message) == (
        "already-loaded", "a module named dup (/a/dup.ko) is loaded before it: File exists")


def test_module_name_from_file_name_has_dashes_as_underscores():
    from_modinfo = make_module("my_drv")
    from_file = dataclasses.replace(make_module("x"), path="/b/my-drv.ko",
                                    modinfo=tuple(kv for kv in make_module("x").modinfo if kv[0] != "name"))
    assert codes(check_modules([from_modinfo, from_file], make_kernel())[1].reasons) == ["already-loaded"]


@pytest.mark.parametrize("release, order", [
    (DEBIAN_61, ["write-exec-section", "already-loaded"]),  # add_unformed_module() after the layout
    (DEBIAN_612, ["already-loaded", "write-exec-section"]),  # early_mod_check() before it
])
def test_already_loaded_is_checked_before_the_memory_layout_from_64(release, order):
    layout = make_layout(release, write_exec_sections=(".text.wx (index 3)",))
    modules = [make_module("dup", release=release), make_module("dup", release=release, layout=layout)]
    assert codes(check_modules(modules, make_kernel(release))[1].reasons) == order


ARM64_61, ARM64_612 = "6.1.0-47-arm64", "6.12.117+deb12-arm64"


@pytest.mark.parametrize("present, release, config, refused", [
    ((".plt", ".init.plt"), ARM64_61, {"CONFIG_ARM64_MODULE_PLTS": "y"}, False),
    ((".plt",), ARM64_61, {"CONFIG_ARM64_MODULE_PLTS": "y"}, True),
    ((), ARM64_61, {}, True),  # config unknown: Debian's arm64 has it
    ((), ARM64_61, {"CONFIG_MODVERSIONS": "y"}, False),  # a 6.1 kernel without module PLTs
    ((), ARM64_612, {"CONFIG_MODVERSIONS": "y"}, True),  # 6.12: PLTs whatever the config
])
def test_arm64_module_without_plt_sections_is_refused_where_the_kernel_needs_them(present, release, config, refused):
    """module_frob_arch_sections(), arch/arm64/kernel/module-plts.c."""
    kernel = make_kernel(release, machine="aarch64", config=config)
    module = make_module(release=release, machine="aarch64", layout=make_layout(release, arch_sections=present))
    reasons = check_one(module, kernel).reasons
    assert codes(reasons) == (["arch-sections-missing"] if refused else [])
    if refused:
        assert reasons[0].message.startswith("module PLT section(s) missing")


def test_ppc64_module_without_stubs_is_refused_and_other_arches_need_none():
    """module_frob_arch_sections(), arch/powerpc/kernel/module_64.c; x86 has none."""
    ppc = make_kernel(machine="ppc64le")
    stubs = make_module(machine="ppc64le", layout=make_layout(arch_sections=(".stubs",)))
    assert check_one(stubs, ppc).loads
    reasons = check_one(make_module(machine="ppc64le", layout=make_layout(arch_sections=())), ppc).reasons
    assert [(r.code, r.message) for r in reasons] == [
        ("arch-sections-missing", "doesn't contain .stubs.: Exec format error")]
    assert check_one(make_module(layout=make_layout(arch_sections=()))).loads
    # a layout stored before the sections were read: not judged
    assert check_one(make_module(machine="ppc64le", layout=make_layout(arch_sections=None)), ppc).loads


@pytest.mark.parametrize("machine, config, release, e_flags, refused", [
    ("ppc64le", {}, DEBIAN_612, 2, False),
    ("ppc64le", {}, DEBIAN_612, 1, True),  # little-endian kernels are ELFv2 whatever the config
    ("ppc64le", {}, DEBIAN_61, 1, False),  # 6.1 has no module_elf_check_arch()
    ("ppc64", {"CONFIG_PPC64_ELF_ABI_V2": "y"}, DEBIAN_612, 0, True),
    ("ppc64", {"CONFIG_MODVERSIONS": "y"}, DEBIAN_612, 1, False),  # an ELFv1 big-endian kernel
    ("ppc64", {"CONFIG_MODVERSIONS": "y"}, DEBIAN_612, 2, True),
    ("ppc64", {}, DEBIAN_612, 2, False),  # config unknown: the big-endian ABI is not guessed
])
def test_powerpc_module_of_the_other_elf_abi_is_refused_from_62(machine, config, release, e_flags, refused):
    """elf_validity_ehdr() -> module_elf_check_arch(), arch/powerpc/kernel/module_64.c."""
    kernel = make_kernel(release, machine=machine, config=config, struct_size_known=False)
    module = make_module(release=release, machine=machine, layout=make_layout(release, e_flags=e_flags))
    reasons = check_one(module, kernel).reasons
    assert codes(reasons) == (["arch-mismatch"] if refused else [])
    if refused:
        assert reasons[0].message.startswith("Invalid module architecture in ELF header: 21")


def test_write_exec_sections_are_refused_one_reason_each():
    """module_enforce_rwx_sections() (CONFIG_STRICT_MODULE_RWX)."""
    layout = make_layout(write_exec_sections=(".text.wx (index 3)", ".data.x (index 7)"))
    verdict = check_one(make_module(layout=layout))
    assert [(r.code, r.message) for r in verdict.reasons] == [
        ("write-exec-section", "section .text.wx (index 3) has invalid WRITE|EXEC flags"),
        ("write-exec-section", "section .data.x (index 7) has invalid WRITE|EXEC flags")]


def test_write_exec_section_is_allowed_without_strict_module_rwx():
    layout = make_layout(write_exec_sections=(".text.wx (index 3)",))
    assert check_one(make_module(layout=layout), make_kernel(config={"CONFIG_MODVERSIONS": "y"})).loads


def test_write_exec_section_is_refused_when_the_config_is_unknown():
    layout = make_layout(write_exec_sections=(".text.wx (index 3)",))
    [reason] = check_one(make_module(layout=layout), make_kernel(config={})).reasons
    assert reason.message == ("section .text.wx (index 3) has invalid WRITE|EXEC flags "
                              "(the kernel's config is unknown: CONFIG_STRICT_MODULE_RWX taken as on)")


def test_ctors_and_init_array_together_are_refused_unless_constructors_are_off():
    """find_module_sections(): CONFIG_CONSTRUCTORS, off in Debian."""
    module = make_module(layout=make_layout(ctors_and_init_array=True))
    assert check_one(module).loads
    [reason] = check_one(module, make_kernel(CONFIG_CONSTRUCTORS="y")).reasons
    assert (reason.code, reason.message) == ("invalid-elf", "has both .ctors and .init_array.")
    [unknown] = check_one(module, make_kernel(config={})).reasons
    assert unknown.message.endswith("(the kernel's config is unknown: CONFIG_CONSTRUCTORS taken as on)")


# --- taints


def test_taints_in_the_kernel_order():
    """check_modinfo() (6.1) / module_augment_kernel_taints() (6.4+)."""
    module = make_module(license="Proprietary", imports=(), info=(
        ("staging", "Y"), ("livepatch", "Y"), ("test", "Y")))
    verdict = check_one(module, make_kernel(CONFIG_LIVEPATCH="y", CONFIG_RETPOLINE="y"))
    assert verdict.loads
    assert [(w.code, w.message) for w in verdict.warnings] == [
        ("unsigned", "module verification failed: signature and/or required key missing - tainting kernel"),
        ("taint-out-of-tree", "loading out-of-tree module taints kernel."),
        ("no-retpoline", "loading module not compiled with retpoline compiler."),
        ("taint-staging", "module is from the staging directory, the quality is unknown, you have been warned."),
        ("taint-livepatch", "tainting kernel with TAINT_LIVEPATCH"),
        ("taint-proprietary", "module license 'Proprietary' taints kernel."),
        ("taint-test", "loading test module taints kernel."),
    ]


@pytest.mark.parametrize("option", ["CONFIG_RETPOLINE", "CONFIG_MITIGATION_RETPOLINE"])
def test_retpoline_taint_only_on_a_retpoline_kernel_for_a_module_without_it(option):
    """check_modinfo_retpoline(); the option was renamed in 6.9."""
    assert "no-retpoline" in codes(check_one(make_module(), make_kernel(config={**CONFIG, option: "y"})).warnings)
    with_retpoline = make_module(info=(("retpoline", "Y"),))
    assert "no-retpoline" not in codes(check_one(with_retpoline, make_kernel(config={**CONFIG, option: "y"})).warnings)
    assert "no-retpoline" not in codes(check_one(make_module()).warnings)


def test_missing_license_taints_as_unspecified():
    [taint] = [w for w in check_one(make_module(license=None, imports=())).warnings if w.code == "taint-proprietary"]
    assert taint.message == "module license 'unspecified' taints kernel."


@pytest.mark.parametrize("license", ["GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL",
                                     "Dual MPL/GPL"])
def test_gpl_compatible_licenses_do_not_taint(license):
    """license_is_gpl_compatible()."""
    assert "taint-proprietary" not in codes(check_one(make_module(license=license)).warnings)


@pytest.mark.parametrize("name", ["driverloader", "lve"])
def test_modules_proprietary_by_name_taint_and_cannot_use_gpl_only_symbols(name):
    verdict = check_one(make_module(name, imports=("cpu_mitigations_off",)))
    assert ("taint-proprietary", "module license taints kernel.") in [(w.code, w.message) for w in verdict.warnings]
    assert codes(verdict.reasons) == ["gpl-only"]


# --- check_export_symbol_versions()


def test_exports_without_crcs_are_refused_on_a_modversions_kernel():
    [reason] = check_one(make_module(exports=(own_export("demo_fn", crc=None),))).reasons
    assert (reason.code, reason.message) == (
        "no-versions", "module exports symbols without CRCs: no versions for exported symbols")


def test_exports_without_crcs_are_forced_in_with_module_force_load():
    module = make_module(exports=(own_export("demo_fn", crc=None),))
    verdict = check_one(module, make_kernel(CONFIG_MODULE_FORCE_LOAD="y"))
    assert verdict.loads
    assert "no versions for exported symbols: kernel tainted." in [w.message for w in verdict.warnings]


def test_exports_without_crcs_load_on_a_kernel_without_modversions():
    kernel = make_kernel(config={"CONFIG_MODULE_SIG": "y"})
    assert check_one(make_module(exports=(own_export("demo_fn", crc=None),)), kernel).loads


# --- simplify_symbols() -> resolve_symbol()


def test_common_symbol_is_refused_before_symbols_are_resolved():
    """simplify_symbols(): SHN_COMMON; the kernel's message names no symbol, the reason the first."""
    module = make_module(imports=("nope",), layout=make_layout(common_symbols=("counter", "other")))
    verdict = check_one(module)
    assert codes(verdict.reasons) == ["common-symbol", "missing-symbol"]
    assert (verdict.reasons[0].message, verdict.reasons[0].symbol) == ("please compile with -fno-common", "counter")


def test_missing_symbol_is_refused_with_the_module_crc():
    [reason] = check_one(make_module(imports=("_printk", "gone_fn"), versions={
        "module_layout": LAYOUT_CRC, "_printk": CRC["_printk"], "gone_fn": 0x77})).reasons
    assert (reason.code, reason.message, reason.symbol, reason.module_crc, reason.kernel_crc) == (
        "missing-symbol", "Unknown symbol gone_fn (err -2)", "gone_fn", 0x77, None)


def test_missing_weak_symbol_is_not_refused():
    assert check_one(make_module(weak=("gone_fn",))).loads


def test_linker_made_symbols_may_stay_undefined_only_on_their_arch():
    """ignore_undef_symbol(): _GLOBAL_OFFSET_TABLE_ on x86, .TOC. on ppc64."""
    assert check_one(make_module(imports=("_printk", "_GLOBAL_OFFSET_TABLE_"))).loads
    assert codes(check_one(make_module(imports=("_printk", ".TOC."))).reasons) == ["missing-symbol"]
    ppc = make_kernel(machine="ppc64le")
    assert check_one(make_module(imports=("_printk", ".TOC."), machine="ppc64le"), ppc).loads


def test_symbol_the_module_exports_itself_is_not_looked_up():
    module = make_module(imports=("_printk", "demo_fn"), exports=(own_export("demo_fn"),))
    assert check_one(module).loads


def test_proprietary_module_cannot_find_gpl_only_symbol():
    """find_symbol() with gplok false skips GPL-only exports: "Unknown symbol"."""
    verdict = check_one(make_module(license="Proprietary", imports=("_printk", "cpu_mitigations_off")))
    [reason] = verdict.reasons
    assert (reason.code, reason.symbol, reason.module_crc, reason.kernel_crc) == (
        "gpl-only", "cpu_mitigations_off", CRC["cpu_mitigations_off"], CRC["cpu_mitigations_off"])
    assert reason.message == ("Unknown symbol cpu_mitigations_off (err -2): it is exported GPL-only and the "
                              "module's license is 'Proprietary'")


def test_proprietary_module_may_use_gpl_future_exports_and_skip_weak_gpl_only_ones():
    module = make_module(license="Proprietary", imports=("old_gpl_future",), weak=("cpu_mitigations_off",))
    assert check_one(module).loads


def test_gpl_module_may_use_gpl_only_symbols():
    assert check_one(make_module(imports=("cpu_mitigations_off",))).loads


def test_symbol_crc_mismatch_names_both_crcs():
    """check_version()."""
    module = make_module(versions={"module_layout": LAYOUT_CRC, "_printk": 0xBAD})
    [reason] = check_one(module).reasons
    assert (reason.code, reason.message, reason.symbol, reason.module_crc, reason.kernel_crc) == (
        "crc-mismatch", "disagrees about version of symbol _printk", "_printk", 0xBAD, CRC["_printk"])


@pytest.mark.parametrize("symbol", ["_printk", "module_layout"])
def test_the_first_of_two_version_records_of_a_symbol_decides(symbol):
    """check_version() walks __versions in order and decides on the first record of the name
    (a crafted or badly linked module may carry two)."""
    good, bad = dataclasses.replace(make_module(), versions=None), 0xBAD
    records = [SymbolVersion("module_layout", LAYOUT_CRC), SymbolVersion("_printk", CRC["_printk"])]
    first_good = [*records, SymbolVersion(symbol, bad)]
    assert check_one(dataclasses.replace(good, versions=tuple(first_good))).loads
    first_bad = [SymbolVersion(symbol, bad), *records]
    [reason] = check_one(dataclasses.replace(good, versions=tuple(first_bad))).reasons
    assert (reason.symbol, reason.module_crc) == (symbol, bad)


def test_symbol_crc_is_not_compared_without_modversions_or_without_a_kernel_crc():
    module = make_module(versions={"module_layout": LAYOUT_CRC, "_printk": 0xBAD})
    assert check_one(module, make_kernel(config={"CONFIG_MODULE_SIG": "y"})).loads
    crcless = tuple(dataclasses.replace(e, crc=None) if e.name == "_printk" else e for e in KERNEL_EXPORTS)
    assert check_one(module, make_kernel(exports=crcless)).loads


def test_symbol_without_a_version_record_is_refused():
    """check_version(): "no symbol version for X", 6.1 and 6.12 alike."""
    [reason] = check_one(make_module(versions={"module_layout": LAYOUT_CRC})).reasons
    assert (reason.code, reason.message, reason.symbol, reason.module_crc, reason.kernel_crc) == (
        "no-symbol-version", "no symbol version for _printk", "_printk", None, CRC["_printk"])


def test_namespaced_symbol_needs_its_namespace_imported():
    """verify_namespace_is_imported()."""
    [reason] = check_one(make_module(imports=("ns_fn",))).reasons
    assert (reason.code, reason.symbol, reason.message) == (
        "namespace-not-imported", "ns_fn",
        "module uses symbol (ns_fn) from namespace DEMO_NS, but does not import it.")
    assert check_one(make_module(imports=("ns_fn",), info=(("import_ns", "DEMO_NS"),))).loads


def test_missing_namespace_import_is_a_warning_with_allow_missing_namespace_imports():
    kernel = make_kernel(CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS="y")
    verdict = check_one(make_module(imports=("ns_fn",)), kernel)
    assert verdict.loads and "namespace-not-imported" in codes(verdict.warnings)


def test_missing_namespace_import_is_refused_when_the_config_is_unknown():
    assert codes(check_one(make_module(imports=("ns_fn",)), make_kernel(config={})).reasons) == [
        "namespace-not-imported"]


def test_crc_mismatch_is_reported_instead_of_the_namespace():
    module = make_module(imports=("ns_fn",), versions={"module_layout": LAYOUT_CRC, "ns_fn": 0xBAD})
    assert codes(check_one(module).reasons) == ["crc-mismatch"]


def test_symbols_are_resolved_in_symbol_table_order():
    module = make_module(license="Proprietary", imports=("gone_fn", "ns_fn", "cpu_mitigations_off", "_printk"),
                         versions={"module_layout": LAYOUT_CRC, "ns_fn": CRC["ns_fn"]})
    assert [(r.code, r.symbol) for r in check_one(module).reasons] == [
        ("missing-symbol", "gone_fn"), ("namespace-not-imported", "ns_fn"),
        ("gpl-only", "cpu_mitigations_off"), ("no-symbol-version", "_printk")]


# --- verify_exported_symbols()


def test_exporting_a_vmlinux_symbol_is_a_duplicate_owned_by_the_kernel():
    [reason] = check_one(make_module(exports=(own_export("_printk", crc=0x99),))).reasons
    assert (reason.code, reason.message, reason.symbol, reason.module_crc, reason.kernel_crc) == (
        "duplicate-export", "exports duplicate symbol _printk (owned by kernel)", "_printk", 0x99, CRC["_printk"])


def test_exporting_an_in_tree_module_symbol_shadows_it():
    """depmod ranks extra/ and updates/ over kernel/: the in-tree module is not loaded."""
    assert check_one(make_module(exports=(own_export("media_device_init"),))).loads


def test_second_set_module_exporting_a_symbol_is_a_duplicate_of_the_first():
    first = make_module("first", exports=(own_export("shared_fn", crc=0x1),))
    second = make_module("second", exports=(own_export("shared_fn", crc=0x2),))
    verdicts = check_modules([first, second], make_kernel())
    assert verdicts[0].loads
    [reason] = verdicts[1].reasons
    assert (reason.code, reason.message, reason.module_crc, reason.kernel_crc) == (
        "duplicate-export", "exports duplicate symbol shared_fn (owned by first)", 0x2, 0x1)


# --- a set of modules: symbols between them


def provider_and_user(provider_crc: int = 0x5151, user_crc: int = 0x5151, **provider):
    return (make_module("core", exports=(own_export("core_fn", crc=provider_crc),), **provider),
            make_module("user", imports=("_printk", "core_fn"), versions={
                "module_layout": LAYOUT_CRC, "_printk": CRC["_printk"], "core_fn": user_crc}))


def test_set_module_resolves_symbols_of_another_set_module():
    assert [v.loads for v in check_modules(list(provider_and_user()), make_kernel())] == [True, True]


def test_crc_mismatch_with_a_set_module_names_the_exporter():
    [reason] = check_modules(list(provider_and_user(user_crc=0x9)), make_kernel())[1].reasons
    assert (reason.code, reason.message, reason.module_crc, reason.kernel_crc) == (
        "crc-mismatch", "disagrees about version of symbol core_fn (exported by core)", 0x9, 0x5151)


def test_modules_needing_a_failing_module_fail_transitively_in_any_order():
    core, user = provider_and_user(vermagic="bad magic")
    user = dataclasses.replace(user, exports=(own_export("user_fn"),))
    top = make_module("top", imports=("_printk", "user_fn"), versions={
        "module_layout": LAYOUT_CRC, "_printk": CRC["_printk"], "user_fn": 0x55555555})
    bystander = make_module("bystander")
    verdicts = check_modules([top, bystander, user, core], make_kernel())
    assert [codes(v.reasons) for v in verdicts] == [
        ["dependency-fails"], [], ["dependency-fails"], ["vermagic-mismatch"]]
    assert [(r.message, r.symbol) for v in verdicts[::2] for r in v.reasons] == [
        ("needs user_fn from user, which does not load", "user_fn"),
        ("needs core_fn from core, which does not load", "core_fn")]


def test_module_with_its_own_reason_gets_no_dependency_reason():
    core, user = provider_and_user(user_crc=0x9, vermagic="bad magic")
    assert codes(check_modules([core, user], make_kernel())[1].reasons) == ["crc-mismatch"]


def test_using_a_proprietary_set_module_inherits_its_taint_transitively():
    """inherit_taint(): TAINT_PROPRIETARY_MODULE passes to the users of its symbols."""
    core, user = provider_and_user(license="Proprietary")
    user = dataclasses.replace(user, exports=(own_export("user_fn"),))
    top = make_module("top", imports=("user_fn", "cpu_mitigations_off"), versions={
        "module_layout": LAYOUT_CRC, "user_fn": 0x55555555, "cpu_mitigations_off": CRC["cpu_mitigations_off"]})
    verdicts = check_modules([core, user, top], make_kernel())
    assert [(w.code, w.message) for w in verdicts[1].warnings if w.code == "taint-proprietary"] == [
        ("taint-proprietary", "module uses symbols core_fn from proprietary module core, inheriting taint.")]
    # top's user_fn comes from a module that inherited the taint, which hides GPL-only symbols after it
    assert [(r.code, r.symbol) for r in verdicts[2].reasons] == [("gpl-only", "cpu_mitigations_off")]


def test_module_using_gpl_only_symbols_cannot_use_a_proprietary_set_module():
    core, _ = provider_and_user(license="Proprietary")
    user = make_module("user", imports=("cpu_mitigations_off", "core_fn"), versions={
        "module_layout": LAYOUT_CRC, "cpu_mitigations_off": CRC["cpu_mitigations_off"], "core_fn": 0x5151})
    [reason] = check_modules([core, user], make_kernel())[1].reasons
    assert (reason.code, reason.symbol, reason.message) == (
        "gpl-only", "core_fn", "module using GPL-only symbols uses symbols core_fn from proprietary module core.")


# --- the order of reasons: the first is the kernel's refusal


def everything_wrong(release: str) -> list[Module]:
    """A module of `release`'s name loaded second, with one defect for each check."""
    layout = make_layout(DEBIAN_61, modinfo_sections=2, write_exec_sections=(".text.wx (index 3)",),
                         ctors_and_init_array=True, common_symbols=("counter",))
    broken = make_module(
        "broken", vermagic="6.0.0-1-amd64 UP mod_unload modversions ", license="Proprietary", layout=layout,
        info=(("livepatch", "Y"),),
        imports=("gone_fn", "cpu_mitigations_off", "_printk", "media_device_init", "ns_fn"),
        exports=(own_export("own_fn", crc=None), own_export("old_gpl_future")),
        versions={"module_layout": 0xDEAD, "_printk": 0xBAD, "gone_fn": 0x1, "ns_fn": CRC["ns_fn"]})
    return [make_module("broken", release=release), broken]


@pytest.mark.parametrize("release, expected", [
    (DEBIAN_61, ["unsigned", "module-layout-mismatch", "vermagic-mismatch", "livepatch-unsupported",
                 "write-exec-section", "already-loaded", "invalid-elf", "no-versions", "common-symbol",
                 "missing-symbol", "gpl-only", "crc-mismatch", "no-symbol-version", "namespace-not-imported",
                 "duplicate-export"]),
    (DEBIAN_612, ["unsigned", "invalid-elf", "module-struct-size", "module-layout-mismatch", "vermagic-mismatch",
                  "livepatch-unsupported", "already-loaded", "write-exec-section", "invalid-elf", "no-versions",
                  "common-symbol", "missing-symbol", "gpl-only", "crc-mismatch", "no-symbol-version",
                  "namespace-not-imported", "duplicate-export"]),
    (DEBIAN_612_SPLIT, ["unsigned", "invalid-elf", "module-struct-size", "module-layout-mismatch", "vermagic-mismatch",
                        "livepatch-unsupported", "already-loaded", "write-exec-section", "invalid-elf", "no-versions",
                        "common-symbol", "missing-symbol", "gpl-only", "crc-mismatch", "no-symbol-version",
                        "namespace-not-imported", "duplicate-export"]),
])
def test_reasons_come_in_the_order_the_kernel_meets_them(release, expected):
    """load_module(): docs/loader-checks.md rows 1-27, 6.1 and v6.4's orders."""
    kernel = make_kernel(release, CONFIG_CONSTRUCTORS="y", CONFIG_MODULE_SIG_FORCE="y")
    verdict = check_modules(everything_wrong(release), kernel)[1]
    assert codes(verdict.reasons) == expected


@pytest.mark.parametrize("imports, first", [
    (("_printk", "gone_fn"), ("crc-mismatch", "_printk")),
    (("gone_fn", "_printk"), ("missing-symbol", "gone_fn")),
])
def test_symbol_reasons_follow_the_symbol_table_not_their_kind(imports, first):
    """simplify_symbols() walks the symbol table in order and check_version() runs as each symbol
    resolves: a CRC mismatch before a missing symbol in the table is the kernel's first complaint."""
    module = make_module(imports=imports, versions={"module_layout": LAYOUT_CRC, "_printk": 0xBAD, "gone_fn": 0x1})
    verdict = check_one(module)
    assert (verdict.reasons[0].code, verdict.reasons[0].symbol) == first
    assert [r.symbol for r in verdict.reasons] == list(imports)


def test_dependency_reason_sits_where_the_kernel_meets_its_symbol():
    """Without its failing provider the kernel lacks core_fn and says so where the walk meets it:
    before a missing symbol later in the table, also in a module failing for that symbol alone."""
    core, _ = provider_and_user(vermagic="bad magic")
    user = make_module("user", imports=("core_fn", "gone_fn"), versions={
        "module_layout": LAYOUT_CRC, "core_fn": 0x5151, "gone_fn": 0x1})
    reasons = check_modules([core, user], make_kernel())[1].reasons
    assert [(r.code, r.symbol) for r in reasons] == [("dependency-fails", "core_fn"), ("missing-symbol", "gone_fn")]
    late = dataclasses.replace(user, imports=tuple(reversed(user.imports)))
    reasons = check_modules([core, late], make_kernel())[1].reasons
    assert [(r.code, r.symbol) for r in reasons] == [("missing-symbol", "gone_fn"), ("dependency-fails", "core_fn")]


@pytest.mark.parametrize("package, driver", [
    ("kmod-jool", "jool"), ("akmod-v4l2loopback", "v4l2loopback"), ("jool-kmp-default", "jool"),
    ("jool-dkms", "jool"), ("jool-modules-6.1.0-56-amd64", "jool"), ("kmod-acpi-call", "acpi-call"),
    ("v4l2loopback", "v4l2loopback"), ("kmod-", "kmod-"), ("dkms", "dkms")])
def test_one_driver_name_whatever_the_packaging(package, driver):
    assert driver_name(package) == driver


def _deciding(verdict: Verdict) -> set[str]:
    return deciding_symbols((r.code, r.symbol) for r in verdict.reasons)


def test_the_symbols_deciding_a_verdict_are_simplify_symbols_failures_with_nothing_earlier():
    """load_module() stops at its first failing step: a CRC mismatch behind a module_layout, a
    vermagic or a missing module_layout version never decides; a duplicate export after it does not hide it."""
    stale = {"module_layout": LAYOUT_CRC, "_printk": 0xBAD, "cpu_mitigations_off": CRC["cpu_mitigations_off"]}
    symbols_only = check_one(make_module(imports=("_printk", "cpu_mitigations_off", "nowhere"), versions=stale))
    assert codes(symbols_only.reasons) == ["crc-mismatch", "missing-symbol"]
    assert _deciding(symbols_only) == {"_printk", "nowhere"}
    layout = check_one(make_module(versions={**stale, "module_layout": 0xDEAD}))
    assert codes(layout.reasons)[0] == "module-layout-mismatch" and "crc-mismatch" in codes(layout.reasons)
    assert _deciding(layout) == set()
    magic = check_one(make_module(versions=stale, vermagic="6.1.0-47-amd64 SMP mod_unload modversions "))
    assert codes(magic.reasons)[0] == "vermagic-mismatch" and _deciding(magic) == set()
    no_layout = check_one(make_module(versions={"_printk": 0xBAD}))
    assert codes(no_layout.reasons) == ["no-symbol-version", "crc-mismatch"] and _deciding(no_layout) == set()
    duplicate = check_one(make_module(versions=stale, exports=(own_export("ns_fn"),)))
    assert codes(duplicate.reasons) == ["crc-mismatch", "duplicate-export"] and _deciding(duplicate) == {"_printk"}
