"""Packages as input: the real Debian linux-image/linux-headers debs, and real RPMs built with
rpmbuild from real Debian modules in RHEL/ELRepo layouts (tests/support/packaging.py), served as a
createrepo_c repository from a path and over http on loopback. Verdicts from packages must equal
verdicts from the same files unpacked by the distributions' own tools (dpkg-deb, rpm2cpio+cpio)."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from support import packaging as rpm_fixtures

from kabigate.errors import InputError
from kabigate.formats import deb as debfmt
from kabigate.formats import rpm as rpmfmt
from kabigate.formats.stream import decompressed_chunks, xz_blocks
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import read_modules
from kabigate.inputs.packages import Package, PackageTree, modules_of_package, safe_member_path

pytestmark = pytest.mark.realdata
OLD, NEW = "6.1.0-47-amd64", "6.1.0-56-amd64"
DRIVERS = {"acpi-call": OLD, "jool": OLD, "v4l2loopback": NEW}


def kabigate(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kabigate", *map(str, args)], capture_output=True, text=True,
                          check=False, cwd=cwd)


def deb(testdata, prefix: str) -> Path:
    [found] = sorted((testdata.root / "debs").glob(prefix + "_*.deb"))
    return found


def verdicts(result: subprocess.CompletedProcess) -> dict:
    """name -> (verdict, reasons, warnings) of a `check --json` run, paths left out."""
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    return {m["name"]: (m["verdict"], m["reasons"], m["warnings"]) for m in report["modules"]}


@pytest.fixture(scope="session")
def rpms(testdata) -> Path:
    if not rpm_fixtures.available():
        pytest.skip("rpmbuild/createrepo_c missing (apt packages rpm, createrepo-c: scripts/bootstrap)")
    return rpm_fixtures.build_packages(testdata, OLD, DRIVERS)


@pytest.fixture(scope="session")
def unpacked_rpms(rpms, tmp_path_factory) -> Path:
    """kernel-core and kernel-devel unpacked by rpm's own tools into <root>/kernel, the kmods
    into <root>/kmods."""
    root = tmp_path_factory.mktemp("rpmroot")
    for target, packages in (("kernel", [core(rpms), devel(rpms)]), ("kmods", sorted((rpms / "kmods").glob("*.rpm")))):
        (root / target).mkdir()
        for package in packages:
            subprocess.run(f"rpm2cpio '{package}' | cpio -idm --quiet", shell=True, cwd=root / target, check=True)
    return root


def core(rpms: Path) -> Path:
    [found] = (rpms / "kernel").glob("kernel-core-*.rpm")
    return found


def devel(rpms: Path) -> Path:
    [found] = (rpms / "kernel").glob("kernel-devel-*.rpm")
    return found


# -- Debian packages ------------------------------------------------------------------------

def test_debian_image_and_headers_debs_make_the_same_kernel_as_unpacked(testdata):
    from_debs = load_kernel([str(deb(testdata, f"linux-image-{NEW}-unsigned")),
                             str(deb(testdata, f"linux-headers-{NEW}"))])
    unpacked = load_kernel([str(testdata.kernel_root(NEW))])
    assert from_debs.exports == unpacked.exports and len(from_debs.exports) > 20000
    assert (from_debs.release, from_debs.vermagic, from_debs.machine) == \
        (unpacked.release, unpacked.vermagic, unpacked.machine) == \
        (NEW, f"{NEW} SMP preempt mod_unload modversions ", "x86_64")
    assert from_debs.config == unpacked.config


def test_the_image_deb_alone_is_the_whole_abi_its_headers_give(testdata):
    """No headers package: vmlinux's exports from the image's vmlinuz and the in-tree modules' from
    their __ksymtab*, as for an installed tree without headers; equal, export by export (CRC, owner,
    GPL-only, namespace), to Debian's Module.symvers."""
    image = str(deb(testdata, f"linux-image-{NEW}-unsigned"))
    alone = load_kernel([image])
    with_headers = load_kernel([image, str(deb(testdata, f"linux-headers-{NEW}"))])
    assert alone.exports == with_headers.exports and len(alone.exports) > 20000
    assert (alone.release, alone.vermagic, alone.machine, alone.module_struct_size) == \
        (with_headers.release, with_headers.vermagic, with_headers.machine, with_headers.module_struct_size)


