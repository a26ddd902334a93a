"""Stablelist evidence on real data: the real RHEL 8 and 9 lists' history, checked against counts
made here independently; the stored Debian drivers' demand against RHEL 9.3's stablelist and the
Debian 6.1 CRC history; the request re-read by kabigate's own stablelist parser."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.realstore import DRIVERS, build_store

from kabigate.formats.stablelist import parse_stablelist
from kabigate.rules import RULES_VERSION
from kabigate.services.evidence import request_text, requested_additions, symbol_demand
from kabigate.store import Store

KABIGATE = [sys.executable, "-m", "kabigate"]
KABI = Path(__file__).parent / "data" / "kabi"
RHEL = [KABI / f"rhel-{minor}-Module.kabi_x86_64" for minor in ("8.4", "8.5", "8.6", "8.7", "8.8", "8.9",
                                                                "9.1", "9.2", "9.3")]
RELEASES = ("6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64")


def _crcs(path: Path) -> dict[str, str]:
    """symbol -> CRC, read with nothing but split (Module.kabi: CRC TAB symbol TAB ...)."""
    table = {}
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0].startswith("0x"):
            table[fields[1]] = int(fields[0], 16)
    return table


def test_history_of_the_real_rhel_8_and_9_lists():
    result = subprocess.run([*KABIGATE, "stablelist", "history", "--json", *map(str, RHEL)], capture_output=True,
                            text=True, check=True)
    steps = json.loads(result.stdout)["steps"]
    assert len(steps) == len(RHEL) - 1
    for step, (before, after) in zip(steps, itertools.pairwise(RHEL), strict=True):
        old, new = _crcs(before), _crcs(after)
        assert step["size"] == len(new)
        assert step["added"] == sorted(new.keys() - old.keys())
        assert step["removed"] == sorted(old.keys() - new.keys())
        assert step["crc_changed"] == sorted(s for s in old.keys() & new.keys() if old[s] != new[s])
    # What the real files say: RHEL 8's minors only ever added symbols and never moved a CRC;
    # RHEL 9's did both.
    rhel8 = steps[:5]
    assert all(not s["removed"] and not s["crc_changed"] for s in rhel8)
    assert [len(s["added"]) for s in rhel8] == [24, 3, 0, 29, 40]
    assert [len(s["crc_changed"]) for s in steps[6:]] == [5, 22]


@pytest.fixture(scope="module")
def evidence_db(testdata, tmp_path_factory):
    """A store with 47, 50, 56 in stream debian-6.1 and every driver built for 47 and for 56."""
    return build_store(testdata, tmp_path_factory.mktemp("evidence") / "store.db")


@pytest.mark.realdata
def test_demand_of_the_debian_drivers_against_rhel_9_3(evidence_db, testdata):
    stablelist = parse_stablelist((KABI / "rhel-9.3-Module.kabi_x86_64").read_bytes(), "rhel-9.3")
    with Store.open(evidence_db) as store:
        demand = symbol_demand(store, stablelist)
    by_symbol = {d.symbol: d for d in demand.symbols}
    # Who imports proc_create, counted from the module files themselves.
    from kabigate.inputs.modules import read_modules

    users = {driver for driver in DRIVERS for built_for in (RELEASES[0], RELEASES[2])
             for module in read_modules([str(testdata.driver_dir(driver, built_for))])
             if "proc_create" in {i.name for i in module.imports}}
    assert by_symbol["proc_create"].drivers == users
    # Its CRC along 47 -> 50 -> 56, read from the symvers files with split.
    crcs = []
    for release in RELEASES:
        symvers = testdata.root / testdata.manifest["kernels"][release]["symvers"]
        crcs.append(next(line.split("\t")[0] for line in symvers.read_text().splitlines()
                         if line.split("\t")[1] == "proc_create"))
    assert by_symbol["proc_create"].crc_changes == sum(a != b for a, b in itertools.pairwise(crcs))
    assert by_symbol["proc_create"].stablelisted == ("proc_create" in stablelist)
    # A symbol one build's modules provide to each other is not kernel demand (jool's
    # jool_common exports what jool and jool_siit import).
    jool_exports = {e.name for module in read_modules([str(testdata.driver_dir("jool", "6.1.0-47-amd64"))])
                    for e in module.exports}
    assert jool_exports and not jool_exports & by_symbol.keys()
    ranked = [d.failures_caused for d in demand.symbols]
    assert ranked == sorted(ranked, reverse=True) and ranked[0] > 0


@pytest.mark.realdata
def test_a_stablelisted_symbol_that_moved_is_a_violation(evidence_db, tmp_path):
    listed = tmp_path / "list"
    listed.write_text("proc_create\n")
    with Store.open(evidence_db) as store:
        demand = symbol_demand(store, parse_stablelist(listed.read_bytes(), str(listed)))
    (proc_create,) = [d for d in demand.symbols if d.symbol == "proc_create"]
    assert proc_create.stablelisted and proc_create.crc_changes == 2 and proc_create.violation
    assert not any(d.violation for d in demand.symbols if d.symbol != "proc_create")


@pytest.mark.realdata
@pytest.mark.parametrize("list_format", ["rhel", "module-kabi", "plain"])
def test_the_request_reads_back_with_kabigates_own_parser(evidence_db, tmp_path, list_format):
    out, why = tmp_path / "request", tmp_path / "why.md"
    subprocess.run([*KABIGATE, "stablelist", "request", "--db", evidence_db, "--stablelist",
                    str(KABI / "rhel-9.3-Module.kabi_x86_64"), "--format", list_format, "--min-drivers", "2",
                    "-o", str(out), "--justification", str(why)], check=True, capture_output=True)
    parsed = parse_stablelist(out.read_bytes(), str(out))
    stablelist = parse_stablelist((KABI / "rhel-9.3-Module.kabi_x86_64").read_bytes(), "rhel-9.3")
    with Store.open(evidence_db) as store:
        demand = symbol_demand(store, stablelist)
        expected = requested_additions(demand, min_drivers=2)
        newest = store.load_kernel(demand.kernels[-1].id)
    assert parsed.symbols == {d.symbol for d in expected} and expected
    assert not parsed.symbols & stablelist.symbols
    assert all(len(d.drivers) >= 2 for d in expected)
    if list_format == "module-kabi":
        assert parsed.crcs == {s: newest.exports[s].crc for s in parsed.symbols}
    if list_format == "rhel":
        assert out.read_text().startswith("[rhel9_x86_64_stablelist]\n\t")
    text = why.read_text()
    assert all(f"## `{s}`" in text for s in parsed.symbols)
    assert request_text(expected, list_format, "x86_64") == out.read_text()


@pytest.mark.realdata
def test_demand_csv_and_json(evidence_db):
    stablelist = str(KABI / "rhel-9.3-Module.kabi_x86_64")
    report = json.loads(subprocess.run([*KABIGATE, "stablelist", "demand", "--db", evidence_db, "--stablelist",
                                        stablelist, "--json"], check=True, capture_output=True, text=True).stdout)
    rows = subprocess.run([*KABIGATE, "stablelist", "demand", "--db", evidence_db, "--stablelist", stablelist,
                           "--csv"], check=True, capture_output=True, text=True).stdout.splitlines()
    assert len(rows) == len(report["symbols"]) + 1 and rows[0].startswith("symbol,stablelisted,drivers")
    assert report["stream"] == "debian-6.1" and report["kernels"] == list(RELEASES)


def test_elrepo_rebuilds_per_rhel_minor():
    history = Path(__file__).parent / "data" / "elrepo" / "spec_history.tsv"
    report = json.loads(subprocess.run([*KABIGATE, "stablelist", "rebuilds", "--json", str(history)], check=True,
                                       capture_output=True, text=True).stdout)
    minors = {m["minor"]: m for m in report["minors"]}
    rows = [line.split("\t") for line in history.read_text().splitlines()[1:]]
    # Counted here with string tests only: revisions whose target is a 9.7 (5.14.0-611) or 8.4 kernel.
    assert minors["9.7"]["revisions"] == sum(1 for r in rows if r[6].startswith("5.14.0-611."))
    assert minors["8.4"]["revisions"] == sum(1 for r in rows if r[6].startswith("4.18.0-305."))
    specs_97 = {r[2] for r in rows if r[6].startswith("5.14.0-611.")}
    assert minors["9.7"]["first_builds"] + minors["9.7"]["rebuilds"] == len(specs_97)
    # What it shows: from RHEL 8.1 on, most ELRepo kmods are rebuilt for every minor.
    assert all(minors[f"9.{n}"]["rebuilds"] > minors[f"9.{n}"]["first_builds"] for n in range(1, 9))


def test_a_malformed_spec_history_is_one_line_error(tmp_path):
    bad = tmp_path / "history.tsv"
    bad.write_text("not\ta\theader\n")
    result = subprocess.run([*KABIGATE, "stablelist", "rebuilds", str(bad)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2 and "not an ELRepo spec history" in result.stderr


@pytest.mark.realdata
def test_failures_count_only_where_the_symbol_decides_the_verdict(evidence_db):
    """Across a Debian ABI bump every old build is refused for module_layout first: its CRC
    mismatches (kmalloc_caches in every driver) never reach the kernel, so they refuse nothing.
    dahdi_echocan_oslec's missing oslec_create is its first reason: it decides its cells."""
    stablelist = parse_stablelist((KABI / "rhel-9.3-Module.kabi_x86_64").read_bytes(), "rhel-9.3")
    with Store.open(evidence_db) as store:
        by_symbol = {d.symbol: d for d in symbol_demand(store, stablelist).symbols}
        kernels = [k.id for k in store.kernels("debian-6.1")]
        cells = store.cells(RULES_VERSION, build_ids=[b.id for b in store.driver_builds()], kernel_ids=kernels)
        details = store.verdict_details([key for key, cell in cells.items() if not cell.loads])

    def modules_naming(symbol):
        return [m for modules in details.values() for m in modules if any(r["symbol"] == symbol for r in m["reasons"])]

    refused_earlier = modules_naming("kmalloc_caches")
    assert len({id(m) for m in refused_earlier}) >= 10
    assert {m["reasons"][0]["code"] for m in refused_earlier} == {"module-layout-mismatch"}
    assert by_symbol["kmalloc_caches"].failures_caused == 0 and by_symbol["kmalloc_caches"].crc_changes == 2
    oslec_cells = [key for key, modules in details.items()
                   if any(m["reasons"] and m["reasons"][0]["code"] == "missing-symbol"
                          and "oslec_create" in {r["symbol"] for r in m["reasons"]} for m in modules)]
    assert by_symbol["oslec_create"].failures_caused == len(oslec_cells) == 2


