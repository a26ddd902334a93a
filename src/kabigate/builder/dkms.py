"""A DKMS package built by dkms itself (`dkms build`), with a private --dkmstree and --sourcetree
in the sandbox's work folder: a Debian *-dkms .deb, or a source tree with its dkms.conf
(/usr/src/NAME-VERSION).

dkms.conf is shell that dkms sources, so it is read in the sandbox too: for the package's name and
version (dkms wants the tree at SOURCETREE/NAME-VERSION) and, when dkms refuses to build with its
BUILD_EXCLUSIVE exit status (77), for which directive did not match (dkms does not say).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kabigate.builder.buildlog import BoundedLog, first_error
from kabigate.builder.buildtree import BuildTree
from kabigate.builder.result import BuildResult
from kabigate.builder.sandbox import KERNEL, WORK, Limits, Sandbox, require, written_by_build
from kabigate.errors import InputError
from kabigate.vocabulary import BuildOutcome

EXCLUDED_STATUS = 77  # dkms's `die 77` when a BUILD_EXCLUSIVE directive does not match
SOURCE_TREE = "src"
DKMS_TREE = "dkms"
NO_SIGN_FILE = "/dev/null"  # not a regular file: dkms's prepare_signing skips signing

# read_conf's variables, then dkms.conf sourced; PACKAGE_NAME, PACKAGE_VERSION and the first
# BUILD_EXCLUSIVE_* directive that does not match, tested as dkms 3.0.10's read_conf tests them.
READ_CONF = r"""
kernelver=$1 arch=$2 kernel_source_dir=$3 dkms_tree=$4 source_tree=$5
. "$6" >/dev/null 2>&1
exclude=
[[ $BUILD_EXCLUSIVE_KERNEL && ! $kernelver =~ $BUILD_EXCLUSIVE_KERNEL ]] \
    && exclude="BUILD_EXCLUSIVE_KERNEL=\"$BUILD_EXCLUSIVE_KERNEL\" does not match $kernelver"
[[ ! $exclude && $BUILD_EXCLUSIVE_ARCH && ! $arch =~ $BUILD_EXCLUSIVE_ARCH ]] \
    && exclude="BUILD_EXCLUSIVE_ARCH=\"$BUILD_EXCLUSIVE_ARCH\" does not match $arch"
if [[ ! $exclude && $BUILD_EXCLUSIVE_CONFIG && -e $kernel_source_dir/.config ]]; then
    for kconf in $BUILD_EXCLUSIVE_CONFIG; do
        case "$kconf" in
            !*) grep -q -E "^${kconf#!}=[ym]" "$kernel_source_dir/.config" \
                    && exclude="BUILD_EXCLUSIVE_CONFIG: ${kconf#!} is set" && break ;;
            *)  grep -q -E "^${kconf}=[ym]" "$kernel_source_dir/.config" \
                    || { exclude="BUILD_EXCLUSIVE_CONFIG: $kconf is not set"; break; } ;;
        esac
    done
