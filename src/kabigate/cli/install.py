"""`kabigate weak-modules` (a drop-in for RHEL's /usr/sbin/weak-modules) and `kabigate preflight`:
install-time decisions, made with the loader rules."""

from __future__ import annotations

import os
import sys

import click

from kabigate.cli.shared import EXIT_INCOMPATIBLE, EXIT_INPUT_ERROR, EXIT_OK, emit_json, err, out, progress
from kabigate.errors import InputError
from kabigate.host import weakmodules as wm

SCRIPT_STOPPED = 1  # RHEL's weak-modules: its `exit 1` (no symvers dump file) and getopt's `usage 1`


class _DropIn(click.Command):
    """With --compat a command line the options parser refuses exits 1, as the script's getopt does."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        compat = "--compat" in args  # before the parser consumes `args`
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            if not compat:
                raise
            error.show()
            raise SystemExit(SCRIPT_STOPPED) from None


@click.command("weak-modules", cls=_DropIn)
@click.option("--add-modules", "action", flag_value="add-modules",
              help="Link the modules (read from stdin, or given as arguments) "
                   "into every installed kernel they load on.")
@click.option("--remove-modules", "action", flag_value="remove-modules",
              help="Remove the links of modules that are gone (stdin or arguments), and what needed them.")
@click.option("--add-kernel", "action", flag_value="add-kernel",
              help="Link every other kernel's extra/ modules that load on KREL (default: the running kernel).")
@click.option("--remove-kernel", "action", flag_value="remove-kernel",
              help="Remove every link of KREL's weak-updates/ (default: the running kernel).")
@click.option("--dry-run", is_flag=True, help="Decide and print, change nothing.")
@click.option("--verbose", is_flag=True, help="Print each decision and the commands run.")
@click.option("--no-initramfs", is_flag=True, help="Never regenerate an initramfs.")
@click.option("--basedir", default="/", metavar="DIR", help="The system root to work on (default /).")
@click.option("--dracut", default="/sbin/dracut", metavar="PATH",
              help="dracut, for /boot/initramfs-<krel>.img (Debian's initrd.img-<krel>: mkinitramfs).")
@click.option("--delete-modules", is_flag=True, hidden=True)  # deprecated in RHEL's script too: no effect
@click.option("--compat", is_flag=True,
              help="Exit as RHEL's script does (contrib/rhel/weak-modules passes it): 0 when the run completed, "
                   "refusals and failed depmod runs said on stderr; 1 when it stopped (bad input, a kernel "
                   "without symvers); --remove-kernel always 0.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.argument("args", nargs=-1, metavar="[KREL | MODULE...]")
def weak_modules(action: str | None, dry_run: bool, verbose: bool, no_initramfs: bool, basedir: str, dracut: str,
                 delete_modules: bool, compat: bool, as_json: bool, args: tuple[str, ...]) -> None:
    """RHEL's weak-modules, deciding with every rule of the kernel's module loader.

    Where RHEL's runs `depmod -naeE` alone (presence and CRC), a module the kernel would refuse
    (module_layout, vermagic, GPL-only, namespaces, ...) is not linked, and the reason is printed.

    Exit 0 when everything judged is linked, 1 when a module was refused for a kernel (or a name
    in the tree was not used), 2 on bad input or when depmod or the initramfs generator failed
    (the links are in place then); --compat: the script's statuses.

    \b
    Example:
      rpm -ql kmod-jool | kabigate weak-modules --add-modules
    """
    try:
        if action is None:
            raise click.UsageError("one of --add-modules, --remove-modules, --add-kernel, --remove-kernel is required")
        if delete_modules:
            err.print("WARNING: --delete-modules is deprecated, no effect", markup=False)
        try:
            outcome = _weak_modules(action, args, basedir, verbose and not as_json, dry_run, no_initramfs, dracut)
        except OSError as error:  # permissions, names too long, a tree changing underfoot
            raise InputError(f"{error.filename or basedir}: {error.strerror or error}") from None
    except (InputError, click.UsageError) as error:
        if not compat:
            raise
        # The script's --remove-kernel ends in `exit 0` whatever happened.
        if isinstance(error, click.UsageError):
            error.show()
        else:
            err.print(f"kabigate: error: {error}", markup=False)
        raise SystemExit(EXIT_OK if action == "remove-kernel" else SCRIPT_STOPPED) from None
    if as_json:
        emit_json({**outcome.to_json(), "dry_run": dry_run})
    else:
        if verbose:
            for argv in outcome.commands:
                out.print(" ".join(argv), markup=False)
        for refusal in outcome.refused:
            first = refusal.reasons[0]
            err.print(f"weak-modules: {refusal.module} (built for {refusal.module_kernel}) will not load on "
                      f"{refusal.kernel}: {first.code}: {first.message}", markup=False)
        for module, why in outcome.skipped:
            err.print(f"weak-modules: {module!r}: not used: {why}", markup=False)
    for problem in outcome.errors:
        err.print(f"kabigate: error: {problem}", markup=False)
    if compat:
        raise SystemExit(EXIT_OK)  # the script does not look at depmod's status either
    raise SystemExit(EXIT_INPUT_ERROR if outcome.errors else
                     EXIT_INCOMPATIBLE if outcome.refused or outcome.skipped else EXIT_OK)


def _weak_modules(action: str, args: tuple[str, ...], basedir: str, verbose: bool, dry_run: bool,
                  no_initramfs: bool, dracut: str) -> wm.Outcome:
    root = wm.Root(basedir)
    runner = wm.WeakModules(root, say=(lambda line: out.print(line, markup=False)) if verbose else (lambda _l: None))
    if action in ("add-modules", "remove-modules"):
        # Paths are bytes to the kernel: read as the filesystem encoding reads them.
        lines = args or (() if sys.stdin.isatty() else os.fsdecode(sys.stdin.buffer.read(1 << 24)).splitlines())
        modules = wm.read_module_list(lines, os.getcwd(), root)
        if not modules:
            raise SystemExit(EXIT_OK)
        plan = (lambda: runner.add_modules(modules)) if action == "add-modules" else (
            lambda: runner.remove_modules(modules))
    else:
        if len(args) > 1:
            raise click.UsageError(f"--{action} takes one kernel release")
        krel = wm.check_release(args[0] if args else os.uname().release)
        plan = (lambda: runner.add_kernel(krel)) if action == "add-kernel" else (lambda: runner.remove_kernel(krel))
    return wm.run(root, plan, wm.Tools(dry_run=dry_run, initramfs=not no_initramfs, dracut=dracut))


# An APT run's .deb files: about 100 bytes each, a full upgrade a few thousand.
_APT_LISTING_MAX = 16 << 20


@click.command()
@click.argument("kernel", metavar="KERNEL_PACKAGE_OR_RELEASE", required=False)
@click.option("--apt", is_flag=True,
              help="Judge the kernels of an APT run: the .deb files DPkg::Pre-Install-Pkgs writes on stdin "
                   "(protocol 1, 2 or 3), each linux-image package with its release's linux-headers.")
@click.option("--root", default="/", metavar="DIR", help="The system whose installed modules are judged (default /).")
@click.option("--db", metavar="PATH_OR_URL", envvar="KABIGATE_DB",
              help="A kabigate store to look for builds that load on the kernel (default: $KABIGATE_DB, else none).")
@click.option("--build", "build", is_flag=True,
              help="Build each DKMS package registered under --root (/var/lib/dkms) against the kernel's headers "
                   "with dkms, in kabigate build's sandbox, sign it with the host's MOK key, and judge its modules.")
@click.option("--headers", multiple=True, metavar="HEADERS",
              help="With --build: the kernel's build tree, as `kabigate build -k` takes it (default: KERNEL, "
                   "when it is a folder holding its lib/modules/RELEASE/build). Repeatable.")
@click.option("--mok-key", type=click.Path(dir_okay=False), metavar="KEY",
              help="With --build: the signing key (default: --root's /var/lib/dkms/mok.key, Debian's dkms; "
                   "passphrase from $KBUILD_SIGN_PIN).")
@click.option("--mok-cert", type=click.Path(dir_okay=False), metavar="CERT",
              help="With --build: its certificate (default: /var/lib/dkms/mok.pub under --root).")
@click.option("--timeout", type=click.FloatRange(min=1), default=1800.0, show_default=True,
              help="With --build: seconds each package's build may take.")
@click.option("--sig-enforce", is_flag=True,
              help="With --build: the kernel enforces module signatures (Secure Boot): trusted are the keys built "
                   "into its image (when KERNEL has it) and the enrolled certificates given with --trust.")
@click.option("--trust", "trust_paths", multiple=True, metavar="CERT",
              help="With --sig-enforce: an enrolled MOK certificate (PEM or DER). Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (with --apt: {\"kernels\": [...]}).")
def preflight(kernel: str | None, apt: bool, root: str, db: str | None, build: bool, headers: tuple[str, ...],
              mok_key: str | None, mok_cert: str | None, timeout: float, sig_enforce: bool,
              trust_paths: tuple[str, ...], as_json: bool) -> None:
    """Before installing a kernel: which installed out-of-tree modules will load on it.

    The modules in weak-updates/, extra/, updates/ and DKMS's trees: which will load, which will
    not and why, and which stored build would.

    KERNEL_PACKAGE_OR_RELEASE: kernel packages or trees as `check -k` takes them (comma-joined:
    kernel-core.rpm,kernel-devel.rpm; linux-image.deb,linux-headers.deb), or a release installed
    under --root or kept in the store. Exit 1 when something installed will stop loading.

    With --apt instead (contrib/apt's hook): every kernel of the APT run; none: exit 0; one without
    its linux-headers package in the run: exit 2 before any is read.

    With --build, the DKMS packages are built for the kernel now, as dkms autoinstall will build
    them when it is installed: exit 1 too when one fails to build or its modules will not load.
    With --apt --build, each kernel's build tree is its linux-headers, -common and linux-kbuild
    packages of the run (KABIGATE_PREFLIGHT_BUILD=1 makes the APT hook ask for it).

    \b
    Example:
      kabigate preflight linux-image-6.1.0-57-amd64-unsigned.deb
      kabigate preflight --build --headers /usr/src/linux-headers-6.1.0-57-amd64 6.1.0-57-amd64
    """
    from kabigate.host.preflight import AptKernel, apt_kernels
    from kabigate.host.preflight import preflight as run_preflight

    if apt == (kernel is not None):
        raise click.UsageError("give KERNEL_PACKAGE_OR_RELEASE or --apt (the APT run's .deb files on stdin)")
    if build and apt and headers:
        raise click.UsageError("--apt --build builds against the run's linux-headers packages, not --headers")
    if (headers or mok_key or mok_cert or sig_enforce) and not build:
        raise click.UsageError("--headers, --mok-key, --mok-cert and --sig-enforce go with --build")
    if trust_paths and not sig_enforce:
        raise click.UsageError("--trust goes with --sig-enforce")
    system = wm.Root(root)
    kernels: list[AptKernel] = []
    build_trees: list[list[str]] = []
    if apt:
        listing = sys.stdin.buffer.read(_APT_LISTING_MAX + 1)
        if len(listing) > _APT_LISTING_MAX:
            raise InputError(f"standard input: more than {_APT_LISTING_MAX >> 20} MiB: not an APT run's .deb files")
        kernels = apt_kernels(os.fsdecode(listing))  # all paired before one is read
        # every kernel's build tree complete, or an input error before any is read
        build_trees = [item.build_tree_debs() for item in kernels] if build else []
    store = None
    if db:
        from kabigate.store import Store
        store = Store.open(db, create=False)
    results = []

    def targets():  # each kernel read when its turn comes
        if kernel is None:
            for item in kernels:
                yield _kernel_of([item.image, item.headers])
        else:
            yield _target_kernel(kernel, system, store)

    targets_read = []
    try:
        for release, target in targets():
            results.append(run_preflight(system, release, target, store))
            targets_read.append(target)
    except OSError as error:
        raise InputError(f"{error.filename or root}: {error.strerror}") from None
    finally:
        if store is not None:
            store.close()
    if build:
        for index, (result, target) in enumerate(zip(results, targets_read)):
            trust = None
            if sig_enforce:
                from kabigate.signing.verify import load_trust

                image = [target.image] if target.image and os.path.isfile(target.image) else []
                trust = load_trust([*image, *trust_paths])
            tree_paths = build_trees[index] if apt else (
                list(headers) or ([kernel] if kernel is not None and os.path.isdir(kernel) else []))
            result.builds = _build_dkms(system, result.kernel, tree_paths, mok_key, mok_cert, timeout, target, trust)
    if as_json:
        emit_json({"kernels": [r.to_json() for r in results]} if apt else results[0].to_json())
    else:
        for result in results:
            _print_preflight(result)
    raise SystemExit(EXIT_INCOMPATIBLE if any(r.breaks or r.broken_packages for r in results) else EXIT_OK)


def _build_dkms(system: wm.Root, release: str, paths: list[str], mok_key: str | None, mok_cert: str | None,
                timeout: float, target, trust):
    """preflight --build: the root's DKMS packages built against the kernel's headers (`paths`: a
    folder, or the headers packages), in the sandbox."""
    import tempfile
    from pathlib import Path

    from kabigate.builder.buildtree import build_tree
    from kabigate.builder.sandbox import Limits, check_sandbox
    from kabigate.host.preflight import build_packages, dkms_packages, host_signing
    from kabigate.signing.keys import PASSPHRASE_ENV

    packages = dkms_packages(system)
    passphrase = os.environ.get(PASSPHRASE_ENV)
    signing = host_signing(system, mok_key, mok_cert, passphrase.encode() if passphrase else None)
    if not packages:
        return []
    with tempfile.TemporaryDirectory(prefix="kabigate-preflight-") as work:
        check_sandbox(Path(work))
        (Path(work) / "tree").mkdir()
        (Path(work) / "builds").mkdir()
        if not paths:
            raise InputError(f"{release}: --build needs the kernel's headers: give --headers (a headers folder, or "
                             "the linux-headers, -common and linux-kbuild .debs)")
        tree = build_tree(paths, Path(work) / "tree")
        if tree.release != release:
            raise InputError(f"{', '.join(paths)}: the headers of {tree.release}, not of {release}")
        if err.is_terminal:
            err.print(f"building {len(packages)} DKMS packages against {tree.release}...", markup=False)
        return build_packages(packages, tree, target, Path(work) / "builds", Limits(wall_seconds=timeout), signing,
                              trust)


def _target_kernel(argument: str, system: wm.Root, store):
    from kabigate.inputs.packages import is_url

    if os.path.exists(argument):  # one file or tree, whatever its name holds (a comma)
        return _kernel_of([argument])
    paths = [p for p in argument.split(",") if p]
    if len(paths) > 1 or is_url(argument):
        return _kernel_of(paths)
    if system.symvers(argument) is not None:
        from kabigate.inputs.kernels import load_kernel
        return argument, load_kernel([str(system.modules / argument)])
    if store is not None and (records := store.find_kernels(argument)):
        return argument, store.load_kernel(records[0].id)
    raise InputError(f"{argument}: no such kernel package or tree, no kernel of that release under "
                     f"{system.base}{' or in the store' if store is not None else ''}")


def _kernel_of(paths: list[str]):
    from kabigate.inputs.kernels import load_kernel

    with progress("reading the kernel", len(paths)) as advance:  # a linux-image .deb: seconds
        target = load_kernel(paths, None, advance)
    if not target.release:
        raise InputError(f"{','.join(paths)}: the kernel's release is unknown")
    return target.release, target


def _print_preflight(result) -> None:
    out.print(f"kernel {result.kernel}: {len(result.findings)} installed out-of-tree modules", markup=False)
    for finding in result.findings:
        where = f"{finding.module} (built for {finding.built_for})"
        if finding.loads:
            out.print(f"  loads  {finding.name}  {where}", markup=False)
            continue
        if finding.shadowed_by:
            out.print(f"  own    {finding.name}  the kernel's {finding.shadowed_by} is used", markup=False)
            continue
        first = finding.reasons[0]
        label = "dkms" if finding.dkms else "FAILS"
        out.print(f"  {label:<6} {finding.name}  {where}: {first['code']}: {first['message']}", markup=False)
        if finding.dkms:
            out.print("         DKMS rebuilds it for the new kernel at install; the build decides", markup=False)
        for build in finding.available:
            out.print(f"         a build that loads: {build}", markup=False)
    for built in result.builds or []:
        package = f"{built.package.name} {built.package.version}"
        outcome = built.result
        if outcome.outcome == "built":
            failing = [v for v in built.verdicts if v["verdict"] != "loads"]
            signed = f", signed by '{outcome.signer}'" if outcome.signer else ", unsigned"
            head = "built " if not failing else "FAILS "
            out.print(f"  {head} {package}: {len(built.verdicts) - len(failing)} of {len(built.verdicts)} modules "
                      f"load ({outcome.seconds:.0f} s build{signed})", markup=False)
            for verdict in failing:
                first = verdict["reasons"][0]
                out.print(f"         {verdict['name']}: {first['code']}: {first['message']}", markup=False)
        else:
            label = "exclud" if outcome.outcome == "excluded" else "FAILS "
            out.print(f"  {label} {package}: {outcome.outcome}: {outcome.error}", markup=False)
    if result.breaks:
        err.print(f"kabigate: {len(result.breaks)} installed modules will not load on {result.kernel}", markup=False)
    if result.broken_packages:
        err.print(f"kabigate: {len(result.broken_packages)} DKMS packages will have no working module on "
                  f"{result.kernel}", markup=False)
