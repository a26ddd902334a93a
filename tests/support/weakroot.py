"""Fake systems laid out the RHEL way from the real Debian kernels and DKMS builds of the test data:
/lib/modules/<krel>/kernel (a symlink to the real in-tree modules), modules.order/.builtin,
/boot/symvers-<krel>.gz (the headers' Module.symvers), /boot/System.map-<krel>, /boot/config-<krel>,
and kmod packages' modules in /lib/modules/<krel>/extra/<driver>/ (copies of the real builds)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from kabigate.inputs.modules import find_module_files

_SYMVERS_GZ: dict[str, bytes] = {}


def add_kernel(base: Path, testdata, krel: str, symvers_in_boot: bool = True, release: str | None = None) -> str:
    """Kernel `krel` of the test data installed in `base`, as `release` when given (the same build
    under another release: a z-stream respin of one kABI, as RHEL ships them); -> its release."""
    source = testdata.modules_dir(krel).resolve()
    release = release or krel
    tree = base / "lib" / "modules" / release
    tree.mkdir(parents=True, exist_ok=True)
    (tree / "kernel").symlink_to(source / "kernel")
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (source / name).is_file():
            shutil.copyfile(source / name, tree / name)
    boot = base / "boot"
    boot.mkdir(exist_ok=True)
    if krel not in _SYMVERS_GZ:
        _SYMVERS_GZ[krel] = gzip.compress((testdata.headers(krel) / "Module.symvers").read_bytes(), 1)
    symvers = boot / f"symvers-{release}.gz" if symvers_in_boot else tree / "symvers.gz"
    symvers.write_bytes(_SYMVERS_GZ[krel])
    kernel_boot = testdata.kernel_root(krel).resolve() / "boot"
    for name in ("System.map", "config"):
        (boot / f"{name}-{release}").symlink_to(kernel_boot / f"{name}-{krel}")
    return release


def add_driver(base: Path, testdata, driver: str, built_for: str, into: str | None = None,
               subdir: str = "extra") -> list[str]:
    """A driver build installed in <into or built_for>'s extra/<driver>/; -> its paths in the root."""
    target = base / "lib" / "modules" / (into or built_for) / subdir / driver
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for module in find_module_files([str(testdata.driver_dir(driver, built_for))]):
        shutil.copyfile(module, target / Path(module).name)
        paths.append("/" + str((target / Path(module).name).relative_to(base)))
    return paths


def add_module_file(base: Path, krel: str, source: Path, driver: str) -> str:
    target = base / "lib" / "modules" / krel / "extra" / driver
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target / source.name)
    return "/" + str((target / source.name).relative_to(base))


def tree_state(base: Path) -> dict[str, dict[str, str]]:
    """Every kernel's weak-updates/: link path -> link text; and what else is under /lib/modules."""
    state = {}
    for weak in sorted((base / "lib" / "modules").glob("*/weak-updates")):
        state[weak.parent.name] = {str(p.relative_to(weak)): (str(p.readlink()) if p.is_symlink() else "file")
                                   for p in sorted(weak.rglob("*"))}
    leftovers = sorted(str(p.relative_to(base)) for p in (base / "lib" / "modules").rglob(".*kabigate*")
                       if not p.name.endswith(".lock"))  # the lock file stays, as flock(1)'s do
    return {"weak": state, "leftovers": leftovers}
