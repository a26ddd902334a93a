"""`kabigate db | ingest | matrix | history | kernels | drivers`: the store and what it remembers."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import sys

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kabigate.cli.shared import (
    TERMINAL,
    Group,
    cells,
    crc_text,
    cut_cell,
    emit_json,
    err,
    out,
    progress,
    say,
    write_atomically,
)
from kabigate.errors import InputError
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.manifest import read_build_manifest
from kabigate.inputs.modules import count_modules
from kabigate.reports.verdicts import cell_text, drivers_json, kernel_record_json, shown_aliases
from kabigate.rules import RULES_VERSION
from kabigate.services.ingest import (
    checked_name,
    count_pending_verdicts,
    enforce_signatures,
    ingest_driver_build,
    ingest_kernel,
    ingested_builds_json,
    read_driver_builds,
    record_build_failure,
    refresh_verdicts,
)
from kabigate.services.matrix import (
    Matrix,
    build_matrix,
    driver_history,
    failing_cell_details,
    history_json,
    matrix_by_build_json,
    matrix_csv,
    package_matrix,
)
from kabigate.services.packages import (
    PackageMatrix,
    PackageVerdict,
    on_newest_kernels,
    package_matrix_json,
    package_verdict_json,
    package_verdicts,
    why_not,
)
from kabigate.store import KernelRecord, Removed, Store
from kabigate.vocabulary import PackageState

PACKAGE_TEXTS: dict[str, str] = {
    PackageState.LOADS: "ok", PackageState.LOADS_AFTER_REBUILD: "rebuilt", PackageState.EXCLUDED: "excluded",
    PackageState.REBUILD_FAILS: "nobuild", PackageState.BROKEN: "broken", PackageState.NOT_TRIED: "-",
}


def store_option(command=None, *, creates: bool = False):
    """--db on every store command (also `kabigate --db` and $KABIGATE_DB); the store is opened for
    the command. Only commands that add to a store (`creates`: ingest, watch) make a missing one."""
    def decorate(command):
        @click.option("--db", "db", metavar="PATH_OR_URL", envvar="KABIGATE_DB",
                      help="SQLite file or postgresql:// URL (default: $KABIGATE_DB, else the user's data "
                           "directory's kabigate.db).")
        @functools.wraps(command)
        def with_store(db, **kwargs):
            with Store.open(db, create=creates) as store:
                return command(store, **kwargs)
        return with_store
    return decorate(command) if command is not None else decorate


def json_option(command):
    return click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")(command)


def queue_option(command):
    return click.option("--queue", is_flag=True, help="Enqueue for the workers (kabigate worker) instead: paths "
                                                      "must be where the workers see them, or URLs.")(command)


def _absolute(paths) -> list[str]:
    """Paths as a worker elsewhere in the filesystem finds them (URLs as they are)."""
    return [p if "://" in p else os.path.abspath(p) for p in paths if p]


# -- db -------------------------------------------------------------------------------------

@click.group(cls=Group)
def db() -> None:
    """Create, upgrade, inspect and tidy the store.

    \b
    Example:
      kabigate db upgrade --db postgresql://kabigate@db/kabigate
      kabigate db remove-kernel 6.1.0-54-amd64
    """


@db.command("upgrade")
@click.option("--db", "location", metavar="PATH_OR_URL", envvar="KABIGATE_DB", help="The store (see ingest).")
def db_upgrade(location: str | None) -> None:
    """Create the store, or bring an older one to this kabigate's schema (its data is kept)."""
    with Store.connect(location) as store:
        before, after = store.upgrade()
        out.print(f"{store.url}: schema at revision {after}" + ("" if before == after else
                                                                  f" (was {before or 'empty'})"), markup=False)


