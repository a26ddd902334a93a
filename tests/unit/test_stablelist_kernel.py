"""A stablelist is checked against the kernel it is used with: one that lists none of the kernel's
exports (a junk file that parses as a one-symbol list, another product's list) is refused."""

from __future__ import annotations

import pytest

from kabigate.errors import InputError
from kabigate.formats.stablelist import parse_stablelist
from kabigate.inputs.stablelists import matching_kernel

EXPORTS = {"kmalloc_caches": object(), "printk": object(), "pci_register_driver": object()}


def test_a_list_sharing_exports_with_the_kernel_is_kept():
    stablelist = parse_stablelist(b"[rhel9_x86_64_stablelist]\n\tprintk\n\tnot_in_this_kernel\n", "kabi_stablelist")
    assert matching_kernel(stablelist, EXPORTS, "6.1.0-56-amd64") is stablelist
    assert matching_kernel(None, EXPORTS, "6.1.0-56-amd64") is None


def test_a_junk_line_is_refused_in_one_line_naming_it():
    junk = parse_stablelist(b"hello\n", "notes.txt")
    with pytest.raises(InputError) as refused:
        matching_kernel(junk, EXPORTS, "6.1.0-56-amd64")
    assert str(refused.value) == ("notes.txt: none of its 1 symbols ('hello') is exported by 6.1.0-56-amd64: "
                                  "not a stablelist of this kernel")
