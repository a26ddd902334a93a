"""Fuzz targets: every parser, the network-facing entry points and the CLI, each a function of
one input that may end only in kabigate's InputError (one line) or return.

Seeds come from tests/fuzz/corpus (real modules, symvers, config, stablelists, the Debian
module-signing certificate, RPMs, debs and a yum repository built by make_corpus.py); some are
derived here (compressed modules, a vmlinux and a bzImage carrying the certificate list,
tar archives from the debs, HTTP responses).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import lzma
import os
import shutil
import socket
import struct
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import zstandard
from cryptography.hazmat.primitives import serialization
from support.hostile import ar
from support.rawkernel import ARM64_HEADER, raw_kernel

from kabigate.errors import InputError
from kabigate.explain import cache as explain_cache
from kabigate.explain.crc import KernelTypes
from kabigate.formats import der, rpm, stream
from kabigate.formats import module as module_format
from kabigate.formats.btf import parse_btf
from kabigate.formats.buildmanifest import parse_build_manifest
from kabigate.formats.bzimage import kernel_image
from kabigate.formats.certlist import system_certificates
from kabigate.formats.cheaders import HeaderIndex, index_headers
from kabigate.formats.compression import decompress, text_lines
from kabigate.formats.deb import ar_members, read_deb
from kabigate.formats.debindex import parse_packages_index
from kabigate.formats.elf import ElfFile
from kabigate.formats.elrepo import parse_spec_history
from kabigate.formats.gatepolicy import parse_policy, parse_waivers, waiver_from_mapping
from kabigate.formats.initramfs import module_digests
from kabigate.formats.kconfig import parse_kconfig
from kabigate.formats.module import parse_module, read_module
from kabigate.formats.repomd import parse_primary, parse_repomd
from kabigate.formats.stablelist import parse_stablelist
from kabigate.formats.symvers import parse_symvers
from kabigate.formats.tar import iter_tar
from kabigate.formats.vmlinux import image_abi, image_exports
from kabigate.inputs import httpclient, packages
from kabigate.inputs.kernels import load_kernel
from kabigate.model import Export
from kabigate.reports import resultsdb, waiverdb
from kabigate.signing import keys, verify

CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass
class Target:
    name: str
    seeds: Callable[[], list[bytes]]
    run: Callable[[bytes], None]


class Context:
    """Files the targets share, made once per process in a temporary folder."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="kabigate-fuzz-"))
        self.symvers = self.root / "Module.symvers"
        self.symvers.write_bytes((CORPUS / "text" / "Module.symvers").read_bytes())
        self.module = self.root / "acpi_call.ko"
        self.module.write_bytes((CORPUS / "module" / "acpi_call.ko").read_bytes())
        self.signed = self.root / "crc7.ko"
        self.signed.write_bytes((CORPUS / "module" / "crc7.ko").read_bytes())
        key, cert = keys.generate_key(keys.KeygenSpec("ecdsa", curve="p256"))
        self.key = self.root / "mok.key"
        self.key.write_bytes(keys.private_key_pem(key, None))
        self.cert = self.root / "mok.der"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        self.input = self.root / "input"
        self.input.mkdir()

    def write(self, name: str, data: bytes) -> Path:
        shutil.rmtree(self.input)
        self.input.mkdir()
        path = self.input / name
        path.write_bytes(data)
        return path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@cache
def context() -> Context:
    return Context()


# -- seeds -------------------------------------------------------------------------------------

def _files(kind: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((CORPUS / kind).rglob("*")) if p.is_file()]


@cache
def module_seeds() -> list[bytes]:
    raw = _files("module")
    crc7 = (CORPUS / "module" / "crc7.ko").read_bytes()
    return raw + [lzma.compress(crc7, check=lzma.CHECK_CRC32), gzip.compress(crc7, mtime=0),
                  zstandard.ZstdCompressor().compress(crc7)]


@cache
def text_seeds() -> list[bytes]:
    return _files("text") + [gzip.compress((CORPUS / "text" / "Module.symvers").read_bytes(), mtime=0)]


@cache
def certificate_seeds() -> list[bytes]:
    der_bytes = (CORPUS / "cert" / "debian-module-signing.der").read_bytes()
    import base64
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der_bytes) + b"-----END CERTIFICATE-----\n"
    return [der_bytes, pem]


@cache
def image_seeds() -> list[bytes]:
    """A vmlinux carrying the certificate list as certs/system_certificates.S lays it out, and a
    bzImage whose gzip payload is that vmlinux."""
    cert = (CORPUS / "cert" / "debian-module-signing.der").read_bytes()
    body = b"\x7fELF\x02\x01\x01" + bytes(57) + os.urandom(0) + b"\x30\x82\x00\x02\x30\x82" * 8
    body += bytes(-len(body) % 8)
    body += cert + bytes(-len(cert) % 8) + struct.pack("<QQ", len(cert), len(cert)) + bytes(64)
    return [body, _bzimage(gzip.compress(body, mtime=0), len(body))]