@db.command("status")
@click.option("--db", "location", metavar="PATH_OR_URL", envvar="KABIGATE_DB", help="The store (see ingest).")
@json_option
def db_status(location: str | None, as_json: bool) -> None:
    """Schema revision and what the store holds."""
    with Store.connect(location, create=False) as store:
        current, head = store.revisions()
        counts = store.counts() if current == head else {}
        pending = count_pending_verdicts(store) if current == head else None
        streams = _stream_status(store) if current == head else []
        if as_json:
            emit_json({"url": store.url, "revision": current, "head": head, "rows": counts,
                       "pending_verdicts": pending, "streams": streams})
            return
        out.print(f"{store.url}\nschema revision {current or '(none)'} (this kabigate: {head})", markup=False)
        for table, count in counts.items():
            out.print(f"  {table:<16} {count:>10,}", markup=False)
        if pending:
            out.print(f"  {pending} verdicts to (re)compute: the next matrix does it", markup=False)
        for stream in streams:
            trusted = stream["trusted_certificates"]
            signatures = ("signatures enforced, trusting " + ", ".join(trusted)) if trusted is not None \
                else "signatures not enforced"
            out.print(f"stream {stream['name']}: {stream['kernels']} kernels "
                      f"({', '.join(stream['architectures']) or 'architecture unknown'}); {signatures}", markup=False)


def _stream_status(store: Store) -> list[dict]:
    """Each stream's kernels, architectures and whether it enforces module signatures (trusting what)."""
    enforcing = store.enforcing_streams()
    status = []
    for name in store.streams():
        kernels = store.kernels(name)
        trusted = enforcing.get(name)
        status.append({"name": name, "kernels": len(kernels),
                       "architectures": sorted({k.machine for k in kernels if k.machine}),
                       "trusted_certificates": None if trusted is None else [source for _, source in trusted]})
    return status


def _report_removed(removed: Removed, what: str, as_json: bool) -> None:
    if as_json:
        emit_json({"done": what, "removed": removed.counts})
        return
    done = ", ".join(f"{count} {name}" for name, count in removed.counts.items()) or "nothing else"
    out.print(f"{what}: removed {done}", markup=False)


@db.command("remove-kernel")
@click.argument("release")
@store_option
@json_option
def db_remove_kernel(store: Store, release: str, as_json: bool) -> None:
    """Remove a kernel (each flavor of RELEASE) with its verdicts, stream places and gate runs.

    \b
    Example:
      kabigate db remove-kernel 6.1.0-54-amd64
    """
    with store.transaction():
        removed = store.remove_kernels(release)
    _report_removed(removed, f"kernel {release}", as_json)


@db.command("remove-driver")
@click.argument("driver")
@click.option("--version", metavar="VERSION", help="Only the builds (and build failures) of this package version.")
@store_option
@json_option
def db_remove_driver(store: Store, driver: str, version: str | None, as_json: bool) -> None:
    """Remove a driver's builds (all, or one version's) with their verdicts and build failures.

    \b
    Example:
      kabigate db remove-driver jool --version 4.1.9-1
    """
    with store.transaction():
        removed = store.remove_builds(driver, version)
    _report_removed(removed, f"driver {driver}" + ("" if version is None else f" {version}"), as_json)


@db.command("alias-driver")
@click.argument("driver")
@click.argument("alias")
@store_option
@json_option
def db_alias_driver(store: Store, driver: str, alias: str, as_json: bool) -> None:
    """Make ALIAS another name of DRIVER: builds ingested as ALIAS are DRIVER's, and `history ALIAS`,
    `db remove-driver ALIAS` and `build-log ALIAS` name DRIVER. A driver already stored as ALIAS (a
    module tree ingested as `acpi_call`, its package as `acpi-call`) is merged into DRIVER, in one
    transaction. Package names are already one name (kmod-jool, jool-dkms and jool-kmp-* ingest as jool).

    \b
    Example:
      kabigate db alias-driver acpi-call acpi_call
    """
    with store.transaction():
        merged = store.alias_driver(driver, checked_name(alias, "driver name"))
    name = store.canonical_driver(driver)
    if as_json:
        emit_json({"driver": name, "alias": alias, "merged": merged.counts})
        return
    moved = ", ".join(f"{count} {what}" for what, count in merged.counts.items())
    out.print(f"{alias} is an alias of {name}" + (f": merged {moved}" if moved else ""), markup=False)


@db.command("rename-stream")
@click.argument("old")
@click.argument("new")
@store_option
@json_option
def db_rename_stream(store: Store, old: str, new: str, as_json: bool) -> None:
    """Rename a stream (its gate runs follow).

    \b
    Example:
      kabigate db rename-stream debian-6.1 debian-12
    """
    with store.transaction():
        store.rename_stream(old, checked_name(new, "stream name"))
    _report_removed(Removed(), f"stream {old} renamed {new}", as_json)


