"""Parsers on real kABI files (tests/data/kabi, see PROVENANCE.md) and on edge cases."""

import gzip
import lzma
from pathlib import Path

import pytest
import zstandard

from kabigate.analysis import diff_kernels
from kabigate.errors import InputError
from kabigate.formats.compression import decompress
from kabigate.formats.kconfig import parse_kconfig
from kabigate.formats.stablelist import parse_stablelist
from kabigate.formats.symvers import parse_symvers
from kabigate.inputs.kernels import load_kernel

KABI = Path(__file__).parent / "data" / "kabi"


def read(name: str) -> bytes:
    return (KABI / name).read_bytes()


def test_suse_full_symvers_xz():
    exports = parse_symvers(read("opensuse-42.1-4.1.33-symvers-default.xz"), "suse")
    assert len(exports) == 17587  # SOURCES.md: openSUSE 42.1 4.1.33 symvers-default has 17587 symbols
    printk = exports["printk"]
    assert printk.owner == "vmlinux" and printk.export_type == "EXPORT_SYMBOL" and printk.namespace == ""
    assert not printk.gpl_only


def test_rhel9_module_kabi_trailing_empty_namespace():
    exports = parse_symvers(read("rhel-9.3-Module.kabi_x86_64"), "rhel93")
    assert len(exports) == 554
    assert all(e.namespace == "" and e.export_type.startswith("EXPORT_SYMBOL") for e in exports.values())


def test_rhel6_module_kabi_with_space_separated_lines_gz():
    # Hand-edited lines such as "0x5e95b1cd\tcurrent_umask   vmlinux EXPORT_SYMBOL" occur in it.
    exports = parse_symvers(read("rhel-6.9-Module.kabi_x86_64.gz"), "rhel69")
    assert exports["current_umask"].crc == 0x5E95B1CD
    assert exports["current_umask"].owner == "vmlinux"


def test_symvers_field_orders():
    text = (b"0x00000001\tnew_style\tdrivers/foo\tEXPORT_SYMBOL_GPL\tFOO_NS\n"
            b"0x00000002\tfive_four\tBAR_NS\tdrivers/bar\tEXPORT_SYMBOL\n"
            b"0x00000003\tpre_five_four\tvmlinux\tEXPORT_SYMBOL\n"
            b"0x00000004\tancient\tvmlinux\n")
    exports = parse_symvers(text, "t")
    assert (exports["new_style"].owner, exports["new_style"].namespace, exports["new_style"].gpl_only) == \
        ("drivers/foo", "FOO_NS", True)
    assert (exports["five_four"].owner, exports["five_four"].namespace) == ("drivers/bar", "BAR_NS")
    assert exports["pre_five_four"].namespace == "" and exports["ancient"].export_type == "EXPORT_SYMBOL"


@pytest.mark.parametrize("line, message", [
    (b"zz\tsym\tvmlinux\tEXPORT_SYMBOL\n", "not a symvers line"),
    (b"0xnothex\tsym\tvmlinux\tEXPORT_SYMBOL\n", "bad CRC"),
    (b"0x1ffffffff\tsym\tvmlinux\tEXPORT_SYMBOL\n", "wider than 32 bits"),
    (b"0x00000001\tsym\tvmlinux\tEXPORT_BOGUS_KIND\tNS\textra\n", "unknown export type"),
])
def test_symvers_rejects_bad_lines_with_line_number(line, message):
    with pytest.raises(InputError, match=f"t:2: .*{message}"):
        parse_symvers(b"0x00000001\tok\tvmlinux\tEXPORT_SYMBOL\n" + line, "t")


def test_stablelist_formats():
    whitelist = parse_stablelist(read("rhel-7.7-kabi_whitelist_x86_64"), "w")
    assert whitelist.format == "rhel" and "__alloc_percpu" in whitelist and "[rhel7_x86_64_whitelist]" not in whitelist
    kabi = parse_stablelist(read("rhel-9.2-Module.kabi_x86_64"), "k")
    assert kabi.format == "module-kabi" and len(kabi.symbols) == 835 and set(kabi.crcs) == kabi.symbols
    gki = parse_stablelist(read("android12-5.10-abi_gki_aarch64_core"), "g")  # CRLF line ends, comments
    assert gki.format == "android-gki" and "ieee802154_alloc_hw" in gki
    assert not any(s.startswith("#") or s.endswith("\r") for s in gki.symbols)
    plain = parse_stablelist(b"# mine\nprintk\n\nkmalloc_caches  # inline comment\n", "p")
    assert plain.format == "plain" and plain.symbols == {"printk", "kmalloc_caches"}


@pytest.mark.parametrize("data", [b"", b"# only a comment\n", b"two words\n", b"\x7fELF\x02\x01\x01garbage\n"])
def test_stablelist_rejects_non_lists(data):
    with pytest.raises(InputError):
        parse_stablelist(data, "bad")


def test_rhel_minor_release_drift_matches_independent_count():
    # SOURCES.md (computed independently): RHEL 9.2 -> 9.3: 835 -> 554 symbols,
    # 22 CRC changed, 463 removed, 182 added.
    old = load_kernel([str(KABI / "rhel-9.2-Module.kabi_x86_64")])
    new = load_kernel([str(KABI / "rhel-9.3-Module.kabi_x86_64")])
    diff = diff_kernels(old, new)
    assert (len(diff.crc_changed), len(diff.removed), len(diff.added)) == (22, 463, 182)
    assert diff.breaks_abi


def test_diff_stablelist_violations_are_listed_changes_only():
    old = load_kernel([str(KABI / "opensuse-42.1-4.1.20-11-symvers-default.xz")])
    new = load_kernel([str(KABI / "opensuse-42.1-4.1.33-symvers-default.xz")])
    changed = {c.name for c in diff_kernels(old, new).crc_changed}
    assert changed
    listed = sorted(changed)[:3] + ["printk"]
    stablelist = parse_stablelist("\n".join(listed).encode(), "mine")
    violations = {c.name for c in diff_kernels(old, new, stablelist).stablelist_violations}
    assert violations == set(sorted(changed)[:3])


def test_kconfig():
    config = parse_kconfig('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x \\"y\\""\nCONFIG_D=0x10\n', "c")
    assert config == {"CONFIG_A": "y", "CONFIG_C": 'x "y"', "CONFIG_D": "0x10"}
    with pytest.raises(InputError, match="c:1"):
        parse_kconfig("not a config\n", "c")


@pytest.mark.parametrize("compress", [lzma.compress, gzip.compress, zstandard.ZstdCompressor().compress])
def test_decompression_is_capped_and_detects_truncation(compress):
    payload = b"\0" * 200_000
    packed = compress(payload)
    assert decompress(packed, "x") == payload
    with pytest.raises(InputError, match="decompresses to more than"):
        decompress(packed, "x", limit=100_000)
    with pytest.raises(InputError, match="corrupt"):
        decompress(packed[: len(packed) // 2], "x")
