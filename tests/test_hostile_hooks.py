"""Hostile input to the APT hook (contrib/apt/kabigate-preflight): what DPkg::Pre-Install-Pkgs
writes on its stdin is read by `kabigate preflight --apt` (host/preflight.apt_kernels), never
split on spaces nor made into a pattern; lines that are not .deb files, names with line breaks or
bytes that are not UTF-8, and a huge number of lines. The fuzz target hook_input feeds the same
reader mutated listings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kabigate.errors import InputError
from kabigate.host.preflight import AptKernel, apt_kernels

REPO = Path(__file__).resolve().parent.parent
HOOK = REPO / "contrib" / "apt" / "kabigate-preflight"
ARCHIVES = "/var/cache/apt/archives/"
K612 = "6.12.107+deb12-amd64"
IMAGE_612 = f"{ARCHIVES}linux-image-{K612}-unsigned_6.12.107-1~deb12u1_amd64.deb"
HEADERS_612 = f"{ARCHIVES}linux-headers-{K612}_6.12.107-1~deb12u1_amd64.deb"


def test_protocol_1_pairs_each_image_with_its_own_headers():
    """Releases are compared as strings: '6.12.107+deb12' does not take the headers of
    '6.12.1077deb12' (as `grep -E` read the '+'); folders with spaces, commas and regex
    characters are kept whole; the metapackage, -dbg packages and other lines are not kernels."""
    decoy = f"{ARCHIVES}linux-headers-6.12.1077deb12-amd64_6.12.107-1~deb12u1_amd64.deb"
    spaced = "/srv/local debs, [new] (*)/"
    listing = "\n".join([
        decoy, IMAGE_612, f"{ARCHIVES}linux-image-amd64_6.12.107-1~deb12u1_amd64.deb",
        f"{ARCHIVES}linux-image-{K612}-dbg_6.12.107-1~deb12u1_amd64.deb", HEADERS_612,
        f"{spaced}linux-image-6.1.0-47-amd64_6.1.170-3_amd64.deb",
        f"{spaced}linux-headers-6.1.0-47-amd64_6.1.170-3_amd64.deb",
        "", "not a path", f"{ARCHIVES}linux-image-6.1.0-99-amd64.deb.partial", "/linux-image-/", "\x00\udcff.deb", ""])
    assert apt_kernels(listing) == [
        AptKernel(K612, IMAGE_612, HEADERS_612),
        AptKernel("6.1.0-47-amd64", f"{spaced}linux-image-6.1.0-47-amd64_6.1.170-3_amd64.deb",
                  f"{spaced}linux-headers-6.1.0-47-amd64_6.1.170-3_amd64.deb")]
    assert apt_kernels("") == [] and apt_kernels("\n" * 1000) == []


@pytest.mark.parametrize("version", ["2", "3"])
def test_protocols_2_and_3_name_the_packages(version):
    """VERSION 2/3 (apt.conf(5)): the configuration (which names linux-image- in NeverAutoRemove)
    up to a blank line, then package actions whose last field, the file, may hold spaces."""
    arch = " amd64 same" if version == "3" else ""
    none = " - none" if version == "3" else ""
    spaced = "/srv/my debs/linux-headers-6.12.107+deb12-amd64_1_amd64.deb"
    listing = "\n".join([
        f"VERSION {version}", "APT::NeverAutoRemove::=^linux-image-6\\.1\\.0-47-amd64$",
        f"Dir::Cache::archives={ARCHIVES}", "",
        f"linux-image-{K612}-unsigned -{none} < 6.12.107-1~deb12u1{arch} {IMAGE_612}",
        f"linux-headers-{K612} 6.12.106-1{arch} < 6.12.107-1~deb12u1{arch} {spaced}",
        f"nano 7.2-1{arch} = 7.2-1{arch} **CONFIGURE**",
        f"linux-image-6.1.0-47-amd64 6.1.170-3{arch} = -{none} **REMOVE**",
        "a line of too few fields.deb", ""])
    assert apt_kernels(listing) == [AptKernel(K612, IMAGE_612, spaced)]


def test_a_run_names_each_kernels_build_tree_packages():
    """preflight --apt --build: a kernel's build tree is its headers, the -common (and -common-rt)
    headers of its ABI and the linux-kbuild of its version, found by Debian's names in the run: 6.1's
    kbuild is not 6.12's, nor 6.1.0-47's common 6.1.0-4's."""
    def deb(package: str) -> str:
        return f"{ARCHIVES}{package}_1_all.deb"
    k61 = "6.1.0-47-rt-amd64"
    listing = "\n".join(deb(p) for p in (
        f"linux-image-{K612}-unsigned", f"linux-headers-{K612}", "linux-headers-6.12.107+deb12-common",
        "linux-kbuild-6.1", f"linux-image-{k61}-unsigned", f"linux-headers-{k61}", "linux-headers-6.1.0-47-common",
        "linux-headers-6.1.0-47-common-rt", "linux-headers-6.1.0-4-common", "linux-headers-6.1.0-47-commonplace"))
    k612_kernel, k61_kernel = apt_kernels(listing)
    assert k612_kernel.common == (deb("linux-headers-6.12.107+deb12-common"),) and k612_kernel.kbuild is None
    with pytest.raises(InputError, match=r"the linux-kbuild-\* of 6\.12\.107\+deb12-amd64 not in this run"):
        k612_kernel.build_tree_debs()
    assert k61_kernel.build_tree_debs() == [deb(f"linux-headers-{k61}"), deb("linux-headers-6.1.0-47-common"),
                                            deb("linux-headers-6.1.0-47-common-rt"), deb("linux-kbuild-6.1")]


