"""`kabigate explain` on the real Debian kernels 6.1.0-50 -> 56, against genksyms' ground truth
(tests/data/explain: recorded by bench/explain_truth.py, which runs genksyms on both kernels' own
source), and on BTF that pahole makes from C the test compiles."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.terminal import run_on_terminal
from test_cli import kabigate

from kabigate.explain.cache import (
    ENTRY_SUFFIX,
    HEADERS,
    MODULE_TYPES,
    TYPES,
    cache_dir,
    decode_entry,
    encode_entry,
    read_entry,
    write_entry,
)
from kabigate.explain.crc import explain, kernel_types
from kabigate.explain.sources import header_trees, kernel_types_of, load_headers, load_types
from kabigate.formats.btf import parse_btf
from kabigate.formats.cheaders import index_headers
from kabigate.formats.elf import ElfFile
from kabigate.inputs.kernels import load_kernel
from kabigate.model import Export


def run_cli(*args: str) -> tuple[int, str, str]:
    done = kabigate(*args)
    return done.returncode, done.stdout, done.stderr

OLD, NEW = "6.1.0-50-amd64", "6.1.0-56-amd64"
TRUTH = Path(__file__).parent / "data" / "explain" / "6.1.0-50-to-56-amd64.json"
TRUTH_250 = Path(__file__).parent / "data" / "explain" / "6.1.0-50-to-56-amd64-seed2.json"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache of its own, so that the first reading is really read."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KABIGATE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def pair(testdata, cache):
    old = kernel_types_of(load_kernel([str(testdata.kernel_root(OLD))]))
    new = kernel_types_of(load_kernel([str(testdata.kernel_root(NEW))]))
    headers = load_headers(header_trees([str(testdata.kernel_root(OLD))]))
    return old, new, headers


@pytest.fixture(scope="module")
def whole(pair):
    return explain(*pair[:2], headers=pair[2])


@pytest.mark.realdata
def test_every_changed_export_is_explained_or_says_why(whole, pair):
    old, new, _ = pair
    changed = {s.symbol for s in whole.symbols}
    assert changed == {n for n, e in old.exports.items() if n in new.exports and e.crc != new.exports[n].crc}
    assert len(changed) > 15000  # Debian's ABI bump: modules' exports too
    vmlinux = [s for s in whole.symbols if old.exports[s.symbol].owner == "vmlinux"]
    functions = [s for s in vmlinux if s.symbol in old.funcs]
    modules = [s for s in whole.symbols if old.exports[s.symbol].owner != "vmlinux"]
    assert sum(bool(s.candidates) for s in whole.symbols) / len(whole.symbols) >= 0.95
    assert sum(bool(s.candidates) for s in vmlinux) / len(vmlinux) >= 0.95
    assert sum(bool(s.candidates) for s in functions) / len(functions) >= 0.98
    # A module's exports, from its split BTF: its own types and vmlinux's reached through them.
    assert len(old.modules) > 900 and sum(bool(s.candidates) for s in modules) / len(modules) >= 0.95
    for explained in whole.symbols:
        assert bool(explained.candidates) != bool(explained.no_type_info), explained.symbol
    reasons = {s.no_type_info.split(":")[0] for s in whole.symbols if s.no_type_info}
    assert "a data symbol" in reasons
    by_name = {s.symbol: s for s in whole.symbols}
    assert by_name["kmalloc_caches"].no_type_info.startswith("a data symbol")
    # A tracepoint's type is struct tracepoint by the kernel's naming, not by a BTF VAR.
    assert by_name["__tracepoint_kfree"].candidates


@pytest.mark.realdata
def test_member_level_differences(whole):
    types = {t.name: t for t in whole.types}
    assert types["struct Qdisc"].cause and "member `int depth` added" in types["struct Qdisc"].details
    assert "member `atomic64_t futex_unique_id` added" in types["struct mm_struct"].details
    assert any(d == "constant SKB_DROP_REASON_TC_CHAIN_NOTFOUND = 65 added"
               for d in types["enum skb_drop_reason"].details)
    layout_only = [t for t in whole.types if not t.cause]
    assert layout_only and all(d.startswith(("size", "offsets", "layout")) for t in layout_only for d in t.details)
    causes = {t.key for t in whole.types if t.cause}
    assert not any(c.key in {t.key for t in layout_only} for s in whole.symbols for c in s.candidates)
    assert all(c.key in causes or c.key[0] == "declaration" for s in whole.symbols for c in s.candidates)


@pytest.mark.realdata
def test_agrees_with_genksyms_ground_truth(whole):
    """Recorded by genksyms -T on linux-source-6.1 6.1.176-1 and 6.1.192-2 (the kernels' exact
    source): every true cause is among the candidates of nearly every symbol, and the first
    candidate is a true one."""
    truth = json.loads(TRUTH.read_text())
    assert (truth["old"], truth["new"]) == (OLD, NEW) and len(truth["truth"]) == 40
    by_name = {s.symbol: s for s in whole.symbols}
    all_found = first_true = 0
    for symbol, causes in truth["truth"].items():
        keys = [c.key for c in by_name[symbol].candidates]
        names = [{tuple(k) for k in cause} for cause in causes]
        assert any(n & set(keys) for n in names), symbol
        all_found += all(n & set(keys) for n in names)
        first_true += keys[0] in set().union(*names)
    assert all_found >= 0.93 * len(truth["truth"]) and first_true >= 0.9 * len(truth["truth"])


@pytest.mark.realdata
def test_without_headers_ranks_by_depth_and_exported_use(pair, whole):
    """Without headers a candidate ranks by depth and how many exported prototypes are near its
    type (exported_use): on genksyms' ground truth for 250 functions (a sample not used to choose
    USE_WEIGHT), its first candidate is true more often than the shallowest one's (168 and 159)."""
    old, new, _ = pair
    truth = json.loads(TRUTH_250.read_text())["truth"]
    assert len(truth) == 250
    result = explain(old, new, sorted(truth))
    assert result.ranking == "exports" and whole.ranking == "headers"
    first = shallowest = 0
    for explained in result.symbols:
        named = set().union(*({tuple(k) for k in names} for names in truth[explained.symbol]))
        types = [c for c in explained.candidates if c.key[0] != "declaration"]
        assert all(c.seen_by is None for c in explained.candidates)
        declaration = explained.candidates[:1] if explained.candidates[0].key[0] == "declaration" else []
        first += explained.candidates[0].key in named
        shallowest += (declaration or sorted(types, key=lambda c: (c.depth, c.type)))[0].key in named
    assert first > shallowest, (first, shallowest)


