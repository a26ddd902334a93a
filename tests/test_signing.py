"""Module signing on real material: byte identity with Debian's sign-file, openssl's CMS verifier,
Debian's own signed modules against the keys built into their vmlinuz, the command line."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from kabigate.errors import InputError
from kabigate.formats.bzimage import kernel_image
from kabigate.formats.certlist import system_certificates
from kabigate.formats.der import parse
from kabigate.formats.modsig import MAGIC, TRAILER
from kabigate.signing.keys import KeygenSpec, SigningKey, generate_key, load_signing_key, private_key_pem
from kabigate.signing.sign import compress_into, discard, read_module_data, sign_file
from kabigate.signing.verify import TrustPolicy, load_trust, trusted_cert, verify_module

pytestmark = pytest.mark.realdata
KERNEL, OTHER = "6.1.0-47-amd64", "6.1.0-50-amd64"
DKMS = [("acpi-call", "acpi_call.ko"), ("v4l2loopback", "v4l2loopback.ko"), ("dahdi", "dahdi.ko")]


def kabigate(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kabigate", *map(str, args)], check=False, capture_output=True,
                          text=True,
                          env=None if env is None else {**os.environ, **env})


def cms_of(signed: bytes) -> bytes:
    size = TRAILER.unpack_from(signed, len(signed) - len(MAGIC) - TRAILER.size)[-1]
    return signed[len(signed) - len(MAGIC) - TRAILER.size - size:len(signed) - len(MAGIC) - TRAILER.size]


def without_signature_value(cms: bytes) -> list:
    """Every field of the CMS message but the signature value (random for ECDSA)."""
    content_type, content = parse(cms).children()
    fields = content.children()[0].children()
    signer_info = fields[-1].children()[0].children()
    return [content_type.content, *[(f.tag, f.content) for f in fields[:-1]],
            *[(f.tag, f.content) for f in signer_info[:-1]], signer_info[-1].tag]


def tree_digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sign_file_tool(testdata) -> Path:
    tool = testdata.kernel_root(KERNEL) / "usr/lib/linux-kbuild-6.1/scripts/sign-file"
    if not tool.is_file():
        pytest.skip(f"{tool} missing (linux-kbuild-6.1, scripts/fetch-testdata)")
    if subprocess.run([tool], check=False, capture_output=True).returncode == 127:
        pytest.skip("sign-file does not run (libssl3 / libcrypto.so.3 missing)")
    return tool


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """kabigate-generated keys: name -> (PEM private key, DER certificate)."""
    directory = tmp_path_factory.mktemp("keys")
    specs = {"rsa2048": KeygenSpec("rsa", 2048), "rsa4096": KeygenSpec("rsa", 4096),
             "p256": KeygenSpec("ecdsa", curve="p256"), "p384": KeygenSpec("ecdsa", curve="p384")}
    made = {}
    for name, spec in specs.items():
        private_key, certificate = generate_key(spec)
        key, cert = directory / f"{name}.key", directory / f"{name}.der"
        key.write_bytes(private_key_pem(private_key, None))
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
        made[name] = (key, cert)
    return made


def run_sign_file(tool: Path, hash_name: str, key: Path, cert: Path, module: Path, out: Path, *flags) -> bytes:
    subprocess.run([tool, *flags, hash_name, key, cert, module, out], check=True, capture_output=True)
    return out.read_bytes()


def sign_copy(module: Path, key: SigningKey, hash_name: str, tmp_path: Path, use_key_id: bool = False) -> bytes:
    """What `kabigate sign` writes for `module`: sign_file() on a copy of it."""
    copy = tmp_path / f"copy-{module.name}"
    shutil.copy(module, copy)
    signed = sign_file(str(copy), key, hash_name, use_key_id=use_key_id)
    try:
        return Path(signed.temporary).read_bytes()
    finally:
        discard(signed)


def compressed(data: bytes, kind: str) -> bytes:
    output = io.BytesIO()
    compress_into(io.BytesIO(data), output, kind)
    return output.getvalue()


@pytest.mark.parametrize("key_name", ["rsa2048", "rsa4096"])
@pytest.mark.parametrize("hash_name", ["sha256", "sha384", "sha512"])
def test_rsa_signatures_are_sign_files_bytes(testdata, sign_file_tool, keys, tmp_path, key_name, hash_name):
    key_path, cert_path = keys[key_name]
    key = load_signing_key(str(key_path), str(cert_path), None)
    for driver, name in DKMS:
        module = testdata.driver_dir(driver, KERNEL) / name
        expected = run_sign_file(sign_file_tool, hash_name, key_path, cert_path, module, tmp_path / name)
        assert sign_copy(module, key, hash_name, tmp_path) == expected, (driver, hash_name)


def test_key_id_signatures_are_sign_file_dash_k(testdata, sign_file_tool, keys, tmp_path):
    key_path, cert_path = keys["rsa2048"]
    key = load_signing_key(str(key_path), str(cert_path), None)
    module = testdata.driver_dir("acpi-call", KERNEL) / "acpi_call.ko"
    expected = run_sign_file(sign_file_tool, "sha256", key_path, cert_path, module, tmp_path / "k.ko", "-k")
    assert sign_copy(module, key, "sha256", tmp_path, use_key_id=True) == expected
    trust = [trusted_cert(key.certificate, str(cert_path))]
    assert verify_module(expected, trust).result == "ok"


@pytest.mark.parametrize("key_name,hash_name", [("p256", "sha256"), ("p384", "sha384"), ("p384", "sha512")])
def test_ecdsa_signatures_match_sign_file_but_for_the_random_value(testdata, sign_file_tool, keys, tmp_path,
                                                                  key_name, hash_name):
    key_path, cert_path = keys[key_name]
    key = load_signing_key(str(key_path), str(cert_path), None)
    trust = [trusted_cert(key.certificate, str(cert_path))]
    module = testdata.driver_dir("v4l2loopback", KERNEL) / "v4l2loopback.ko"
    theirs = run_sign_file(sign_file_tool, hash_name, key_path, cert_path, module, tmp_path / "e.ko")
    ours = sign_copy(module, key, hash_name, tmp_path)
    assert without_signature_value(cms_of(theirs)) == without_signature_value(cms_of(ours))
    assert theirs.startswith(module.read_bytes()) and ours.startswith(module.read_bytes())
    assert verify_module(theirs, trust).result == "ok"
    assert verify_module(ours, trust).result == "ok"


def test_openssl_cms_verify_accepts_kabigate_signatures(testdata, keys, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    module = testdata.driver_dir("acpi-call", KERNEL) / "acpi_call.ko"
    for name in ("rsa2048", "p384"):
        key_path, cert_path = keys[name]
        key = load_signing_key(str(key_path), str(cert_path), None)
        signed = sign_copy(module, key, "sha256", tmp_path)
        (tmp_path / "sig.der").write_bytes(cms_of(signed))
        pem = tmp_path / "cert.pem"
        pem.write_bytes(key.certificate.public_bytes(serialization.Encoding.PEM))
        for content, expected in ((module.read_bytes(), 0), (module.read_bytes()[:-1] + b"X", 4)):
            (tmp_path / "content").write_bytes(content)
            result = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
                                     tmp_path / "sig.der", "-content", tmp_path / "content", "-certfile", pem,
                                     "-CAfile", pem, "-purpose", "any", "-out", os.devnull], check=False,
                                    capture_output=True)
            assert result.returncode == expected, (name, result.stderr)


def test_the_kernels_built_in_keys_come_out_of_its_vmlinuz(testdata):
    subjects = {}
    for release in (KERNEL, OTHER):
        vmlinuz = testdata.root / testdata.manifest["kernels"][release]["vmlinuz"]
        image = kernel_image(vmlinuz.read_bytes(), str(vmlinuz))
        assert image[:4] == b"\x7fELF"
        [der] = system_certificates(image, str(vmlinuz))
        certificate = x509.load_der_x509_certificate(der)
        subjects[release] = certificate
        assert certificate.subject.rfc4514_string() == "CN=Build time autogenerated kernel key"
    # Debian's module keys are ephemeral: one per kernel build.
    assert subjects[KERNEL].public_key() != subjects[OTHER].public_key()


def test_every_in_tree_module_verifies_with_its_own_kernels_keys(testdata):
    trust = load_trust([str(testdata.kernel_root(KERNEL))])
    other = load_trust([str(testdata.modules_dir(OTHER))])
    modules = sorted(testdata.modules_dir(KERNEL).rglob("*.ko*"))
    assert len(modules) > 3000
    results = {}
    for path in modules:
        check = verify_module(read_module_data(str(path)), trust)
        results.setdefault(check.result, []).append(path)
    assert set(results) == {"ok"}, {k: v[:3] for k, v in results.items()}
    data = bytearray(modules[0].read_bytes())
    data[len(data) // 3] ^= 0x01
    tampered = verify_module(bytes(data), trust)
    assert tampered.result == "EKEYREJECTED" and "does not verify" in tampered.message
    assert verify_module(modules[0].read_bytes(), other).result == "ENOKEY"


def test_policy_options(testdata, tmp_path):
    module = testdata.in_tree(KERNEL, "drivers/media/mc/mc.ko").read_bytes()
    built_in = load_trust([str(testdata.kernel_root(KERNEL))])
    # Debian's build key has no extendedKeyUsage: a SUSE-style kernel would not take it.
    assert verify_module(module, built_in, TrustPolicy(require_codesigning=True)).result == "ENOKEY"
    dkms = testdata.driver_dir("acpi-call", KERNEL) / "acpi_call.ko"
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    for spec, policy, expected in [
        (KeygenSpec("rsa", 2048), TrustPolicy(require_codesigning=True), "ok"),
        (KeygenSpec("rsa", 2048, codesigning=False, module_signing_oid=True),
         TrustPolicy(require_codesigning=True), "ENOKEY"),
        (KeygenSpec("rsa", 2048, codesigning=False, module_signing_oid=True),
         TrustPolicy(require_codesigning=True, accept_module_signing_oid=True), "ok"),
        (KeygenSpec("rsa", 2048, days=30), TrustPolicy(reject_expired=True), "ENOKEY"),
        (KeygenSpec("rsa", 2048, days=30), TrustPolicy(), "ok"),
    ]:
        private_key, certificate = generate_key(spec, now=past if spec.days == 30 else None)
        (tmp_path / "k.pem").write_bytes(private_key_pem(private_key, None))
        (tmp_path / "c.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key = load_signing_key(str(tmp_path / "k.pem"), str(tmp_path / "c.pem"), None)
        signed = sign_copy(dkms, key, "sha256", tmp_path)
        trust = load_trust([str(tmp_path / "c.pem")])
        assert verify_module(signed, trust, policy).result == expected, (spec, policy)


# -- command line -------------------------------------------------------------------------

@pytest.fixture()
def tree(testdata, tmp_path) -> Path:
    """DKMS modules, plain and compressed as kmod and the kernel accept them."""
    directory = tmp_path / "modules"
    directory.mkdir()
    for driver, name in DKMS:
        shutil.copy(testdata.driver_dir(driver, KERNEL) / name, directory / name)
    data = (directory / "acpi_call.ko").read_bytes()
    (directory / "xz").mkdir()
    (directory / "xz" / "acpi_call.ko.xz").write_bytes(compressed(data, "xz"))
    (directory / "zst").mkdir()
    (directory / "zst" / "acpi_call.ko.zst").write_bytes(compressed(data, "zstd"))
    (directory / "gz").mkdir()
    (directory / "gz" / "acpi_call.ko.gz").write_bytes(compressed(data, "gzip"))
    return directory


@pytest.fixture()
def cli_key(tmp_path) -> Path:
    prefix = tmp_path / "mok"
    result = kabigate("keygen", "--out", prefix, "--type", "rsa", "--bits", "2048", "--subject", "CN=Test kmods")
    assert result.returncode == 0, result.stderr
    return prefix


def test_keygen_writes_private_key_0600_and_certificates_never_printing_key_material(tmp_path):
    prefix = tmp_path / "enc"
    (tmp_path / "pass").write_text("correct horse\n")
    result = kabigate("keygen", "--out", prefix, "--type", "ecdsa", "--curve", "p256", "--module-signing-oid",
                      "--encrypt", "--passphrase-file", tmp_path / "pass", "--json")
    assert result.returncode == 0, result.stderr
    assert "shim" in result.stderr and "PRIVATE" not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["encrypted"] and report["key_type"] == "ecdsa"
    assert os.stat(f"{prefix}.key").st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in Path(f"{prefix}.key").read_bytes()
    certificate = x509.load_der_x509_certificate(Path(f"{prefix}.der").read_bytes())
    assert certificate == x509.load_pem_x509_certificate(Path(f"{prefix}.crt").read_bytes())
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u.dotted_string for u in usages} == {"1.3.6.1.5.5.7.3.3", "1.3.6.1.4.1.2312.16.1.2"}
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert kabigate("keygen", "--out", prefix).returncode == 2  # refuses to overwrite


def test_sign_tree_then_verify_and_check(testdata, tree, cli_key):
    signed = kabigate("sign", "--key", f"{cli_key}.key", "--cert", f"{cli_key}.der", "--json", tree)
    assert signed.returncode == 0, signed.stderr
    report = json.loads(signed.stdout)
    assert sorted(m["compression"] or "" for m in report["modules"]) == ["", "", "", "gzip", "xz", "zstd"]
    assert not list(tree.rglob(".*.kabigate"))
    if shutil.which("modinfo"):  # kmod reads what kabigate wrote (Debian's kmod is built without zlib)
        for path in [*tree.rglob("*.ko"), *tree.rglob("*.ko.xz"), *tree.rglob("*.ko.zst")]:
            info = subprocess.run(["modinfo", "-F", "signer", path], check=False, capture_output=True,
                                  text=True)
            assert info.stdout.strip() == "Test kmods", path

    trusted = kabigate("verify", "--trust", f"{cli_key}.crt", "--json", tree)
    assert trusted.returncode == 0, trusted.stdout
    assert {m["result"] for m in json.loads(trusted.stdout)["modules"]} == {"verified"}
    untrusted = kabigate("verify", "--trust", testdata.kernel_root(KERNEL), "--json", tree)
    assert untrusted.returncode == 1
    assert {m["error"] for m in json.loads(untrusted.stdout)["modules"]} == {"ENOKEY"}

    module = tree / "acpi_call.ko"
    check = kabigate("check", "--json", "-k", testdata.kernel_root(KERNEL), "--require-signature",
                     "--trust", testdata.kernel_root(KERNEL), module)
    assert check.returncode == 1
    [verdict] = json.loads(check.stdout)["modules"]
    assert [r["code"] for r in verdict["reasons"]] == ["untrusted-signature"]
    enrolled = kabigate("check", "--json", "-k", testdata.kernel_root(KERNEL), "--require-signature",
                        "--trust", testdata.kernel_root(KERNEL), "--trust", f"{cli_key}.der", module)
    assert enrolled.returncode == 0, enrolled.stdout
    not_enforced = kabigate("check", "--json", "-k", testdata.kernel_root(KERNEL), "--trust",
                            testdata.kernel_root(KERNEL), module)
    assert not_enforced.returncode == 0
    assert "untrusted-signature" in {w["code"] for w in json.loads(not_enforced.stdout)["modules"][0]["warnings"]}

    data = bytearray(module.read_bytes())
    data[1000] ^= 0x01
    module.write_bytes(bytes(data))
    bad = kabigate("check", "--json", "-k", testdata.kernel_root(KERNEL), "--trust", f"{cli_key}.crt", module)
    assert [r["code"] for r in json.loads(bad.stdout)["modules"][0]["reasons"]] == ["bad-signature"]
    assert kabigate("verify", "--trust", f"{cli_key}.crt", module).returncode == 1


def test_a_signature_only_the_full_pkcs7_parse_finds_malformed_is_refused_even_when_not_enforced(testdata, tree,
                                                                                                   cli_key):
    """pkcs7_parse_message() reads every SignerInfo field: a signature value that is not an OCTET
    STRING is EBADMSG, which module_sig_check() refuses whatever the enforcement (modinfo's reading
    of the signer, which stops before it, does not see it)."""
    module = tree / "acpi_call.ko"
    assert kabigate("sign", "--key", f"{cli_key}.key", "--cert", f"{cli_key}.der", module).returncode == 0
    data = bytearray(module.read_bytes())
    value = len(data) - 40 - 256 - 4  # the RSA-2048 signature value: last in the CMS, before the 40-byte trailer
    assert data[value:value + 4] == b"\x04\x82\x01\x00"
    data[value] = 0x05
    module.write_bytes(bytes(data))
    result = kabigate("check", "--json", "-k", testdata.kernel_root(KERNEL), "--trust", f"{cli_key}.crt", module)
    assert result.returncode == 1, result.stdout
    [reason] = json.loads(result.stdout)["modules"][0]["reasons"]
    assert reason["code"] == "bad-signature" and reason["message"].endswith(": Bad message"), reason


def test_already_signed_is_refused_unless_replace_which_equals_a_fresh_signature(testdata, tree, cli_key):
    module = tree / "acpi_call.ko"
    original = module.read_bytes()
    sign = ("sign", "--key", f"{cli_key}.key", "--cert", f"{cli_key}.crt")
    assert kabigate(*sign, module).returncode == 0
    first = module.read_bytes()
    before = tree_digest(tree)
    refused = kabigate(*sign, "--hash", "sha512", tree)  # acpi_call.ko is signed, the rest are not
    assert refused.returncode == 2 and "already signed" in refused.stderr
    assert tree_digest(tree) == before  # all or nothing
    assert kabigate(*sign, "--replace", "--hash", "sha384", module).returncode == 0
    assert kabigate(*sign, "--replace", module).returncode == 0
    assert module.read_bytes() == first and first.startswith(original)


@pytest.mark.parametrize("case", ["wrong-passphrase", "missing-passphrase", "cert-mismatch", "not-a-module",
                                  "truncated-signature", "not-a-key"])
def test_bad_input_is_one_line_exit_2_and_leaves_files_unchanged(testdata, tree, cli_key, tmp_path, case):
    key, cert, env, target = f"{cli_key}.key", f"{cli_key}.crt", {}, tree
    if case in ("wrong-passphrase", "missing-passphrase"):
        prefix = tmp_path / "enc"
        assert kabigate("keygen", "--out", prefix, "--bits", "2048", "--encrypt",
                        env={"KBUILD_SIGN_PIN": "right"}).returncode == 0
        key, cert = f"{prefix}.key", f"{prefix}.crt"
        env = {"KBUILD_SIGN_PIN": "wrong"} if case == "wrong-passphrase" else {"KBUILD_SIGN_PIN": ""}
    elif case == "cert-mismatch":
        assert kabigate("keygen", "--out", tmp_path / "other", "--bits", "2048").returncode == 0
        cert = tmp_path / "other.crt"
    elif case == "not-a-module":
        (tree / "notes.ko").write_bytes(b"\x7fELF" + bytes(60))
    elif case == "not-a-key":
        key = testdata.driver_dir("acpi-call", KERNEL) / "acpi_call.ko"
    before = tree_digest(tree)
    if case == "truncated-signature":
        signed = tree / "acpi_call.ko"
        assert kabigate("sign", "--key", key, "--cert", cert, signed).returncode == 0
        data = signed.read_bytes()
        signed.write_bytes(data[:len(data) - len(MAGIC) - TRAILER.size - 40] + data[-len(MAGIC) - TRAILER.size:])
        before = tree_digest(tree)
        result = kabigate("verify", "--trust", cert, tree)
        assert result.returncode == 2 and "malformed module signature" in result.stderr, result.stderr
        result = kabigate("sign", "--replace", "--key", key, "--cert", cert, tree, env=env)
    else:
        result = kabigate("sign", "--key", key, "--cert", cert, target, env=env)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("kabigate: error:") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and "PRIVATE" not in result.stderr
    assert tree_digest(tree) == before
    expected = {"wrong-passphrase": "wrong passphrase", "missing-passphrase": "encrypted",
                "cert-mismatch": "does not match", "not-a-module": "not", "truncated-signature": "malformed",
                "not-a-key": "not a readable private key"}[case]
    assert expected in result.stderr


def test_passphrase_is_read_from_a_file_or_the_environment(tree, tmp_path):
    prefix = tmp_path / "enc"
    (tmp_path / "pass").write_text("s3cret\n")
    assert kabigate("keygen", "--out", prefix, "--bits", "2048", "--encrypt", "--passphrase-file",
                    tmp_path / "pass").returncode == 0
    module = tree / "acpi_call.ko"
    assert kabigate("sign", "--key", f"{prefix}.key", "--cert", f"{prefix}.der", "--passphrase-file",
                    tmp_path / "pass", module).returncode == 0
    assert kabigate("sign", "--replace", "--key", f"{prefix}.key", "--cert", f"{prefix}.der",
                    "--passphrase-env", "MY_PIN", module, env={"MY_PIN": "s3cret"}).returncode == 0
    assert kabigate("verify", "--trust", f"{prefix}.der", module).returncode == 0


def test_kernel_image_input_errors_are_one_line(tmp_path):
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"MZ" + bytes(0x200) + b"HdrS" + bytes(0x100))
    with pytest.raises(InputError):
        load_trust([str(bogus)])
    result = kabigate("verify", "--trust", bogus, bogus)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