@db.command("move-kernel")
@click.argument("release")
@click.option("--from", "source", metavar="STREAM", required=True, help="The stream it is in.")
@click.option("--to", "target", metavar="STREAM", required=True, help="The stream it belongs to (made if new).")
@store_option
@json_option
def db_move_kernel(store: Store, release: str, source: str, target: str, as_json: bool) -> None:
    """Move a kernel from one stream to another; both keep their version order.

    \b
    Example:
      kabigate db move-kernel 6.12.107+deb12-amd64 --from debian-6.1 --to debian-6.12
    """
    with store.transaction():
        store.move_kernel(release, source, checked_name(target, "stream name"))
    _report_removed(Removed(), f"kernel {release} moved from {source} to {target}", as_json)


@db.command("enforce-signatures")
@click.argument("stream")
@click.option("--cert", "certs", multiple=True, metavar="FILE",
              help="What its kernels trust: a kernel image (vmlinuz, vmlinux: its built-in keys), or an enrolled "
                   "MOK certificate (PEM or DER); repeat.")
@click.option("--off", is_flag=True, help="Its kernels do not enforce signatures (the default).")
@store_option
@json_option
def db_enforce_signatures(store: Store, stream: str, certs: tuple[str, ...], off: bool, as_json: bool) -> None:
    """Mark a stream's kernels as enforcing module signatures (Secure Boot, module.sig_enforce=1).

    Its verdicts are judged again as module_sig_check() would: an unsigned module, or one whose
    signer none of the trusted keys is, fails (unsigned, untrusted-signature). Stored with the
    stream, not in a gate policy: it is how the kernels boot, so every view of them (matrix,
    history, gate, the dashboard) agrees.

    \b
    Example:
      kabigate db enforce-signatures debian-6.1 --cert /boot/vmlinuz-6.1.0-56-amd64 --cert /var/lib/dkms/mok.pub
      kabigate db enforce-signatures debian-6.1 --off
    """
    from kabigate.signing.verify import load_trust  # cryptography: only for this command

    if off == bool(certs):
        raise click.UsageError("give the trusted certificates (--cert FILE...), or --off")
    trust = None if off else load_trust(list(certs))
    if trust == []:
        raise InputError(f"{', '.join(certs)}: no certificate found: give a kernel image or certificate files")
    with progress("judging the stream's kernels again", None) as advance:
        computed = enforce_signatures(store, stream, trust, advance)
    trusted = [{"subject": t.subject, "source": t.source} for t in trust or []]
    if as_json:
        emit_json({"stream": stream, "enforced": not off, "trusted": trusted, "verdicts": computed})
        return
    what = "does not enforce signatures" if off else \
        f"enforces signatures, trusting {', '.join(repr(t['subject']) for t in trusted)}"
    out.print(f"{stream} {what}; {computed} verdicts judged again", markup=False)


@db.command("prune")
@store_option
@json_option
def db_prune(store: Store, as_json: bool) -> None:
    """Delete verdicts of older rules, empty streams, and modules and drivers nothing refers to.

    \b
    Example:
      kabigate db prune
    """
    with store.transaction():
        removed = store.prune(RULES_VERSION)
    _report_removed(removed, "prune", as_json)


# -- ingest ---------------------------------------------------------------------------------

@click.group(cls=Group)
def ingest() -> None:
    """Add kernels and driver builds to the store; each is judged against everything stored.

    \b
    Example:
      kabigate ingest kernel --stream debian-6.1 linux-image-6.1.0-56-amd64.deb,linux-headers-6.1.0-56-amd64.deb
      kabigate ingest drivers kmod-jool-4.1.10-1.el9.x86_64.rpm
    """


