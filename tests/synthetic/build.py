"""Build the synthetic modules of this directory against a kernel headers tree.

Each module has one defect (or none) that a loader rule judges; they are compiled for real
with the kernel's kbuild, as dkms would (see scripts/fetch-testdata), in three M= dirs (see
Kbuild); then no_versions.ko loses its modversions the way people strip them by hand.

    python tests/synthetic/build.py HEADERS_DIR RELEASE OUT_DIR
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent
TEST_KERNEL = "6.1.0-47-amd64"  # what the tests build against (the synthetic_modules fixture)
# KABIGATE_SET (see Kbuild) -> the modules it builds
SETS = {
    "accepted": ("plain", "proprietary_ok", "ns_ok", "weak_missing", "provider", "consumer", "no_versions",
                 "prop_provider", "gpl_user"),
    "refused": ("proprietary_gpl", "ns_missing", "dup_export", "unknown_symbol"),
    "provider_v2": ("provider",),
}


class BuildError(Exception):
    pass


def expected(out: Path) -> dict[str, Path]:
    """Name -> .ko path of every module a build into `out` produces."""
    modules = {name: out / set_name / f"{name}.ko" for set_name, names in SETS.items() if set_name != "provider_v2"
               for name in names}
    # Same module name and export as provider.ko, a different prototype: kept apart.
    modules["provider_v2"] = out / "provider_v2" / "provider.ko"
    return modules


def build_cached(headers: Path, release: str, out: Path) -> dict[str, Path]:
    """expected(out), rebuilt (atomically) unless every .ko is newer than every source file. Test
    processes running side by side (pytest -n) take turns: one builds, the others then find it built."""
    modules = expected(out)
    newest_source = max(p.stat().st_mtime for p in SOURCES.iterdir() if p.is_file())
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(ko.is_file() and ko.stat().st_mtime >= newest_source for ko in modules.values()):
            return modules
        with tempfile.TemporaryDirectory(prefix=".tmp-", dir=out.parent) as tmp:
            build(headers, release, Path(tmp) / "out")
            if out.exists():
                shutil.rmtree(out)
            (Path(tmp) / "out").rename(out)
    return modules


def build(headers: Path, release: str, out: Path) -> None:
    """Build every set into out/<set>/ (the .ko files, Module.symvers and the build log)."""
    with tempfile.TemporaryDirectory(prefix="kabigate-synthetic-") as tmp:
        for set_name, names in SETS.items():
            work = Path(tmp) / set_name
            shutil.copytree(SOURCES, work, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
            log = _make(headers, release, set_name, work)
            dest = out / set_name
            dest.mkdir(parents=True)
            (dest / "build.log").write_text(log)
            shutil.copy2(work / "Module.symvers", dest)
            for name in names:
                shutil.copy2(work / f"{name}.ko", dest)
                # dkms strips debug info from what it installs.
                _run(["strip", "-g", str(dest / f"{name}.ko")])
    _run(["objcopy", "--remove-section=__versions", str(out / "accepted/no_versions.ko")])


def _make(headers: Path, release: str, set_name: str, work: Path) -> str:
    command = ["make", f"-j{os.cpu_count() or 2}", f"KERNELRELEASE={release}", "-C", str(headers),
               f"M={work}", f"KABIGATE_SET={set_name}", "modules"]
    if set_name == "refused":
        command.append(f"MODPOST={work / 'modpost-lenient'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "KBUILD_"))} | {"LC_ALL": "C"}
    proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise BuildError(f"building the {set_name} synthetic modules failed:\n$ {' '.join(command)}\n"
                         + "\n".join(proc.stdout.splitlines()[-30:]))
    return proc.stdout


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(command)} failed: {proc.stderr.strip()}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    for module_name, path in build_cached(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])).items():
        print(f"{module_name}\t{path}")