@pytest.mark.realdata
def test_cache_entries_read_back_as_written(pair):
    """A real kernel's types (with its modules'), and its header index, through the cache's JSON."""
    old, _new, headers = pair
    assert old.modules
    for codec, value in ((TYPES, old), (MODULE_TYPES, old.modules)):
        assert decode_entry(codec, encode_entry(codec, value)) == value
    back = decode_entry(HEADERS, encode_entry(HEADERS, headers))
    assert (back.defined_in, back.included_by) == (headers.defined_in, headers.included_by)


@pytest.mark.realdata
def test_cli(testdata, cache):
    args = ["explain", "--from", str(testdata.kernel_root(OLD)), "--to", str(testdata.kernel_root(NEW))]
    code, stdout, _ = run_cli(*args, "skb_copy_bits", "kmalloc_caches", "crc7_be", "--json")
    assert code == 1
    report = json.loads(stdout)
    assert report["ranking"] == "headers" and report["counts"]["crc_changed"] == 2
    symbols = {s["symbol"]: s for s in report["symbols"]}
    assert symbols["skb_copy_bits"]["candidates"][0]["key"] == ["struct", "mm_struct"]
    assert symbols["kmalloc_caches"]["no_type_information"].startswith("a data symbol")
    assert symbols["crc7_be"]["old_crc"] == symbols["crc7_be"]["new_crc"]
    assert list(cache_dir().glob(f"*{ENTRY_SUFFIX}"))  # parsed once, kept for the next question
    code, stdout, _ = run_cli(*args, "skb_copy_bits")
    assert code == 1 and "skb_copy_bits  0x7705a93c -> 0x38abe93d  most likely struct mm_struct" in stdout
    # A kernel without its image: one line, exit 2.
    code, _, stderr = run_cli("explain", "--from", str(testdata.headers(OLD) / "Module.symvers"),
                              "--to", str(testdata.kernel_root(NEW)))
    assert code == 2 and "no kernel image" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.realdata