@ingest.command("kernel")
@click.option("--stream", metavar="NAME", help="The stream the kernels belong to (e.g. debian-6.1, c9s, rhel-9.4).")
@click.option("--vermagic", help="The kernel's vermagic, when its files do not tell it.")
@queue_option
@json_option
@click.argument("kernels", nargs=-1, required=True, metavar="KERNEL...")
@store_option(creates=True)
def ingest_kernels(store: Store, stream: str | None, vermagic: str | None, queue: bool, as_json: bool,
                   kernels: tuple[str, ...]) -> None:
    """Store kernels: each KERNEL is what `check -k` takes; join the paths of one kernel with a
    comma (image.deb,headers.deb). A kernel already stored is left as it is (its stream is added)."""
    if queue:
        from kabigate.cli.service import queue_requests
        from kabigate.workers.work import ingest_kernel_request

        queue_requests(store, [ingest_kernel_request(_absolute(argument.split(",")), stream, vermagic=vermagic)
                               for argument in kernels], as_json)
        return
    results = []
    for argument in kernels:
        paths = [p for p in argument.split(",") if p]
        package_count = sum(1 for p in paths if p.endswith((".rpm", ".deb")) or "://" in p)
        with progress(f"reading {os.path.basename(paths[0])}", package_count or 1) as advance:
            kernel = load_kernel(paths, vermagic, advance)
        with progress(f"judging driver builds on {kernel.release}", len(store.driver_builds())) as advance:
            result = ingest_kernel(store, kernel, stream, advance)
        results.append(result)
        if not as_json:
            action = "stored" if result.created else "already stored"
            where = f" in {stream}" if stream else ""
            out.print(f"{action}: {result.record.release}{where} ({result.record.exports} exports, "
                      f"{result.verdicts} verdicts)", markup=False)
    if as_json:
        emit_json({"kernels": [dict(kernel_record_json(r.record), created=r.created, verdicts=r.verdicts)
                               for r in results]})


@ingest.command("drivers")
@click.option("--name", help="Driver name for module trees (default: the first module's name); "
                             "packages are named by their package name.")
@click.option("--version", "version", help="Version for module trees (default: the modules' modinfo version).")
@click.option("--manifest", "manifest_path", metavar="FILE",
              help="Many builds in one run: a TOML file of [[build]] (path, name, version) and [[failure]] "
                   "(name, version, kernel, error) tables; paths relative to its folder.")
@queue_option
@json_option
@click.argument("paths", nargs=-1, metavar="MODULES_OR_PACKAGES_OR_REPO...")
@store_option(creates=True)
def ingest_drivers(store: Store, name: str | None, version: str | None, manifest_path: str | None, queue: bool,
                   as_json: bool, paths: tuple[str, ...]) -> None:
    """Store driver builds: each package (kmod RPM or deb, in a folder or a yum repository) is one
    build whose modules form a set; the loose modules under each path are one build.

    \b
    Example:
      kabigate ingest drivers kmod-jool-4.1.10-1.el9.x86_64.rpm kmod-v4l2loopback-0.12.7-1.el9.x86_64.rpm
      kabigate ingest drivers --name jool --version 4.1.9-1 /var/lib/dkms/jool/4.1.9/6.1.0-56-amd64/x86_64/module
      kabigate ingest drivers --manifest corpus.toml
    """
    if not paths and manifest_path is None:
        raise click.UsageError("give the builds' paths, or --manifest FILE")
    if manifest_path is not None and (paths or name or version or queue):
        raise click.UsageError("--manifest names every build itself: no PATHS, --name, --version or --queue")
    if queue:
        from kabigate.cli.service import queue_requests
        from kabigate.workers.work import ingest_drivers_request

        queue_requests(store, [ingest_drivers_request(_absolute(paths), name, version)], as_json)
        return
    if manifest_path is not None:
        manifest = read_build_manifest(manifest_path)
        entries = [(entry.path, entry.name, entry.version) for entry in manifest.builds]
        for failure in manifest.failures:
            record_build_failure(store, failure.name, failure.version, failure.kernel, failure.error)
    else:
        entries = [(path, name, version) for path in paths]
    with progress("reading modules", count_modules([path for path, _n, _v in entries])) as advance:
        builds = [build for path, entry_name, entry_version in entries
                  for build in read_driver_builds([path], entry_name, entry_version, advance)]
    results = []
    kernels = len(store.kernels())
    for build in builds:
        with progress(f"judging {build.driver} on stored kernels", kernels) as advance:
            result = ingest_driver_build(store, build, advance)
        results.append(result)
        if not as_json:
            action = "stored" if result.created else "already stored"
            out.print(f"{action}: {result.record.label} ({len(result.record.modules)} modules, "
                      f"{result.verdicts} verdicts)", markup=False)
    if as_json:
        emit_json(ingested_builds_json(results))


