"""`kabigate keygen | sign | verify`: module-signing keys, sign-file's signatures, the kernel's check."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from cryptography.hazmat.primitives import hashes, serialization

from kabigate.cli.shared import EXIT_INCOMPATIBLE, EXIT_OK, emit_json, err, out, progress, trust_options
from kabigate.errors import InputError, read_capped
from kabigate.inputs.modules import find_module_files
from kabigate.signing.keys import (
    CURVES,
    HASHES,
    PASSPHRASE_ENV,
    RSA_BITS,
    KeygenSpec,
    generate_key,
    load_signing_key,
    private_key_pem,
    write_files_atomically,
)
from kabigate.signing.sign import commit, sign_files
from kabigate.signing.verify import TrustPolicy, load_trust, verify_file

MAX_PASSPHRASE = 4096


def _passphrase(env_name: str, passphrase_file: str | None) -> bytes | None:
    """From a file (first line) or an environment variable; never from the command line."""
    if passphrase_file is not None:
        value = read_capped(passphrase_file, MAX_PASSPHRASE, "too long for a passphrase file")
        value = value.split(b"\n", 1)[0].rstrip(b"\r")
        if not value:
            raise InputError(f"{passphrase_file}: empty passphrase")
        return value
    text = os.environ.get(env_name)
    return text.encode() if text else None


def _passphrase_options(function):
    function = click.option("--passphrase-file", type=click.Path(dir_okay=False), metavar="FILE",
                            help="Read the key's passphrase from the first line of FILE.")(function)
    return click.option("--passphrase-env", default=PASSPHRASE_ENV, show_default=True, metavar="VAR",
                        help="Environment variable holding the key's passphrase.")(function)


def _module_files(paths: tuple[str, ...]) -> list[str]:
    files = list(dict.fromkeys(find_module_files(list(paths))))  # a module named twice is signed once
    if not files:
        raise InputError(f"{', '.join(paths)}: no kernel modules (*.ko, *.ko.xz, *.ko.zst, *.ko.gz) found")
    return files


# -- keygen ---------------------------------------------------------------------------------

@click.command()
@click.option("--out", "prefix", required=True, metavar="PREFIX",
              help="Write PREFIX.key (private, mode 0600), PREFIX.crt (PEM) and PREFIX.der (for mokutil --import).")
@click.option("--type", "key_type", type=click.Choice(["rsa", "ecdsa"]), default="rsa", show_default=True)
@click.option("--bits", type=click.Choice([str(b) for b in RSA_BITS]), default="4096", show_default=True,
              help="RSA key size.")
@click.option("--curve", type=click.Choice(list(CURVES)), default="p384", show_default=True,
              help="ECDSA curve.")
@click.option("--subject", default="CN=kabigate module signing key", show_default=True,
              help="Certificate subject, RFC 4514 (e.g. 'CN=Example kmods,O=Example').")
@click.option("--days", type=int, default=3650, show_default=True, help="Validity in days.")
@click.option("--no-codesigning", is_flag=True, help="Leave out the codeSigning extended key usage "
                                                     "(SUSE kernels then refuse the key).")
@click.option("--module-signing-oid", is_flag=True,
              help="Add Red Hat's module-signing-only EKU 1.3.6.1.4.1.2312.16.1.2 (shim then refuses the "
                   "certificate for boot images).")
@click.option("--encrypt", is_flag=True, help="Encrypt the private key with the passphrase from "
                                              "--passphrase-env/--passphrase-file.")
@_passphrase_options
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
def keygen(prefix, key_type, bits, curve, subject, days, no_codesigning, module_signing_oid, encrypt,
           passphrase_env, passphrase_file, force, as_json) -> None:
    """Generate a module-signing key and its self-signed certificate.

    \b
    Example:
      kabigate keygen --out /etc/pki/kabigate/repo --subject 'CN=Example kmods,O=Example'
    """
    passphrase = _passphrase(passphrase_env, passphrase_file) if encrypt else None
    if encrypt and passphrase is None:
        raise InputError(f"--encrypt needs a passphrase: set {passphrase_env} or give --passphrase-file")
    if module_signing_oid:
        err.print("kabigate: warning: shim refuses certificates with the module-signing EKU "
                  "(1.3.6.1.4.1.2312.16.1.2) for boot images; use this key for modules only", markup=False)
    spec = KeygenSpec(key_type, int(bits), curve, subject, days, not no_codesigning, module_signing_oid)
    private_key, certificate = generate_key(spec)
    paths = {"key": f"{prefix}.key", "cert_pem": f"{prefix}.crt", "cert_der": f"{prefix}.der"}
    write_files_atomically([
        (paths["key"], private_key_pem(private_key, passphrase), 0o600),
        (paths["cert_pem"], certificate.public_bytes(serialization.Encoding.PEM), 0o644),
        (paths["cert_der"], certificate.public_bytes(serialization.Encoding.DER), 0o644),
    ], force)
    report = {**paths, "subject": certificate.subject.rfc4514_string(), "serial": f"{certificate.serial_number:X}",
              "key_type": key_type, "key_size": private_key.key_size, "encrypted": passphrase is not None,
              "not_after": certificate.not_valid_after_utc.isoformat(),
              "sha256_fingerprint": certificate.fingerprint(hashes.SHA256()).hex(":").upper()}
    if as_json:
        emit_json(report)
        return
    for key, value in report.items():
        out.print(f"{key:<19} {value}", markup=False)
    out.print(f"enroll with: mokutil --import {paths['cert_der']}", markup=False)


# -- sign -----------------------------------------------------------------------------------

@click.command()
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), help="Private key (PEM or DER).")
@click.option("--cert", "cert_path", required=True, type=click.Path(dir_okay=False),
              help="Its X.509 certificate (PEM or DER).")
@click.option("--hash", "hash_name", type=click.Choice(list(HASHES)), default="sha256", show_default=True)
@click.option("--replace", is_flag=True, help="Re-sign modules that are already signed.")
@click.option("--key-id", "use_key_id", is_flag=True,
              help="Identify the signer by subjectKeyIdentifier (sign-file -k), not issuer and serial.")
@_passphrase_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("modules", nargs=-1, required=True, metavar="MODULE_OR_DIR...")
def sign(key_path, cert_path, hash_name, replace, use_key_id, passphrase_env, passphrase_file, as_json,
         modules) -> None:
    """Append a signature to each module, byte for byte what the kernel's sign-file appends.

    Compressed modules are signed inside and recompressed. All modules are signed or none: each is
    written to a temporary file beside it, and renamed over it once every module is signed.

    \b
    Example:
      kabigate sign --key /etc/pki/kabigate/repo.key --cert /etc/pki/kabigate/repo.crt jool/*.ko
    """
    key = load_signing_key(key_path, cert_path, _passphrase(passphrase_env, passphrase_file))
    files = _module_files(modules)
    with progress("signing modules", len(files)) as advance:
        done = sign_files(files, key, hash_name, replace, use_key_id, advance)
    commit(done)
    reports = [{"path": s.path, "compression": s.compression, "replaced": s.replaced,
                "signature_size": s.signature_size} for s in done]
    if as_json:
        emit_json({"signer": key.signer, "hash_algorithm": hash_name, "modules": reports})
        return
    sys.stdout.write("".join(f"{'re-signed' if s.replaced else 'signed':<9} {s.path}\n" for s in done))
    out.print(f"{len(done)} modules signed by '{key.signer}' ({hash_name})", markup=False)


# -- verify ---------------------------------------------------------------------------------

def trust_policy(require_codesigning_eku: bool, accept_module_signing_oid: bool,
                 reject_expired: bool) -> TrustPolicy:
    return TrustPolicy(require_codesigning_eku, accept_module_signing_oid, reject_expired)


@click.command()
@trust_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("modules", nargs=-1, required=True, metavar="MODULE_OR_DIR...")
def verify(trust_paths, require_codesigning_eku, accept_module_signing_oid, reject_expired, as_json,
           modules) -> None:
    """Signer, key id and hash of each module's signature, and whether it verifies against the
    trusted keys. Exit 1 if any module is unsigned or (with --trust) does not verify.

    \b
    Example:
      kabigate verify --trust /boot/vmlinuz-6.1.0-56-amd64 --trust mok.der jool/*.ko
    """
    trust = load_trust(list(trust_paths))
    policy = trust_policy(require_codesigning_eku, accept_module_signing_oid, reject_expired)
    files = _module_files(modules)
    results = []
    with progress("verifying modules", len(files)) as advance:
        for path in files:
            results.append((path, verify_file(path, trust if trust_paths else None, policy)))
            advance()
    reports: list[dict[str, Any]] = [{"path": path, "signed": check.result != "ENODATA", "signer": check.signer,
                "key_id": check.key_id, "hash_algorithm": check.hash_algorithm,
                "result": _result_word(check, bool(trust_paths)), "error": None if check.result == "ok" else
                check.result, "trusted_by": check.trusted_by, "message": check.message} for path, check in results]
    if as_json:
        emit_json({"trust": [{"subject": t.subject, "source": t.source} for t in trust], "modules": reports})
    else:
        if trust_paths:
            out.print(f"trusting {len(trust)} keys: " + ", ".join(f"'{t.subject}'" for t in trust), markup=False)
        for report in reports:
            out.print(f"{report['result'].upper():<10} {report['path']}", markup=False)
            if report["signed"]:
                out.print(f"           signer '{report['signer']}' key {report['key_id']} {report['hash_algorithm']}",
                          markup=False)
            if report["result"] not in ("verified", "signed"):
                out.print(f"           {report['message']}", markup=False)
    good = {"verified"} if trust_paths else {"verified", "signed"}
    sys.exit(EXIT_OK if all(r["result"] in good for r in reports) else EXIT_INCOMPATIBLE)


def _result_word(check, trusting: bool) -> str:
    if check.result == "ok":
        return "verified" if trusting else "signed"
    return {"ENODATA": "unsigned", "ENOKEY": "untrusted", "ENOPKG": "unsupported"}.get(check.result, "bad")
