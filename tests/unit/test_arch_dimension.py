"""Architecture as a dimension, without the corpus: which releases are one release on several
architectures, which builds are judged on which kernels, and which list of a folder of RHEL's
Module.kabi_<arch> files a kernel gets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kabigate.errors import InputError
from kabigate.inputs.stablelists import architecture_of, read_stablelist
from kabigate.model import release_across_architectures
from kabigate.store.records import same_architecture

KABI = Path(__file__).parent.parent / "data" / "kabi"


@pytest.mark.parametrize(("release", "machine", "across"), [
    ("6.1.0-56-amd64", "x86_64", "6.1.0-56-*"),
    ("6.1.0-56-arm64", "aarch64", "6.1.0-56-*"),
    ("6.1.0-56-cloud-arm64", "aarch64", "6.1.0-56-cloud-*"),
    ("6.1.0-47-powerpc64le", "ppc64le", "6.1.0-47-*"),
    ("6.12.107+deb12-amd64", "x86_64", "6.12.107+deb12-*"),
    ("5.14.0-362.8.1.el9_3.x86_64", "x86_64", "5.14.0-362.8.1.el9_3.*"),
    ("5.14.0-427.el9.aarch64+rt", "aarch64", "5.14.0-427.el9.*+rt"),
    ("6.1.0-56-amd64", None, "6.1.0-56-amd64"),  # architecture unknown: a release of its own
    ("6.1.0-56-amd64", "aarch64", "6.1.0-56-amd64"),  # names another architecture: not this one's
])
def test_one_release_on_every_architecture(release, machine, across):
    assert release_across_architectures(release, machine) == across


def test_a_build_is_judged_on_kernels_of_its_architecture_and_of_unknown_architecture():
    assert same_architecture("x86_64", "x86_64") and same_architecture("aarch64", None)
    assert same_architecture(None, "aarch64")  # a build without modules
    assert not same_architecture("x86_64", "aarch64")


def test_list_names_say_their_architecture():
    assert architecture_of("/x/Module.kabi_aarch64") == "aarch64"
    assert architecture_of("kabi_stablelist_x86_64.xz") == "x86_64"
    assert architecture_of("kabi_whitelist_ppc64le") == "ppc64le"
    assert architecture_of("Module.kabi_dup_x86_64") is None  # RHEL 7's other list
    assert architecture_of("rhel-9.3-Module.kabi_x86_64") is None  # renamed: no longer RHEL's name


def test_a_folder_gives_the_kernels_architectures_list(tmp_path):
    for arch in ("x86_64", "aarch64"):
        shutil.copy(KABI / f"rhel-9.3-Module.kabi_{arch}", tmp_path / f"Module.kabi_{arch}")
    (tmp_path / "Module.kabi_dup_x86_64").write_text("")  # not a stablelist: never picked
    arm = read_stablelist(str(tmp_path), "aarch64")
    assert arm.source == str(tmp_path / "Module.kabi_aarch64") and len(arm.symbols) == 466
    assert read_stablelist(str(tmp_path), "x86_64").source == str(tmp_path / "Module.kabi_x86_64")
    with pytest.raises(InputError, match=r"stablelists for aarch64, x86_64; the kernel's architecture s390x is not"):
        read_stablelist(str(tmp_path), "s390x")
    with pytest.raises(InputError, match=r"the kernel's architecture \(unknown\) is not among them"):
        read_stablelist(str(tmp_path), None)
    with pytest.raises(InputError, match=r"Module.kabi_aarch64: a stablelist of aarch64, not of the kernel's "
                                         r"architecture x86_64$"):
        read_stablelist(str(tmp_path / "Module.kabi_aarch64"), "x86_64")
    assert read_stablelist(str(tmp_path / "Module.kabi_aarch64"), None).source.endswith("Module.kabi_aarch64")


def test_a_folder_without_lists_is_refused_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("printk\n")
    with pytest.raises(InputError, match=r"no Module.kabi_<arch>, kabi_stablelist_<arch> or kabi_whitelist_<arch>"):
        read_stablelist(str(tmp_path), "x86_64")