@ingest.command("build-failure")
@click.option("--name", required=True, help="Driver name.")
@click.option("--version", "version", required=True, help="The driver version that failed to build.")
@click.option("--kernel", "kernel_release", required=True, metavar="RELEASE", help="The kernel it was built for.")
@click.option("--error", required=True, help="What failed (one line is kept).")
@store_option(creates=True)
def ingest_build_failure(store: Store, name: str, version: str, kernel_release: str, error: str) -> None:
    """Record that a driver version does not build against a kernel (real data for the matrix)."""
    created = record_build_failure(store, name, version, kernel_release, error)
    out.print(f"{'recorded' if created else 'already recorded'}: {name} {version} does not build for "
              f"{kernel_release}", markup=False)


# -- reading back ---------------------------------------------------------------------------

@click.command()
@click.option("--stream", metavar="NAME", help="Only this stream's kernels (default: every stream).")
@click.option("--driver", metavar="GLOB", help="Only drivers whose name matches (shell pattern).")
@click.option("--since", metavar="KERNEL", help="Only kernels from this release (or package version) on.")
@click.option("--arch", metavar="ARCH", help="Only the kernels and builds of this architecture (x86_64, aarch64, "
                                             "ppc64le, s390x; default: every one, a table each).")
@click.option("--packages", is_flag=True, help="Packages x kernels: does some build of each package load whole "
                                               "(only the builds of the kernel's series count), and if not, how far.")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv", "html"]), default="table",
              show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Write the report to FILE (written whole, then renamed into place).")
@json_option
@store_option
def matrix(store: Store, stream, driver, since, arch, packages: bool, output_format: str, output: str | None,
           as_json: bool) -> None:
    """Driver builds x kernels: which build loads on which kernel, and the first reason when not;
    with --packages, each driver package's state on each kernel.

    \b
    Example:
      kabigate matrix --stream debian-6.1 --format html --output matrix.html
      kabigate matrix --packages --stream debian-6.12
      kabigate matrix --stream debian-6.1 --arch aarch64
    """
    if as_json:
        output_format = "json"
    with progress("judging pending cells", count_pending_verdicts(store)) as advance:
        if packages:
            if output_format == "html":
                raise click.UsageError("--packages: the formats are table, json and csv")
            refresh_verdicts(store, advance)
            _write(_package_report(package_matrix(store, stream, driver, since, arch), output_format, output),
                   output)
            return
        result = build_matrix(store, stream, driver, since, advance, arch=arch)
    if output_format == "table" and output is None:
        _print_matrix(result)
        return
    if output_format == "table":
        buffer = io.StringIO()
        _print_matrix(result, buffer)
        text = buffer.getvalue()
    elif output_format == "json":
        text = json.dumps(matrix_by_build_json(result, failing_cell_details(store, result, explainable_only=True)),
                          indent=2) + "\n"
    elif output_format == "csv":
        text = matrix_csv(result)
    else:
        from kabigate.reports.html import matrix_html

        text = matrix_html(result, failing_cell_details(store, result))
    _write(text, output)


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomically(output, text)
        err.print(f"wrote {output}", markup=False)


def package_text(verdict: PackageVerdict) -> str:
    """A package cell: ok (a stored build loads), rebuilt (a build made for this kernel loads),
    loaded/modules when partial, the state otherwise."""
    if verdict.state == PackageState.PARTIAL and verdict.best is not None:  # partial: a best build loads some
        return f"{verdict.modules_loading}/{verdict.best.cell.modules}"
    return PACKAGE_TEXTS[verdict.state]


def _package_report(result: PackageMatrix, output_format: str, output: str | None) -> str:
    if output_format == "json":
        return json.dumps(package_matrix_json(result), indent=2) + "\n"
    buffer = io.StringIO()
    if output_format == "csv":
        writer = csv.writer(buffer)
        writer.writerow(["package", *[k.release for k in result.kernels]])
        for name in result.drivers:
            writer.writerow([name, *[result.verdict(name, k).state for k in result.kernels]])
        return buffer.getvalue()
    from rich.console import Console

    # A terminal's width when the table goes to one (shared.TERMINAL), else whole rows.
    width = out.width if TERMINAL and output is None else 400
    console = Console(file=buffer, width=width, highlight=False, color_system=None)
    labels = _short_labels([k.release for k in result.kernels])
    table = Table(title=Text(f"{result.stream or 'every stream'}: {len(result.drivers)} packages x "
                             f"{len(result.kernels)} kernels"), title_justify="left", box=None, pad_edge=False)
    table.add_column("package")
    for label in labels:  # folded, not cut, when the terminal is too narrow: "6.1.0…" would name no kernel
        table.add_column(Text(label, overflow="fold"), justify="center")
    for name in result.drivers:
        table.add_row(Text(name), *[Text(package_text(result.verdict(name, k))) for k in result.kernels])
    table.add_row(Text("working"), *[Text(f"{len(result.working(k))}/{len(result.known(k))}") for k in result.kernels])
    console.print(table)
    console.print("  columns: " + ", ".join(f"{label}={k.release}" for label, k in zip(labels, result.kernels)
                                            if label != k.release), markup=False)
    console.print("  ok: a stored build loads; rebuilt: the build made for the kernel loads; N/M: M modules, N load; "
                  "nobuild: its build for the kernel failed; -: nothing known", markup=False)
    return buffer.getvalue()