def test_cli_kernels_and_headers_given_any_way(testdata, cache, tmp_path):
    """Debian's flavor headers folder stands for its -common tree (and the report names it); a
    kernel's paths may be comma-joined; a stored release stands for its files; --headers without a
    headers tree is an error, not a ranking silently done without them."""
    old_root, new_root = testdata.kernel_root(OLD), testdata.kernel_root(NEW)
    flavor = old_root / "usr" / "src" / f"linux-headers-{OLD}"
    common = old_root / "usr" / "src" / f"linux-headers-{OLD.rsplit('-', 1)[0]}-common"
    code, stdout, _ = run_cli("explain", "--from", f"{old_root}/lib/modules/{OLD},{old_root}/boot/vmlinuz-{OLD}",
                              "--to", str(new_root), "--headers", str(flavor), "skb_copy_bits", "--json")
    report = json.loads(stdout)
    assert code == 1 and report["ranking"] == "headers" and report["headers"] == [str(common.resolve())]
    assert report["symbols"][0]["candidates"][0]["key"] == ["struct", "mm_struct"]
    code, stdout, _ = run_cli("explain", "--from", str(old_root), "--to", str(new_root), "skb_copy_bits")
    assert code == 1 and f"causes ranked by headers ({common.resolve()}), then depth" in stdout
    code, _, stderr = run_cli("explain", "--from", str(old_root), "--to", str(new_root),
                              "--headers", str(old_root / "boot"), "skb_copy_bits")
    assert code == 2 and "no headers tree here" in stderr and len(stderr.strip().splitlines()) == 1
    db = tmp_path / "store.db"
    for root in (old_root, new_root):
        assert run_cli("ingest", "kernel", "--db", str(db), "--stream", "s", str(root))[0] == 0
    stored = subprocess.run([sys.executable, "-m", "kabigate", "--db", str(db), "explain", "--from", OLD, "--to", NEW,
                             "skb_copy_bits", "--json"], capture_output=True, text=True)
    assert stored.returncode == 1, stored.stderr
    assert json.loads(stored.stdout)["symbols"] == report["symbols"]
    status, shown = run_on_terminal([sys.executable, "-m", "kabigate", "--db", str(db), "explain", "--from", OLD,
                                     "--to", NEW, "skb_copy_bits"])
    assert status == 1
    for stage in (f"reading {OLD}", f"reading {NEW}", "reading types and headers", "comparing types"):
        assert stage in shown, shown
    assert stored.stderr == ""  # a pipe: no bar
    missing = subprocess.run([sys.executable, "-m", "kabigate", "--db", str(db), "explain", "--from", "6.1.0-99-amd64",
                              "--to", NEW], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "6.1.0-99-amd64: no such file or directory, nor a kernel release in the store" in missing.stderr


C_BEFORE = """
struct inner { int a; };
struct outer { struct inner *in; long flags; };
typedef struct outer outer_t;
int api(outer_t *o) { return o->in->a; }
int other(long x) { return (int)x; }
"""


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("pahole")), reason="needs gcc and pahole")
def test_a_member_added_two_pointers_away(tmp_path):
    """BTF made by pahole from two versions of a C file: the inner struct gains a member; api()
    reaches it through a typedef and two pointers, other() does not."""
    kernels = []
    for version, source in enumerate((C_BEFORE, C_BEFORE.replace("int a; }", "int a; char added; }"))):
        (tmp_path / f"v{version}.c").write_text(source)
        subprocess.run(["gcc", "-g", "-O1", "-c", f"v{version}.c"], cwd=tmp_path, check=True)
        subprocess.run(["pahole", "-J", f"v{version}.o"], cwd=tmp_path, check=True, capture_output=True)
        elf = ElfFile((tmp_path / f"v{version}.o").read_bytes(), "v.o")
        btf = parse_btf(elf.section_bytes(elf.section(".BTF")), "v.o")
        exports = {"api": Export("api", 1 + version, "vmlinux"), "other": Export("other", 7, "vmlinux")}
        kernels.append(kernel_types(btf, f"v{version}", exports))
    result = explain(*kernels)
    [change] = result.types
    assert change.name == "struct inner" and change.details == ("member `char added` added",)
    [api] = result.symbols
    [candidate] = api.candidates
    assert (api.symbol, candidate.type, candidate.via, candidate.depth) == ("api", "struct inner", "o", 3)
    # The cache's rebuild of a kernel's types with other exports keeps its type index whole.
    again = dataclasses.replace(kernels[0], exports={})
    assert again.by_key == kernels[0].by_key


