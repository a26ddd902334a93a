"""The kernel's module loader rules as one pure function: modules x kernel -> verdicts.

Follows load_module() in kernel/module/main.c (6.1-6.12) step by step; each check names
the kernel function it emulates, docs/loader-checks.md lists them in the kernel's order.
Reasons come in the order the kernel meets them, so the first reason is what the kernel would
refuse the module for; unlike the kernel, checking goes on after a failure, to report every
problem at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from kabigate.model import (
    GPL_ONLY_EXPORT_TYPES,
    Export,
    Kernel,
    Module,
    Reason,
    ReasonCode,
    SignatureCheck,
    Verdict,
    module_name,
)

# license_is_gpl_compatible(), include/linux/license.h
GPL_COMPATIBLE_LICENSES = frozenset({
    "GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL",
})
# ignore_undef_symbol(), kernel/module/main.c: linker-made symbols that may stay undefined.
IGNORED_UNDEFINED = {
    "i386": {"_GLOBAL_OFFSET_TABLE_"},
    "x86_64": {"_GLOBAL_OFFSET_TABLE_"},
    "ppc64": {".TOC."},
    "ppc64le": {".TOC."},
}
# Byte order of the machines kabigate names (formats/elf.py): the kernel reads a module's header in its own.
BYTE_ORDER = {"x86_64": "<", "i386": "<", "aarch64": "<", "ppc64le": "<", "riscv64": "<", "loongarch64": "<",
              "ppc64": ">", "ppc": ">", "s390x": ">"}
MODULE_LAYOUT = "module_layout"
# arm64's module PLTs stopped depending on CONFIG_ARM64_MODULE_PLTS in v6.5 (upstream history: 6.12
# read here has no such option, 6.1 has it).
ARM64_PLTS_ALWAYS = (6, 5)
# module_elf_check_arch() came with big-endian ELFv2 kernels in v6.2 (upstream history: 6.1 read
# here has no such hook, 6.12 has it).
MODULE_ELF_CHECK_ARCH_SERIES = (6, 2)
# Stored verdicts carry the version of the rules that made them: bump it whenever a change here
# can change a verdict, its reasons or their wording, and the store recomputes them.
RULES_VERSION = 8
# load_module()'s early checks changed twice (docs/loader-checks.md). v6.4: elf_validity_cache_copy()
# compares sizeof(struct module) and refuses duplicate sections, early_mod_check() looks for a
# loaded module of the same name before the memory layout. v6.13: elf_validity_cache_copy() split
# into elf_validity_cache_*(), checking the sections in another order and their types; stable
# brought that to 6.12.117 (Debian's 6.12.115 has the v6.4 code, booted in tests/test_series_qemu.py).
EARLY_CHECKS_SERIES = (6, 4)
SPLIT_VALIDITY_SERIES = (6, 13)
SPLIT_VALIDITY_STABLE = {(6, 12): 117}  # series -> the stable sublevel that brought it
THIS_MODULE = ".gnu.linkonce.this_module"


@dataclass(frozen=True)
class LoadOptions:
    """How the module is loaded, beyond what the kernel's config says."""

    require_signature: bool = False  # module.sig_enforce=1 / CONFIG_MODULE_SIG_FORCE / lockdown
    # Module path -> its signature verified against the kernel's trusted keys (signing.verify_module);
    # None: no trusted keys given, a well-formed signature is taken as verifying.
    signature_checks: Mapping[str, SignatureCheck] | None = None


# What judging one module of a set gives: its reasons and warnings, and the set modules it resolves
# symbols from, by index in the set, each with its first such symbol and where in the reasons the
# kernel would refuse it should that provider not load (_propagate_failures()).
Judged = tuple[list[Reason], list[Reason], dict[int, tuple[str, int]]]
Mapper = Callable[[Sequence[int], Callable[[int], Judged]], list[Judged]]


def _map_here(indexes: Sequence[int], each: Callable[[int], Judged]) -> list[Judged]:
    return [each(index) for index in indexes]


def check_modules(modules: list[Module], kernel: Kernel, options: LoadOptions = LoadOptions(),
                  map_each: Mapper = _map_here) -> list[Verdict]:
    """Verdicts for `modules` installed together on `kernel`, one per module, in input order.

    Modules of the set resolve each other's symbols (as modprobe would load them, dependencies
    first); a module whose provider fails to load fails too. The set's facts (who exports what,
    which is loaded first, which taints) are gathered first; each module is then judged on its own
    by `map_each(indexes, judge)`, which may share them out between processes (a tree's 4,000
    modules: processes.map_in_processes()); the failures are then carried through the set.
    """
    providers = _Providers(modules, kernel)
    version = kernel_version(kernel)  # once: a regex per module adds up over a tree
    first_of_name: dict[str, int] = {}
    earlier = [first_of_name.setdefault(module.name, index) for index, module in enumerate(modules)]

    def judge(index: int) -> Judged:
        before = earlier[index]
        return _check_one(index, modules, kernel, version, providers, options,
                          modules[before] if before != index else None)

    results = map_each(range(len(modules)), judge)
    _propagate_failures(modules, results)
    return [Verdict(module, tuple(reasons), tuple(warnings))
            for module, (reasons, warnings, _uses) in zip(modules, results)]