@pytest.mark.parametrize("listing, message", [
    (f"{IMAGE_612}\n", f"linux-headers-{K612} is not in this run: cannot judge"),
    (f"{IMAGE_612}\n{HEADERS_612.replace('+', '%2b')}\n", f"linux-headers-{K612} is not in this run"),
    ("VERSION 4\n\n", "APT hook protocol 'VERSION 4': kabigate reads versions 1, 2 and 3"),
    ("VERSION 2\nAPT::Architecture=amd64", "the configuration section has no end"),
    (f"/x\nb/linux-image-{K612}\n.deb\n{HEADERS_612}\n", None),  # a name with a line break: not a kernel file
])
def test_listings_that_cannot_be_judged(listing, message):
    if message is None:
        assert apt_kernels(listing) == []
        return
    with pytest.raises(InputError) as raised:
        apt_kernels(listing)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def _hook(stdin: bytes, root: Path, cwd: Path, strict: bool) -> subprocess.CompletedProcess:
    """The hook with this checkout's kabigate, judging the (kernel-less) system `root`."""
    wrapper = cwd / "kabigate"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m kabigate \"$@\" --root {root}\n")
    wrapper.chmod(0o755)
    env = {**os.environ, "KABIGATE": str(wrapper), "KABIGATE_PREFLIGHT_STRICT": "1" if strict else "0"}
    return subprocess.run([str(HOOK)], input=stdin, capture_output=True, env=env, cwd=cwd, check=False)


@pytest.fixture
def root(tmp_path) -> Path:
    (tmp_path / "root" / "lib" / "modules").mkdir(parents=True)
    return tmp_path / "root"


def test_hook_on_a_huge_listing_of_junk(root, tmp_path):
    """200,000 lines that are not .deb files (mentioning /linux-image-, bytes that are not UTF-8,
    NULs, a 1 MiB line): no kernel in the run, so strict mode lets it through, without a word.
    Over 16 MiB is no APT run: it cannot be judged, and strict stops."""
    lines = [b"/var/cache/apt/archives/linux-image-%d/README" % i if i % 3 else b"\xff\xfe junk \x00 %d" % i
             for i in range(200_000)]
    lines.insert(1000, b"x" * (1 << 20))
    result = _hook(b"\n".join(lines) + b"\n", root, tmp_path, strict=True)
    assert result.returncode == 0 and result.stderr == b"", result.stderr[-2000:]

    huge = (b"/var/cache/apt/archives/linux-image-%d.deb\n" % 0) * ((17 << 20) // 43)
    result = _hook(huge, root, tmp_path, strict=True)
    assert result.returncode == 1, result.stderr[-2000:]
    assert b"standard input: more than 16 MiB" in result.stderr and b"stopping before dpkg" in result.stderr
    result = _hook(huge, root, tmp_path, strict=False)
    assert result.returncode == 0 and b"WARNING: cannot judge" in result.stderr


def test_hook_on_names_with_line_breaks_and_bytes(root, tmp_path):
    """A folder whose name holds a line break splits APT's line in two: the kernel's files are not
    found, which strict mode stops on. A name that is not UTF-8 is kept byte for byte: the files
    are found and read (here they are no .deb, an input error naming them)."""
    broken = tmp_path / "a\nb"
    broken.mkdir()
    names = [f"linux-image-{K612}-unsigned_1_amd64.deb", f"linux-headers-{K612}_1_amd64.deb"]
    stdin = b"".join(os.fsencode(broken / name) + b"\n" for name in names)
    result = _hook(stdin, root, tmp_path, strict=True)
    assert result.returncode == 1 and b"b/linux-image-" in result.stderr and b"stopping before dpkg" in result.stderr

    raw = Path(os.fsdecode(os.fsencode(tmp_path) + b"/\xff\xfe debs"))
    raw.mkdir()
    for name in names:
        (raw / name).write_bytes(b"not a deb")
    stdin = b"".join(os.fsencode(raw / name) + b"\n" for name in names)
    result = _hook(stdin, root, tmp_path, strict=True)
    assert result.returncode == 1, result.stderr
    assert b"\\udcff\\udcfe debs/linux-" in result.stderr and b"no such file" not in result.stderr.lower()