@pytest.mark.realdata
def test_crc_mismatches_in_check_and_diff_name_their_cause(testdata, cache):
    """check --built-for and diff attach the most likely cause to every CRC change (--json:
    `cause`); diff only when both kernels' images are known."""
    driver = testdata.driver_dir("acpi-call", "6.1.0-47-amd64")
    code, stdout, _ = run_cli("check", "-k", str(testdata.kernel_root(NEW)), "--built-for",
                              str(testdata.kernel_root("6.1.0-47-amd64")), str(driver), "--json")
    assert code == 1
    reasons = [r for m in json.loads(stdout)["modules"] for r in m["reasons"] if r["code"] == "crc-mismatch"]
    assert reasons and all("cause" in r for r in reasons)
    by_symbol = {r["symbol"]: r["cause"] for r in reasons}
    assert by_symbol["proc_create"]["most_likely"]["key"] == ["struct", "mm_struct"]
    assert by_symbol["kmalloc_caches"]["most_likely"] is None
    assert by_symbol["kmalloc_caches"]["no_type_information"].startswith("a data symbol")
    code, stdout, _ = run_cli("check", "-k", str(testdata.kernel_root(NEW)), str(driver), "--json")
    assert not any("cause" in r for m in json.loads(stdout)["modules"] for r in m["reasons"])
    code, stdout, _ = run_cli("diff", str(testdata.kernel_root(OLD)), str(testdata.kernel_root(NEW)), "--json")
    changed = json.loads(stdout)["crc_changed"]
    assert code == 1 and changed and all("cause" in c for c in changed)
    code, stdout, _ = run_cli("diff", str(testdata.headers(OLD) / "Module.symvers"), str(testdata.kernel_root(NEW)),
                              "--json")
    assert code == 1 and not any("cause" in c for c in json.loads(stdout)["crc_changed"])


@pytest.mark.realdata
def test_the_gate_names_causes(testdata, cache, tmp_path, monkeypatch):
    """A build for 6.1.0-47 regresses on 56: its crc-mismatches and the changed exports in use name
    their most likely cause in the gate's JSON and Markdown; --no-explain leaves them out."""
    monkeypatch.setenv("KABIGATE_DB", str(tmp_path / "store.db"))
    code, _, stderr = run_cli("ingest", "kernel", "--stream", "debian-6.1",
                              str(testdata.kernel_root("6.1.0-47-amd64")), str(testdata.kernel_root(NEW)))
    assert code == 0, stderr
    for driver in ("acpi-call", "v4l2loopback"):
        code, _, stderr = run_cli("ingest", "drivers", "--name", driver, "--version", "1",
                                  str(testdata.driver_dir(driver, "6.1.0-47-amd64")))
        assert code == 0, stderr
    gate = ["gate", "--candidate", NEW, "--stream", "debian-6.1", "--json"]
    code, stdout, _ = run_cli(*gate, "--markdown", str(tmp_path / "gate.md"))
    report = json.loads(stdout)
    assert code == 1 and report["counts"]["regression"] == 2
    build, v4l2loopback = sorted(report["builds"], key=lambda b: b["driver"])
    # videodev's exports: from the split BTF of the module tree beside each stored kernel's image
    assert {r["symbol"]: r["cause"]["most_likely"]["key"] for r in v4l2loopback["reasons"]
            if r["code"] == "crc-mismatch" and r["cause"]["most_likely"]}["video_ioctl2"] == ["struct", "mm_struct"]
    mismatches = [r for r in build["reasons"] if r["code"] == "crc-mismatch"]
    assert mismatches and all(r["cause"]["most_likely"] or r["cause"]["no_type_information"] for r in mismatches)
    assert {r["symbol"]: r["cause"]["most_likely"]["key"] for r in mismatches if r["cause"]["most_likely"]}[
        "proc_create"] == ["struct", "mm_struct"]
    assert all(c["cause"] for c in report["changed_exports_in_use"] if c["change"] == "crc")
    assert "proc_create` | crc 0xff2c8e5d -> 0xbeab912c (most likely `struct mm_struct`)" in (
        tmp_path / "gate.md").read_text()
    # The dashboard's verdict (API and page) shows the causes the gate worked out, from the cache.
    from fastapi.testclient import TestClient

    from kabigate.web import create_app

    with TestClient(create_app(str(tmp_path / "store.db"))) as client:
        stored_build = next(b for b in client.get("/api/v1/drivers").json()["builds"] if b["driver"] == "acpi-call")
        kernel_id = next(k["id"] for k in client.get("/api/v1/kernels").json()["kernels"] if k["release"] == NEW)
        cell = f"{stored_build['id']}/{kernel_id}"
        modules = client.get(f"/api/v1/verdicts/{cell}").json()["modules"]
        causes = {r["symbol"]: r.get("cause") for m in modules for r in m["reasons"] if r["code"] == "crc-mismatch"}
        assert causes["proc_create"]["most_likely"]["key"] == ["struct", "mm_struct"]
        assert "most likely <code>struct mm_struct</code> (via proc_ops" in client.get(f"/verdicts/{cell}").text
    code, stdout, _ = run_cli(*gate, "--no-explain")
    report = json.loads(stdout)
    assert not any("cause" in r for b in report["builds"] for r in b["reasons"])
    assert all(c["cause"] is None for c in report["changed_exports_in_use"])


