"""Real modules of other architectures: Debian's 6.1.0-47 arm64, s390x (ELF64 big-endian) and
ppc64el kernels, as scripts/fetch-testdata caches them (config, symvers, ~45 in-tree modules each).

kmod's modprobe/modinfo read foreign-endian modules too (libkmod-elf handles both byte orders),
so they are the reference for what kabigate reads; the kernel's own Module.symvers is the
reference for the CRCs the modules export and import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.elfedit import renamed

from kabigate.formats.module import parse_module, read_module
from kabigate.formats.symvers import parse_symvers
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import read_modules
from kabigate.rules import check_modules

pytestmark = pytest.mark.realdata

AMD64 = "6.1.0-47-amd64"
# release -> (`uname -m`, ELF class and data encoding: e_ident[EI_CLASS], e_ident[EI_DATA],
#             what MODULE_ARCH_VERMAGIC (arch/*/include/asm/module.h) appends to the vermagic)
FOREIGN = {
    "6.1.0-47-arm64": ("aarch64", (2, 1), "aarch64"),
    "6.1.0-47-s390x": ("s390x", (2, 2), ""),
    # CONFIG_MPROFILE_KERNEL and CONFIG_RELOCATABLE (arch/powerpc/include/asm/module.h)
    "6.1.0-47-powerpc64le": ("ppc64le", (2, 1), "mprofile-kernel relocatable "),
}
ARM64 = "6.1.0-47-arm64"


def entry(testdata, release: str) -> dict:
    foreign = testdata.manifest.get("foreign_kernels", {})
    if release not in foreign:
        pytest.skip(f"foreign kernel {release} not in {testdata.root} (run scripts/fetch-testdata)")
    return foreign[release]


def path_of(testdata, release: str, key: str) -> Path:
    return testdata.root / entry(testdata, release)[key]


def module_paths(testdata, release: str) -> list[Path]:
    return sorted((path_of(testdata, release, "modules_dir") / "kernel").rglob("*.ko"))


@pytest.fixture(scope="module", params=sorted(FOREIGN))
def release(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def kernel(testdata, release):
    return load_kernel([str(path_of(testdata, release, "root"))])


def modinfo(field: str, path: Path) -> str:
    return subprocess.run(["modinfo", "-F", field, str(path)], check=True, capture_output=True,
                          text=True).stdout.rstrip("\n")


def dump_modversions(path: Path) -> list[tuple[str, int]]:
    """kmod's view of a module's __versions table, in table order."""
    output = subprocess.run(["modprobe", "--dump-modversions", str(path)], check=True,
                            capture_output=True, text=True).stdout
    return [(name, int(crc, 16)) for crc, name in (line.split("\t") for line in output.splitlines())]


def test_the_modules_are_of_the_architecture_the_manifest_says(testdata, release):
    machine, ident, _ = FOREIGN[release]
    assert entry(testdata, release)["arch"] == {"aarch64": "arm64", "s390x": "s390x", "ppc64le": "ppc64el"}[machine]
    paths = module_paths(testdata, release)
    assert len(paths) >= 40
    for path in paths:
        header = path.read_bytes()[:6]
        assert (header[4], header[5]) == ident, path  # s390x: ELFCLASS64, ELFDATA2MSB
        assert read_module(str(path)).machine == machine


def test_kernel_machine_and_vermagic_come_from_in_tree_modules(testdata, release, kernel):
    machine, _, arch_magic = FOREIGN[release]
    assert kernel.release == release
    assert kernel.machine == machine
    assert kernel.vermagic == f"{release} SMP mod_unload modversions {arch_magic}"
    assert {read_module(str(p)).vermagic for p in module_paths(testdata, release)} == {kernel.vermagic}
    assert kernel.exports["module_layout"].crc is not None and kernel.config["CONFIG_MODVERSIONS"] == "y"


def test_headers_alone_give_the_machine_and_the_modules_vermagic(testdata, release, kernel):
    """The vermagic computed from the build config, with MODULE_ARCH_VERMAGIC as each arch's
    asm/vermagic.h makes it ("aarch64"; ppc64 "mprofile-kernel relocatable "; s390 none), is the
    one the in-tree modules carry."""
    headers = load_kernel([str(path_of(testdata, release, "headers_dir"))])
    assert headers.machine == FOREIGN[release][0]
    assert headers.release == release
    assert headers.vermagic == kernel.vermagic == f"{release} SMP mod_unload modversions {FOREIGN[release][2]}"
    assert headers.exports == kernel.exports


def test_in_tree_modules_load_on_their_own_kernel(testdata, release, kernel):
    """Every import's CRC, read from a foreign-endian __versions, matches the kernel's Module.symvers."""
    modules = read_modules([str(path_of(testdata, release, "modules_dir") / "kernel")])
    verdicts = check_modules(modules, kernel)
    assert all(v.loads for v in verdicts), [(v.module.name, v.reasons[:1]) for v in verdicts if not v.loads]
    assert not [w for v in verdicts for w in v.warnings]  # signed, in-tree, not staging
    assert {ns for m in modules for ns in m.imported_namespaces} >= {"USB_STORAGE"}


def test_exported_crcs_and_namespaces_equal_the_kernels_module_symvers(testdata, release):
    """CRCs of a module's own exports are u32s in its __kcrctab (big-endian on s390x)."""
    symvers = parse_symvers(path_of(testdata, release, "symvers").read_bytes(), "Module.symvers")
    exports = [export for path in module_paths(testdata, release) for export in read_module(str(path)).exports]
    assert len(exports) > 500
    for export in exports:
        known = symvers[export.name]
        assert (export.crc, export.export_type, export.namespace) == (known.crc, known.export_type,
                                                                      known.namespace), export.name
    assert {e.namespace for e in exports} >= {"", "USB_STORAGE"}


