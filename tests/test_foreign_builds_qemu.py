"""Out-of-tree drivers cross-built by kabigate (foreign_drivers; the default corpus: arm64's; Debian's -dkms
packages built by dkms with ARCH and CROSS_COMPILE, tests/support/fetch_testdata.py) insmodded into
booted kernels of their architecture (issue 22): one boot per kernel (TCG), the in-tree modules they
need, the builds for the other ABI of the architecture, then the kernel's own. kabigate's verdict
and first reason, from the image alone, equal the kernel's for every module: the kernel's own
builds load; the other ABI's are refused for module_layout (check_modstruct_version()), whose CRC
moved between the two ABIs of each architecture (arm64 6.1.0-47 and -56, s390x and ppc64el -47 and
-50). The arm64 builds for -56 load on -57 and are refused by -54 for module_layout; the builds edited
to fail one architecture check are refused (or not) as kabigate says.
"""

from __future__ import annotations

import lzma
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.elfedit import renamed, with_elf_abi
from test_foreign_qemu import booted, foreign_entry, module_of

from kabigate.boot.qemu import insmod_in_qemu, kernel_reason
from kabigate.formats.modsig import split_signature
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import read_modules
from kabigate.rules import LoadOptions, check_modules
from kabigate.signing.verify import load_trust, verify_file

pytestmark = [pytest.mark.realdata, pytest.mark.qemu]

# booted kernel -> (`uname -m`, the other ABI of its architecture)
KERNELS = {
    "6.1.0-47-arm64": ("aarch64", "6.1.0-56-arm64"),
    "6.1.0-56-arm64": ("aarch64", "6.1.0-47-arm64"),
    "6.1.0-47-s390x": ("s390x", "6.1.0-50-s390x"),
    "6.1.0-50-s390x": ("s390x", "6.1.0-47-s390x"),
    "6.1.0-47-powerpc64le": ("ppc64le", "6.1.0-50-powerpc64le"),
    "6.1.0-50-powerpc64le": ("ppc64le", "6.1.0-47-powerpc64le"),
}
# The built modules insmodded, in load order: those needing no module outside this list and the
# in-tree modules of FROM_TREE (lime's init wants a path=, acpi_call ACPI tables; gost-test is a self-test).
MODULES = {
    "vpoll": ("vpoll.ko",),
    "gost-crypto": ("gost28147_generic.ko", "magma_generic.ko", "gosthash94_generic.ko", "kuznyechik_generic.ko",
                    "streebog_generic.ko"),
    "v4l2loopback": ("v4l2loopback.ko",),
}
# Built module -> the in-tree modules it needs, in load order (the corpus keeps FOREIGN_MODULE_DIRS).
FROM_TREE = {"v4l2loopback.ko": ("kernel/drivers/media/mc/mc.ko", "kernel/drivers/media/v4l2-core/videodev.ko")}


def built(testdata, kver: str, insmodded: set[str]) -> list[Path]:
    builds = testdata.manifest.get("foreign_drivers", {})
    if any(kver not in builds.get(driver, {}) for driver in MODULES):
        pytest.skip(f"no cross-built drivers for {kver} in {testdata.root} (scripts/fetch-testdata --corpus full)")
    return [testdata.root / builds[driver][kver]["dir"] / name for driver, names in MODULES.items() for name in names
            if name in insmodded]


def in_tree(testdata, kver: str) -> tuple[list[Path], set[str]]:
    """The in-tree modules to insmod first, and the built modules insmodded: those whose in-tree
    modules the corpus holds with their own dependencies (s390x's videodev needs i2c-core: not kept)."""
    needed, insmodded = [], {n for names in MODULES.values() for n in names}
    for name, relatives in FROM_TREE.items():
        paths = [module_of(testdata, kver, r) for r in relatives]
        modules = read_modules([str(p) for p in paths])
        if all(set(m.depends) <= {m.name for m in modules} for m in modules):
            needed += [p for p in paths if p not in needed]
        else:
            insmodded.discard(name)
    return needed, insmodded