@click.command()
@click.argument("driver")
@click.option("--stream", metavar="NAME", help="Only this stream (default: every stream).")
@json_option
@store_option
def history(store: Store, driver: str, stream: str | None, as_json: bool) -> None:
    """Along each stream: the kernel each build of DRIVER stops loading on, why, and which build loads again.

    \b
    Example:
      kabigate history jool --stream debian-6.1
    """
    driver = store.canonical_driver(driver)  # an alias's history is its driver's, under its name
    histories = driver_history(store, driver, stream)
    if as_json:
        emit_json(history_json(driver, histories))
        return
    for stream_history in histories:
        out.print(f"[bold]{escape(stream_history.stream or '(no stream)')}[/bold]: "
                  f"{len(stream_history.kernels)} kernels")
        for verdict in _runs(stream_history.packages):
            out.print(f"  package on {verdict[0].kernel.release}"
                      + (f" .. {verdict[-1].kernel.release}" if len(verdict) > 1 else "")
                      + f": {verdict[0].state}" + (f" ({why_not(verdict[-1])})" if why_not(verdict[-1]) else ""),
                      markup=False)
        for build_history in stream_history.builds:
            build = build_history.build
            if not build_history.loads_on:
                out.print(f"  {build.label}: loads on none of them", markup=False)
                continue
            span = f"{build_history.loads_on[0].release}" + (
                f" .. {build_history.loads_on[-1].release}" if len(build_history.loads_on) > 1 else "")
            out.print(f"  {build.label}: loads on {len(build_history.loads_on)} ({span})", markup=False)
            for brk in build_history.breaks:
                why = ", ".join(f"{n} {code}" for code, n in brk.reasons.items())
                symbols = ", ".join(brk.symbols[:6]) + (" ..." if len(brk.symbols) > 6 else "")
                fixed = ("; loads again with " + ", ".join(f"{f.version} (built for {f.built_for})"
                                                           for f in brk.fixed_by)) if brk.fixed_by else ""
                out.print(f"    breaks at {brk.kernel.release}: {why}" + (f" [{symbols}]" if symbols else "")
                          + fixed, markup=False)


def _runs(verdicts: list[PackageVerdict]) -> list[list[PackageVerdict]]:
    """Consecutive kernels on which the package is in the same state."""
    runs: list[list[PackageVerdict]] = []
    for verdict in verdicts:
        if runs and runs[-1][0].state == verdict.state:
            runs[-1].append(verdict)
        else:
            runs.append([verdict])
    return runs


@click.command()
@click.option("--stream", metavar="NAME", help="Only this stream, in its order.")
@json_option
@store_option
def kernels(store: Store, stream: str | None, as_json: bool) -> None:
    """The kernels in the store, and how many driver packages work on each (of those known there).

    \b
    Example:
      kabigate kernels --stream debian-6.1
    """
    records = store.kernels(stream)
    packages = package_verdicts(store, records)
    if as_json:
        emit_json({"kernels": [dict(kernel_record_json(r), packages={"working": len(packages.working(r)),
                                                                     "known": len(packages.known(r))})
                               for r in records]})
        return
    table = Table("release", "streams", "package version", "exports", "module_layout", "packages working", box=None)
    for r in records:
        table.add_row(*cells(r.release, ", ".join(f"{name}#{pos}" for name, pos in r.streams) or "-",
                             r.package_version or "-", f"{r.exports:,}", crc_text(r.module_layout_crc) or "-",
                             f"{len(packages.working(r))} of {len(packages.known(r))}"))
    out.print(table)