def test_modversions_and_modinfo_agree_with_kmod(testdata, release):
    for path in module_paths(testdata, release):
        module = read_module(str(path))
        assert [(v.name, v.crc) for v in module.versions] == dump_modversions(path), path
        assert module.name == modinfo("name", path)
        assert module.vermagic == modinfo("vermagic", path)
        assert module.license == modinfo("license", path)
        assert ",".join(module.depends) == modinfo("depends", path)


def test_arm64_module_fails_on_amd64_kernel_for_its_architecture_only(testdata):
    amd64 = load_kernel([str(testdata.kernel_root(AMD64))])
    vfat = read_module(str(path_of(testdata, ARM64, "modules_dir") / "kernel/fs/fat/vfat.ko"))
    [verdict] = check_modules([vfat], amd64)
    assert not verdict.loads
    assert [r.code for r in verdict.reasons] == ["arch-mismatch"]
    assert "aarch64" in verdict.reasons[0].message and "x86_64" in verdict.reasons[0].message
    # The whole set: the kernel refuses each module before looking at its symbols or dependencies.
    modules = read_modules([str(path_of(testdata, ARM64, "modules_dir") / "kernel")])
    assert {tuple(r.code for r in v.reasons) for v in check_modules(modules, amd64)} == {("arch-mismatch",)}


def test_foreign_modules_fail_on_each_others_kernels(testdata):
    """elf_validity_check() reads e_type in the kernel's byte order before elf_check_arch(): a
    module of the other byte order (s390x against the little-endian ones) is an invalid ELF type."""
    kernels = {release: load_kernel([str(path_of(testdata, release, "root"))]) for release in FOREIGN}
    big_endian = {release for release, (_, ident, _) in FOREIGN.items() if ident[1] == 2}
    for module_release in FOREIGN:
        module = read_module(str(path_of(testdata, module_release, "modules_dir") / "kernel/net/key/af_key.ko"))
        for kernel_release, kernel in kernels.items():
            [verdict] = check_modules([module], kernel)
            expected = [] if kernel_release == module_release else ["invalid-elf"] if (
                (module_release in big_endian) != (kernel_release in big_endian)) else ["arch-mismatch"]
            assert [r.code for r in verdict.reasons] == expected, (module_release, kernel_release)
            if expected == ["invalid-elf"]:
                assert verdict.reasons[0].message.startswith("Invalid ELF header type: 256 != 1")


def test_cli_reports_arch_mismatch_with_exit_status_1(testdata):
    vfat = path_of(testdata, ARM64, "modules_dir") / "kernel/fs/fat/vfat.ko"
    kabigate = Path(sys.executable).with_name("kabigate")  # the installed entry point, .venv/bin/kabigate
    result = subprocess.run([str(kabigate), "check", "--json", "-k", str(testdata.kernel_root(AMD64)), str(vfat)],
                            capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["kernel"]["machine"] == "x86_64"
    [module] = report["modules"]
    assert module["name"] == "vfat" and module["verdict"] == "fails"
    assert [r["code"] for r in module["reasons"]] == ["arch-mismatch"]


# module_frob_arch_sections(): the sections each architecture's loader looks for by name
ARCH_SECTIONS = {"6.1.0-47-arm64": (".plt", ".init.plt"), "6.1.0-47-s390x": (),
                 "6.1.0-47-powerpc64le": (".stubs",)}


def test_in_tree_modules_have_the_sections_their_loader_needs(testdata, release, kernel):
    """Every in-tree module carries what module_frob_arch_sections() looks for, and nothing else
    of the set: s390x modules none of them."""
    for path in module_paths(testdata, release):
        layout = read_module(str(path)).layout
        assert layout.arch_sections == ARCH_SECTIONS[release], path
        # module_elf_check_arch() (6.2+): ppc64el modules are ELF ABI v2 (e_flags & 3)
        assert layout.e_flags & 3 == (2 if release == "6.1.0-47-powerpc64le" else 0), path


@pytest.mark.parametrize("release, section, message", [
    ("6.1.0-47-arm64", ".plt", "module PLT section(s) missing: Exec format error"),
    ("6.1.0-47-arm64", ".init.plt", "module PLT section(s) missing: Exec format error"),
    ("6.1.0-47-powerpc64le", ".stubs", "doesn't contain .stubs.: Exec format error"),
])
def test_module_without_a_section_its_loader_needs_is_refused(testdata, release, section, message):
    """A real in-tree module with the section renamed .comment, on its own kernel (arm64 and
    ppc64el are little-endian ELF64: support.elfedit's edits apply)."""
    own = load_kernel([str(path_of(testdata, release, "root"))])
    path = path_of(testdata, release, "modules_dir") / "kernel/net/key/af_key.ko"
    edited = parse_module(renamed(path.read_bytes(), section, ".comment"), f"{path}-{section}")
    [verdict] = check_modules([edited], own)
    assert [(r.code, r.message) for r in verdict.reasons] == [("arch-sections-missing", message)]
