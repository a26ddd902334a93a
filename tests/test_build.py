"""`kabigate build` on the real corpus: Debian's *-dkms packages built by the real dkms against the
real headers, in the sandbox. The truth is what the corpus recorded for each package x kernel (and
a plain `dkms build` for an exclusion, which the corpus does not keep): the outcome is the same,
a failure's first error line is the compiler's, and a built module loads where the corpus' build
of it loads. Each build takes seconds (small drivers chosen)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kabigate.builder.buildlog import COMPILER_ERROR
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import read_modules
from kabigate.rules import check_modules
from kabigate.signing.verify import load_trust, verify_module
from kabigate.store import Store

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not (shutil.which("bwrap") and shutil.which("dkms")), reason="needs dkms, bubblewrap")]

NEW = "6.12.107+deb12-amd64"
OLD = "6.1.0-47-amd64"
CLOUD = "6.1.0-47-cloud-amd64"


def deb(testdata, driver: str) -> Path:
    (found,) = (testdata.root / "debs").glob(f"{driver}-dkms_*.deb")
    return found


def tree(testdata, release: str) -> Path:
    return testdata.root / testdata.manifest["build_kernels"][release]["root"]


def kabigate_build(*args) -> subprocess.CompletedProcess:
    """Stored only where --db says (not in a $KABIGATE_DB of the environment)."""
    env = {k: v for k, v in os.environ.items() if k != "KABIGATE_DB"}
    return subprocess.run([sys.executable, "-m", "kabigate", "build", "--json", *map(str, args)],
                          capture_output=True, text=True, check=False, env=env)


@pytest.mark.parametrize("driver", ["vpoll", "tp-smapi"])
def test_a_package_that_does_not_compile_on_6_12_fails_with_the_compilers_error(testdata, driver, tmp_path):
    recorded = testdata.manifest["driver_failures"][driver][NEW]
    db = tmp_path / "store.db"
    run = kabigate_build("-k", tree(testdata, NEW), deb(testdata, driver), "--db", db)
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert result["outcome"] == "failed" and result["modules"] == []
    assert COMPILER_ERROR.search(result["error"]), result["error"]
    if driver == "vpoll":  # one source file: one first error, whatever make's order
        assert result["error"] == recorded["error"]
    with Store.open(f"sqlite:///{db}") as store:
        (failure,) = store.build_failures()
        assert (failure.driver, failure.kernel_release, failure.error) == (result["package"], NEW, result["error"])
        outcome, log = store.build_log(failure.driver, failure.version, NEW)
        assert outcome == "failed" and result["error"].split(": error: ")[1] in log


def test_a_package_built_for_6_1_loads_where_the_corpus_build_does(testdata, tmp_path):
    keep = tmp_path / "built"
    db = tmp_path / "store.db"
    run = kabigate_build("-k", tree(testdata, OLD), deb(testdata, "acpi-call"), "--keep", keep, "--db", db)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["outcome"] == "built" and result["error"] is None
    assert result["modules"] == testdata.manifest["drivers"]["acpi-call"][OLD]["modules"]
    assert result["stored"]["build"]["built_for"] == OLD and result["stored"]["build"]["created"]
    assert result["signer"] is None
    with Store.open(f"sqlite:///{db}") as store:  # built unsigned: stored with no signer
        assert [m.signature for m in store.load_build(result["stored"]["build"]["id"])] == [None]
    ours = read_modules([str(keep)])
    corpus = read_modules([str(testdata.driver_dir("acpi-call", OLD))])
    for release in (OLD, "6.1.0-56-amd64"):
        kernel = load_kernel([str(testdata.kernel_root(release))])
        assert [v.loads for v in check_modules(ours, kernel)] == [v.loads for v in check_modules(corpus, kernel)]


def test_a_signed_build_verifies_against_the_repositorys_certificate(testdata, tmp_path):
    """kabigate keygen's key signs each built module before it is kept and stored: the modules verify
    against its certificate as the kernel's mod_verify_sig() would, and the store knows the signer."""
    key = tmp_path / "repo"
    subprocess.run([sys.executable, "-m", "kabigate", "keygen", "--out", key, "--subject", "CN=Example kmods",
                    "--bits", "2048"], check=True, capture_output=True)
    keep, db = tmp_path / "built", tmp_path / "store.db"
    run = kabigate_build("-k", tree(testdata, OLD), deb(testdata, "acpi-call"), "--sign-key", f"{key}.key",
                         "--sign-cert", f"{key}.crt", "--hash", "sha512", "--keep", keep, "--db", db)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["signer"] == "Example kmods"
    trust = load_trust([f"{key}.der"])
    for module in keep.iterdir():
        check = verify_module(module.read_bytes(), trust)
        assert (check.result, check.signer, check.hash_algorithm) == ("ok", "Example kmods", "sha512")
    verify = subprocess.run([sys.executable, "-m", "kabigate", "verify", "--trust", f"{key}.crt", keep],
                            capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and "VERIFIED" in verify.stdout, verify.stdout + verify.stderr
    with Store.open(f"sqlite:///{db}") as store:
        (build,) = store.driver_builds()
        assert build.built_from == str(deb(testdata, "acpi-call"))
        assert [m.signature.signer for m in store.load_build(build.id)] == ["Example kmods"]
    # a key without its certificate is bad input
    run = kabigate_build("-k", tree(testdata, OLD), deb(testdata, "acpi-call"), "--sign-key", f"{key}.key")
    assert run.returncode == 2 and "--sign-key and --sign-cert go together" in run.stderr


def test_headers_debs_are_a_build_tree(testdata):
    """linux-headers, its -common and linux-kbuild .debs, extracted in the sandbox: vpoll builds for
    6.1.0-56 from them as the corpus' dkms built it."""
    debs = testdata.root / "debs"
    run = kabigate_build("-k", *sorted(debs.glob("linux-headers-6.1.0-56-*amd64_*.deb")),
                         "-k", *debs.glob("linux-headers-6.1.0-56-common_*.deb"),
                         "-k", *debs.glob("linux-kbuild-6.1_*.deb"), deb(testdata, "vpoll"))
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert (result["outcome"], result["kernel_release"]) == ("built", "6.1.0-56-amd64")
    assert result["modules"] == testdata.manifest["drivers"]["vpoll"]["6.1.0-56-amd64"]["modules"]


def test_the_hosts_installed_headers_are_a_build_tree(testdata):
    """/lib/modules/RELEASE/build of this host (linux-headers installed): seen in the sandbox where
    it is installed."""
    installed = sorted(p for p in Path("/lib/modules").glob("*/build") if (p / "Makefile").is_file())
    if not installed:
        pytest.skip("no kernel headers installed on this host")
    run = kabigate_build("-k", installed[0], deb(testdata, "vpoll"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["kernel_release"] == installed[0].parent.name


def test_build_exclusive_is_dkmss_exclusion_with_its_reason(testdata, tmp_path):
    """The cloud kernel has no USB: openrazer-driver's BUILD_EXCLUSIVE_CONFIG excludes it, as a plain
    `dkms build` says (exit status 77)."""
    source = tmp_path / "source"
    subprocess.run(["dpkg-deb", "-x", deb(testdata, "openrazer-driver"), source], check=True)
    (conf,) = source.glob("usr/src/*/dkms.conf")
    (tmp_path / "dkms").mkdir()
    plain = subprocess.run(
        ["dkms", "build", "-m", "openrazer-driver", "-v", conf.parent.name.rsplit("-", 1)[1], "-k", CLOUD,
         f"--dkmstree={tmp_path / 'dkms'}", f"--sourcetree={conf.parent.parent}",
         f"--kernelsourcedir={testdata.headers(CLOUD)}"], capture_output=True, text=True, check=False,
        # dkms would make its signing key in /var/lib/dkms, on this host: elsewhere
        env=dict(os.environ, mok_signing_key=str(tmp_path / "mok.key"), mok_certificate=str(tmp_path / "mok.pub")))
    assert plain.returncode == 77, plain.stdout + plain.stderr
    db = tmp_path / "store.db"
    run = kabigate_build("-k", testdata.kernel_root(CLOUD), deb(testdata, "openrazer-driver"), "--db", db)
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert result["outcome"] == "excluded"
    assert result["error"] == "BUILD_EXCLUSIVE_CONFIG: CONFIG_USB is not set"
    with Store.open(f"sqlite:///{db}") as store:
        (failure,) = store.build_failures()
        assert failure.error == result["error"]
        outcome, log = store.build_log("openrazer-driver", result["version"], CLOUD)
        assert outcome == "excluded" and "BUILD_EXCLUSIVE directive which does not match" in log
    # readable from the CLI and the API
    shown = subprocess.run([sys.executable, "-m", "kabigate", "build-log", "--db", db, "--json", "openrazer-driver",
                            result["version"], CLOUD], capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert (document["outcome"], document["error"], document["log"]) == ("excluded", result["error"], log)
    from fastapi.testclient import TestClient

    from kabigate.web.app import create_app
    with TestClient(create_app(str(db))) as client:
        assert client.get(f"/api/v1/build-logs/openrazer-driver/{result['version']}/{CLOUD}").json() == document
        assert client.get(f"/api/v1/build-logs/openrazer-driver/0/{CLOUD}").status_code == 404
    missing = subprocess.run([sys.executable, "-m", "kabigate", "build-log", "--db", db, "vpoll", "1", CLOUD],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("kabigate: error: no failed or excluded build")


def test_a_kbuild_folder_that_never_exits_is_a_failed_build_saying_so(testdata, tmp_path):
    source = tmp_path / "hang"
    source.mkdir()
    (source / "Kbuild").write_text("obj-m := hang.o\n$(shell sleep 1000)\n")
    run = kabigate_build("-k", tree(testdata, OLD), "--timeout", 3, source, "--db", tmp_path / "store.db",
                         "--package-version", "1")
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert (result["outcome"], result["error"], result["method"]) == ("failed", "timed out after 3 s", "kbuild")


def test_a_kbuild_folder_builds_and_links_it_plants_are_not_taken(testdata, tmp_path):
    """Only the modules it wrote: a .ko linked to a host file is not read (nor stored) by kabigate."""
    source = tmp_path / "hello"
    source.mkdir()
    (source / "Kbuild").write_text("obj-m := hello.o\n$(shell ln -sf /etc/hostname $(src)/planted.ko)\n")
    (source / "hello.c").write_text('#include <linux/module.h>\nMODULE_LICENSE("GPL");\n')
    run = kabigate_build("-k", tree(testdata, OLD), source)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["modules"] == ["hello.ko"]


def test_bad_input_is_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    run = kabigate_build("-k", tmp_path / "empty", tmp_path / "empty")
    assert run.returncode == 2 and run.stderr.startswith("kabigate: error:")
    assert tempfile.gettempdir()  # nothing left: the work folder is a TemporaryDirectory


# ELRepo's kmod spec layout (kmod_name, kmod_kernel_version defined on the rpmbuild line, the
# modules under /lib/modules/RELEASE/extra/NAME), for one of the Debian DKMS sources. Debian has
# none of Red Hat's brp scripts: __spec_install_post is left empty; a Debian release (6.1.0-47-amd64)
# is no RPM version: kernel-devel is required without ELRepo's "= %{kmod_kernel_version}".
ELREPO_SPEC = """\
%define kmod_name {name}
%{{!?kmod_kernel_version: %define kmod_kernel_version 6.1.0-47-amd64}}
%define debug_package %{{nil}}
%define __spec_install_post %{{nil}}

Name:           kmod-%{{kmod_name}}
Version:        {version}
Release:        1
Summary:        %{{kmod_name}} kernel module(s)
License:        GPLv2
Source0:        %{{kmod_name}}-%{{version}}.tar.gz
ExclusiveArch:  {arch}
BuildRequires:  kernel-devel

%description
%{{kmod_name}} built for %{{kmod_kernel_version}}.

%prep
%setup -q -n %{{kmod_name}}-%{{version}}

%build
%{{__make}} -C %{{_usrsrc}}/kernels/%{{kmod_kernel_version}} %{{?_smp_mflags}} modules M=$PWD

%install
%{{__install}} -d %{{buildroot}}/lib/modules/%{{kmod_kernel_version}}/extra/%{{kmod_name}}/
%{{__install}} %{{kmod_name}}.ko %{{buildroot}}/lib/modules/%{{kmod_kernel_version}}/extra/%{{kmod_name}}/
find %{{buildroot}} -name \\*.ko -type f | xargs --no-run-if-empty %{{__strip}} --strip-debug

%files
/lib/modules/%{{kmod_kernel_version}}/
"""


def elrepo_srpm(testdata, driver: str, version: str, tmp_path: Path, arch: str = "x86_64") -> Path:
    """kmod-DRIVER's source RPM, made with rpmbuild -bs from the Debian package's DKMS source."""
    top = tmp_path / "srpm"
    top.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", deb(testdata, driver), top / "deb"], check=True)
    (source,) = (top / "deb/usr/src").iterdir()
    (top / "SOURCES").mkdir()
    subprocess.run(["tar", "-czf", top / "SOURCES" / f"{driver}-{version}.tar.gz", "-C", source.parent,
                    f"--transform=s,^{source.name},{driver}-{version},", source.name], check=True)
    spec = top / f"kmod-{driver}.spec"
    spec.write_text(ELREPO_SPEC.format(name=driver, version=version, arch=arch))
    subprocess.run(["rpmbuild", "-bs", "--nodeps", "--define", f"_topdir {top}", spec], check=True,
                   capture_output=True)
    (srpm,) = (top / "SRPMS").glob("*.src.rpm")
    return srpm


KERNEL_DEVEL_SPEC = """\
%define debug_package %{{nil}}
%define __spec_install_post %{{nil}}
%define _build_id_links none
%define _binary_payload w1.gzdio
Name:           kernel-devel
Version:        {version}
Release:        1
Summary:        {release}'s build tree, as Red Hat's kernel-devel lays it out
License:        GPLv2
AutoReqProv:    no

%description
Debian's headers, -common and kbuild merged into one self-contained tree.

%install
mkdir -p %{{buildroot}}/usr/src/kernels
cp -a {tree} %{{buildroot}}/usr/src/kernels/{release}

%files
/usr/src/kernels/{release}
"""


@pytest.fixture(scope="module")
def kernel_devel(testdata, tmp_path_factory) -> Path:
    """A kernel-devel RPM of 6.1.0-47: one tree holding the Makefile, the generated headers, scripts
    and tools, as RHEL's /usr/src/kernels/RELEASE does (Debian splits it into three packages)."""
    top = tmp_path_factory.mktemp("kernel-devel")
    root = testdata.kernel_root(OLD)
    merged = top / "tree"
    shutil.copytree(root / "usr/src/linux-headers-6.1.0-47-common", merged, symlinks=True)
    for name in ("scripts", "tools"):
        (merged / name).unlink()
        shutil.copytree(root / "usr/lib/linux-kbuild-6.1" / name, merged / name, symlinks=True)
    flavour = root / f"usr/src/linux-headers-{OLD}"
    for path in flavour.iterdir():
        if path.is_symlink():  # scripts and tools: kbuild's, copied above
            continue
        if path.is_dir():
            shutil.copytree(path, merged / path.name, dirs_exist_ok=True)
        elif path.name != "Makefile":  # the flavour's only includes -common's, the tree's own now
            shutil.copy2(path, merged)
    spec = top / "kernel-devel.spec"
    spec.write_text(KERNEL_DEVEL_SPEC.format(version="6.1.0", release=OLD, tree=merged))
    subprocess.run(["rpmbuild", "-bb", "--nodeps", "--define", f"_topdir {top}", spec], check=True,
                   capture_output=True)
    (rpm,) = (top / "RPMS").glob("*/kernel-devel-*.rpm")
    return rpm


def test_a_kmod_source_rpm_builds_against_a_kernel_devel_rpm(testdata, kernel_devel, tmp_path):
    """ELRepo's case whole: kmod-vpoll's source RPM against kernel-devel; the module loads where the
    corpus' dkms build of vpoll loads."""
    keep = tmp_path / "built"
    run = kabigate_build("-k", kernel_devel, elrepo_srpm(testdata, "vpoll", "0.1", tmp_path), "--keep", keep)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["kernel_release"] == OLD
    kernel = load_kernel([str(testdata.kernel_root(OLD))])
    corpus = read_modules([str(testdata.driver_dir("vpoll", OLD))])
    assert [v.loads for v in check_modules(read_modules([str(keep)]), kernel)] == \
        [v.loads for v in check_modules(corpus, kernel)] == [True]


def test_a_kmod_source_rpm_rebuilds_as_elrepo_documents(testdata, tmp_path):
    """ELRepo's kmod-vpoll: built for 6.1.0-47 (the module is dkms's vpoll.ko), failing on 6.12 with
    dkms's first error, excluded on an architecture its spec does not build for."""
    srpm = elrepo_srpm(testdata, "vpoll", "0.1", tmp_path)
    db = tmp_path / "store.db"
    run = kabigate_build("-k", tree(testdata, OLD), srpm, "--db", db)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert (result["outcome"], result["package"], result["version"], result["method"]) == \
        ("built", "kmod-vpoll", "0.1-1", "rpmbuild")
    assert result["modules"] == ["vpoll.ko"] and result["stored"]["build"]["built_for"] == OLD

    run = kabigate_build("-k", tree(testdata, NEW), srpm)
    assert run.returncode == 1, run.stderr
    ascii_quotes = str.maketrans("\u2018\u2019", "''")  # rpm's build scripts run with LANG=C
    assert json.loads(run.stdout)["error"] == \
        testdata.manifest["driver_failures"]["vpoll"][NEW]["error"].translate(ascii_quotes)

    other = elrepo_srpm(testdata, "vpoll", "0.1", tmp_path / "arm", arch="aarch64")
    run = kabigate_build("-k", tree(testdata, OLD), other)
    result = json.loads(run.stdout)
    assert run.returncode == 1 and result["outcome"] == "excluded", run.stderr
    assert "Architecture is not included: x86_64" in result["error"]
