"""Rebuild the fuzz corpus (tests/fuzz/corpus/) from the real test data: small real modules of
Debian's kernels, excerpts of their symvers and config, the kernel's module-signing certificate,
and tiny RPM, deb and yum-repository packages built with rpmbuild, dpkg-deb and createrepo_c
around them. Run it only to refresh the corpus (it is kept in the repository):

    .venv/bin/python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support import packaging as rpm_fixtures
from support.testdata import TestData, testdata_root

from kabigate.formats.bzimage import kernel_image
from kabigate.formats.certlist import system_certificates

RELEASE = "6.1.0-47-amd64"


def main() -> None:
    import json

    root = testdata_root()
    data = TestData(root, json.loads((root / "manifest.json").read_text()))
    corpus = HERE / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    for kind in ("module", "text", "cert", "rpm", "deb", "repo"):
        (corpus / kind).mkdir(parents=True)
    crc7 = data.in_tree(RELEASE, "lib/crc7.ko").read_bytes()
    (corpus / "module" / "crc7.ko").write_bytes(crc7)
    shutil.copy(data.driver_dir("acpi-call", RELEASE) / "acpi_call.ko", corpus / "module" / "acpi_call.ko")
    s390x = root / "foreign-kernels" / "6.1.0-47-s390x" / "lib" / "modules" / "6.1.0-47-s390x"
    shutil.copy(s390x / "kernel" / "net" / "key" / "af_key.ko", corpus / "module" / "af_key-s390x.ko")
    # out-of-tree, cross-built by kabigate build (the full corpus): big-endian, and ppc64's ELF ABI v2
    for flavour, machine in (("s390x", "s390x"), ("powerpc64le", "ppc64le")):
        vpoll = root / data.manifest["foreign_drivers"]["vpoll"][f"6.1.0-47-{flavour}"]["dir"] / "vpoll.ko"
        shutil.copy(vpoll, corpus / "module" / f"vpoll-{machine}.ko")

    symvers = (data.headers(RELEASE) / "Module.symvers").read_bytes().splitlines(keepends=True)
    excerpt = b"".join(symvers[:200])
    (corpus / "text" / "Module.symvers").write_bytes(excerpt)
    config = (data.kernel_root(RELEASE) / "boot" / f"config-{RELEASE}").read_bytes().splitlines(keepends=True)
    (corpus / "text" / "config").write_bytes(b"".join(config[:300]))
    kabi = REPO / "tests" / "data" / "kabi"
    (corpus / "text" / "kabi_whitelist_x86_64").write_bytes(
        b"".join((kabi / "rhel-7.7-kabi_whitelist_x86_64").read_bytes().splitlines(keepends=True)[:120]))
    (corpus / "text" / "Module.kabi_x86_64").write_bytes(
        b"".join((kabi / "rhel-9.3-Module.kabi_x86_64").read_bytes().splitlines(keepends=True)[:80]))
    (corpus / "text" / "abi_gki_aarch64").write_bytes(b"[abi_symbol_list]\n  printk\n  # a comment\n  kfree\n")

    image = kernel_image((data.kernel_root(RELEASE) / "boot" / f"vmlinuz-{RELEASE}").read_bytes(), "vmlinuz")
    [certificate] = system_certificates(image, "vmlinuz")
    (corpus / "cert" / "debian-module-signing.der").write_bytes(certificate)

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        _rpms(work, crc7, excerpt, b"".join(config[:300]), corpus)
        _debs(work, crc7, excerpt, b"".join(config[:300]), corpus)
    print(f"corpus: {sum(p.stat().st_size for p in corpus.rglob('*') if p.is_file())} bytes "
          f"in {sum(1 for p in corpus.rglob('*') if p.is_file())} files")


def _rpms(work: Path, crc7: bytes, symvers: bytes, config: bytes, corpus: Path) -> None:
    kmod = work / "kmod"
    (kmod / "lib" / "modules" / RELEASE / "extra" / "crc7").mkdir(parents=True)
    (kmod / "lib" / "modules" / RELEASE / "extra" / "crc7" / "crc7.ko.xz").write_bytes(
        lzma.compress(crc7, check=lzma.CHECK_CRC32))
    (kmod / "usr" / "share" / "doc" / "kmod-crc7-1.0").mkdir(parents=True)
    (kmod / "usr" / "share" / "doc" / "kmod-crc7-1.0" / "greylist.txt").write_text("Symbols:\n\tcrc7_be\n")
    requires = ["kernel(__fentry__) = 0xbdfb6dbb", "kernel(module_layout) = 0x9060323f"]
    (work / "out").mkdir()
    rpm_fixtures._rpmbuild(work / "out", "kmod-crc7", "1.0", "1.el9", kmod, ["kmod-crc7 = 1.0"], requires,
                           "w2.xzdio")
    core = work / "core"
    modules = core / "lib" / "modules" / RELEASE
    (modules / "kernel" / "lib").mkdir(parents=True)
    (modules / "kernel" / "lib" / "crc7.ko.xz").write_bytes(lzma.compress(crc7, check=lzma.CHECK_CRC32))
    (modules / "symvers.gz").write_bytes(gzip.compress(symvers, mtime=0))
    (modules / "config").write_bytes(config)
    rpm_fixtures._rpmbuild(work / "out", "kernel-core", "6.1.0", "47.el9", core,
                           ["kernel(printk) = 0x12345678"], [], "w9.gzdio")
    for package in (work / "out").glob("*.rpm"):
        shutil.copy(package, corpus / "rpm" / package.name)
    repository = corpus / "repo"
    shutil.copy(next((work / "out").glob("kmod-crc7-*.rpm")), repository)
    subprocess.run(["createrepo_c", "--quiet", "--no-database", "--general-compress-type=gz", "--simple-md-filenames",
                    str(repository)], check=True)
    for extra in (repository / "repodata").iterdir():
        if extra.name not in ("repomd.xml", "primary.xml.gz"):
            extra.unlink()
    for package in repository.glob("*.rpm"):
        package.unlink()  # the package itself is in corpus/rpm; the repository target serves it


def _debs(work: Path, crc7: bytes, symvers: bytes, config: bytes, corpus: Path) -> None:
    for name, compression, files in (
            (f"linux-image-{RELEASE}", "xz", {f"lib/modules/{RELEASE}/kernel/lib/crc7.ko": crc7,
                                               f"boot/config-{RELEASE}": config}),
            (f"linux-headers-{RELEASE}", "gzip", {f"usr/src/linux-headers-{RELEASE}/Module.symvers": symvers,
                                                   f"usr/src/linux-headers-{RELEASE}/.config": config})):
        root = work / name
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text(
            f"Package: {name}\nVersion: 6.1.170-3\nArchitecture: amd64\nMaintainer: kabigate <k@example.org>\n"
            "Description: kabigate fuzz seed\n")
        for path, content in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(content)
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Z" + compression, "-b", str(root),
                        str(corpus / "deb" / f"{name}.deb")], check=True, capture_output=True)


if __name__ == "__main__":
    main()
