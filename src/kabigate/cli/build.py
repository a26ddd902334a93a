"""`kabigate build`: a driver package built from source against a kernel's build tree, in a sandbox."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from kabigate.builder.buildtree import build_tree
from kabigate.builder.result import BuildResult
from kabigate.builder.sandbox import Limits, check_sandbox
from kabigate.builder.source import Signing, build_source, is_build_source
from kabigate.cli.shared import EXIT_INCOMPATIBLE, EXIT_OK, emit_json, err, out
from kabigate.cli.store import store_option
from kabigate.errors import InputError
from kabigate.signing.keys import HASHES, PASSPHRASE_ENV, load_signing_key
from kabigate.vocabulary import BuildOutcome


@click.command()
@click.option("--kernel", "-k", "kernel", multiple=True, required=True, metavar="HEADERS",
              help="The kernel's build tree: a headers folder (or a package root holding lib/modules/RELEASE/build), "
                   "or its packages: linux-headers-RELEASE, -common and linux-kbuild .debs, a kernel-devel RPM. "
                   "Repeatable.")
@click.argument("source", type=click.Path(exists=True))
@click.option("--db", metavar="PATH_OR_URL", envvar="KABIGATE_DB",
              help="Store the outcome here (also $KABIGATE_DB): the built modules as a driver build, a failure or "
                   "exclusion with its log.")
@click.option("--name", help="The package name (default: dkms.conf's PACKAGE_NAME, the source RPM's name, "
              "a Kbuild folder's name).")
@click.option("--package-version", help="The package version (default: dkms.conf's PACKAGE_VERSION, the source "
              "RPM's version-release).")
@click.option("--timeout", type=click.FloatRange(min=1), default=Limits.wall_seconds, show_default=True,
              help="Seconds the build may take.")
@click.option("--sign-key", type=click.Path(dir_okay=False), metavar="KEY",
              help=f"Sign every built module with this private key (PEM or DER; passphrase from ${PASSPHRASE_ENV}), "
                   "as sign-file does, before it is kept or stored.")
@click.option("--sign-cert", type=click.Path(dir_okay=False), metavar="CERT", help="The signing key's certificate.")
@click.option("--hash", "hash_name", type=click.Choice(list(HASHES)), default="sha256", show_default=True,
              help="The signature's hash algorithm.")
@click.option("--keep", type=click.Path(file_okay=False), metavar="DIR", help="Copy the built modules into DIR.")
@click.option("--log", "show_log", is_flag=True, help="Print the build's log (bounded) after the outcome.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def build(kernel: tuple[str, ...], source: str, db: str | None, name: str | None, package_version: str | None,
          timeout: float, sign_key: str | None, sign_cert: str | None, hash_name: str, keep: str | None,
          show_log: bool, as_json: bool) -> None:
    """Build SOURCE (a Debian *-dkms .deb, a folder with dkms.conf, a kmod source RPM, a Kbuild folder)
    against a kernel.

    dkms builds DKMS packages (`dkms build`, private trees), rpmbuild --rebuild a kmod source RPM
    (ELRepo's kmod_kernel_version), make -C KDIR M= a Kbuild folder; always
    in a bubblewrap sandbox: no network, the host read-only, nobody's uid, limits on time, memory,
    processes and output. Exit status 0 built, 1 failed or excluded, 2 bad input.

    \b
    Example:
      kabigate build -k /lib/modules/6.12.107+deb12-amd64/build v4l2loopback-dkms_0.12.7-2_all.deb
      kabigate build -k linux-headers-6.1.0-56-amd64_6.1.192-2_amd64.deb \\
        -k linux-headers-6.1.0-56-common_6.1.192-2_all.deb -k linux-kbuild-6.1_6.1.192-3_amd64.deb \\
        --db kabigate.db --json /usr/src/jool-4.1.9
      kabigate build -k kernel-devel-5.14.0-427.el9.x86_64.rpm --timeout 600 kmod-jool-4.1.9-1.el9.src.rpm
      kabigate build -k /lib/modules/6.1.0-56-amd64/build --sign-key repo.key --sign-cert repo.crt \\
        --hash sha512 --db kabigate.db acpi-call-dkms_1.2.2-2_all.deb
    """
    path = Path(source).resolve()
    if not is_build_source(path):
        raise InputError(f"{source}: not a *-dkms .deb, a folder with dkms.conf, a kmod .src.rpm nor a Kbuild folder")
    signing = _signing(sign_key, sign_cert, hash_name)
    limits = Limits(wall_seconds=timeout)
    with tempfile.TemporaryDirectory(prefix="kabigate-build-") as work:
        check_sandbox(Path(work))
        (Path(work) / "tree").mkdir()
        tree = build_tree(list(kernel), Path(work) / "tree")
        if err.is_terminal:
            err.print(f"building {path.name} against {tree.release}...", markup=False)
        build_work = Path(work) / "build"
        build_work.mkdir()
        result = build_source(path, tree, build_work, limits, name, package_version, signing)
        document = result.json()
        if db is not None:
            from kabigate.services.build import store_build  # the store's imports only when storing
            from kabigate.store import Store

            with Store.open(db) as store:
                document["stored"] = store_build(store, result, str(path))
        if keep is not None and result.modules:
            os.makedirs(keep, exist_ok=True)
            for module in result.modules:
                shutil.copy2(module, keep)
    if as_json:
        emit_json(dict(document, log=result.log) if show_log else document)
    else:
        _print(result, show_log)
    sys.exit(EXIT_OK if result.outcome == BuildOutcome.BUILT else EXIT_INCOMPATIBLE)


@click.command("build-log")
@click.argument("driver")
@click.argument("version")
@click.argument("kernel", metavar="KERNEL_RELEASE")
@click.option("--json", "as_json", is_flag=True, help="Print the record and its log as JSON.")
@store_option
def build_log(store, driver: str, version: str, kernel: str, as_json: bool) -> None:
    """Print the stored log of DRIVER VERSION's failed or excluded build for KERNEL_RELEASE (bounded:
    its first 256 KiB and last 768 KiB), after its outcome and first error line.

    \b
    Example:
      kabigate build-log vpoll 0.1-1 6.12.107+deb12-amd64
      kabigate build-log --db kabigate.db --json openrazer-driver 3.5.1+dfsg-2 6.1.0-47-cloud-amd64
    """
    from kabigate.services.build import build_log_json  # the store's imports only for this command

    document = build_log_json(store, driver, version, kernel)
    if document is None:
        raise InputError(f"no failed or excluded build of {driver} {version} for {kernel} in the store")
    if as_json:
        emit_json(document)
        return
    out.print(f"{document['outcome']}: {driver} {version} for {kernel}: {document['error']}", markup=False)
    out.print(document["log"] if document["log"] is not None
              else "(no log kept: recorded without kabigate build's log)", markup=False)


def _signing(key: str | None, cert: str | None, hash_name: str) -> Signing | None:
    if (key is None) != (cert is None):
        raise InputError("--sign-key and --sign-cert go together")
    if key is None or cert is None:
        return None
    passphrase = os.environ.get(PASSPHRASE_ENV)
    return Signing(load_signing_key(key, cert, passphrase.encode() if passphrase else None), hash_name)


def _print(result: BuildResult, show_log: bool) -> None:
    head = f"{result.outcome}: {result.package} {result.version or ''} for {result.kernel_release}"
    signed = f", signed by {result.signer}" if result.signer else ""
    out.print(f"{' '.join(head.split())} ({result.method}, {result.seconds:.1f} s{signed})", markup=False)
    for module in result.modules:
        out.print(f"  {module.name}", markup=False)
    if result.error:
        out.print(f"  {result.error}", markup=False)
    if show_log:
        out.print(result.log, markup=False)
