"""`kabigate rpm-deps | precheck`: RPM kABI dependencies, written and read.

rpm-deps writes what RHEL's find-requires.ksyms / find-provides.ksyms write into kmod RPMs:
    Requires: kernel(sym) = 0x<crc>   (ksym(sym) for symbols the given kernel does not export)
    Provides: ksym(sym) = 0x<crc>     (a kmod's exports), kernel(sym) = 0x<crc> (a kernel's)
precheck reads them back: each package's kernel(sym)/ksym(sym) Requires (from the RPM header, or
from a repository's primary.xml without downloading any package) against a kernel's exports.
"""

from __future__ import annotations

import os
import sys

import click

from kabigate.cli.shared import (
    EXIT_INCOMPATIBLE,
    EXIT_OK,
    crc_text,
    emit_json,
    load_kernel_with_progress,
    out,
    read_modules_with_progress,
)
from kabigate.errors import InputError
from kabigate.inputs.modules import walk_files
from kabigate.inputs.packages import (
    Package,
    check_kabi_requires,
    is_package_file,
    is_repository,
    is_url,
    kabi_dependencies,
    open_repository,
)
from kabigate.vocabulary import RequiresVerdict


@click.command("rpm-deps")
@click.option("--kernel", "-k", "kernel_paths", multiple=True, metavar="KERNEL",
              help="The kernel the modules are built for: imports it exports become kernel(sym), "
                   "others ksym(sym). With --provides and no MODULE: the kernel's own Provides.")
@click.option("--provides", is_flag=True, help="Print Provides (the modules' or the kernel's exports).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("modules", nargs=-1, metavar="[MODULE_OR_DIR_OR_PACKAGE...]")
def rpm_deps(kernel_paths, provides, as_json, modules) -> None:
    """RPM Requires (or --provides) lines for kmod spec files, like RHEL's find-requires.ksyms.

    \b
    Example:
      kabigate rpm-deps jool/*.ko
    """
    if not modules and not (provides and kernel_paths):
        raise click.UsageError("give MODULE_OR_DIR_OR_PACKAGE..., or --provides with --kernel")
    kernel = load_kernel_with_progress(list(kernel_paths)) if kernel_paths else None
    lines: list[tuple[str, str, int]] = []
    if not modules and kernel is not None:  # --provides with --kernel, as checked above
        lines = [("kernel", e.name, e.crc) for e in sorted(kernel.exports.values(), key=lambda e: e.name)
                 if e.crc is not None]
    else:
        parsed = read_modules_with_progress(list(modules))
        exported = {e.name: e for m in parsed for e in m.exports}
        if provides:
            lines = [("ksym", e.name, e.crc) for e in sorted(exported.values(), key=lambda e: e.name)
                     if e.crc is not None]
        else:
            needed: dict[str, int] = {}
            for module in parsed:
                for version in module.versions or ():
                    if version.name not in exported:
                        needed.setdefault(version.name, version.crc)
            for name in sorted(needed):
                kind = "kernel" if kernel is None or name in kernel.exports else "ksym"
                lines.append((kind, name, needed[name]))
    if as_json:
        emit_json({"kind": "provides" if provides else "requires",
                   "dependencies": [{"name": f"{kind}({name})", "symbol": name, "crc": crc_text(crc)}
                                    for kind, name, crc in lines]})
        return
    for kind, name, crc in lines:
        out.print(f"{kind}({name}) = 0x{crc:08x}", markup=False)


@click.command()
@click.option("--kernel", "-k", "kernel_paths", multiple=True, required=True, metavar="KERNEL",
              help="Kernel to check against (as for `check`).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("packages", nargs=-1, required=True, metavar="PACKAGE_OR_DIR_OR_REPO...")
def precheck(kernel_paths, as_json, packages) -> None:
    """Presence and CRC of every kernel(sym)/ksym(sym) an RPM Requires, from package headers or
    repository metadata alone (no payload read, nothing downloaded). `check` then applies every
    loader rule to the modules themselves. Exit 1 if a requirement is not met.

    \b
    Example:
      kabigate precheck -k kernel-core-5.14.0-427.el9.x86_64.rpm kmod-jool-4.1.10-1.el9.x86_64.rpm
    """
    kernel = load_kernel_with_progress(list(kernel_paths))
    reports = []
    for label, requires in _requirements(list(packages)):
        kabi = kabi_dependencies(requires)
        findings = check_kabi_requires(kabi, kernel.exports)
        reports.append({"package": label, "kabi_requires": len(kabi),
                        "verdict": RequiresVerdict.FAILS if findings else RequiresVerdict.PASSES,
                        "findings": [{"code": f.code, "symbol": f.symbol, "required_crc": crc_text(f.required_crc),
                                      "kernel_crc": crc_text(f.kernel_crc)} for f in findings]})
    if as_json:
        emit_json({"kernel": {"release": kernel.release, "exports": len(kernel.exports), "sources": kernel.sources},
                   "packages": reports})
    else:
        out.print(f"kernel {kernel.release}  {len(kernel.exports)} exports", markup=False)
        for report in reports:
            out.print(f"{report['verdict'].upper():<6} {report['package']}  "
                      f"({report['kabi_requires']} kernel(sym)/ksym(sym) requires)", markup=False)
            for finding in report["findings"]:
                out.print(f"       {finding['code']}: {finding['symbol']} (requires {finding['required_crc']}, "
                          f"kernel {finding['kernel_crc'] or '-'})", markup=False)
    sys.exit(EXIT_INCOMPATIBLE if any(r["findings"] for r in reports) else EXIT_OK)


def _requirements(paths: list[str]):
    for path in paths:
        if is_url(path) and not path.endswith(".rpm") or (os.path.isdir(path) and is_repository(path)):
            repository = open_repository(path if is_url(path) else os.path.abspath(path))
            for entry in repository.kmod_packages():
                yield entry.nevra, entry.requires
        elif os.path.isdir(path):
            found = sorted(p for p in walk_files(path) if p.endswith(".rpm"))
            if not found:
                raise InputError(f"{path}: no RPM packages found")
            yield from _requirements(found)
        elif is_url(path) or is_package_file(path):
            package = Package(path)
            if package.format != "rpm":
                raise InputError(f"{path}: not an RPM (only RPMs carry kernel(sym) requirements)")
            yield package.label, package.requires
            package.close()
        else:
            raise InputError(f"{path}: not an RPM package, a folder of them, or a repository")
