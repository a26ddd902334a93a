"""Differential tests: kabigate against kmod (modprobe, modinfo, depmod) on the same real files.

kmod is an independent implementation of the same on-disk formats and of the presence + CRC
half of the loader's rules, so wherever the two overlap they must agree exactly:

* `__versions` (Module.versions) == `modprobe --dump-modversions`, order and values;
* .modinfo fields and the signature (Module.modinfo, Module.signature) == `modinfo`;
* missing symbols and CRC disagreements (check_modules) == `depmod -naeE`, which is all that
  RHEL's weak-modules checks.

The module set of the first two tests is every in-tree module of OLD (about 4000) plus every
module of every driver build in the manifest: no sampling, modprobe runs in a thread pool and
modinfo takes 200 files a call.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kabigate.formats.module import read_module
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.modules import MODULE_SUFFIXES, find_module_files, read_modules
from kabigate.rules import check_modules

pytestmark = pytest.mark.realdata

OLD, NEW = "6.1.0-47-amd64", "6.1.0-56-amd64"


# --------------------------------------------------------------------------- module set


@pytest.fixture(scope="module")
def module_paths(testdata) -> list[Path]:
    in_tree = sorted(p.resolve() for p in (testdata.modules_dir(OLD) / "kernel").rglob("*")
                     if p.name.endswith(MODULE_SUFFIXES))
    drivers = [Path(p).resolve()
               for driver, builds in sorted(testdata.manifest["drivers"].items())
               for built_for in sorted(builds)
               for p in find_module_files([str(testdata.driver_dir(driver, built_for))])]
    assert len(in_tree) > 3000 and drivers
    return in_tree + drivers


@pytest.fixture(scope="module")
def parsed(module_paths):
    return {path: read_module(str(path)) for path in module_paths}


# --------------------------------------------------------------------------- 1. __versions


def _dump_modversions(path: Path) -> list[tuple[str, int]]:
    """`modprobe --dump-modversions` prints "0x%08llx\t%s" per __versions record, in file order."""
    output = subprocess.run(["modprobe", "--dump-modversions", str(path)], check=True,
                            capture_output=True, text=True).stdout
    return [(name, int(crc, 16)) for crc, name in (line.split("\t", 1) for line in output.splitlines())]


def test_versions_equal_modprobe_dump_modversions(module_paths, parsed):
    with ThreadPoolExecutor(max_workers=4) as pool:  # modprobe takes one module a call
        kmod = dict(zip(module_paths, pool.map(_dump_modversions, module_paths)))
    differing = []
    records = 0
    for path in module_paths:
        versions = parsed[path].versions
        assert versions is not None, f"{path}: no __versions (every module here is built with modversions)"
        ours = [(v.name, v.crc) for v in versions]
        records += len(ours)
        if ours != kmod[path]:
            first = next((i for i, (a, b) in enumerate(zip(ours, kmod[path])) if a != b),
                         min(len(ours), len(kmod[path])))
            differing.append((str(path), len(ours), len(kmod[path]), ours[first:first + 1],
                              kmod[path][first:first + 1]))
    assert not differing, f"{len(differing)} modules differ from modprobe, first: {differing[:5]}"
    assert records > 100_000  # ~4100 modules, tens of records each: the comparison is not vacuous


# --------------------------------------------------------------------------- 2. modinfo

MODINFO_FIELDS = ("vermagic", "license", "depends", "import_ns", "intree", "name", "srcversion",
                  "retpoline", "alias")
SIGNATURE_FIELDS = ("sig_id", "signer", "sig_key", "sig_hashalgo")


def _modinfo_batch(paths: list[Path]) -> list[tuple[str, dict[str, list[str]]]]:
    """`modinfo -0` on many files: per file a "filename:<spaces>PATH" record, then its fields,
    each record ending in NUL (a value never holds a NUL: .modinfo is NUL-separated)."""
    output = subprocess.run(["modinfo", "-0", *map(str, paths)], check=True, capture_output=True).stdout
    modules: list[tuple[str, dict[str, list[str]]]] = []
    for record in output.decode("utf-8", "replace").split("\0"):
        if record.startswith("filename:"):
            modules.append((record[len("filename:"):].strip(), defaultdict(list)))
        elif record:
            assert modules, f"modinfo printed {record!r} before any filename"
            # "key=value"; modinfo prints only parm (merged with parmtype) as "parm:<spaces>...".
            match = re.match(r"([^=:]+)(=|:\s+)(.*)\Z", record, re.S)
            assert match, f"unexpected modinfo -0 record {record!r}"
            assert match[2] == "=" or match[1] == "parm", f"unexpected modinfo -0 record {record!r}"
            modules[-1][1][match[1]].append(match[3])
    return modules


def test_modinfo_fields_equal_modinfo(module_paths, parsed):
    batches = [module_paths[i:i + 200] for i in range(0, len(module_paths), 200)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [record for batch in pool.map(_modinfo_batch, batches) for record in batch]
    assert [filename for filename, _ in results] == [str(p) for p in module_paths]

    differing = []
    signed = 0
    for path, (_filename, kmod) in zip(module_paths, results):
        module = parsed[path]
        for field in MODINFO_FIELDS:
            if module.info_all(field) != kmod.get(field, []):
                differing.append((str(path), field, module.info_all(field), kmod.get(field, [])))
        signature = module.signature
        ours = dict.fromkeys(SIGNATURE_FIELDS, [])
        if signature is not None:
            signed += 1
            ours = {"sig_id": [signature.id_type], "signer": [signature.signer],
                    "sig_key": [signature.key_id], "sig_hashalgo": [signature.hash_algorithm]}
        for field in SIGNATURE_FIELDS:
            if ours[field] != kmod.get(field, []):
                differing.append((str(path), field, ours[field], kmod.get(field, [])))
    assert not differing, f"{len(differing)} fields differ from modinfo, first: {differing[:10]}"
    # Not vacuous: the in-tree modules are signed, some import namespaces, most have aliases.
    assert signed > 3000
    assert sum(1 for m in parsed.values() if m.imported_namespaces) > 10
    assert sum(len(m.info_all("alias")) for m in parsed.values()) > 10_000


# --------------------------------------------------------------------------- 3. depmod -naeE
#
# weak-modules decides compatibility with `depmod -b <tmp> -aeE <symvers> <kver>` over a
# temporary tree and reads two warnings: "needs unknown symbol" and "disagrees about version of
# symbol". The tree here: the candidate modules under extra/<set>/ (symlinks) and the target
# kernel's own modules under kernel/ (a symlink): depmod takes only the vmlinux lines of the -E
# symvers file, so the in-tree modules' exports (with their CRCs) must come from the modules
# themselves. Its modules.dep output (-n: to stdout) also shows how it resolved each import.
#
# What depmod checks, as observed on these files: a non-weak undefined symbol that nothing
# exports, and a CRC differing from the exporter's, *including module_layout* (kabigate reports
# that one as module-layout-mismatch). On that subset kabigate must agree exactly, module by
# module and symbol by symbol.
#
# Where kabigate is deliberately stricter (reasons depmod never gives; asserted to be the only
# other reasons kabigate gives here):
#   vermagic-mismatch       depmod ignores vermagic: every OLD driver on the rt kernel (preempt_rt)
#                           has it, on top of the CRC disagreements both report;
#   gpl-only                a GPL-only export imported by a non-GPL module (depmod: resolved);
#   namespace-not-imported  depmod ignores symbol namespaces;
#   duplicate-export        depmod silently ranks duplicates;
#   dependency-fails        depmod does not propagate a provider's failure to its users;
#   arch-mismatch, no-versions, bad-signature, unsigned.
#   a weak import's CRC     the kernel's resolve_symbol() checks it, depmod skips weak imports
#                           (the full corpus's openafs.ko imports key_type_keyring weakly).
# Also by design: a hidden GPL-only symbol is reported as gpl-only, not as a CRC disagreement.

DEPMOD_WARNING = re.compile(r"^depmod: WARNING: (?P<path>/\S+\.ko(?:\.\w+)?) "
                            r"(?P<what>needs unknown symbol|disagrees about version of symbol) (?P<symbol>\S+)$")
DEPMOD_NO_ORDER = re.compile(r"^depmod: WARNING: could not open modules\.order at ")
PRESENCE_AND_CRC = {"missing-symbol": "missing", "crc-mismatch": "crc", "module-layout-mismatch": "crc"}
WEAK_CRC = "crc-mismatch of a weak import"
STRICTER = {"vermagic-mismatch", "gpl-only", "namespace-not-imported", "duplicate-export", "dependency-fails",
            "arch-mismatch", "no-versions", "bad-signature", "unsigned", WEAK_CRC}


def _depmod(testdata, target: str, extra: dict[str, Path]):
    """Run depmod -naeE as weak-modules does; -> ({"<set>/<file>": {(kind, symbol)}}, modules.dep lines)."""
    symvers = testdata.headers(target).resolve() / "Module.symvers"
    with tempfile.TemporaryDirectory(prefix="kabigate-depmod-") as base:
        tree = Path(base) / "lib" / "modules" / target
        (tree / "extra").mkdir(parents=True)
        (tree / "kernel").symlink_to(testdata.modules_dir(target).resolve() / "kernel")
        for name, directory in extra.items():
            (tree / "extra" / name).symlink_to(directory.resolve())
        result = subprocess.run(["depmod", "-b", base, "-naeE", str(symvers), target],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        prefix = str(tree / "extra") + "/"
        warnings: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for line in result.stderr.splitlines():
            match = DEPMOD_WARNING.match(line)
            if match is None:
                assert DEPMOD_NO_ORDER.match(line), f"unexpected depmod output: {line}"
                continue
            assert match["path"].startswith(prefix), f"{target}'s own module fails under depmod: {line}"
            kind = "missing" if match["what"].startswith("needs") else "crc"
            warnings[match["path"][len(prefix):]].add((kind, match["symbol"]))
    dep_lines = result.stdout.split("\n#", 1)[0].splitlines()  # modules.dep comes first
    deps = {name: value.split() for name, _, value in (line.partition(":") for line in dep_lines)
            if name.startswith("extra/")}
    assert not deps.keys() - {f"extra/{name}/{os.path.basename(p)}" for name, d in extra.items()
                              for p in find_module_files([str(d)])}
    return warnings, deps


def _kabigate(kernel, extra: dict[str, Path]):
    """check_modules() per set (one driver = one set); -> ({"<subdir>/<file>": {(kind, symbol)}}, other codes)."""
    failures: dict[str, set[tuple[str, str]]] = {}
    others: dict[str, set[str]] = {}
    sets = {}
    for name, directory in extra.items():
        modules = read_modules([str(directory)])
        sets[name] = modules
        for verdict in check_modules(modules, kernel):
            key = f"{name}/{os.path.basename(verdict.module.path)}"
            # depmod skips weak imports; the kernel's resolve_symbol() checks their CRC too (the full
            # corpus's openafs imports key_type_keyring weakly, at another CRC).
            weak = {i.name for i in verdict.module.imports if i.weak}
            failures[key] = {(PRESENCE_AND_CRC[r.code], r.symbol)
                             for r in verdict.reasons if r.code in PRESENCE_AND_CRC and r.symbol not in weak}
            others[key] = {r.code if r.code not in PRESENCE_AND_CRC else WEAK_CRC for r in verdict.reasons
                           if r.code not in PRESENCE_AND_CRC or r.symbol in weak}
    return failures, others, sets


def _assert_sets_independent(sets) -> None:
    """depmod sees all the sets in one tree; that equals checking them one by one only if no set
    imports what another set exports."""
    exported = {name: {e.name for m in modules for e in m.exports} for name, modules in sets.items()}
    for name, modules in sets.items():
        imports = {i.name for m in modules for i in m.imports}
        for other, symbols in exported.items():
            assert other == name or not imports & symbols, f"{name} imports {imports & symbols} from {other}"


@pytest.fixture(scope="module")
def kernels(testdata):
    return {release: load_kernel([str(testdata.kernel_root(release))]) for release in testdata.manifest["kernels"]}


@pytest.fixture(scope="module")
def old_drivers(testdata) -> dict[str, Path]:
    drivers = {name: testdata.driver_dir(name, OLD) for name, builds in testdata.manifest["drivers"].items()
               if OLD in builds}
    assert drivers
    return drivers


@pytest.mark.parametrize("target", ["6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64",
                                    "6.1.0-47-rt-amd64", "6.1.0-47-cloud-amd64"])
def test_presence_and_crc_verdicts_equal_depmod(testdata, kernels, old_drivers, target):
    if target not in testdata.manifest["kernels"]:
        pytest.skip(f"{target} not in the manifest")
    depmod, _deps = _depmod(testdata, target, old_drivers)
    ours, others, sets = _kabigate(kernels[target], old_drivers)
    _assert_sets_independent(sets)
    assert depmod.keys() <= ours.keys()
    differing = {module: (sorted(depmod.get(module, set()) - found), sorted(found - depmod.get(module, set())))
                 for module, found in ours.items() if found != depmod.get(module, set())}
    assert not differing, f"(depmod only, kabigate only) per module: {differing}"
    stricter = {code for codes in others.values() for code in codes}
    assert stricter <= STRICTER, stricter - STRICTER

    layout_changed = kernels[target].exports["module_layout"].crc != kernels[OLD].exports["module_layout"].crc
    if layout_changed:
        # depmod does check module_layout: every OLD module disagrees about it on this kernel.
        assert all(("crc", "module_layout") in depmod[module] for module in ours)
    else:
        assert not any(("crc", "module_layout") in found for found in depmod.values())
    if target == "6.1.0-47-rt-amd64":  # same ABI number, other flavor: vermagic only kabigate sees
        assert all("vermagic-mismatch" in codes for codes in others.values())


@pytest.mark.parametrize("built_for", [OLD, NEW])
@pytest.mark.parametrize("target", [OLD, NEW])
def test_jool_set_resolves_itself_like_depmod(testdata, kernels, built_for, target):
    """jool.ko and jool_siit.ko import jool_common.ko's exports: the set resolves itself, and
    agrees with depmod both on the verdicts and on which module provides each import."""
    if built_for not in testdata.manifest["drivers"].get("jool", {}):
        pytest.skip(f"jool not built for {built_for}")
    extra = {"jool": testdata.driver_dir("jool", built_for)}
    depmod, deps = _depmod(testdata, target, extra)
    ours, others, sets = _kabigate(kernels[target], extra)
    assert set(ours) == {"jool/jool.ko", "jool/jool_common.ko", "jool/jool_siit.ko"}
    for module, found in ours.items():
        assert found == depmod.get(module, set()), (module, found ^ depmod.get(module, set()))
    assert {code for codes in others.values() for code in codes} <= STRICTER

    # Who provides each import, from kabigate's model (a set module, else the owner kabigate
    # read from Module.symvers), against depmod's modules.dep line for the module.
    modules = sets["jool"]
    kernel = kernels[target]
    for module in modules:
        providers = set()
        for symbol in module.imports:
            in_set = next((m for m in modules if any(e.name == symbol.name for e in m.exports)), None)
            if in_set is not None and in_set is not module:
                providers.add(in_set.name)
            elif in_set is None and symbol.name in kernel.exports and kernel.exports[symbol.name].owner != "vmlinux":
                providers.add(os.path.basename(kernel.exports[symbol.name].owner).replace("-", "_"))
        depmod_names = {os.path.basename(p).split(".ko", 1)[0].replace("-", "_")
                        for p in deps[f"extra/jool/{os.path.basename(module.path)}"]}
        assert providers == depmod_names, (module.name, providers ^ depmod_names)
        assert providers == set(module.depends)  # and modpost's own "depends" agrees
    assert "jool_common" in {d for m in modules for d in m.depends}

    if built_for == target:  # own kernel: everything resolves, in the set and in the kernel
        assert all(not found for found in ours.values()) and not depmod
    else:
        assert all(("crc", "module_layout") in found for found in ours.values())
        # the set's own CRCs agree with each other whatever the kernel: no jool_common symbol disagrees
        common = {e.name for m in modules for e in m.exports}
        assert not any(symbol in common for found in ours.values() for _kind, symbol in found)