def _bzimage(payload: bytes, size: int) -> bytes:
    """A bzImage (boot protocol 2.15) around a compressed payload of `size` bytes decompressed."""
    setup = bytearray(5 * 512)
    setup[0x1F1] = 4
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x20F)
    struct.pack_into("<II", setup, 0x248, 0, len(payload) + 4)
    return bytes(setup) + payload + struct.pack("<I", size)


@cache
def raw_image_seeds() -> list[bytes]:
    """Raw kernels as formats/rawimage.py reads them: an arm64 Image (PREL32 entries) raw, gzip'd
    and in an EFI zboot PE; an s390 image (big-endian pointers from its link base, xz payload)."""
    arm64 = raw_kernel(ARM64_HEADER, "<", prel32=True, base=0)
    s390 = raw_kernel(bytes(64), ">", prel32=False, base=0x100000)
    zboot = bytearray(0x40)
    payload = gzip.compress(arm64, mtime=0)
    zboot[0:8] = b"MZ\0\0zimg"
    struct.pack_into("<II", zboot, 8, 0x40, len(payload))
    zboot[0x18:0x1C] = b"gzip"
    s390_image = bytes(0x10008) + b"S390EP" + bytes(2) + lzma.compress(s390)
    return [arm64, gzip.compress(arm64, mtime=0), bytes(zboot) + payload + struct.pack("<I", len(arm64)), s390_image]


@cache
def tar_seeds() -> list[bytes]:
    out = []
    for deb_data in _files("deb"):
        package = read_deb(deb_data, "seed")
        member = package.data_member
        out.append(b"".join(stream.decompressed_chunks(deb_data[member.offset:member.offset + member.size], "s")))
    return out


@cache
def primary_seeds() -> list[bytes]:
    return [(CORPUS / "repo" / "repodata" / "primary.xml.gz").read_bytes()]


@cache
def repomd_seeds() -> list[bytes]:
    return [(CORPUS / "repo" / "repodata" / "repomd.xml").read_bytes()]


@cache
def package_seeds() -> list[bytes]:
    return _files("rpm") + _files("deb")


@cache
def kernel_package_seeds() -> list[bytes]:
    """package_seeds() and the image .deb seed with the md5sums dpkg-deb would list, one file more
    than its payload holds: a kernel is then read from a deb only as far as its files (the payload
    left undecoded once they are passed), the other listed files taken from the list."""
    image = (CORPUS / "deb" / "linux-image-6.1.0-47-amd64.deb").read_bytes()
    members = {member.name: image[member.offset:member.offset + member.size]
               for member in ar_members(image, "seed")}
    release = "6.1.0-47-amd64"
    listed = [f"boot/config-{release}", f"lib/modules/{release}/kernel/lib/crc7.ko",
              f"lib/modules/{release}/kernel/lib/zz_past_the_payload.ko"]
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:gz") as archive:
        for name, text in (("./control", b"Package: linux-image-6.1.0-47-amd64\nVersion: 6.1.170-3\n"
                                          b"Architecture: amd64\n"),
                           ("./md5sums", b"".join(b"0" * 32 + b"  " + n.encode() + b"\n" for n in listed))):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))
    listing = ar([("debian-binary", b"2.0\n"), ("control.tar.gz", control.getvalue()),
                  ("data.tar.xz", members["data.tar.xz"])])
    return [*package_seeds(), listing]


@cache
def payload_seeds() -> list[bytes]:
    data = (CORPUS / "text" / "Module.symvers").read_bytes() * 20
    blocks = lzma.LZMACompressor(lzma.FORMAT_XZ)
    return [gzip.compress(data, mtime=0), lzma.compress(data), zstandard.ZstdCompressor().compress(data),
            __import__("bz2").compress(data), blocks.compress(data) + blocks.flush(), data]


@cache
def http_seeds() -> list[bytes]:
    body = (CORPUS / "rpm" / "kmod-crc7-1.0-1.el9.x86_64.rpm").read_bytes()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000]) for i in range(0, len(body), 1000))
    return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body,
            b"HTTP/1.0 200 OK\r\n\r\n" + body,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked + b"0\r\n\r\n",
            b"HTTP/1.1 302 Found\r\nLocation: /p.rpm\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"]


@cache
def lz4_image_seeds() -> list[bytes]:
    """bzImages whose payload is the vmlinux seed as `lz4 -l` writes it (CONFIG_KERNEL_LZ4): one
    block; two blocks, the magic again between them (concatenated frames)."""
    import lz4.block

    body = image_seeds()[0]
    magic, half = b"\x02\x21\x4c\x18", len(body) // 2

    def block(data: bytes) -> bytes:
        compressed = lz4.block.compress(data, store_size=False)
        return struct.pack("<I", len(compressed)) + compressed

    return [_bzimage(magic + block(body), len(body)),
            _bzimage(magic + block(body[:half]) + magic + block(body[half:]), len(body))]