# simplify_symbols() resolves a module's imports only once every earlier check of load_module()
# passed; verify_exported_symbols() (complete_formation()) is the only failing check after it.
SIMPLIFY_SYMBOLS_CODES = frozenset({
    ReasonCode.COMMON_SYMBOL, ReasonCode.MISSING_SYMBOL, ReasonCode.GPL_ONLY, ReasonCode.CRC_MISMATCH,
    ReasonCode.NO_SYMBOL_VERSION, ReasonCode.NAMESPACE_NOT_IMPORTED, ReasonCode.DEPENDENCY_FAILS,
})
AFTER_SIMPLIFY_SYMBOLS_CODES = frozenset({ReasonCode.DUPLICATE_EXPORT})


def deciding_symbols(reasons: Iterable[tuple[str, str | None]]) -> set[str]:
    """The symbols that refuse a module, from its reasons as (code, symbol): those simplify_symbols()
    fails on, or none when an earlier check refuses it (load_module() stops at its first failing
    step: a module refused for module_layout or its vermagic never reaches its imports).
    check_modstruct_version()'s "no symbol version for module_layout" is such an earlier check."""
    reasons = list(reasons)
    if any(code not in SIMPLIFY_SYMBOLS_CODES | AFTER_SIMPLIFY_SYMBOLS_CODES or symbol == MODULE_LAYOUT
           for code, symbol in reasons):
        return set()
    return {symbol for code, symbol in reasons if code in SIMPLIFY_SYMBOLS_CODES and symbol}


def is_gpl_compatible(license_name: str | None) -> bool:
    return license_name in GPL_COMPATIBLE_LICENSES


def same_magic(module_magic: str, kernel_magic: str, has_crcs: bool) -> bool:
    """same_magic(), kernel/module/version.c: with CRCs the release (first word) is not compared."""
    if has_crcs:
        module_magic = module_magic[len(module_magic.split(" ", 1)[0]):]
        kernel_magic = kernel_magic[len(kernel_magic.split(" ", 1)[0]):]
    return module_magic == kernel_magic


class _Providers:
    """Symbol -> (its export, the index of the set module that exports it), or the kernel's export
    (vmlinux or an in-tree module). Exports of the set shadow in-tree modules' exports, as depmod ranks
    updates/ and extra/ over kernel/; they cannot shadow vmlinux (see _verify_exported_symbols).

    An overlay of the set's exports on the kernel's, not a merged copy: a kernel has ~25,000
    exports and a set a handful, and a store checks thousands of sets against one kernel. A tree
    looks up ~200,000 imports: callers read the two dicts directly, no object per lookup."""

    def __init__(self, modules: list[Module], kernel: Kernel):
        self.kernel_exports = kernel_exports = kernel.exports
        self.from_set: dict[str, tuple[Export, int]] = {}
        from_set = self.from_set
        for index, module in enumerate(modules):
            for export in module.exports:  # a tree's 14,000: the lookups inlined
                name = export.name
                if name not in from_set and ((known := kernel_exports.get(name)) is None or known.owner != "vmlinux"):
                    from_set[name] = (export, index)
        self.own_proprietary = [is_proprietary(module) for module in modules]
        self.proprietary = self._proprietary(modules)

    def _proprietary(self, modules: list[Module]) -> set[int]:
        """Indexes of the set's modules that carry TAINT_PROPRIETARY_MODULE once loaded: their own, or
        inherited (inherit_taint()) from a set module whose symbols they use, transitively, as
        modprobe loads providers first."""
        tainted = {index for index, own in enumerate(self.own_proprietary) if own}
        changed = bool(tainted)  # nothing to inherit from: skip walking every import (a tree has ~190,000)
        while changed:
            changed = False
            for index, module in enumerate(modules):
                if index not in tainted and any(
                        (p := self.from_set.get(i.name)) is not None and p[1] != index
                        and p[1] in tainted for i in module.imports):
                    tainted.add(index)
                    changed = True
        return tainted

    def get(self, name: str) -> tuple[Export, int | None] | None:
        provider = self.from_set.get(name)
        if provider is not None:
            return provider
        export = self.kernel_exports.get(name)
        return None if export is None else (export, None)


