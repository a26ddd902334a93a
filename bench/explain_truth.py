"""How right `kabigate explain` is, against genksyms itself on the kernels' own source.

For a pair of real Debian kernels, the ground truth of "which types changed a symbol's CRC" is
genksyms run the way kbuild runs it (scripts/Makefile.build, cmd_cc_symtypes_c: the file's
preprocessor command with -D__GENKSYMS__, piped into scripts/genksyms/genksyms -T) on
linux-source-6.1 at each kernel's exact package version, configured with the kernel's own .config.
Each file's genksyms CRCs must equal the kernel's (else the file is not the one that exports the
symbol, or the tree is not the kernel's, and the symbol is left out); the true causes of a
symbol's change are then the types of its symtypes closure (old and new) whose definitions
differ, plus its own declaration when that differs.

Measured per pair on a random sample of CRC-changed vmlinux exports: a true cause among
kabigate's candidates, all true causes among them, the first-ranked candidate true.

    .venv/bin/python bench/explain_truth.py --pair 6.1.0-50-amd64:6.1.176-1 6.1.0-56-amd64:6.1.192-2 \
        [--sample 250] [--seed 1] [--record tests/data/explain/FILE.json]

Needs apt-get (linux-source-6.1 at both versions), make, gcc, flex, bison, libelf-dev; the
source trees are kept in ~/.cache/kabigate/genksyms (about 1.5 GB each).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root

from kabigate.explain.crc import explain
from kabigate.explain.sources import header_trees, load_headers, load_types

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kabigate" / "genksyms"
EXPORT = re.compile(rb"EXPORT_SYMBOL(?:_GPL)?(?:_NS)?(?:_GPL)?\(\s*(\w+)")
REF = re.compile(r"^([sutEe])#(\S+)$")
KIND = {"s": "struct", "u": "union", "e": "enum", "t": "typedef"}


def source_tree(version: str, config: Path) -> Path:
    """linux-source-6.1 at `version`, configured with `config`, `make prepare`d (once, cached)."""
    root = CACHE / "src" / version
    tree = root / "linux-source-6.1"
    if (root / ".prepared").is_file():
        return tree
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = debs / f"linux-source-6.1_{version}_all.deb"
    if not deb.is_file():
        subprocess.run(["apt-get", "download", f"linux-source-6.1={version}"], cwd=debs, check=True)
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(f"dpkg-deb --fsys-tarfile {shlex.quote(str(deb))} | tar -xO ./usr/src/linux-source-6.1.tar.xz "
                   f"| xz -dc | tar -x -C {shlex.quote(str(root))}", shell=True, check=True)
    (tree / ".config").write_bytes(config.read_bytes())
    subprocess.run(["make", "-s", "olddefconfig"], cwd=tree, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["nice", "make", "-s", "-j2", "prepare"], cwd=tree, check=True)
    (root / ".prepared").write_text("")
    return tree


def export_index(tree: Path) -> dict[str, list[str]]:
    """Symbol -> the C files that export it (cached next to the tree)."""
    cached = tree.parent / "exports.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    index: dict[str, list[str]] = {}
    for path in tree.rglob("*.c"):
        if "tools" in path.relative_to(tree).parts[:1] or "Documentation" in path.parts:
            continue
        data = path.read_bytes()
        if b"EXPORT_SYMBOL" not in data:
            continue
        for match in EXPORT.finditer(data):
            index.setdefault(match.group(1).decode(), []).append(str(path.relative_to(tree)))
    cached.write_text(json.dumps(index))
    return index


def genksyms(tree: Path, files: list[str]) -> dict[str, tuple[dict[str, int], dict[str, str]]]:
    """file -> (its #SYMVER CRCs, its symtypes: key -> definition), kbuild's own commands."""
    out = tree.parent / "symtypes"
    results, todo = {}, []
    for name in files:
        target = out / (name + ".json")
        if target.is_file():
            results[name] = tuple(json.loads(target.read_text()))
        else:
            todo.append(name)
    if todo:
        listing = subprocess.run(["make", "-k", "-n", *[n[:-2] + ".symtypes" for n in todo]], cwd=tree,
                                 capture_output=True, text=True, check=False).stdout
        commands = {}
        for line in listing.splitlines():
            match = re.search(r"PIPE; (gcc -E -D__GENKSYMS__ .* (\S+\.c) \| scripts/genksyms/genksyms .*)$", line)
            if match:
                commands[match.group(2).removeprefix("./")] = match.group(1)

        def run(name: str):
            command = commands.get(name)
            if command is None:
                return name, None
            symtypes = out / (name + ".symtypes")
            symtypes.parent.mkdir(parents=True, exist_ok=True)
            command = re.sub(r"-T \S+", f"-T {shlex.quote(str(symtypes))}", command).replace(">/dev/null", "")
            command = re.sub(r"-Wp,-MMD,\S+", "", command)
            done = subprocess.run(["nice", "sh", "-c", command], cwd=tree, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not symtypes.is_file():
                return name, None
            crcs = {m.group(1): int(m.group(2), 16) for m in re.finditer(r"#SYMVER (\S+) 0x([0-9a-f]+)", done.stdout)}
            definitions = {}
            for line in symtypes.read_text(errors="replace").splitlines():
                key, _, text = line.partition(" ")
                definitions[key] = text
            symtypes.unlink()
            return name, (crcs, definitions)

        with ThreadPoolExecutor(2) as pool:
            for name, result in pool.map(run, todo):
                if result is None:
                    continue
                target = out / (name + ".json")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(result))
                results[name] = result
    return results


def closure(definitions: dict[str, str], symbol: str) -> set[str]:
    seen, stack = set(), [symbol]
    while stack:
        key = stack.pop()
        for token in definitions.get(key, "").split():
            if REF.match(token) and token not in seen:
                seen.add(token)
                stack.append(token)
    return seen


def true_causes(old: dict[str, str], new: dict[str, str], symbol: str) -> set[str]:
    """Types both closures reach whose definitions differ (a type only one reaches is reached
    through one that changed, or through the symbol's own declaration), and the declaration."""
    causes = {key for key in closure(old, symbol) & closure(new, symbol) if old.get(key) != new.get(key)}
    if old.get(symbol) != new.get(symbol):
        causes.add(symbol)
    return causes


def as_kabigate_keys(key: str, symbol: str, enum_of: dict[str, tuple[str, str]],
                     definitions: list[dict[str, str]]) -> list[tuple[str, str]]:
    """The kabigate keys that name a genksyms cause. An enum constant's value (E#X, used in an
    expression such as an array size) is named by its enum, or, for a constant of an enum the
    old kernel lacks, by the types whose definitions use it (their array sizes changed)."""
    if key == symbol:
        return [("declaration", symbol)]
    kind, name = key.split("#", 1)
    if kind != "E":
        return [(KIND[kind], name)]
    users = [(KIND[k.split("#", 1)[0]], k.split("#", 1)[1]) for d in definitions for k, text in d.items()
             if key in text.split() and k[0] in KIND and k[1] == "#"]
    return sorted({enum_of.get(name, ("enumconst", name)), *users})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", nargs=2, required=True, metavar="KVER:SOURCE_VERSION")
    parser.add_argument("--sample", type=int, default=250)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record", type=Path, help="write the ground truth of the sample (JSON)")
    parser.add_argument("--no-headers", action="store_true", help="rank without the old kernel's headers")
    args = parser.parse_args()
    (old_kver, old_version), (new_kver, new_version) = (p.split(":") for p in args.pair)
    kernels = []
    for kver, version in ((old_kver, old_version), (new_kver, new_version)):
        # fetch-testdata's extracted kernels, else image + headers .debs extracted into CACHE/kernels
        root = next((r for r in (testdata_root() / "kernels" / kver, CACHE / "kernels" / kver) if r.is_dir()), None)
        if root is None:
            sys.exit(f"{kver}: not in {testdata_root() / 'kernels'} or {CACHE / 'kernels'}")
        tree = source_tree(version, root / "usr" / "src" / f"linux-headers-{kver}" / ".config")
        kernels.append((kver, tree, root, load_types(str(root / "boot" / f"vmlinuz-{kver}"))))
    (_, old_tree, _, old_types), (_, new_tree, _, new_types) = kernels
    changed = sorted(n for n, e in old_types.exports.items()
                     if n in new_types.exports and e.crc != new_types.exports[n].crc)
    functions = [n for n in changed if n in old_types.funcs]
    rng = random.Random(args.seed)
    # In random order; the first --sample whose CRCs genksyms reproduces (nearly all) are measured.
    sample = rng.sample(functions, min(len(functions), 2 * args.sample))
    old_index, new_index = export_index(old_tree), export_index(new_tree)
    started = time.time()
    files = sorted({f for s in sample for index in (old_index, new_index) for f in index.get(s, [])})
    old_gk, new_gk = genksyms(old_tree, files), genksyms(new_tree, files)
    print(f"genksyms on {len(files)} files of each tree: {time.time() - started:.0f} s", file=sys.stderr)
    enum_of = {const: key for types in (new_types, old_types) for type_id, key in types.keys.items()
               if key[0] == "enum" for const, _ in types.members.get(type_id, ())}
    truth = {}
    for symbol in sample:
        old_file = next((f for f in old_index.get(symbol, []) if f in old_gk
                         and old_gk[f][0].get(symbol) == old_types.exports[symbol].crc), None)
        new_file = next((f for f in new_index.get(symbol, []) if f in new_gk
                         and new_gk[f][0].get(symbol) == new_types.exports[symbol].crc), None)
        if old_file is None or new_file is None:
            continue  # genksyms did not reproduce the kernel's CRC: no ground truth for it
        causes = true_causes(old_gk[old_file][1], new_gk[new_file][1], symbol)
        definitions = [old_gk[old_file][1], new_gk[new_file][1]]
        truth[symbol] = sorted(as_kabigate_keys(c, symbol, enum_of, definitions) for c in causes)
        if len(truth) == args.sample:
            break
    old_root = kernels[0][2]
    headers = load_headers(header_trees([str(old_root)])) if not args.no_headers else None
    result = explain(old_types, new_types, sorted(truth), headers)
    counts = Counter()
    misses = Counter()
    missing = Counter()  # true causes kabigate did not name
    for explained in result.symbols:
        # Each true cause: the keys that name it (one, or an enum constant's several).
        true = [{tuple(k) for k in names} for names in truth[explained.symbol]]
        named = set().union(*true)
        keys = [c.key for c in explained.candidates]
        counts["symbols"] += 1
        counts["any"] += bool(named & set(keys))
        counts["all"] += all(names & set(keys) for names in true)
        counts["first"] += bool(keys) and keys[0] in named
        counts["candidates"] += len(keys)
        counts["true"] += len(true)
        if keys and keys[0] not in named:
            misses[(keys[0], tuple(sorted(named))[:3])] += 1
        for names in true:
            if not names & set(keys):
                missing[tuple(sorted(names))] += 1
    total = counts["symbols"]
    print(f"{old_kver} -> {new_kver}: {len(changed)} CRC-changed vmlinux exports, {len(functions)} functions; "
          f"ground truth for {total} sampled (genksyms reproduced both CRCs)")
    for key, label in (("any", "a true cause among the candidates"), ("all", "all true causes among them"),
                       ("first", "first-ranked candidate true")):
        print(f"  {label:<36} {counts[key]:>4}/{total}  {100 * counts[key] / max(total, 1):.1f} %")
    print(f"  per symbol: {counts['candidates'] / max(total, 1):.1f} candidates, "
          f"{counts['true'] / max(total, 1):.1f} true causes (genksyms sees less than BTF)")
    for (first, true), count in misses.most_common(8):
        print(f"  first wrong x{count}: {first} (true: {true})")
    for key, count in missing.most_common(8):
        print(f"  true cause not among the candidates x{count}: {key}")
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        header = {"provenance": f"bench/explain_truth.py --pair {old_kver}:{old_version} {new_kver}:{new_version} "
                                f"--seed {args.seed}: genksyms -T on linux-source-6.1 {old_version} and "
                                f"{new_version}, each file's CRCs equal to the kernels'; a cause is the list of "
                                "the keys that name it", "old": old_kver, "new": new_kver}
        lines = [f" {json.dumps(s)}: {json.dumps([[list(k) for k in names] for names in causes])}"
                 for s, causes in sorted(truth.items())]
        args.record.write_text(json.dumps(header)[:-1] + ', "truth": {\n' + ",\n".join(lines) + "\n}}\n")

if __name__ == "__main__":
    main()