@cache
def hook_input_seeds() -> list[bytes]:
    """What APT's DPkg::Pre-Install-Pkgs writes to the apt hook: protocol 1 (a .deb a line),
    2 and 3 (configuration, a blank line, package actions); a kernel's pair, a name with spaces."""
    archives, version = "/var/cache/apt/archives/", "6.12.107-1~deb12u1"
    image, headers = "linux-image-6.12.107+deb12-amd64-unsigned", "linux-headers-6.12.107+deb12-amd64"
    debs = [f"{archives}{image}_{version}_amd64.deb", f"{archives}{headers}_{version}_amd64.deb",
            f"{archives}acpi-call-dkms_1.2.2-2.1_all.deb", "/tmp/a dir, b/linux-image-6.1.0-47-amd64_1_amd64.deb",
            "/tmp/a dir, b/linux-headers-6.1.0-47-amd64_1_amd64.deb"]
    config = "APT::Architecture=amd64\nAPT::NeverAutoRemove::=^linux-image-6\\.1\\.0-47-amd64$\n\n"
    v2 = [f"{image} - < {version} {debs[0]}", f"{headers} - < {version} {debs[1]}", "nano 7.2-1 = 7.2-1 **CONFIGURE**"]
    v3 = [f"{image} - - none < {version} amd64 same {debs[0]}",
          f"{headers} 6.12.106-1 amd64 same < {version} amd64 same {debs[1]}",
          "nano 7.2-1 amd64 foreign = 7.2-1 amd64 foreign **REMOVE**"]
    return ["\n".join(debs).encode() + b"\n", ("VERSION 2\n" + config + "\n".join(v2) + "\n").encode(),
            ("VERSION 3\n" + config + "\n".join(v3) + "\n").encode()]


# A kmod build's hub answers, shaped as Koji's hub gives them (kojihub.py: get_build(), list_rpms(),
# RootExports.getRPMDeps()), for build 3001 of kmod-acpi-call-1.0-1.el9.
KOJI_ANSWERS = {
    "getBuild": {"build_id": 3001, "cg_id": None, "cg_name": None,
                 "completion_time": "2025-06-02 10:11:12.345678+00:00",
                 "completion_ts": 1748859072.345678, "creation_event_id": 104807, "creation_time":
                 "2025-06-02 10:01:02.123456+00:00", "creation_ts": 1748858462.123456, "draft": False, "epoch": None,
                 "extra": {"source": {"original_url": "git+https://gitlab.com/CentOS/kmods/acpi_call.git#v1.0"}},
                 "id": 3001, "name": "kmod-acpi-call", "nvr": "kmod-acpi-call-1.0-1.el9", "owner_id": 3102,
                 "owner_name": "kmods-sig", "package_id": 8811, "package_name": "kmod-acpi-call", "release": "1.el9",
                 "source": "git+https://gitlab.com/CentOS/kmods/acpi_call.git#2f1e0c9", "start_time":
                 "2025-06-02 10:01:02.123456+00:00", "start_ts": 1748858462.123456, "state": 1, "task_id": 6543210,
                 "version": "1.0", "volume_id": 0, "volume_name": "DEFAULT"},
    "listRPMs": [{"arch": "x86_64", "build_id": 3001, "buildroot_id": 55501, "buildtime": 1748859000, "draft": False,
                  "epoch": None, "external_repo_id": 0, "external_repo_name": "INTERNAL", "extra": None, "id": id_,
                  "metadata_only": False, "name": name, "nvr": f"{name}-1.0-1.el9", "payloadhash":
                  "6f1ed002ab5595859014ebf0951522d9", "release": "1.el9", "size": size, "version": "1.0"}
                 for id_, name, size in ((9001, "kmod-acpi-call", 23456), (9002, "kmod-acpi-call-debuginfo", 61234))],
    "getRPMDeps": [{"name": name, "version": version, "flags": flags, "type": 0} for name, version, flags in (
        ("kernel(acpi_evaluate_object)", "0x6a2c0f33", 8), ("kernel(acpi_get_handle)", "0x9d6fe3c1", 8),
        ("kernel-uname-r", "5.14.0-503.el9.x86_64", 8), ("/usr/bin/sh", "", 0),
        ("rpmlib(PayloadIsZstd)", "5.4.18-1", 16777226))],
}


@cache
def koji_answer_seeds() -> list[bytes]:
    import xmlrpc.client

    answers = [xmlrpc.client.dumps((answer,), methodresponse=True, allow_none=True) for answer in KOJI_ANSWERS.values()]
    answers.append(xmlrpc.client.dumps(xmlrpc.client.Fault(1000, "koji.GenericError: No such build: 3001")))
    answers.append(answers[0].replace("<value><int>3001</int></value>", "", 1))  # a struct member without <value>
    return [answer.encode() for answer in answers]


# -- runs --------------------------------------------------------------------------------------

def run_module(data: bytes) -> None:
    """parse_module() by the C reader (where built) and by the Python path: the same Module or the same error;
    read_module() of the bytes as a file alike (the C reader maps the file itself)."""
    path = str(context().write("fuzz.ko", data))
    fast, fast_file = _module_outcome(data), _module_outcome(path)
    reader, module_format._modfast = module_format._modfast, None
    try:
        pure, pure_file = _module_outcome(data), _module_outcome(path)
    finally:
        module_format._modfast = reader
    assert _compared(fast) == _compared(pure), f"the C reader and the Python path differ: {fast!r} != {pure!r}"
    assert _compared(fast_file) == _compared(pure_file), f"read as a file: {fast_file!r} != {pure_file!r}"
    if isinstance(pure, InputError):
        raise pure
    for export in pure.exports:
        assert isinstance(export.name, str)