def kernel_version(kernel: Kernel) -> tuple[int, int, int] | None:
    """The kernel's release as numbers ("6.12.107+deb12-amd64" -> (6, 12, 107); Debian's 6.1
    "6.1.0-47-amd64" -> (6, 1, 0): its ABI name, not the stable sublevel), None if unknown."""
    release = kernel.release or (kernel.vermagic.split(" ", 1)[0] if kernel.vermagic else "")
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)) if match else None


def kernel_series(kernel: Kernel) -> tuple[int, int] | None:
    """(major, minor) of the kernel's release ("6.12.107+deb12-amd64" -> (6, 12)), None if unknown."""
    version = kernel_version(kernel)
    return version[:2] if version else None


def _validity_generation(version: tuple[int, int, int] | None) -> int:
    """0: 6.1's elf_validity_check() + setup_load_info(); 1: v6.4's elf_validity_cache_copy();
    2: the split elf_validity_cache_*() (v6.13, 6.12.117)."""
    if version is None or version[:2] < EARLY_CHECKS_SERIES:
        return 0
    series, sublevel = version[:2], version[2]
    if series >= SPLIT_VALIDITY_SERIES or sublevel >= SPLIT_VALIDITY_STABLE.get(series, sublevel + 1):
        return 2
    return 1


def _check_one(index: int, modules: list[Module], kernel: Kernel, version: tuple[int, int, int] | None,
               providers: _Providers, options: LoadOptions, loaded_before: Module | None) -> Judged:
    module = modules[index]
    reasons: list[Reason] = []
    warnings: list[Reason] = []
    uses: dict[int, tuple[str, int]] = {}  # see Judged
    generation = _validity_generation(version)
    early_checks = generation > 0

    # load_module() checks the signature first, before it looks at the ELF image.
    _check_signature(module, kernel, options, reasons, warnings)
    # elf_validity_check() (6.1) / elf_validity_ehdr() (6.4+) read the header in the kernel's byte
    # order, e_type before e_machine: a module of the other byte order (s390x on x86_64, ppc64 on
    # ppc64le) has ET_REL read as 256 and is refused for that, not for its architecture.
    if {BYTE_ORDER.get(module.machine), BYTE_ORDER.get(kernel.machine or "")} == {"<", ">"}:
        reasons.append(Reason(ReasonCode.INVALID_ELF, f"Invalid ELF header type: 256 != 1 (module built for "
                                                      f"{module.machine}, the kernel is {kernel.machine}, "
                                                      "of the other byte order): Exec format error"))
        return reasons, warnings, uses
    # -> elf_check_arch()
    if kernel.machine and module.machine != kernel.machine:
        reasons.append(Reason(ReasonCode.ARCH_MISMATCH, f"module is built for {module.machine}, "
                                                        f"the kernel is {kernel.machine}: Exec format error"))
        return reasons, warnings, uses
    _module_elf_check_arch(module, kernel, version, reasons)
    _check_elf_validity(module, kernel, generation, reasons, warnings)
    modversions = kernel.has_modversions
    force_load = kernel.config_enabled("CONFIG_MODULE_FORCE_LOAD") is True
    # check_version() walks the records in order and decides on the first of a name; a dict keeps
    # the last, so it is filled from the end (map(attrgetter()) runs in C: a tree has ~190,000 records)
    crcs = dict(map(_name_and_crc_of, reversed(module.versions or ())))
    if modversions:
        _check_modstruct_version(module, kernel, crcs, force_load, reasons, warnings)
    _check_modinfo(module, kernel, modversions, force_load, reasons, warnings)
    # early_mod_check() -> module_patient_check_exists() (6.4+) comes before the memory layout,
    # add_unformed_module() (6.1) after it.
    if early_checks:
        _check_not_loaded(module, loaded_before, reasons)
    _check_arch_sections(module, kernel, reasons)
    _check_write_exec_sections(module, kernel, reasons)
    if not early_checks:
        _check_not_loaded(module, loaded_before, reasons)
    _check_taints(module, kernel, warnings)
    _find_module_sections(module, kernel, reasons)
    if modversions:
        _check_export_symbol_versions(module, force_load, reasons, warnings)
    _simplify_symbols(index, modules, kernel, providers, modversions, crcs, reasons, warnings, uses)
    _verify_exported_symbols(index, modules, providers, reasons)
    return reasons, warnings, uses