def test_header_index_follows_the_kernel_build():
    """A uapi header's userspace-only include is not the kernel's (uapi/linux/fs.h includes
    linux/fscrypt.h only #ifndef __KERNEL__): popularity counts the headers that really see a type."""
    seed = (Path(__file__).parent / "fuzz" / "corpus" / "cheaders" / "types.h").read_bytes()
    index = index_headers({"include/linux/seed.h": seed, "include/linux/kernel_only.h": b"struct k { int x; };\n",
                           "include/linux/userspace_only.h": b"struct u { int x; };\n",
                           "include/linux/user.h": b"#include <linux/seed.h>\n"})
    assert index.defined_in[("typedef", "seed_fn")] == index.defined_in[("struct", "seed")] == "include/linux/seed.h"
    assert index.popularity(("struct", "seed")) == 2  # seed.h and user.h
    assert index.popularity(("struct", "k")) == 3 and index.popularity(("struct", "u")) == 1
    assert index.popularity(("struct", "nowhere")) == 0  # private: no shipped header defines it


@pytest.mark.realdata
def test_kernels_given_as_packages(testdata, cache):
    """The image inside linux-image-*.deb and the headers inside linux-headers-*.deb do what the
    extracted trees do."""
    debs = testdata.root / "debs"

    def kernel(release: str) -> list[str]:
        found = sorted(str(p) for p in debs.glob(f"linux-*-{release.rsplit('-', 1)[0]}-*.deb")
                       if "-amd64" in p.name or "-common_" in p.name)
        assert any("linux-image" in p for p in found), found
        return [arg for path in found for arg in ("--from" if release == OLD else "--to", path)]

    code, stdout, stderr = run_cli("explain", *kernel(OLD), *kernel(NEW), "proc_create", "--json")
    assert code == 1, stderr
    [symbol] = json.loads(stdout)["symbols"]
    assert json.loads(stdout)["ranking"] == "headers"
    assert symbol["candidates"][0]["key"] == ["struct", "mm_struct"] and symbol["candidates"][0]["via"] == "proc_ops"