def test_a_kernel_is_read_from_the_start_of_its_image_deb(testdata, tmp_path):
    """The image .deb lists its files (md5sums): once the files a kernel is read from are passed (its
    config, its first in-tree module: in the first of the payload's xz blocks), the rest is not
    decompressed. A damaged last block changes nothing for the kernel (reading the whole payload
    refuses it), and the tree still holds every regular file dpkg-deb lists."""
    image, headers = deb(testdata, f"linux-image-{NEW}-unsigned"), str(deb(testdata, f"linux-headers-{NEW}"))
    data = bytearray(image.read_bytes())
    payload = next(m for m in debfmt.ar_members(data, "t") if m.name.startswith("data.tar"))
    blocks = xz_blocks(memoryview(data)[payload.offset:payload.offset + payload.size])
    assert blocks is not None and len(blocks) > 10
    offset, unpadded, _size = blocks[-1]
    data[payload.offset + offset + unpadded // 2] ^= 0xFF
    damaged = tmp_path / image.name
    damaged.write_bytes(data)
    intact, read = load_kernel([str(image), headers]), load_kernel([str(damaged), headers])
    assert (read.exports, read.release, read.vermagic, read.config, read.module_struct_size) == \
        (intact.exports, intact.release, intact.vermagic, intact.config, intact.module_struct_size)
    with pytest.raises(InputError, match="corrupt xz payload"):
        for _member in Package(str(damaged)).members():
            pass
    listing = subprocess.run(["dpkg-deb", "-c", str(image)], capture_output=True, text=True, check=True).stdout
    files = {"/" + line.split()[-1].lstrip("./") for line in listing.splitlines() if line.startswith("-")}
    tree = PackageTree.of([str(damaged)])
    assert {path for path, member in tree.members.items() if member.kind == "file"} == files and len(files) > 4000


def test_check_against_debs_gives_the_verdicts_of_the_unpacked_kernel(testdata):
    debs = ["-k", deb(testdata, f"linux-image-{NEW}-unsigned"), "-k", deb(testdata, f"linux-headers-{NEW}")]
    drivers = [testdata.driver_dir("acpi-call", OLD), testdata.driver_dir("jool", NEW)]
    from_debs = verdicts(kabigate("check", "--json", *debs, *drivers))
    unpacked = verdicts(kabigate("check", "--json", "-k", testdata.kernel_root(NEW), *drivers))
    assert from_debs == unpacked
    assert from_debs["acpi_call"][0] == "fails" and from_debs["jool"][0] == "loads"


def test_modules_of_an_image_deb_equal_the_unpacked_modules(testdata):
    release = "6.1.0-47-cloud-amd64"
    package = Package(str(deb(testdata, f"linux-image-{release}-unsigned")))
    from_deb = {m.path.split(":", 1)[1]: m for m in modules_of_package(package)}
    root = testdata.kernel_root(release)
    unpacked = {"/" + str(Path(m.path).relative_to(root)): m
                for m in read_modules([str(root / "lib" / "modules" / release / "kernel")])}
    assert set(from_deb) == set(unpacked) and len(from_deb) > 1000
    for path, module in from_deb.items():
        other = unpacked[path]
        assert (module.modinfo, module.versions, module.imports, module.signature) == \
            (other.modinfo, other.versions, other.imports, other.signature)
        assert [(e.name, e.crc, e.export_type, e.namespace) for e in module.exports] == \
            [(e.name, e.crc, e.export_type, e.namespace) for e in other.exports]
        assert module.origin.name == f"linux-image-{release}-unsigned" and module.origin.format == "deb"


# -- RPMs -----------------------------------------------------------------------------------

def test_rpm_header_reads_like_rpm(rpms):
    for path in sorted(rpms.rglob("*.rpm")):
        header = rpmfmt.read_header(path.read_bytes(), str(path))
        query = subprocess.run(["rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}", str(path)],
                               capture_output=True, text=True, check=True).stdout
        assert query == " ".join(header.string(t) for t in (rpmfmt.NAME, rpmfmt.VERSION, rpmfmt.RELEASE,
                                                             rpmfmt.ARCH))
        for option, ours in (("--provides", header.provides), ("--requires", header.requires)):
            theirs = subprocess.run(["rpm", "-qp", option, str(path)], capture_output=True, text=True,
                                    check=True).stdout.splitlines()
            assert sorted(theirs) == sorted(str(d) for d in ours)


def test_rpm_payload_lists_what_rpm_lists(rpms):
    """cpio members (xz multi-block, zstd, gzip payloads) equal `rpm -qpl`, symlink targets too."""
    for path in sorted(rpms.rglob("*.rpm")):
        package = Package(str(path))
        members = {m.path: m for m, _ in package.members()}
        listed = subprocess.run(["rpm", "-qpl", str(path)], capture_output=True, text=True, check=True).stdout
        assert {p for p in listed.splitlines()} == {p for p, m in members.items() if m.kind != "dir"}
    package = Package(str(core(rpms)))
    links = {m.path: m.link for m, _ in package.members() if m.kind == "symlink"}
    assert links == {f"/lib/modules/{OLD}/build": f"/usr/src/kernels/{OLD}"}


def test_kernel_from_rpms_equals_the_unpacked_rpms_and_the_debian_tree(rpms, unpacked_rpms, testdata):
    from_rpms = load_kernel([str(core(rpms)), str(devel(rpms))])
    unpacked = load_kernel([str(unpacked_rpms / "kernel")])
    debian = load_kernel([str(testdata.kernel_root(OLD))])
    for kernel in (unpacked, debian):
        assert from_rpms.exports == kernel.exports
        assert (from_rpms.release, from_rpms.vermagic, from_rpms.machine) == \
            (kernel.release, kernel.vermagic, kernel.machine)
    # kernel-core alone: symvers.gz and an in-tree .ko.xz for the vermagic.
    alone = load_kernel([str(core(rpms))])
    assert alone.exports == debian.exports and alone.vermagic == debian.vermagic


def test_kernel_from_provides_when_no_symvers(rpms, testdata, tmp_path):
    """A kernel RPM whose payload lacks symvers: its kernel(sym) = 0x<crc> Provides are the exports."""
    stripped = tmp_path / "kernel-core-nosymvers.rpm"
    data = core(rpms).read_bytes()
    header = rpmfmt.read_header(data, "core")
    kept = [(m, b) for m, read in Package(str(core(rpms))).members()
            if m.kind == "file" and "symvers" not in m.path and "/kernel/fs/" in m.path
            for b in [read()]][:3]
    stripped.write_bytes(data[:header.payload_offset] + lzma.compress(_cpio(kept)))
    kernel = load_kernel([str(stripped)])
    vmlinux = {n: e.crc for n, e in load_kernel([str(testdata.kernel_root(OLD))]).exports.items()
               if e.owner == "vmlinux"}
    assert {n: e.crc for n, e in kernel.exports.items()} == vmlinux
    assert kernel.vermagic == f"{OLD} SMP preempt mod_unload modversions "


def test_check_kmod_rpms_equals_the_unpacked_files(rpms, unpacked_rpms):
    kernel = ["-k", core(rpms), "-k", devel(rpms)]
    from_packages = verdicts(kabigate("check", "--json", *kernel, rpms / "kmods"))
    extracted = sorted(str(p) for p in (unpacked_rpms / "kmods").glob("lib/modules/*/extra"))
    unpacked = verdicts(kabigate("check", "--json", "-k", unpacked_rpms / "kernel", *extracted))
    assert from_packages == unpacked
    assert {n: v[0] for n, v in from_packages.items()} == {
        "acpi_call": "loads", "jool": "loads", "jool_common": "loads", "jool_siit": "loads", "v4l2loopback": "fails"}
    assert from_packages["v4l2loopback"][1][0]["code"] == "module-layout-mismatch"


def test_kernel_modules_rpm_zstd_modules_equal_unpacked(rpms, tmp_path):
    [path] = (rpms / "kernel").glob("kernel-modules-*.rpm")
    subprocess.run(f"rpm2cpio '{path}' | cpio -idm --quiet", shell=True, cwd=tmp_path, check=True)
    unpacked = {"/" + str(Path(m.path).relative_to(tmp_path)): m for m in read_modules([str(tmp_path)])}
    from_rpm = {m.path.split(":", 1)[1]: m for m in read_modules([str(path)])}
    assert set(from_rpm) == set(unpacked) and len(from_rpm) > 50
    assert all(from_rpm[p].versions == unpacked[p].versions and from_rpm[p].compression == "xz" for p in from_rpm)


# -- repositories -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def http_repo(rpms):
    """The kmods repository served by a real http.server on loopback, in a thread."""
    handler = functools.partial(_QuietHandler, directory=str(rpms))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_repository_by_path_and_over_http_gives_the_folders_verdicts(rpms, http_repo):
    kernel = ["-k", core(rpms), "-k", devel(rpms)]
    folder = verdicts(kabigate("check", "--json", *kernel, *sorted((rpms / "kmods").glob("*.rpm"))))
    by_path = verdicts(kabigate("check", "--json", *kernel, rpms / "kmods"))
    over_http = kabigate("check", "--json", *kernel, f"{http_repo}/kmods/")
    assert folder == by_path == verdicts(over_http)
    paths = [m["path"] for m in json.loads(over_http.stdout)["modules"]]
    assert all(p.startswith(f"{http_repo}/kmods/kmod-") for p in paths)
    # A single package by URL, and a kernel package by URL.
    [acpi] = (rpms / "kmods").glob("kmod-acpi-call-*.rpm")
    single = kabigate("check", "--json", "-k", f"{http_repo}/kernel/{core(rpms).name}",
                      f"{http_repo}/kmods/{acpi.name}")
    assert verdicts(single) == {"acpi_call": folder["acpi_call"]}


def test_precheck_from_metadata_agrees_with_the_full_check(rpms, http_repo):
    """kernel(sym) Requires from primary.xml alone decide presence and CRC as `check` does."""
    kernel = ["-k", core(rpms)]
    full = verdicts(kabigate("check", "--json", *kernel, rpms / "kmods"))
    for repo in (rpms / "kmods", f"{http_repo}/kmods"):
        result = kabigate("precheck", "--json", *kernel, repo)
        assert result.returncode == 1, result.stderr
        packages = {p["package"].split("-1.0-")[0]: p for p in json.loads(result.stdout)["packages"]}
        assert {n: p["verdict"] for n, p in packages.items()} == {
            "kmod-acpi-call": "passes", "kmod-jool": "passes", "kmod-v4l2loopback": "fails"}
        crc_reasons = {r["symbol"] for r in full["v4l2loopback"][1]
                       if r["code"] in ("crc-mismatch", "module-layout-mismatch")}
        assert {f["symbol"] for f in packages["kmod-v4l2loopback"]["findings"]} == crc_reasons
    on_files = json.loads(kabigate("precheck", "--json", *kernel, *sorted((rpms / "kmods").glob("*.rpm"))).stdout)
    assert [p["verdict"] for p in on_files["packages"]] == ["passes", "passes", "fails"]


def test_repository_refuses_a_tampered_package(rpms, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(rpms / "kmods", repo)
    [victim] = repo.glob("kmod-acpi-call-*.rpm")
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = kabigate("check", "-k", core(rpms), repo)
    assert result.returncode == 2 and "checksum does not match" in result.stderr
    assert result.stderr.count("\n") == 1


# -- RPM dependencies, stablelists, greylists ---------------------------------------------------

def test_rpm_deps_writes_what_the_kmod_rpm_requires(rpms, testdata):
    for package in sorted((rpms / "kmods").glob("*.rpm")):
        ours = kabigate("rpm-deps", package).stdout.splitlines()
        theirs = subprocess.run(["rpm", "-qp", "--requires", str(package)], capture_output=True, text=True,
                                check=True).stdout.splitlines()
        assert ours == sorted(r for r in theirs if r.startswith("kernel("))
    # jool's modules import from each other: those are not kernel requirements; with a kernel,
    # symbols it does not export become ksym(): none here, every import is the kernel's.
    jool = kabigate("rpm-deps", "--json", "-k", testdata.kernel_root(OLD), testdata.driver_dir("jool", OLD))
    names = [d["name"] for d in json.loads(jool.stdout)["dependencies"]]
    assert names and all(n.startswith("kernel(") for n in names) and "kernel(jool_init)" not in names
    provides = kabigate("rpm-deps", "--provides", testdata.driver_dir("jool", OLD)).stdout.splitlines()
    assert provides and all(line.startswith("ksym(") for line in provides)
    kernel_provides = kabigate("rpm-deps", "--provides", "-k", core(rpms)).stdout.splitlines()
    rpm_provides = subprocess.run(["rpm", "-qp", "--provides", str(core(rpms))], capture_output=True, text=True,
                                  check=True).stdout.splitlines()
    assert {r for r in rpm_provides if r.startswith("kernel(")} <= set(kernel_provides)


def test_stablelist_package_and_greylist(rpms):
    [kabi] = (rpms / "kabi").glob("*.rpm")
    result = kabigate("check", "--json", "--stablelist", kabi, "-k", core(rpms), rpms / "kmods")
    modules = {m["name"]: m for m in json.loads(result.stdout)["modules"]}
    coverage = modules["acpi_call"]["stablelist"]
    assert coverage["source"].endswith("/lib/modules/kabi-rhel93/kabi_stablelist_x86_64")
    assert coverage["on"] and coverage["off"]
    # The package's greylist.txt (made from __versions) names every off-list symbol kabigate finds.
    assert all(m["stablelist"]["greylist_missing"] == [] for m in modules.values())
    plain = kabigate("check", "--json", "--stablelist", rpm_fixtures.KABI_SOURCE, "-k", core(rpms), rpms / "kmods")
    assert {m["name"]: (m["stablelist"]["on"], m["stablelist"]["off"]) for m in json.loads(plain.stdout)["modules"]} \
        == {n: (m["stablelist"]["on"], m["stablelist"]["off"]) for n, m in modules.items()}



def test_the_server_reads_a_stablelist_package_with_the_clis_reader(rpms, tmp_path):
    """kabigate serve --stablelist takes what check --stablelist takes (it once parsed the RPM's
    bytes as a list): this package's lists are for two architectures, and the server has no kernel
    to choose one by, so it says so."""
    from kabigate.web import create_app

    [kabi] = (rpms / "kabi").glob("*.rpm")
    with pytest.raises(InputError, match=r"stablelists for aarch64, x86_64; the kernel's architecture \(unknown\)"):
        create_app(str(tmp_path / "store.db"), stablelist_path=str(kabi))
    assert not (tmp_path / "store.db").exists()


# -- hostile packages ---------------------------------------------------------------------------

def _cpio(entries) -> bytes:
    out = io.BytesIO()
    for index, (member, data) in enumerate([*entries, (None, b"")]):
        name = (("." + member.path) if member is not None else "TRAILER!!!") if not isinstance(member, str) \
            else member
        raw = name.encode() + b"\0"
        mode = 0o100644 if member is not None else 0
        out.write(b"070701" + b"".join(b"%08x" % v for v in (index + 1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0,
                                                               len(raw), 0)))
        out.write(raw + b"\0" * (-(110 + len(raw)) % 4))
        out.write(data + b"\0" * (-len(data) % 4))
    return out.getvalue()


def _with_payload(rpm_path: Path, payload: bytes) -> bytes:
    data = rpm_path.read_bytes()
    return data[:rpmfmt.read_header(data, "x").payload_offset] + payload


def _deb(data_tar: bytes, name: str = "data.tar.xz", md5sums: bytes | None = None) -> bytes:
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:gz") as archive:
        files = [("./control", b"Package: evil\nVersion: 1\nArchitecture: amd64\n")]
        for member, text in files + ([("./md5sums", md5sums)] if md5sums is not None else []):
            info = tarfile.TarInfo(member)
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))
    out = b"!<arch>\n"
    for member, content in (("debian-binary", b"2.0\n"), ("control.tar.gz", control.getvalue()), (name, data_tar)):
        out += f"{member:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n".encode() + content
        out += b"\n" if len(content) % 2 else b""
    return out