def _module_elf_check_arch(module: Module, kernel: Kernel, version: tuple[int, int, int] | None, reasons) -> None:
    """elf_validity_ehdr() -> module_elf_check_arch() (v6.2+; arch/powerpc/kernel/module_64.c): the
    ELF ABI level, e_flags & 3, is 2 on an ELFv2 kernel (every little-endian one; big-endian by
    CONFIG_PPC64_ELF_ABI_V2), below 2 on an ELFv1 one."""
    if kernel.machine not in ("ppc64", "ppc64le") or module.layout is None or module.layout.e_flags is None \
            or version is None or version[:2] < MODULE_ELF_CHECK_ARCH_SERIES:
        return
    v2 = True if kernel.machine == "ppc64le" else kernel.config_enabled("CONFIG_PPC64_ELF_ABI_V2")
    if v2 is None:
        return
    abi = module.layout.e_flags & 0x3
    if (abi == 2) != v2:
        reasons.append(Reason(ReasonCode.ARCH_MISMATCH, f"Invalid module architecture in ELF header: 21 (ELF ABI "
                                                        f"v{abi or 1} module, ELFv{2 if v2 else 1} kernel)"))


def _check_elf_validity(module: Module, kernel: Kernel, generation: int, reasons, warnings) -> None:
    """The section checks that a well-formed ELF file can still fail, in each generation's order
    (see _validity_generation()); a malformed file (truncated, bad offsets or names) is refused as
    input before the rules run."""
    layout = module.layout
    if layout is None:
        return
    if generation == 0:
        # setup_load_info(): the symbol table, then this section with find_sec(), which only
        # finds SHF_ALLOC sections
        if layout.symbol_tables == 0:
            reasons.append(Reason(ReasonCode.INVALID_ELF, "module has no symbols (stripped?)"))
        if not layout.this_module_alloc:
            reasons.append(Reason(ReasonCode.INVALID_ELF, "No module found in object"))
        return
    if generation == 2 and not layout.section_names_ok:  # elf_validity_cache_secstrings()
        reasons.append(Reason(ReasonCode.INVALID_ELF, "Invalid ELF section name table type"))
    if layout.modinfo_sections > 1:
        reasons.append(Reason(ReasonCode.INVALID_ELF, "Only one .modinfo section must exist."))
    if generation == 1:
        # v6.4 counts the symbol tables before it looks at this section; it counts only
        # sections with contents, so a SHT_NOBITS one is "not one".
        _check_symbol_table(layout, generation, reasons)
        if layout.this_module_sections != 1 or layout.this_module_nobits:
            reasons.append(Reason(ReasonCode.INVALID_ELF, f"Only one {THIS_MODULE} section must exist."))
            return
    elif layout.this_module_sections != 1:  # elf_validity_cache_index_mod()
        reasons.append(Reason(ReasonCode.INVALID_ELF, f"Exactly one {THIS_MODULE} section must exist."))
    elif layout.this_module_nobits:
        reasons.append(Reason(ReasonCode.INVALID_ELF, f"{THIS_MODULE} section must have a size set"))
    if layout.this_module_sections == 1 and not layout.this_module_nobits:
        if not layout.this_module_alloc:
            reasons.append(Reason(ReasonCode.INVALID_ELF, f"{THIS_MODULE} must occupy memory during process execution"))
        elif kernel.module_struct_size is None:
            warnings.append(Reason(ReasonCode.MODULE_STRUCT_UNKNOWN,
                                   "the size of the kernel's struct module is unknown "
                                   "(give its module tree, image package or vmlinuz): "
                                   f"{THIS_MODULE} not compared"))
        elif layout.this_module_size != kernel.module_struct_size:
            reasons.append(Reason(ReasonCode.MODULE_STRUCT_SIZE,
                                  f"{THIS_MODULE} section size must match the kernel's built "
                                  "struct module size at run time (module: "
                                  f"{layout.this_module_size} bytes, kernel: {kernel.module_struct_size})"))
    if generation == 2:  # elf_validity_cache_index_sym(), _index_str()
        _check_symbol_table(layout, generation, reasons)


def _check_symbol_table(layout, generation: int, reasons) -> None:
    if layout.symbol_tables != 1:
        reasons.append(Reason(ReasonCode.INVALID_ELF, "module has no symbols (stripped?)"))
    elif generation == 2 and not layout.symbol_strings_ok:
        reasons.append(Reason(ReasonCode.INVALID_ELF, "Invalid ELF symbol string table type"))


def _check_not_loaded(module: Module, loaded_before: Module | None, reasons) -> None:
    """add_unformed_module() / module_patient_check_exists(): a module of the same name is loaded."""
    if loaded_before is not None:
        reasons.append(Reason(ReasonCode.ALREADY_LOADED, f"a module named {module.name} ({loaded_before.path}) is "
                                                         "loaded before it: File exists"))