@pytest.fixture(params=sorted(KERNELS))
def image(request, testdata, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    machine, other = KERNELS[request.param]
    foreign_entry(testdata, other)
    for path in booted(testdata, tmp_path_factory.mktemp(request.param), request.param, machine):
        yield request.param, path


def first_reasons(kernel, image: Path, paths: list[Path]) -> list:
    """kabigate's first reason for each of `paths` installed together, in order, on the kernel of
    `image` (its own keys verifying signatures)."""
    trust = load_trust([str(image)])
    modules = read_modules([str(p) for p in paths])
    checks = {m.path: verify_file(m.path, trust) for m in modules}
    verdicts = check_modules(modules, kernel, LoadOptions(signature_checks=checks))
    return [(v.reasons[0].code, v.reasons[0].symbol) if v.reasons else None for v in verdicts]


def test_builds_for_one_abi_load_on_it_and_are_refused_by_the_other(testdata, image):
    kver, path = image
    other = KERNELS[kver][1]
    kernel = load_kernel([str(path)])
    prerequisites, insmodded = in_tree(testdata, kver)
    foreign = built(testdata, other, insmodded)
    own = built(testdata, kver, insmodded)
    ours = first_reasons(kernel, path, prerequisites + own)
    # each alone: refused for module_layout before its imports are looked at (its providers refused too)
    ours[len(prerequisites):len(prerequisites)] = [first_reasons(kernel, path, prerequisites + [p])[-1]
                                                   for p in foreign]
    ordered = [*prerequisites, *foreign, *own]
    results = insmod_in_qemu(path, ordered, timeout=1200)
    theirs = [(t.code, t.symbol) if (t := kernel_reason(r)) else None for r in results]
    names = [f"{p.parent.name}/{p.name}" for p in ordered]
    assert list(zip(names, theirs)) == list(zip(names, ours))
    assert theirs == [None] * len(prerequisites) + [("module-layout-mismatch", "module_layout")] * len(foreign) + [
        None] * len(own)
    for result in results[len(prerequisites):len(prerequisites) + len(foreign)]:
        assert any("disagrees about version of symbol module_layout" in m for m in result.kernel_messages), result


def test_builds_edited_to_fail_one_architecture_check(testdata, tmp_path):
    """6.1.0-47's arm64 and ppc64el builds of vpoll (unsigned, little-endian: support.elfedit applies),
    each edit on its own kernel, one boot each: without .plt or .init.plt module_frob_arch_sections()
    refuses it on arm64, without .stubs on ppc64el; ELF ABI v1 in e_flags loads on ppc64el's 6.1
    (module_elf_check_arch() came in 6.2); arm64 reads the big-endian s390x build's e_type as 256
    (elf_validity_check()); and so says kabigate."""
    s390x = built(testdata, "6.1.0-47-s390x", {"vpoll.ko"})
    edits = {  # kernel -> its machine, (section renamed, ELF ABI level) of each edit, the kernel's verdicts
        "6.1.0-47-arm64": ("aarch64", [(".plt", None), (".init.plt", None), (None, None)],
                           [("invalid-elf", None)] + [("arch-sections-missing", None)] * 2 + [None]),
        "6.1.0-47-powerpc64le": ("ppc64le", [(".stubs", None), (None, 1)], [("arch-sections-missing", None), None]),
    }
    for kver, (machine, cases, expected) in edits.items():
        vpoll = built(testdata, kver, {"vpoll.ko"})[0]
        paths = [*s390x] if machine == "aarch64" else []
        for number, (section, abi) in enumerate(cases):
            data = vpoll.read_bytes()
            data = renamed(data, section, ".comment") if section else data
            data = with_elf_abi(data, abi) if abi else data
            paths.append(tmp_path / kver / str(number) / "vpoll.ko")
            paths[-1].parent.mkdir(parents=True)
            paths[-1].write_bytes(data)
        (tmp_path / kver / "image").mkdir()
        for image in booted(testdata, tmp_path / kver / "image", kver, machine):
            kernel = load_kernel([str(image)])
            ours = [(v.reasons[0].code, v.reasons[0].symbol) if v.reasons else None
                    for p in paths for v in check_modules(read_modules([str(p)]), kernel)]
            results = insmod_in_qemu(image, paths, timeout=1200)
            theirs = [(t.code, t.symbol) if (t := kernel_reason(r)) else None for r in results]
            assert theirs == ours == expected, kver
            if machine == "aarch64":
                assert "Invalid ELF header type: 256 != 1" in results[0].kernel_messages


# arm64 ABI -> the kernel's verdict on the builds for 6.1.0-56: -57 kept module_layout and the CRCs
# the builds import; -54 has another module_layout (amd64's did not move from -54 to -56, its CRCs did)
NEIGHBOURS = {"6.1.0-54-arm64": ("module-layout-mismatch", "module_layout"), "6.1.0-57-arm64": None}


@pytest.mark.parametrize("kver", sorted(NEIGHBOURS))
def test_arm64_builds_for_56_on_the_abis_around_it(testdata, kver, tmp_path):
    """One boot each: the builds for 6.1.0-56 installed together, in order, after the in-tree modules."""
    foreign_entry(testdata, kver)
    for image in booted(testdata, tmp_path, kver, "aarch64"):
        prerequisites, insmodded = in_tree(testdata, kver)
        builds = built(testdata, "6.1.0-56-arm64", insmodded)
        ordered = prerequisites + builds
        ours = first_reasons(load_kernel([str(image)]), image, ordered)
        results = insmod_in_qemu(image, ordered, timeout=1200)
        theirs = [(t.code, t.symbol) if (t := kernel_reason(r)) else None for r in results]
        names = [f"{p.parent.name}/{p.name}" for p in ordered]
        assert list(zip(names, theirs)) == list(zip(names, ours))
        assert theirs == [None] * len(prerequisites) + [NEIGHBOURS[kver]] * len(builds)


def test_ppc64el_6_12_refuses_an_elf_abi_v1_module(testdata, tmp_path):
    """module_elf_check_arch() (arch/powerpc/kernel/module_64.c, 6.2+), on booted 6.12.107 ppc64el:
    e_flags' ELF ABI v1 is refused before anything else of the module is looked at (elf_validity_ehdr()),
    its own fat.ko unsigned (module_sig_check() runs first) as the 6.1.0-47 build of vpoll; the two
    unedited show what comes after: fat.ko loads, vpoll's .gnu.linkonce.this_module is 6.1's struct module
    (elf_validity_cache_index_mod()'s size check)."""
    kver = "6.12.107+deb12-powerpc64le"
    fat = module_of(testdata, kver, "kernel/fs/fat/fat.ko")
    unsigned = tmp_path / "fat.ko"
    data = lzma.decompress(fat.read_bytes())
    unsigned.write_bytes(data[:split_signature(data)[0]])
    (vpoll,) = built(testdata, "6.1.0-47-powerpc64le", {"vpoll.ko"})
    cases = []
    for source in (unsigned, vpoll):
        cases.append(tmp_path / "v1" / source.name)
        cases[-1].parent.mkdir(exist_ok=True)
        cases[-1].write_bytes(with_elf_abi(source.read_bytes(), 1))
    cases += [vpoll, unsigned]
    for image in booted(testdata, tmp_path, kver, "ppc64le"):
        kernel = load_kernel([str(image)])
        ours = [first_reasons(kernel, image, [p])[0] for p in cases]
        results = insmod_in_qemu(image, cases, timeout=1200)
        theirs = [(t.code, t.symbol) if (t := kernel_reason(r)) else None for r in results]
        assert theirs == ours == [("arch-mismatch", None)] * 2 + [("module-struct-size", None), None]
        assert all("Invalid module architecture in ELF header: 21" in r.kernel_messages for r in results[:2])