def _tar(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hostile(rpms, tmp_path_factory, real_ko) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    [kmod] = (rpms / "kmods").glob("kmod-acpi-call-*.rpm")
    good = kmod.read_bytes()
    cases = {
        "truncated.rpm": good[:len(good) // 2],
        "truncated-header.rpm": good[:400],
        "wrong-magic.rpm": b"\x00" * 200,
        "text.deb": b"hello, not a package\n",
        "traversal.rpm": _with_payload(kmod, lzma.compress(_cpio([("../../../tmp/evil.ko", real_ko)]))),
        "absolute.rpm": _with_payload(kmod, lzma.compress(_cpio([("/etc/evil.ko", real_ko)]))),
        "bad-cpio.rpm": _with_payload(kmod, lzma.compress(b"070799" + b"0" * 200)),
        "bomb.rpm": _with_payload(kmod, lzma.compress(_cpio([("./lib/modules/x/extra/zero.ko", bytes(300 << 20))]),
                                                      preset=0)),
        "wrong-compressor.rpm": _with_payload(kmod, gzip.compress(_cpio([]))),
        "traversal.deb": _deb(lzma.compress(_tar("../../evil.ko", real_ko))),
        "bomb.deb": _deb(lzma.compress(_tar("./zero.ko", bytes(300 << 20)), preset=0)),
        "truncated.deb": _deb(lzma.compress(_tar("./lib/modules/x/a.ko", real_ko))[:-3000]),
        "huge-header.rpm": good[:96] + b"\x8e\xad\xe8\x01\0\0\0\0" + struct.pack(">II", 0xFFFFFFF, 0xFFFFFFF),
    }
    for name, data in cases.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in cases}


@pytest.fixture(scope="module")
def real_ko(testdata) -> bytes:
    return (testdata.driver_dir("acpi-call", OLD) / "acpi_call.ko").read_bytes()


@pytest.mark.parametrize("case", ["truncated.rpm", "truncated-header.rpm", "wrong-magic.rpm", "text.deb",
                                  "traversal.rpm", "absolute.rpm", "bad-cpio.rpm", "bomb.rpm", "wrong-compressor.rpm",
                                  "traversal.deb", "bomb.deb", "truncated.deb", "huge-header.rpm"])
def test_hostile_packages_are_one_line_errors_and_write_nothing(hostile, case, rpms, tmp_path):
    before = set(os.listdir(hostile[case].parent))
    for args in (["inspect", hostile[case]], ["check", "-k", hostile[case], hostile[case]],
                 ["check", "-k", core(rpms), hostile[case]]):
        result = kabigate(*args, cwd=tmp_path)
        assert result.returncode == 2, (case, args, result.stdout[-500:], result.stderr[-2000:])
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("kabigate: error: "), result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert os.listdir(tmp_path) == [] and set(os.listdir(hostile[case].parent)) == before
    assert not Path("/tmp/evil.ko").exists()


@pytest.mark.parametrize("listed, message", [
    ([b"../../etc/passwd"], "climbs out with '..'"),
    ([b"lib/modules/x/" + b"a/" * 3000 + b"f.ko"], "is a path of 6019 bytes (more than PATH_MAX, 4096)"),
    ([b"d%d/" % i + b"a/" * 2000 + b"f" for i in range(40)], "or 64 MiB of their paths"),
])
def test_a_deb_listing_hostile_paths_is_refused_as_a_kernel(tmp_path, real_ko, listed, message):
    """A deb's md5sums names the files a kernel's tree holds beyond where its payload is read: its names
    are checked as members' are, and capped (deep paths make a folder for each parent, named in full)."""
    evil = tmp_path / "evil.deb"
    evil.write_bytes(_deb(lzma.compress(_tar("./lib/modules/x/kernel/a.ko", real_ko)),
                          md5sums=b"".join(b"0" * 32 + b"  " + name + b"\n" for name in listed)))
    with pytest.raises(InputError, match=re.escape(message)):
        load_kernel([str(evil)])


def test_member_paths_are_normalized_or_refused():
    assert safe_member_path("./usr/lib/modules/x.ko", "p") == "/usr/lib/modules/x.ko"
    assert safe_member_path("lib//modules/./x.ko", "p") == "/lib/modules/x.ko"
    for bad in ("/etc/passwd", "../x", "./lib/../../x"):
        with pytest.raises(InputError):
            safe_member_path(bad, "p")


def test_parallel_xz_blocks_decode_like_the_stream(testdata):
    """The block-parallel decoder's output equals liblzma's stream decoder, and truncation or a
    flipped byte anywhere is an InputError."""
    data = b"".join(bytes([i % 251]) * 5000 + os.urandom(3000) for i in range(600))
    packed = subprocess.run(["xz", "-T2", "--block-size=1MiB", "-c"], input=data, capture_output=True,
                            check=True).stdout
    assert b"".join(decompressed_chunks(packed, "t")) == data == lzma.decompress(packed)
    for broken in (packed[:-1], packed[:len(packed) // 2], packed[:100] + bytes([packed[100] ^ 1]) + packed[101:]):
        with pytest.raises(InputError):
            b"".join(decompressed_chunks(broken, "t"))