def _check_write_exec_sections(module: Module, kernel: Kernel, reasons) -> None:
    """layout_and_allocate() -> module_enforce_rwx_sections() (CONFIG_STRICT_MODULE_RWX)."""
    if module.layout is None or kernel.config_enabled("CONFIG_STRICT_MODULE_RWX") is False:
        return
    for section in module.layout.write_exec_sections:
        reasons.append(Reason(ReasonCode.WRITE_EXEC_SECTION, f"section {section} has invalid WRITE|EXEC flags"
                              + _config_unknown(kernel, "CONFIG_STRICT_MODULE_RWX", "on")))


def _check_arch_sections(module: Module, kernel: Kernel, reasons) -> None:
    """layout_and_allocate() -> module_frob_arch_sections(), before module_enforce_rwx_sections().
    arm64 (arch/arm64/kernel/module-plts.c): "%s: module PLT section(s) missing" (ENOEXEC) without
    .plt and .init.plt, which asm/module.lds.h gives every module; 6.1 builds it with
    CONFIG_ARM64_MODULE_PLTS only, 6.12 always. ppc64 (arch/powerpc/kernel/module_64.c):
    "%s: doesn't contain .stubs." (ENOEXEC); asm/module.h puts .stubs in every module."""
    present = None if module.layout is None else module.layout.arch_sections
    if present is None:
        return
    if kernel.machine == "aarch64" and module.machine == "aarch64" and not {".plt", ".init.plt"} <= set(present):
        version = kernel_version(kernel)
        always = version is not None and version[:2] >= ARM64_PLTS_ALWAYS
        if always or kernel.config_enabled("CONFIG_ARM64_MODULE_PLTS") is not False:
            reasons.append(Reason(ReasonCode.ARCH_SECTIONS_MISSING, "module PLT section(s) missing: Exec format error"
                                  + ("" if always else _config_unknown(kernel, "CONFIG_ARM64_MODULE_PLTS", "on"))))
    elif kernel.machine in ("ppc64", "ppc64le") and module.machine == kernel.machine and ".stubs" not in present:
        reasons.append(Reason(ReasonCode.ARCH_SECTIONS_MISSING, "doesn't contain .stubs.: Exec format error"))


def _find_module_sections(module: Module, kernel: Kernel, reasons) -> None:
    """find_module_sections(): with CONFIG_CONSTRUCTORS, .ctors and .init_array both is EINVAL."""
    if module.layout is not None and module.layout.ctors_and_init_array \
            and kernel.config_enabled("CONFIG_CONSTRUCTORS") is not False:
        reasons.append(Reason(ReasonCode.INVALID_ELF, "has both .ctors and .init_array."
                              + _config_unknown(kernel, "CONFIG_CONSTRUCTORS", "on")))


# module_sig_check()'s reason for each error it forgives unless signatures are enforced
_SIG_CHECK_REASONS = {ReasonCode.UNSIGNED: "unsigned module", ReasonCode.UNSUPPORTED_SIGNATURE: "module with "
                      "unsupported crypto", ReasonCode.UNTRUSTED_SIGNATURE: "module with unavailable key"}


def _check_signature(module: Module, kernel: Kernel, options: LoadOptions, reasons, warnings) -> None:
    """module_sig_check(), kernel/module/signing.c. A malformed signature (EBADMSG) is fatal even
    when signatures are not enforced, as is one that a trusted key does not verify (EKEYREJECTED);
    unsigned (ENODATA), ENOPKG and untrusted (ENOKEY) modules only taint unless enforced."""
    signature = module.signature
    check = None if options.signature_checks is None else options.signature_checks.get(module.path)
    if check is not None and check.result not in ("ok", "ENODATA", "ENOPKG", "ENOKEY", "EBADMSG"):
        reasons.append(Reason(ReasonCode.BAD_SIGNATURE, f"{check.message}: Key was rejected by service"))
        return
    if signature is not None and signature.defect and signature.defect.startswith("EBADMSG"):
        reasons.append(Reason(ReasonCode.BAD_SIGNATURE, f"module signature is malformed ({signature.defect}): "
                                                        "Bad message"))
        return
    if check is not None and check.result == "EBADMSG":  # malformed past what modinfo reads (a later field)
        reasons.append(Reason(ReasonCode.BAD_SIGNATURE, f"{check.message}: Bad message"))
        return
    if signature is not None and not signature.defect and (check is None or check.result == "ok"):
        return
    enforced = options.require_signature or kernel.config_enabled("CONFIG_MODULE_SIG_FORCE") is True
    # module_sig_check()'s three non-fatal errors, each with the reason it prints
    if check is not None and check.result == "ENOKEY":
        code = ReasonCode.UNTRUSTED_SIGNATURE
    elif signature is None:
        code = ReasonCode.UNSIGNED
    else:  # ENOPKG: a digest or key algorithm the kernel's PKCS#7 parser does not know
        code = ReasonCode.UNSUPPORTED_SIGNATURE
    what = _SIG_CHECK_REASONS[code]
    if enforced:
        reasons.append(Reason(code, f"Loading of {what} is rejected"))
    elif kernel.config_enabled("CONFIG_MODULE_SIG") is not False:
        warnings.append(Reason(code, "module verification failed: signature and/or required key "
                                     "missing - tainting kernel"))