@pytest.mark.realdata
def test_crc_changes_name_their_kernels_and_the_causes_the_explain_cache_holds(evidence_db, testdata, tmp_path):
    env = {**os.environ, "KABIGATE_CACHE": str(tmp_path / "cache")}
    stablelist = str(KABI / "rhel-9.3-Module.kabi_x86_64")

    def demand(*args):
        return subprocess.run([*KABIGATE, "--db", evidence_db, "stablelist", "demand", "--stablelist", stablelist,
                               *args], check=True, capture_output=True, text=True, env=env).stdout

    def by_symbol():
        return {d["symbol"]: d for d in json.loads(demand("--json"))["symbols"]}

    crcs = {}  # release -> proc_create's CRC, read from the symvers files with split
    for release in RELEASES:
        symvers = testdata.root / testdata.manifest["kernels"][release]["symvers"]
        crcs[release] = next(int(line.split("\t")[0], 16) for line in symvers.read_text().splitlines()
                             if line.split("\t")[1] == "proc_create")
    changed = [(a, b) for a, b in itertools.pairwise(RELEASES) if crcs[a] != crcs[b]]
    before = by_symbol()["proc_create"]["crc_changed_in"]
    assert [(c["previous"], c["kernel"], c["old_crc"], c["new_crc"]) for c in before] == [
        (a, b, crcs[a], crcs[b]) for a, b in changed] and len(changed) == 2
    assert all(c["cause"] is None for c in before)  # an empty cache: no cause, and none computed
    # `explain` reads 50 and 56 into the cache: the change 50 -> 56 now has the cause explain gives.
    explain = subprocess.run([*KABIGATE, "--db", evidence_db, "explain", "--from", RELEASES[1], "--to", RELEASES[2],
                              "proc_create", "skb_copy_bits", "--json"], capture_output=True, text=True, env=env)
    assert explain.returncode == 1  # a CRC changed
    explained = json.loads(explain.stdout)
    first = {s["symbol"]: s["candidates"][0] for s in explained["symbols"]}
    after = by_symbol()
    for symbol in ("proc_create", "skb_copy_bits"):
        old, new = after[symbol]["crc_changed_in"]
        assert old["cause"] is None and new["cause"]["most_likely"] == first[symbol]
    table = demand("--limit", "400")
    assert f"{RELEASES[1]}, {RELEASES[2]} ({first['proc_create']['type']})" in table
    assert "failures caused" in table and "CRC changed in" in table


