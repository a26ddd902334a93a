"""check with kernels and modules read from packages: a progress bar while kernel packages are read
(on a terminal only: `check -k image.deb -k headers.deb` takes seconds), and `--trust` verifying
modules inside packages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.terminal import run_on_terminal

pytestmark = pytest.mark.realdata
RELEASE = "6.1.0-56-amd64"


def test_check_shows_progress_reading_kernel_packages(testdata):
    debs = [str(testdata.root / deb) for deb in testdata.manifest["stream_kernels"][RELEASE]["debs"]]
    module = testdata.root / testdata.manifest["drivers"]["acpi-call"][RELEASE]["dir"] / "acpi_call.ko"
    args = [sys.executable, "-m", "kabigate", "check", "-k", debs[0], "-k", debs[1], str(module)]
    status, shown = run_on_terminal(args)
    assert status == 0
    assert "reading kernel packages" in shown and "2/2" in shown
    piped = subprocess.run(args, capture_output=True, text=True, check=False)
    assert piped.returncode == 0 and piped.stderr == ""


def test_check_trust_verifies_modules_read_from_packages(testdata, tmp_path):
    """check --trust reads a packaged module again from its .deb to verify its signature."""
    kabigate = [sys.executable, "-m", "kabigate"]
    for name in ("mok", "other"):
        subprocess.run([*kabigate, "keygen", "--out", str(tmp_path / name), "--subject", f"CN={name}"],
                       check=True, capture_output=True)
    root = tmp_path / "pkg"
    target = root / "lib" / "modules" / RELEASE / "updates" / "dkms" / "acpi_call.ko"
    target.parent.mkdir(parents=True)
    module = testdata.root / testdata.manifest["drivers"]["acpi-call"][RELEASE]["dir"] / "acpi_call.ko"
    target.write_bytes(module.read_bytes())
    subprocess.run([*kabigate, "sign", "--key", str(tmp_path / "mok.key"), "--cert", str(tmp_path / "mok.der"),
                    str(target)], check=True, capture_output=True)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text("Package: acpi-call-signed\nVersion: 1\nArchitecture: amd64\n"
                                             "Maintainer: kabigate tests <t@example.org>\nDescription: test\n")
    deb = tmp_path / "acpi-call-signed_1_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    kernel = str(testdata.kernel_root(RELEASE))

    def warnings(cert: str) -> set[str]:
        result = subprocess.run([*kabigate, "check", "--json", "-k", kernel, "--trust", str(tmp_path / cert),
                                 str(deb)], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        (report,) = json.loads(result.stdout)["modules"]
        return {w["code"] for w in report["warnings"]}
    assert "untrusted-signature" not in warnings("mok.der") and "unsigned" not in warnings("mok.der")
    assert "untrusted-signature" in warnings("other.der")