def _try_to_force_load(what: str, force_load: bool, code: ReasonCode, message: str, reasons, warnings) -> None:
    """try_to_force_load(): CONFIG_MODULE_FORCE_LOAD turns some refusals into a taint; the
    kernel prints "<module>: <what>: kernel tainted." """
    if force_load:
        warnings.append(Reason(ReasonCode.TAINT_FORCED, f"{what}: kernel tainted."))
    else:
        reasons.append(Reason(code, message))


def _check_modstruct_version(module: Module, kernel: Kernel, crcs: dict[str, int], force_load: bool,
                             reasons, warnings) -> None:
    """check_modstruct_version() -> check_version(module_layout)."""
    if module.versions is None:
        _try_to_force_load(MODULE_LAYOUT, force_load, ReasonCode.NO_VERSIONS,
                           "module has no __versions section but the kernel has CONFIG_MODVERSIONS: "
                           "Exec format error", reasons, warnings)
        return
    kernel_layout = kernel.exports.get(MODULE_LAYOUT)
    if kernel_layout is None or kernel_layout.crc is None:
        return
    crc = crcs.get(MODULE_LAYOUT)
    if crc is None:
        reasons.append(Reason(ReasonCode.NO_SYMBOL_VERSION, f"no symbol version for {MODULE_LAYOUT}", MODULE_LAYOUT,
                              None, kernel_layout.crc))
    elif crc != kernel_layout.crc:
        reasons.append(Reason(ReasonCode.MODULE_LAYOUT_MISMATCH, f"disagrees about version of symbol {MODULE_LAYOUT}",
                              MODULE_LAYOUT, crc, kernel_layout.crc))


def _check_modinfo(module: Module, kernel: Kernel, modversions: bool, force_load: bool, reasons, warnings) -> None:
    """check_modinfo(): vermagic, then check_modinfo_livepatch()."""
    module_magic = module.vermagic
    if module_magic is None:
        _try_to_force_load("bad vermagic", force_load, ReasonCode.VERMAGIC_MISMATCH,
                           "module has no vermagic: Exec format error", reasons, warnings)
    elif kernel.vermagic is None:
        warnings.append(Reason(ReasonCode.VERMAGIC_UNKNOWN, "the kernel's vermagic is unknown, not compared "
                                                            "(give a module tree, a headers tree or --vermagic)"))
    elif not same_magic(module_magic, kernel.vermagic, modversions and module.versions is not None):
        reasons.append(Reason(ReasonCode.VERMAGIC_MISMATCH,
                              f"version magic '{module_magic}' should be '{kernel.vermagic}'"))
    # check_modinfo_livepatch()
    if module.info("livepatch") is not None and kernel.config_enabled("CONFIG_LIVEPATCH") is not True:
        reasons.append(Reason(ReasonCode.LIVEPATCH_UNSUPPORTED, "module is marked as livepatch module, but livepatch "
                              "support is disabled" + _config_unknown(kernel, "CONFIG_LIVEPATCH", "off")))


def _config_unknown(kernel: Kernel, option: str, taken_as: str) -> str:
    """What a verdict says when it rests on a config option the kernel's files did not give."""
    return "" if kernel.config else f" (the kernel's config is unknown: {option} taken as {taken_as})"


# Modules the kernel taints as proprietary whatever their license says (driverloader "was caught
# wrongly pretending to be under GPL", lve "claims to be GPL but upstream won't provide source").
PROPRIETARY_BY_NAME = frozenset({"driverloader", "lve"})


def is_proprietary(module: Module) -> bool:
    """TAINT_PROPRIETARY_MODULE on the module itself: set before simplify_symbols() looks for
    GPL-only symbols (check_module_license_and_versions() / module_augment_kernel_taints())."""
    return not is_gpl_compatible(module.license) or module.name in PROPRIETARY_BY_NAME


