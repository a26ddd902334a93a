"""BTF and the ABI of a kernel image alone, on the real Debian kernels: exports and CRCs read from
vmlinuz equal Module.symvers; the BTF reader agrees with pahole (dwarves) reading the same .BTF."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kabigate.errors import InputError
from kabigate.formats import btf
from kabigate.formats.bzimage import kernel_image
from kabigate.formats.elf import ElfFile
from kabigate.formats.symvers import parse_symvers
from kabigate.inputs.kernels import load_kernel

pytestmark = pytest.mark.realdata
# The cloud flavour's vmlinuz payload is lz4 (CONFIG_KERNEL_LZ4), the others' xz.
RELEASES = ("6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64", "6.1.0-47-rt-amd64", "6.1.0-47-cloud-amd64")


def vmlinuz(testdata, release):
    return testdata.kernel_root(release) / "boot" / f"vmlinuz-{release}"


@pytest.fixture(scope="module")
def vmlinux(testdata, tmp_path_factory):
    """6.1.0-50's vmlinux, decompressed from its vmlinuz, as a file pahole can read."""
    path = tmp_path_factory.mktemp("vmlinux") / "vmlinux"
    path.write_bytes(kernel_image(vmlinuz(testdata, "6.1.0-50-amd64").read_bytes(), "vmlinuz"))
    return path


@pytest.mark.parametrize("release", RELEASES)
def test_the_image_alone_gives_module_symvers(testdata, tmp_path, release):
    """vmlinuz + the modules of the image package (no headers) = the headers' Module.symvers,
    symbol by symbol: CRC, EXPORT_SYMBOL[_GPL], namespace, owner."""
    symvers = parse_symvers((testdata.headers(release) / "Module.symvers").read_bytes(), "Module.symvers")
    alone = load_kernel([str(vmlinuz(testdata, release))])
    assert alone.release == release
    assert alone.vermagic == load_kernel([str(testdata.kernel_root(release))]).vermagic
    assert alone.exports == {name: e for name, e in symvers.items() if e.owner == "vmlinux"}
    assert any(e.namespace for e in alone.exports.values()) and any(e.gpl_only for e in alone.exports.values())
    # An image package's root without headers: the image and the modules give the whole ABI.
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / vmlinuz(testdata, release).name).symlink_to(vmlinuz(testdata, release))
    (root / "lib" / "modules" / release).mkdir(parents=True)
    (root / "lib" / "modules" / release / "kernel").symlink_to(testdata.modules_dir(release) / "kernel")
    whole = load_kernel([str(root)])
    assert whole.exports == symvers
    assert whole.image == str(root / "boot" / vmlinuz(testdata, release).name)


def test_btf_agrees_with_pahole(vmlinux):
    """Every struct and union size, and the members (name, byte offset) of a few, as pahole reads the BTF."""
    elf = ElfFile(vmlinux.read_bytes(), "vmlinux")
    parsed = btf.parse_btf(elf.section_bytes(elf.section(".BTF")), "vmlinux")
    sizes = subprocess.run(["pahole", "-F", "btf", "--sizes", str(vmlinux)], capture_output=True, text=True,
                           check=True).stdout
    theirs = {}
    for line in sizes.splitlines():
        name, size, _holes = line.split("\t")
        theirs.setdefault(name, set()).add(int(size))
    ours = {}
    for entry in parsed.types:
        if entry.kind in (btf.STRUCT, btf.UNION) and entry.name:  # pahole --sizes lists both
            ours.setdefault(entry.name, set()).add(entry.size)
    assert len(ours) > 5000
    assert ours == theirs
    for name in ("Qdisc", "sk_buff", "module", "task_struct"):
        text = subprocess.run(["pahole", "-F", "btf", "-C", name, str(vmlinux)], capture_output=True,
                              text=True, check=True).stdout
        # Top-level members but bitfields (pahole gives their storage unit's offset):
        # "<type> name; /* offset size */" on one line, at one tab of indentation.
        member_line = r"^\t(?!\t)(?:[^;\n]*?\W)?([A-Za-z_]\w*)(?:\[\d*\])*;\s*/\*\s*(\d+)"
        members = [(m.group(1), int(m.group(2))) for m in re.finditer(member_line, text, re.MULTILINE)]
        [struct_id] = [i for i in parsed.by_name(name) if parsed.types[i].kind == btf.STRUCT]
        named = [(m[0], m[2] // 8) for m in parsed.types[struct_id].items if m[0]]
        assert len(members) > 5 and all(member in named for member in members), name


def test_split_btf_of_a_module_resolves_on_vmlinux(testdata, vmlinux):
    """A module's .BTF continues vmlinux's type ids and strings: its functions' parameters name
    vmlinux's structs."""
    base_elf = ElfFile(vmlinux.read_bytes(), "vmlinux")
    base = btf.parse_btf(base_elf.section_bytes(base_elf.section(".BTF")), "vmlinux")
    path = next(testdata.modules_dir("6.1.0-50-amd64").rglob("e1000e.ko"))
    module = ElfFile(path.read_bytes(), str(path))
    split = btf.parse_btf(module.section_bytes(module.section(".BTF")), str(path), base)
    assert split.first_own_id == len(base.types) and len(split.types) > len(base.types)
    funcs = split.funcs()
    assert "e1000e_get_base_timinca" in funcs and "kmalloc" not in funcs  # its own, not vmlinux's
    proto = split.types[split.types[funcs["e1000e_read_systim"]].type]
    param = split.types[proto.items[0][1]]  # struct e1000_adapter *adapter
    assert param.kind == btf.PTR and split.types[param.type].name == "e1000_adapter"


def test_bad_btf_is_one_input_error():
    good = (Path(__file__).parent / "fuzz" / "corpus" / "btf" / "types.btf").read_bytes()
    assert [t.name for t in btf.parse_btf(good, "seed").types if t.kind == btf.STRUCT] == ["node"]
    for bad in (good[:10], b"\x00" * 40, good[:-30], good[:24] + b"\xff" * (len(good) - 24)):
        with pytest.raises(btf.InputError):
            btf.parse_btf(bad, "bad")


@pytest.mark.parametrize("damage", ["truncated", "corrupt block", "oversized block"])
def test_a_damaged_lz4_image_is_an_input_error(testdata, tmp_path, damage):
    """The cloud flavor's lz4 payload, cut short or with a broken block: one line, exit 2."""
    image = bytearray(vmlinuz(testdata, "6.1.0-47-cloud-amd64").read_bytes())
    start = (image[0x1F1] + 1) * 512 + int.from_bytes(image[0x248:0x24C], "little")
    length = int.from_bytes(image[0x24C:0x250], "little")
    if damage == "truncated":  # cut inside a block, the header saying so
        image = image[:start + length // 2]
        image[0x24C:0x250] = (length // 2).to_bytes(4, "little")
    elif damage == "corrupt block":
        image[start + 8:start + 4096] = bytes(4088)  # zeroes are an lz4 token asking for a far match
    else:
        image[start + 4:start + 8] = (length * 2).to_bytes(4, "little")
    path = tmp_path / "vmlinuz"
    path.write_bytes(image)
    with pytest.raises(InputError):
        load_kernel([str(path)])
    result = subprocess.run([sys.executable, "-m", "kabigate", "check", "-k", str(path), str(path)],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