@pytest.mark.realdata
def test_the_matrix_names_cached_causes(testdata, cache, tmp_path):
    """`matrix --format json|html` on the real store: a crc-mismatch names the cause check
    --built-for names, from the cache only (an empty cache: no cause, nothing read)."""
    from support.realstore import build_store

    db = build_store(testdata, tmp_path / "store.db")
    driver = testdata.driver_dir("acpi-call", NEW)
    code, stdout, stderr = run_cli("check", "-k", str(testdata.kernel_root(OLD)), "--built-for",
                                   str(testdata.kernel_root(NEW)), str(driver), "--json")
    assert code == 1, stderr  # explains 56 -> 50: the pair's kernels and 56's headers are cached now
    expected = {r["symbol"]: r["cause"] for m in json.loads(stdout)["modules"] for r in m["reasons"]
                if r["code"] == "crc-mismatch"}
    assert expected["proc_create"]["most_likely"]["key"] == ["struct", "mm_struct"]

    def cells(*env_cache: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "kabigate", "matrix", "--db", db, "--format", "json"],
                              check=False, capture_output=True, text=True,
                              env={**os.environ, **({"KABIGATE_CACHE": env_cache[0]} if env_cache else {})})
        assert done.returncode == 0, done.stderr
        return {(b["driver"], b["built_for"], release): cell for b in json.loads(done.stdout)["builds"]
                for release, cell in b["cells"].items() if cell}

    matrix = cells()
    assert matrix[("acpi-call", NEW, OLD)]["causes"] == expected
    for (_driver, built_for, release), cell in matrix.items():
        assert ("causes" in cell) <= (built_for != release and cell["first_reason"] is not None)
    assert not any("causes" in cell for cell in cells(str(tmp_path / "empty-cache")).values())
    assert not (tmp_path / "empty-cache").exists()  # nothing was read, computed or written
    page = tmp_path / "matrix.html"
    code, _, stderr = run_cli("matrix", "--db", db, "--format", "html", "-o", str(page))
    assert code == 0, stderr
    html = page.read_text()
    assert "most likely cause" in html
    blob = json.loads(html.split('<script type="application/json" id="cells">')[1].split("</script>")[0])
    cell = matrix[("acpi-call", NEW, OLD)]
    reasons = blob[f"{cell['build_id']}:{cell['kernel_id']}"]["reasons"]
    assert {r["symbol"]: r["cause"] for r in reasons if "cause" in r} == expected


@pytest.mark.realdata
def test_the_cache_keeps_to_its_size(testdata, tmp_path, monkeypatch):
    """Two explains filling one cache at once under a 6 MiB cap (three kernels' types, ~2.3 MB each,
    and two header indexes do not fit): both answer, the cache ends under the cap with no temporary
    file left, and a new entry removes the least recently used ones (a read counts as a use)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("KABIGATE_CACHE", str(folder))
    monkeypatch.setenv("KABIGATE_CACHE_MAX", "6M")
    runs = [subprocess.Popen([sys.executable, "-m", "kabigate", "explain", "--from", str(testdata.kernel_root(old)),
                              "--to", str(testdata.kernel_root(NEW)), "proc_create", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for old in ("6.1.0-47-amd64", OLD)]
    for run in runs:
        stdout, stderr = run.communicate(timeout=900)
        assert run.returncode == 1, stderr
        assert json.loads(stdout)["symbols"][0]["candidates"][0]["key"] == ["struct", "mm_struct"]

    def entries() -> dict[Path, int]:
        return {path: path.stat().st_mtime_ns for path in cache_dir().glob(f"*{ENTRY_SUFFIX}")}

    assert sum(path.stat().st_size for path in entries()) <= 6 << 20
    assert not list(cache_dir().glob(".btf-*"))
    assert load_types(str(testdata.kernel_root(NEW) / "boot" / f"vmlinuz-{NEW}")).release == NEW  # read: used now
    before = entries()
    newest = max(before, key=before.get)
    filler = {"random": os.urandom(3 << 20).hex()}  # ~3.3 MB compressed: not all that is there still fits
    write_entry("filler", filler)
    after = entries()
    removed, kept = before.keys() - after.keys(), before.keys() & after.keys()
    assert removed and newest in kept and max(before[p] for p in removed) <= min(before[p] for p in kept)
    assert sum(path.stat().st_size for path in after) <= 6 << 20 and read_entry("filler") == filler
    monkeypatch.setenv("KABIGATE_CACHE_MAX", "lots")
    (folder / "btf").rename(tmp_path / "filled")  # nothing cached: an entry is to be written
    code, _, stderr = run_cli("explain", "--from", str(testdata.kernel_root(OLD)),
                              "--to", str(testdata.kernel_root(NEW)))
    assert code == 2 and "KABIGATE_CACHE_MAX='lots': not a size" in stderr and len(stderr.strip().splitlines()) == 1