def _check_taints(module: Module, kernel: Kernel, warnings) -> None:
    """The taints check_modinfo() (6.1) / module_augment_kernel_taints() (6.4+) add."""
    keys = {key for key, _value in module.modinfo}  # one pass, not one a key: a tree has 4,000 modules
    if "intree" not in keys:
        warnings.append(Reason(ReasonCode.TAINT_OUT_OF_TREE, "loading out-of-tree module taints kernel."))
    if "retpoline" not in keys and _kernel_has_retpoline(kernel):
        # check_modinfo_retpoline(); the message is only printed while Spectre v2 mitigation is on.
        warnings.append(Reason(ReasonCode.NO_RETPOLINE, "loading module not compiled with retpoline compiler."))
    if "staging" in keys:
        warnings.append(Reason(ReasonCode.TAINT_STAGING, "module is from the staging directory, "
                                                         "the quality is unknown, you have been warned."))
    if "livepatch" in keys:
        warnings.append(Reason(ReasonCode.TAINT_LIVEPATCH, "tainting kernel with TAINT_LIVEPATCH"))
    license_name = module.license
    if not is_gpl_compatible(license_name):
        warnings.append(Reason(ReasonCode.TAINT_PROPRIETARY,
                               f"module license '{license_name or 'unspecified'}' taints kernel."))
    elif module.name in PROPRIETARY_BY_NAME:
        warnings.append(Reason(ReasonCode.TAINT_PROPRIETARY, "module license taints kernel."))
    if "test" in keys:
        warnings.append(Reason(ReasonCode.TAINT_TEST, "loading test module taints kernel."))


def _kernel_has_retpoline(kernel: Kernel) -> bool:
    # CONFIG_RETPOLINE was renamed CONFIG_MITIGATION_RETPOLINE in 6.9.
    return any(kernel.config_enabled(o) for o in ("CONFIG_RETPOLINE", "CONFIG_MITIGATION_RETPOLINE"))


def _check_export_symbol_versions(module: Module, force_load: bool, reasons, warnings) -> None:
    """check_export_symbol_versions(): a module's own exports need CRCs on a modversions kernel."""
    if any(export.crc is None for export in module.exports):
        _try_to_force_load("no versions for exported symbols", force_load, ReasonCode.NO_VERSIONS,
                           "module exports symbols without CRCs: no versions for exported symbols",
                           reasons, warnings)


_name_of, _name_and_crc_of = attrgetter("name"), attrgetter("name", "crc")