def _ksc_sections(text: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """ksc-result.txt read the way ksc.py's read_justifications() reads it: sections split at
    "{KO@...}", the symbol lists between [STABLELISTUSAGE] and [NONSTABLELISTUSAGE], each
    justification "(symbol)" up to the next '#'. KO -> (stablelisted symbols, {symbol: justification})."""
    sections, name = {}, None
    for part in re.split(r"({[^}]*})", text):
        if heading := re.match(r"{(?P<ko>[^@}]*)@", part):
            name = heading["ko"]
            continue
        body = re.match(r".*\[STABLELISTUSAGE\](?P<wl>.*)\[NONSTABLELISTUSAGE\]\s*(?P<gl>.*)", part, re.S)
        if body and name:
            justified = {s.strip(): j.strip() for s, j in re.findall(r"#*\s*\((.*)\)\s*([^#]*)", body["gl"])}
            sections[name] = (body["wl"].split(), justified)
    return sections


@pytest.mark.realdata
def test_the_ksc_report_reads_back_as_ksc_reads_it(evidence_db, testdata, tmp_path):
    from kabigate.inputs.modules import read_modules

    out = tmp_path / "ksc-result.txt"
    stablelist_path = KABI / "rhel-9.3-Module.kabi_x86_64"
    subprocess.run([*KABIGATE, "--db", evidence_db, "stablelist", "request", "--stablelist", str(stablelist_path),
                    "--format", "ksc", "--min-drivers", "2", "-o", str(out)], check=True, capture_output=True)
    text = out.read_text()
    assert text.startswith("[command: kabigate --db ")
    sections = _ksc_sections(text)
    stablelist = parse_stablelist(stablelist_path.read_bytes(), "rhel-9.3")
    with Store.open(evidence_db) as store:
        requested = {d.symbol: d for d in requested_additions(symbol_demand(store, stablelist), min_drivers=2)}
    # Each driver's newest build is the one built for 6.1.0-56; its modules read here from the files.
    expected = {}
    for driver in DRIVERS:
        modules = read_modules([str(testdata.driver_dir(driver, RELEASES[2]))])
        own = {e.name for m in modules for e in m.exports}
        for module in modules:
            imports = {i.name for i in module.imports} - own
            if imports & requested.keys():
                expected[Path(module.path).name.split(".ko")[0] + ".ko"] = (
                    sorted(imports & stablelist.symbols), imports & requested.keys())
    assert sections.keys() == expected.keys() and len(sections) > 10
    stated = {}
    for ko, (listed, justified) in sections.items():
        assert listed == expected[ko][0] and justified.keys() == expected[ko][1]
        for symbol, justification in justified.items():
            if reference := re.fullmatch(r"JUSTIFICATION STATED UNDER `(.*)' SECTION", justification):
                assert reference[1] in sections and symbol in sections[reference[1]][1]
            else:
                assert symbol not in stated
                stated[symbol] = justification
    assert stated.keys() == set().union(*(asked for _listed, asked in expected.values()))
    kmalloc_trace = stated["kmalloc_trace"]
    # Causes show where the user's explain cache holds both kernels: whichever it holds.
    assert re.search(rf"in {RELEASES[1]}( \([^)]+\))?, {RELEASES[2]}", kmalloc_trace)
    assert "used by 5 drivers" in kmalloc_trace