@click.command()
@click.option("--driver", metavar="GLOB", help="Only drivers whose name matches.")
@json_option
@store_option
def drivers(store: Store, driver: str | None, as_json: bool) -> None:
    """The driver builds in the store (and recorded build failures), and whether each package works
    on the newest kernel of each stream.

    \b
    Example:
      kabigate drivers --driver 'jool*' --json
    """
    builds = store.driver_builds(driver)
    failures = store.build_failures(driver)
    newest = on_newest_kernels(store, driver)
    if as_json:
        emit_json(dict(drivers_json(builds, failures, store.driver_aliases()), packages=[
            {"stream": stream, **package_verdict_json(verdict)} for stream, verdict in newest]))
        return
    table = Table("driver", "version", "built for", "format", "modules", box=None)
    for b in builds:
        table.add_row(*cells(b.driver, b.version or "-", b.built_for or "-", b.format), cut_cell(", ".join(b.modules)))
    out.print(table)
    for f in failures:
        say(f"does not build: {f.driver} {f.version} for {f.kernel_release}: {f.error}")
    table = Table("package", "stream", "newest kernel", "state", "why not", box=None)
    for stream, verdict in newest:
        table.add_row(*cells(verdict.driver, stream, verdict.kernel.release, verdict.state, why_not(verdict) or ""))
    out.print(table)
    for name, aliases in shown_aliases(builds, failures, store.driver_aliases()).items():
        out.print(f"{name} is also named {', '.join(aliases)}", markup=False)


# -- rendering ------------------------------------------------------------------------------

def _print_matrix(result: Matrix, file=None) -> None:
    from rich.console import Console

    console = out if file is None else Console(file=file, width=400, highlight=False, color_system=None)
    # One table a stream and architecture: a build has cells only on the kernels of its architecture.
    several = len(result.architectures()) > 1
    groups: dict[tuple[str | None, str | None], list[KernelRecord]] = {}
    for kernel in result.kernels:
        key = result.stream or (kernel.streams[0][0] if kernel.streams else None)
        groups.setdefault((key, kernel.machine if several else None), []).append(kernel)
    for (stream, machine), kernels in groups.items():
        labels = _short_labels([k.release for k in kernels])
        table = Table(title=Text(f"{stream or 'kernels in no stream'}{' ' + machine if machine else ''}: "
                                 f"{len(kernels)} kernels"), title_justify="left", box=None, pad_edge=False)
        table.add_column("driver build")
        for label in labels:
            table.add_column(label, justify="center")
        for build in result.builds:
            if not build.runs_on(kernels[0]):
                continue
            texts = [cell_text(result.cell(build, k)) for k in kernels]
            table.add_row(Text(f"{build.driver} {build.version or ''} @{build.built_for or '?'}"),
                          *[_styled(text) for text in texts])
        console.print(table)
        console.print("  columns: " + ", ".join(f"{label}={k.release}" for label, k in zip(labels, kernels)
                                                if label != k.release), markup=False)
    summary = result.summary()
    console.print(f"{summary['driver_builds']} builds of {summary['drivers']} drivers x {summary['kernels']} kernels: "
                  f"{summary['loading']} cells load, {summary['failing']} fail; "
                  f"{summary['build_failures']} recorded build failures", markup=False)


def _styled(text: str) -> str:
    colour = "green" if text == "ok" else "dim" if text == "-" else "red"
    return f"[{colour}]{escape(text)}[/{colour}]"


def _short_labels(releases: list[str]) -> list[str]:
    """Column labels: what differs between the releases (6.1.0-47-amd64, 6.1.0-50-amd64 -> 47, 50)."""
    if len(releases) < 2:
        return releases
    prefix = os.path.commonprefix(releases)
    suffix = os.path.commonprefix([r[::-1] for r in releases])[::-1]
    # Cut a prefix at a "-" only, so "6.1.0-47" and "6.1.0-50" do not share the "6.1.0-5" of "-50"/"-56",
    # and two series (6.1.0-47, 6.12.107+deb12) keep their whole version rather than "1.0-47", "12.107".
    prefix = prefix[:prefix.rfind("-") + 1]
    suffix = suffix[min((i for i in (suffix.find(sep) for sep in ".-+") if i >= 0), default=len(suffix)):]
    labels = [r[len(prefix):len(r) - len(suffix)] for r in releases]
    return labels if all(labels) and len(set(labels)) == len(labels) else releases