fi
printf '%s\0%s\0%s\0' "$PACKAGE_NAME" "$PACKAGE_VERSION" "$exclude"
"""


def is_dkms_source(path: Path) -> bool:
    return (path.is_file() and path.name.endswith(".deb")) or (path / "dkms.conf").is_file()


def build(source: Path, tree: BuildTree, work: Path, limits: Limits) -> BuildResult:
    require("dkms", "dkms")
    sandbox = tree.sandbox(work, limits=limits, binds=[(source, "/source")] if source.is_file() else [])
    conf_dir = _unpack(source, work, sandbox)
    kernel_dir = f"/lib/modules/{tree.release}/build"
    arch = tree.machine  # dkms.conf's $arch, BUILD_EXCLUSIVE_ARCH's subject
    inside_conf = f"{WORK}/{conf_dir.relative_to(work)}/dkms.conf"
    read = sandbox.run(["bash", "-c", READ_CONF, "bash", tree.release, arch, kernel_dir, f"{WORK}/{DKMS_TREE}",
                        f"{WORK}/{SOURCE_TREE}", inside_conf])
    fields = read.log.text().split("\0")
    if not read.ok or len(fields) != 4 or not fields[0] or not fields[1]:
        raise InputError(f"{source}: dkms.conf does not name PACKAGE_NAME and PACKAGE_VERSION")
    name, version, exclusion = fields[:3]
    source_dir = work / SOURCE_TREE / f"{name}-{version}"
    if conf_dir != source_dir:
        if "/" in name or "/" in version:
            raise InputError(f"{source}: dkms.conf names {name!r} {version!r}: not a folder name")
        source_dir.parent.mkdir(exist_ok=True)
        conf_dir.rename(source_dir)
    (work / DKMS_TREE).mkdir()
    # dkms signs with its own key, generating one (RSA, 0.2 to 0.5 s) when /var/lib/dkms has none: in the
    # sandbox it cannot keep it and signs nothing. Told there is no sign-file, it does not try.
    run = sandbox.run(["env", f"sign_file={NO_SIGN_FILE}", "dkms", "build", "-m", name, "-v", version,
                       "-k", tree.release, "-a", arch,
                       f"--dkmstree={WORK}/{DKMS_TREE}", f"--sourcetree={WORK}/{SOURCE_TREE}",
                       f"--kernelsourcedir={kernel_dir}"])
    package_dir = work / DKMS_TREE / name / version
    built = package_dir / tree.release / arch
    log = run.log.text() + _make_log(built / "log/make.log" if run.ok else package_dir / "build/make.log", work)
    result = BuildResult(BuildOutcome.FAILED, name, version, tree.release, "dkms", read.seconds + run.seconds, log)
    if run.ok:
        result.modules = sorted(p for p in (built / "module").glob("*.ko*") if written_by_build(p, work))
        result.outcome = BuildOutcome.BUILT if result.modules else BuildOutcome.FAILED
        result.error = None if result.modules else f"dkms kept no module in {built.relative_to(work)}/module"
    elif run.status == EXCLUDED_STATUS:
        result.outcome = BuildOutcome.EXCLUDED
        result.error = exclusion or "a BUILD_EXCLUSIVE directive does not match"
    else:
        result.limit = run.limit
        result.error = run.limit or first_error(log, (f"{WORK}/{DKMS_TREE}/{name}/{version}/build", KERNEL)) \
            or _dkms_error(run.log.text()) or f"dkms exit status {run.status}"
    return result


def _unpack(source: Path, work: Path, sandbox: Sandbox) -> Path:
    """The folder holding dkms.conf, in the work folder: the .deb's /usr/src/NAME-VERSION, or a copy
    of the source tree."""
    if source.is_dir():
        target = work / SOURCE_TREE / source.name
        shutil.copytree(source, target, symlinks=True)
        return target
    run = sandbox.run(["dpkg-deb", "-x", "/source", f"{WORK}/package"])
    if not run.ok:
        raise InputError(f"{source}: cannot extract: {run.limit or run.log.text().strip()[-300:]}")
    confs = sorted((work / "package/usr/src").glob("*/dkms.conf"))
    if len(confs) != 1:
        raise InputError(f"{source}: expected one usr/src/*/dkms.conf, found {len(confs)}")
    return confs[0].parent


def _make_log(path: Path, work: Path) -> str:
    """make's output, which dkms keeps in make.log rather than print; bounded like the rest."""
    if not written_by_build(path, work):
        return ""
    return f"\n# {path.name}\n{BoundedLog.of_file(path).text()}"


def _dkms_error(output: str) -> str | None:
    """dkms's own `Error! ...` line, when no compiler error says more (a module not built)."""
    lines = output.splitlines()
    found = next((i for i, line in enumerate(lines) if line.startswith("Error!")), None)
    if found is None:
        return None
    return " ".join(" ".join(lines[found:found + 2]).split())[:240]