def _simplify_symbols(index: int, modules: list[Module], kernel: Kernel, providers: _Providers, modversions: bool,
                      crcs: dict[str, int], reasons, warnings, uses) -> None:
    """simplify_symbols() (kernel/module/main.c) walks the symbol table from index 1; each SHN_UNDEF
    symbol goes through resolve_symbol_wait() -> resolve_symbol() -> find_symbol(), inherit_taint(),
    check_version(), verify_namespace_is_imported(). A failure is printed ("Unknown symbol %s (err %d)",
    after check_version()'s own line) and the walk goes on (the `break` leaves only the switch), so the
    kernel's first complaint is the first failing symbol in table order, whatever its kind: module.imports
    is in that order. SHN_COMMON symbols are reported first here, wherever they sit in the table."""
    module = modules[index]
    proprietary = providers.own_proprietary[index]  # TAINT_PROPRIETARY_MODULE, may be inherited below
    using_gpl_only = False
    if module.layout is not None and module.layout.common_symbols:
        # SHN_COMMON: "Common symbol: <name>" is only pr_debug; the warning names no symbol.
        reasons.append(Reason(ReasonCode.COMMON_SYMBOL, "please compile with -fno-common",
                              module.layout.common_symbols[0]))
    ignored = IGNORED_UNDEFINED.get(module.machine, set())
    allow_missing_ns = kernel.config_enabled("CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS") is True
    imported_namespaces = set(module.imported_namespaces)
    own = set(map(_name_of, module.exports))  # map(attrgetter()) runs in C
    check_crcs = modversions and module.versions is not None
    from_set, from_kernel = providers.from_set.get, providers.kernel_exports.get
    for symbol in module.imports:
        name = symbol.name
        if name in own:
            continue
        # _Providers.get(), inlined: a tree resolves ~200,000 imports
        owner: int | None = None
        found = from_set(name)
        if found is None:
            export = from_kernel(name)
        else:
            export, owner = found
        # find_symbol() with fsa.gplok false skips GPL-only exports: "not found".
        gpl_only = export is not None and export.export_type in GPL_ONLY_EXPORT_TYPES
        if export is None or (gpl_only and proprietary):
            if symbol.weak or name in ignored:
                continue
            if export is not None:  # hidden GPL-only
                declared = module.license or "unspecified"
                reasons.append(Reason(ReasonCode.GPL_ONLY, f"Unknown symbol {name} (err -2): it is exported "
                                                           f"GPL-only and the module's license is '{declared}'",
                                      name, crcs.get(name), export.crc))
            else:
                reasons.append(Reason(ReasonCode.MISSING_SYMBOL, f"Unknown symbol {name} (err -2)", name,
                                      crcs.get(name)))
            continue
        using_gpl_only = using_gpl_only or gpl_only
        # inherit_taint(): symbols of a proprietary module of the set (by its license, or by a
        # taint it inherited) taint their user, and are refused to a module that already uses
        # GPL-only symbols.
        if owner is not None and owner != index and owner in providers.proprietary:
            if using_gpl_only:
                reasons.append(Reason(ReasonCode.GPL_ONLY, f"module using GPL-only symbols uses symbols {name} "
                                                           f"from proprietary module {modules[owner].name}.", name))
                continue
            if not proprietary:
                warnings.append(Reason(ReasonCode.TAINT_PROPRIETARY,
                                       f"module uses symbols {name} from proprietary "
                                       f"module {modules[owner].name}, inheriting taint.", name))
                proprietary = True
        if check_crcs and export.crc is not None:
            # check_version() refuses a missing record, 6.1 and 6.12 alike ("no symbol version
            # for X", then "Unknown symbol X (err -22)", seen in tests/test_kernel_agrees.py).
            module_crc = crcs.get(name)
            if module_crc is None:
                reasons.append(Reason(ReasonCode.NO_SYMBOL_VERSION, f"no symbol version for {name}", name,
                                      None, export.crc))
                continue
            if module_crc != export.crc:
                exporter = f" (exported by {modules[owner].name})" if owner is not None else ""
                reasons.append(Reason(ReasonCode.CRC_MISMATCH,
                                      f"disagrees about version of symbol {name}{exporter}",
                                      name, module_crc, export.crc))
                continue
        # verify_namespace_is_imported()
        if export.namespace and export.namespace not in imported_namespaces:
            message = (f"module uses symbol ({name}) from namespace {export.namespace}, "
                       "but does not import it.")
            target = warnings if allow_missing_ns else reasons
            target.append(Reason(ReasonCode.NAMESPACE_NOT_IMPORTED, message, name))
            if not allow_missing_ns:
                continue
        if owner is not None and owner != index and owner not in uses:
            uses[owner] = (name, len(reasons))


def _verify_exported_symbols(index: int, modules: list[Module], providers: _Providers, reasons) -> None:
    """verify_exported_symbols(): a symbol already exported by vmlinux or another module of the set."""
    for export in modules[index].exports:
        provider = providers.get(export.name)
        if provider is None or provider[1] == index:
            continue
        known, owner_index = provider
        # module_name(NULL) is "kernel"; an in-tree module exports under its name.
        owner = modules[owner_index].name if owner_index is not None else _module_name(known.owner)
        reasons.append(Reason(ReasonCode.DUPLICATE_EXPORT, f"exports duplicate symbol {export.name} (owned by {owner})",
                              export.name, export.crc, known.crc))


def _module_name(owner: str) -> str:
    """Module.symvers names the owner by path ("drivers/media/mc/mc"), the kernel by name."""
    return "kernel" if owner == "vmlinux" else module_name(owner)


def _propagate_failures(modules: list[Module], results: list[Judged]) -> None:
    """A module that resolves symbols from a set module that fails cannot load either: without its
    provider the kernel lacks the symbol. simplify_symbols() walks the symbol table in order and
    reports each failing symbol where it meets it, so the first such symbol's reason goes where
    _simplify_symbols() met it, before a CRC mismatch or missing symbol later in the table, also
    in a module that fails for other reasons."""
    failed = {index for index, (reasons, _w, _u) in enumerate(results) if reasons}
    changed = True
    while changed:
        changed = False
        for index, (_reasons, _warnings, uses) in enumerate(results):
            if index not in failed and any(provider in failed for provider in uses):
                failed.add(index)
                changed = True
    for reasons, _warnings, uses in results:
        # uses holds each provider's first symbol, in symbol table order: the first failing provider's
        # is the first broken symbol, the one the kernel meets first
        broken = next(((provider, symbol, at) for provider, (symbol, at) in uses.items() if provider in failed), None)
        if broken is not None:
            provider, symbol, at = broken
            reasons.insert(at, Reason(ReasonCode.DEPENDENCY_FAILS, f"needs {symbol} from {modules[provider].name}, "
                                                                   f"which does not load", symbol))