def _module_outcome(data: bytes | str):
    """parse_module() of bytes, read_module() of a path."""
    try:
        return parse_module(data, "fuzz.ko") if isinstance(data, bytes) else read_module(data)
    except InputError as error:
        return error


def _compared(outcome):
    return (type(outcome), str(outcome)) if isinstance(outcome, InputError) else outcome


def run_decompress(data: bytes) -> None:
    decompress(data, "fuzz", limit=64 << 20)


def run_symvers(data: bytes) -> None:
    parse_symvers(data, "fuzz.symvers")


def run_stablelist(data: bytes) -> None:
    parse_stablelist(data, "fuzz.stablelist")


def run_gate_policy(data: bytes) -> None:
    parse_policy(data, "fuzz.policy.toml")
    parse_waivers(data, "fuzz.waivers.toml")


BUILD_MANIFEST_SEED = (b'[[build]]\npath = "drivers/jool/6.1.0-47-amd64"\nname = "jool"\nversion = "4.1.9-1"\n\n'
                       b'[[failure]]\nname = "jool"\nversion = "4.1.9-1"\nkernel = "6.12.107+deb12-amd64"\n'
                       b'error = "nl_core.c:42:9: error: implicit declaration"\n')


def run_build_manifest(data: bytes) -> None:
    parse_build_manifest(data, "fuzz.manifest.toml")


def run_build_event(data: bytes) -> None:
    """A build event's body as the listener gets it (fedora-messaging has decoded its JSON)."""
    import json

    from kabigate.workers.config import Settings
    from kabigate.workers.events import event_request

    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return  # fedora-messaging decodes the body: kabigate sees only what json.loads made of it
    settings = Settings(koji_topurl="https://kojipkgs.example.org", koji_streams={"*": "s"})
    for topic in ("org.fedoraproject.prod.buildsys.build.state.change", "kabigate.build.complete"):
        event_request(topic, body, settings)


def run_service_config(data: bytes) -> None:
    from kabigate.workers.config import load_settings

    with tempfile.NamedTemporaryFile(suffix=".toml") as file:
        file.write(data)
        file.flush()
        load_settings(file.name)


def run_packages_index(data: bytes) -> None:
    parse_packages_index(data, "fuzz.Packages")


def run_spec_history(data: bytes) -> None:
    parse_spec_history(data, "fuzz.spec_history.tsv")


def _text_seed(*names: str) -> list[bytes]:
    return [(CORPUS / "text" / name).read_bytes() for name in names]


def run_kconfig(data: bytes) -> None:
    parse_kconfig("\n".join(text_lines(data, "fuzz.config")), "fuzz.config")  # as kernels.py reads configs


def run_signature(data: bytes) -> None:
    """A module's appended signature: split, parsed, and verified against the Debian key."""
    trust = _debian_trust()
    verify.verify_module(data, trust)
    verify.verify_module(data, None)


@cache
def _debian_trust():
    return [verify.trusted_cert(keys.load_certificate(certificate_seeds()[0], "seed"), "seed")]


def run_der(data: bytes) -> None:
    try:
        stack = [der.parse(data)]
        for _ in range(10000):
            if not stack:
                break
            element = stack.pop()
            if element.tag & 0x20:
                stack.extend(element.children())
    except der.DerError:
        pass


def run_certificate(data: bytes) -> None:
    certificate = keys.load_certificate(data, "fuzz.crt")
    verify.trusted_cert(certificate, "fuzz.crt")


def run_kernel_image(data: bytes) -> None:
    system_certificates(kernel_image(data, "fuzz.vmlinuz"), "fuzz.vmlinuz")


def run_image_exports(data: bytes) -> None:
    image_exports(ElfFile(kernel_image(data, "fuzz.vmlinuz"), "fuzz.vmlinuz"))


def run_image_abi(data: bytes) -> None:
    image_abi(data, kernel_image(data, "fuzz.vmlinuz"), "fuzz.vmlinuz")


def _newc(members: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio "newc" archive of (name, mode, data), as initramfs images are made of."""
    out = bytearray()
    for number, (name, mode, data) in enumerate([*members, ("TRAILER!!!", 0, b"")], 1):
        fields = (number, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        out += bytes(-len(out) % 4) + data
        out += bytes(-len(out) % 4)
    return bytes(out)


@cache
def initramfs_seeds() -> list[bytes]:
    """dracut's layout: an uncompressed early archive, then the main one gzip'd (xz, zstd)."""
    early = _newc([("kernel", 0o40755, b""), ("kernel/x86/microcode/GenuineIntel.bin", 0o100644, b"ucode")])
    main = _newc([("usr/lib/modules/6.1.0-47-amd64/extra/acpi_call.ko", 0o100644,
                   (CORPUS / "module" / "acpi_call.ko").read_bytes()),
                  ("etc/modprobe.d/acpi.conf", 0o100644, b"options acpi_call debug=0\n"),
                  ("usr/lib/modules/6.1.0-47-amd64/weak-updates/x.ko", 0o120777, b"../extra/acpi_call.ko")])
    return [early + gzip.compress(main, mtime=0), early + bytes(512) + lzma.compress(main, check=lzma.CHECK_CRC32),
            zstandard.ZstdCompressor().compress(main), main]


def run_initramfs(data: bytes) -> None:
    module_digests(data, "fuzz.initramfs")


_TXN = "0" * 32


def journal_seeds() -> list[bytes]:
    """weak-modules' journal as Transaction.commit() writes it, and one naming a folder outside."""
    good = {"transaction": _TXN, "kernels": ["6.1.0-1"], "depmod": [], "initramfs": ["6.1.0-1"]}
    return [json.dumps(good).encode(), json.dumps({**good, "kernels": ["../../../outside"]}).encode()]


def _tree(top: Path) -> list[tuple[str, bytes | str]]:
    return sorted((str(p), os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir")
                  for p in top.rglob("*"))


def run_journal(data: bytes) -> None:
    """The journal of a run killed after its decision, as the next weak-modules finds it (as root,
    in a root someone else wrote): finished, or set aside with one line; nothing outside changes."""
    from kabigate.host import weakmodules as wm

    top = context().input
    shutil.rmtree(top)
    modules = top / "root" / "lib" / "modules"
    staged = modules / "6.1.0-1" / wm.STAGED
    (staged / "x").mkdir(parents=True)
    (staged / wm.MARKER).write_text(_TXN)
    (staged / "x" / "x.ko").symlink_to("../../../6.1.0-2/extra/x.ko")
    (modules / "6.1.0-2" / "extra").mkdir(parents=True)
    (top / "outside" / wm.STAGED).mkdir(parents=True)  # what `"kernels": ["../../../outside"]` names
    (top / "outside" / wm.STAGED / wm.MARKER).write_text(_TXN)
    (modules / wm.JOURNAL).write_bytes(data)
    before = _tree(top / "outside")
    try:
        with wm.Transaction(wm.Root(str(top / "root"))):
            pass
    finally:
        if _tree(top / "outside") != before:
            raise ContractBroken("recovering from a journal changed a file outside the root")
    if os.path.lexists(modules / wm.JOURNAL):
        raise ContractBroken("the journal outlived the recovery")


def run_btf(data: bytes) -> None:
    """Standalone BTF, then the same bytes as split BTF on it (a module's on vmlinux's)."""
    base = parse_btf(data, "fuzz.btf")
    parse_btf(data, "fuzz.btf (split)", base)


def run_cheaders(data: bytes) -> None:
    """A header including itself and another: the include graph walked, every type's popularity."""
    index = index_headers({"include/linux/a.h": data, "include/linux/b.h": b"#include <linux/a.h>\n" + data})
    for key in list(index.defined_in):
        index.popularity(key)


def cache_entry_seeds() -> list[bytes]:
    """The JSON of a cache entry of each kind (types with a module's, headers, a JSON object)."""
    module = KernelTypes("m", {}, {3: "struct b { }"}, {3: ("struct", "b")}, {3: ()}, {3: ()}, {3: (0, ())}, {}, {})
    types = KernelTypes("r", {"f": Export("f", 7, "vmlinux"), "g": Export("g", None, "m", "EXPORT_SYMBOL_GPL", "N")},
                        {1: "struct a { int x; }"}, {1: ("struct", "a")}, {1: ()}, {1: (("x", "int"),)},
                        {1: (4, (("x", 0),))}, {"f": ("int f(struct a *)", (("return", ()), ("p", (1,))))},
                        {"v": ("int v", ())}, {"m": module})
    headers = HeaderIndex({("struct", "a"): "include/a.h"}, {"include/a.h": {"include/b.h"}})
    entries = [explain_cache.encode_entry(explain_cache.TYPES, types),
               explain_cache.encode_entry(explain_cache.HEADERS, headers),
               explain_cache.encode_entry(explain_cache.JSON_OBJECT, {"s": {"cause": [1, None]}})]
    return [zstandard.ZstdDecompressor().decompress(entry) for entry in entries]


def run_cache_entry(data: bytes) -> None:
    """An explain cache entry someone else wrote, as JSON and as it stands: read as each kind."""
    for raw in (zstandard.ZstdCompressor().compress(data), data):
        for codec in (explain_cache.TYPES, explain_cache.MODULE_TYPES, explain_cache.HEADERS,
                      explain_cache.JSON_OBJECT):
            with contextlib.suppress(InputError):
                explain_cache.decode_entry(codec, raw)


def run_trust(data: bytes) -> None:
    path = context().write("vmlinuz", data)
    verify.load_trust([str(path)])


def run_rpm_header(data: bytes) -> None:
    header = rpm.read_header(data, "fuzz.rpm")
    header.nevra  # noqa: B018
    package = packages.Package("fuzz.rpm", data)
    packages.package_file_names(package)
    packages.kabi_dependencies(package.requires)


def run_package(data: bytes) -> None:
    """Every member of an RPM or deb, read as kabigate reads them."""
    package = packages.Package("fuzz.pkg", data)
    packages.module_count(package)
    for member, read in package.members():
        if member.kind == "file" and member.size < (16 << 20):
            read()


def run_package_modules(data: bytes) -> None:
    packages.modules_of_package(packages.Package("fuzz.pkg", data))


def run_kernel_package(data: bytes) -> None:
    path = context().write("kernel.rpm" if data[:4] == b"\xed\xab\xee\xdb" else "kernel.deb", data)
    load_kernel([str(path)])


def run_tar(data: bytes) -> None:
    reader = stream.ChunkReader(iter([data]))
    for entry, member in iter_tar(reader, "fuzz.tar"):
        if entry.kind == "file" and entry.size < (16 << 20):
            member.read(entry.size)


def run_stream(data: bytes) -> None:
    for _ in stream.decompressed_chunks(data, "fuzz.payload"):
        pass


def run_repomd(data: bytes) -> None:
    parse_repomd(data, "repomd.xml")


def run_primary(data: bytes) -> None:
    parse_primary(data, "primary.xml.gz")


def run_repository(data: bytes) -> None:
    """A repository folder whose repomd.xml or primary.xml.gz is the input (by its magic)."""
    ctx = context()
    shutil.rmtree(ctx.input)
    shutil.copytree(CORPUS / "repo", ctx.input)
    shutil.copy(CORPUS / "rpm" / "kmod-crc7-1.0-1.el9.x86_64.rpm", ctx.input)
    target = "primary.xml.gz" if data[:2] == b"\x1f\x8b" else "repomd.xml"
    (ctx.input / "repodata" / target).write_bytes(data)
    repository = packages.Repository(str(ctx.input))
    for entry in repository.kmod_packages():
        packages.modules_of_package(repository.open(entry))


class _RawServer:
    """A loopback server that answers every connection with the current raw bytes."""

    def __init__(self):
        self.response = b""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            connection, _ = self.listener.accept()
            with connection:
                connection.settimeout(2)
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        connection.recv(65536)
        connection.sendall(self.response)


@cache
def _server() -> _RawServer:
    return _RawServer()


def run_http(data: bytes) -> None:
    server = _server()
    server.response = data
    httpclient.READ_TIMEOUT, httpclient.DEFAULT_DEADLINE = 2, 4.0
    fetched = packages.fetch(f"http://127.0.0.1:{server.port}/p.rpm", "fuzz", 64 << 20)
    packages.Package("http://127.0.0.1/p.rpm", fetched)


def run_hook_input(data: bytes) -> None:
    """`kabigate preflight --apt`'s reading of the hook's stdin: every kernel it pairs is two .deb
    files named in the input, whole."""
    from kabigate.host.preflight import apt_kernels

    listing = os.fsdecode(data)
    for kernel in apt_kernels(listing):
        assert kernel.image.endswith(".deb") and kernel.headers.endswith(".deb")
        assert kernel.image in listing and kernel.headers in listing and "\n" not in kernel.image + kernel.headers


class _KojiHub(_RawServer):
    """A loopback Koji hub answering each XML-RPC call with `answers[its method]` as the body."""

    def __init__(self):
        self.answers: dict[str, bytes] = {}
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/kojihub"

    def _answer(self, connection: socket.socket) -> None:
        request = b""
        while b"</methodCall>" not in request and len(request) < 1 << 16:
            request += connection.recv(65536) or b"</methodCall>"
        method = request.partition(b"<methodName>")[2].partition(b"</methodName>")[0].decode()
        body = self.answers.get(method, b"")
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n"
                           b"Connection: close\r\n\r\n%s" % (len(body), body))


@cache
def _koji_hub() -> _KojiHub:
    return _KojiHub()


def run_koji_answer(data: bytes) -> None:
    """The input as the hub's answer to each of a kmod build's calls in turn (getBuild, listRPMs,
    getRPMDeps; the others answered with KOJI_ANSWERS), read by Hub and checked by kmod_request():
    an InputError each time (which the listener logs and drops, or gives back: HubUnavailable),
    never another exception (which would reach the listener's catch-all)."""
    import xmlrpc.client

    from kabigate.workers import koji
    from kabigate.workers.config import Settings

    hub = _koji_hub()
    koji.HUB_TIMEOUT = 4.0
    settings = Settings(koji_topurl="https://kojipkgs.example.org", koji_hub=hub.url, koji_kmod_packages=(),
                        koji_kmod_requires=True)
    for method in KOJI_ANSWERS:
        hub.answers = {name: xmlrpc.client.dumps((answer,), methodresponse=True, allow_none=True).encode()
                       for name, answer in KOJI_ANSWERS.items()}
        hub.answers[method] = data
        with contextlib.suppress(InputError):
            koji.kmod_request(3001, "primary", "kmod-acpi-call", settings)


def resultsdb_seeds() -> list[bytes]:
    """ResultsDB v2.0's answers: a created result, a page of results, an error; and one nested deep."""
    result = {"id": 42, "outcome": "PASSED", "note": "", "ref_url": None, "submit_time": "2026-11-29T00:00:00.000000",
              "testcase": {"name": "kabigate.kernel-gate.functional", "ref_url": None,
                           "href": "https://resultsdb.example.org/api/v2.0/testcases/kabigate.kernel-gate.functional"},
              "data": {"item": ["kernel-6.1.170-1"], "type": ["koji_build"]}, "groups": [],
              "href": "https://resultsdb.example.org/api/v2.0/results/42"}
    return [json.dumps(result).encode(), json.dumps({"data": [result], "prev": None, "next": None}).encode(),
            json.dumps({"message": {"errors": ["outcome must be one of: PASSED, INFO, FAILED"]}}).encode(),
            b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}"]


def run_resultsdb_answer(data: bytes) -> None:
    """A ResultsDB answer as an error's body, then as the answer to a POST and to a query."""
    resultsdb.error_message(data)
    document = resultsdb.parse_answer(data, "fuzz")
    for read in (resultsdb.created_id, resultsdb.found_id):
        with contextlib.suppress(InputError):
            read(document, "fuzz")


def waiverdb_seeds() -> list[bytes]:
    """WaiverDB 1.4's answers: a page of waivers (one by kabigate, one by hand in the older subject
    form, one revocation), the list a POST created, a validation error; and one nested deep."""
    mine = {"id": 1, "subject_type": "koji_build", "subject_identifier": "kernel-6.1.170-1", "subject": {
                "type": "koji_build", "item": "kernel-6.1.170-1"}, "testcase": "kabigate.kernel-gate.functional",
            "username": "kabigate-bot", "proxied_by": None, "product_version": "debian-12", "waived": True,
            "comment": 'bug 1234 [kabigate driver="jool" symbol="nf_*" kernel="6.1.0-5*" who="w@example.org" '
                       'expires="2027-01-31"]', "scenario": "x86_64.debian-6.1", "timestamp": "2026-12-07T00:00:00"}
    by_hand = {"id": 2, "subject": {"type": "koji_build", "item": "kernel-6.1.170-1"}, "waived": True,
               "testcase": "kabigate.kernel-gate.functional", "username": "jane", "product_version": "debian-12",
               "comment": "known\nbreakage", "scenario": None}
    revoked = dict(by_hand, id=3, waived=False, comment="fixed")
    return [json.dumps({"data": [mine, by_hand, revoked], "prev": None, "next": None}).encode(),
            json.dumps([mine]).encode(),
            json.dumps({"validation_error": [{"loc": ["__root__"], "msg": "Argument testcase is missing",
                                              "type": "value_error"}]}).encode(),
            json.dumps({"validation_error": {"body_params": [{"loc": ["outcome"], "msg": "must be one of: PASSED",
                                                              "type": "value_error"}]}}).encode(),
            b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}"]


def run_waiverdb_answer(data: bytes) -> None:
    """A WaiverDB answer as an error's body, then each waiver of it as a page's or a POST's, and the
    kabigate patterns of its comment."""
    resultsdb.error_message(data)
    document = waiverdb.parse_answer(data, "fuzz", waiverdb.SERVICE)
    entries = document.get("data") if isinstance(document, dict) else document
    for entry in entries if isinstance(entries, list) else []:
        with contextlib.suppress(InputError):
            remote = waiverdb.remote_waiver(entry, "fuzz")
            if (patterns := remote.patterns()) is not None:
                with contextlib.suppress(InputError):
                    waiver_from_mapping({**patterns, "reason": remote.reason}, "fuzz")


# -- the command line --------------------------------------------------------------------------

def cli(args: list[str]) -> tuple[int, str, str]:
    """`kabigate ARGS` in this process: (exit status, stdout, stderr). Any exception other than
    SystemExit escapes (a traceback, the bug the harness looks for)."""
    from kabigate.cli import main

    packages.open_repository.cache_clear()
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["kabigate", *args]
    status = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = argv
    return status, out.getvalue(), err.getvalue()


class ContractBroken(Exception):
    """The CLI answered bad input in another way than one line `kabigate: error: ...` and exit 2."""


def check_cli(args: list[str], watched: Path | None = None) -> None:
    before = watched.read_bytes() if watched is not None and watched.exists() else None
    status, _out, err = cli(args)
    if status not in (0, 1, 2):
        raise ContractBroken(f"exit status {status}: {err[-500:]}")
    if status == 2:
        lines = err.splitlines()
        if len(lines) != 1 or not lines[0].startswith(("kabigate: error: ", "Error: ", "kabigate: aborted")):
            raise ContractBroken(f"exit 2 without a one-line error: {err[-500:]!r}")
        if before is not None and watched.read_bytes() != before:
            raise ContractBroken("a failed run changed its input file")


def _cli_inputs(data: bytes) -> tuple[str, list[list[str]]]:
    """The input's file name and the commands to run on it, by what it looks like."""
    ctx = context()
    symvers, module, signed = str(ctx.symvers), str(ctx.module), str(ctx.signed)
    head = data[:8]
    if head.startswith(b"\xed\xab\xee\xdb"):
        return "p.rpm", [["inspect", "{}"], ["check", "-k", "{}", module], ["precheck", "-k", symvers, "{}"],
                         ["check", "-k", symvers, "--stablelist", "{}", module], ["rpm-deps", "{}"]]
    if head.startswith(b"!<arch>"):
        return "p.deb", [["inspect", "--json", "{}"], ["check", "-k", "{}", module]]
    if head.startswith((b"\x7fELF", b"\x28\xb5")) or head[:2] in (b"\x1f\x8b", b"\xfd7"):
        return "m.ko", [["inspect", "{}"], ["check", "-k", symvers, "{}"], ["check", "--json", "-k", symvers, "{}"],
                        ["verify", "{}"], ["rpm-deps", "{}"], ["verify", "--trust", str(CORPUS / "cert" /
                                                                 "debian-module-signing.der"), "{}"]]
    if head.startswith((b"0\x82", b"-----")):
        return "c.crt", [["verify", "--trust", "{}", signed], ["check", "-k", symvers, "--trust", "{}", signed],
                         ["sign", "--key", str(ctx.key), "--cert", "{}", module + ".copy"]]
    return "t.txt", [["check", "-k", "{}", module], ["diff", "{}", symvers], ["diff", symvers, symvers,
                                                                           "--stablelist", "{}"]]


def run_cli(data: bytes) -> None:
    ctx = context()
    name, commands = _cli_inputs(data)
    path = ctx.write(name, data)
    shutil.copy(ctx.module, str(ctx.module) + ".copy")
    for command in commands:
        check_cli([str(path) if part == "{}" else part for part in command], watched=path)


def run_cli_sign(data: bytes) -> None:
    """`sign` on a folder of a good module and the input as a module: all or nothing."""
    ctx = context()
    folder = ctx.input
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "a.ko").write_bytes(ctx.module.read_bytes())
    (folder / "b.ko").write_bytes(data)
    status, _, err = cli(["sign", "--key", str(ctx.key), "--cert", str(ctx.cert), str(folder)])
    if status == 2:
        if (folder / "a.ko").read_bytes() != ctx.module.read_bytes() or (folder / "b.ko").read_bytes() != data:
            raise ContractBroken("a failed sign changed a module")
        if len(err.splitlines()) != 1:
            raise ContractBroken(f"exit 2 without a one-line error: {err[-500:]!r}")
    if sorted(os.listdir(folder)) != ["a.ko", "b.ko"]:
        raise ContractBroken(f"sign left files behind: {sorted(os.listdir(folder))}")


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("module", module_seeds, run_module),
    Target("decompress", module_seeds, run_decompress),
    Target("signature", lambda: module_seeds()[:1], run_signature),
    Target("der", lambda: certificate_seeds()[:1], run_der),
    Target("certificate", certificate_seeds, run_certificate),
    Target("kernel_image", image_seeds, run_kernel_image),
    Target("trust", image_seeds, run_trust),
    Target("image_exports", image_seeds, run_image_exports),
    Target("btf", lambda: _files("btf"), run_btf),
    Target("cheaders", lambda: _files("cheaders"), run_cheaders),
    Target("cache_entry", cache_entry_seeds, run_cache_entry),
    Target("initramfs", initramfs_seeds, run_initramfs),
    Target("journal", journal_seeds, run_journal),
    Target("symvers", text_seeds, run_symvers),
    Target("stablelist", text_seeds, run_stablelist),
    Target("kconfig", text_seeds, run_kconfig),
    Target("gate_policy", lambda: _text_seed("policy.toml", "waivers.toml"), run_gate_policy),
    Target("build_manifest", lambda: [BUILD_MANIFEST_SEED], run_build_manifest),
    Target("packages_index", lambda: _text_seed("Packages"), run_packages_index),
    Target("build_event", lambda: _text_seed("koji-build-state-change.json", "kabigate-build-complete.json"),
           run_build_event),
    Target("service_config", lambda: _text_seed("kabigate-service.toml"), run_service_config),
    Target("spec_history", lambda: _text_seed("spec_history.tsv"), run_spec_history),
    Target("rpm_header", lambda: _files("rpm"), run_rpm_header),
    Target("package", package_seeds, run_package),
    Target("package_modules", package_seeds, run_package_modules),
    Target("kernel_package", kernel_package_seeds, run_kernel_package),
    Target("tar", tar_seeds, run_tar),
    Target("stream", payload_seeds, run_stream),
    Target("repomd", repomd_seeds, run_repomd),
    Target("primary", primary_seeds, run_primary),
    Target("repository", lambda: repomd_seeds() + primary_seeds(), run_repository),
    Target("http", http_seeds, run_http),
    Target("koji_answer", koji_answer_seeds, run_koji_answer),
    Target("resultsdb_answer", resultsdb_seeds, run_resultsdb_answer),
    Target("waiverdb_answer", waiverdb_seeds, run_waiverdb_answer),
    Target("cli", lambda: module_seeds() + text_seeds() + certificate_seeds() + package_seeds(), run_cli),
    Target("cli_sign", lambda: module_seeds()[:3], run_cli_sign),
    Target("lz4_image", lz4_image_seeds, run_kernel_image),
    Target("raw_image", raw_image_seeds, run_image_abi),
    Target("hook_input", hook_input_seeds, run_hook_input),
]}


def accepted(error: BaseException) -> bool:
    """kabigate's input error, and only as one non-empty line."""
    return isinstance(error, InputError) and bool(str(error)) and "\n" not in str(error)
