"""The gate on real Debian kernels and drivers: classes, policy and waivers, its outputs (JUnit read
by junitparser, Markdown, JSON) and publishing to a ResultsDB-shaped endpoint that validates the
payload as ResultsDB's API v2.0 does."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys

import junitparser
import pytest
from fastapi.testclient import TestClient
from support.realstore import build_store
from support.resultsdb import ResultsDB, resultsdb_server
from support.terminal import run_on_terminal

from kabigate.errors import InputError
from kabigate.formats.gatepolicy import parse_policy, parse_waivers
from kabigate.services.gate import previous_in_stream, resolve_kernel, run_gate
from kabigate.services.ingest import ingest_driver_build, read_driver_builds
from kabigate.store import Store
from kabigate.web import create_app

pytestmark = pytest.mark.realdata
KABIGATE = [sys.executable, "-m", "kabigate"]
RELEASES = ("6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64")
TOKEN = "gate-test-token-5e2a"


@pytest.fixture(scope="module")
def gate_db(testdata, tmp_path_factory):
    """A store with 47, 50, 56 in stream debian-6.1 and every driver built for 47 and for 56."""
    return build_store(testdata, tmp_path_factory.mktemp("gate") / "store.db")


def _gate(db, release, **options):
    with Store.open(db) as store:
        candidate = resolve_kernel(store, release)
        baseline, stream = previous_in_stream(store, candidate, None)
        return run_gate(store, candidate, baseline, stream=stream, **options)


def _classes(result) -> dict[tuple[str, str], str]:
    return {(f.build.driver, f.build.built_for): f.klass for f in result.builds}


def test_each_build_falls_in_its_class(gate_db, testdata):
    result = _gate(gate_db, "6.1.0-50-amd64")
    assert result.baseline.release == "6.1.0-47-amd64" and result.stream == "debian-6.1"
    classes = _classes(result)
    # dahdi's oslec echo canceller needs a staging module Debian does not build: it never loads.
    assert classes[("dahdi", "6.1.0-47-amd64")] == "still_failing"
    for driver in ("acpi-call", "jool", "v4l2loopback", "xtables-addons"):
        assert classes[(driver, "6.1.0-47-amd64")] == "regression"
        assert classes[(driver, "6.1.0-56-amd64")] == "still_failing"
    regression = next(f for f in result.regressions if f.build.driver == "acpi-call")
    assert {"module_layout", "proc_create"} <= {s.name for s in regression.symbols}
    assert all(not s.stablelisted for s in regression.symbols)  # no stablelist given
    assert regression.category == "regression_unlisted" and regression.outcome == "NEEDS_INSPECTION"
    assert result.outcome == "NEEDS_INSPECTION" and not result.passed
    assert result.export_changes["changed_unlisted"] > 18000  # Debian's ABI bump changes most CRCs
    in_use = {c.symbol: c for c in result.changes_in_use}
    with Store.open(gate_db) as store:  # counted from the stored modules' imports
        importing = {b.id for b in store.driver_builds()
                     for m in store.load_build(b.id) if "proc_create" in {i.name for i in m.imports}}
    assert in_use["proc_create"].change == "crc" and in_use["proc_create"].builds == len(importing) > 0

    later = _classes(_gate(gate_db, "6.1.0-56-amd64"))
    assert later[("acpi-call", "6.1.0-56-amd64")] == "fixed"
    assert later[("acpi-call", "6.1.0-47-amd64")] == "still_failing"


def test_a_stablelisted_symbol_makes_the_regression_fail_and_is_a_kabi_violation(gate_db, tmp_path):
    stablelist = tmp_path / "stablelist"
    stablelist.write_text("# plain list\nproc_create\nprintk\n")
    from kabigate.formats.stablelist import parse_stablelist

    result = _gate(gate_db, "6.1.0-50-amd64", stablelist=parse_stablelist(stablelist.read_bytes(), str(stablelist)))
    acpi = next(f for f in result.regressions if f.build.driver == "acpi-call")
    assert acpi.category == "regression_stablelisted" and acpi.outcome == "FAILED"
    assert [s.name for s in acpi.symbols if s.stablelisted] == ["proc_create"]
    violations = {f.symbol: f for f in result.kernel_findings}
    assert violations["proc_create"].change == "crc" and violations["proc_create"].outcome == "FAILED"
    assert result.outcome == "FAILED"


def test_waivers_forgive_until_they_expire(gate_db):
    waivers = parse_waivers(b'''
[[waiver]]
driver = "acpi-call"
kernel = "6.1.0-5*"
reason = "rebuilt for every ABI"
who = "jane@example.org"
expires = 2099-12-31

[[waiver]]
driver = "jool"
reason = "old waiver"
who = "joe@example.org"
expires = 2020-01-01
''', "waivers.toml")
    result = _gate(gate_db, "6.1.0-50-amd64", waivers=tuple(waivers))
    by_driver = {f.build.driver: f for f in result.regressions}
    assert by_driver["acpi-call"].outcome == "INFO" and by_driver["acpi-call"].waivers == [waivers[0]]
    assert by_driver["jool"].outcome == "NEEDS_INSPECTION" and by_driver["jool"].expired_waivers == [waivers[1]]
    assert any("expired waiver no longer applies" in note and "jool" in note for note in result.notes)


def test_a_waiver_that_covers_only_some_symbols_does_not_apply(gate_db):
    waivers = parse_waivers(b'[[waiver]]\ndriver = "acpi-call"\nsymbol = "proc_create"\nreason = "r"\nwho = "w"\n',
                            "w.toml")
    result = _gate(gate_db, "6.1.0-50-amd64", waivers=tuple(waivers))
    acpi = next(f for f in result.regressions if f.build.driver == "acpi-call")
    assert acpi.waivers == [] and acpi.outcome == "NEEDS_INSPECTION"


def test_policy_decides_outcomes_gating_drivers_and_coverage(gate_db):
    policy = parse_policy(b'[outcomes]\nregression_unlisted = "INFO"\n[drivers]\ngating = ["acpi-*"]\n'
                          b'[coverage]\nminimum_builds = 5\nbelow_minimum = "FAILED"\n', "policy.toml")
    result = _gate(gate_db, "6.1.0-50-amd64", policy=policy)
    assert {f.build.driver for f in result.builds if f.gating} == {"acpi-call"}
    assert result.coverage == 2
    assert result.outcome == "FAILED" and "only 2 gating driver builds" in result.notes[0]
    # no package works on 50 (the store has no build for it): the builds' classes alone do not pass it
    relaxed = parse_policy(b'[outcomes]\nregression_unlisted = "INFO"\n', "policy.toml")
    result = _gate(gate_db, "6.1.0-50-amd64", policy=relaxed)
    assert result.outcome == "NEEDS_INSPECTION" and any("none of the 5 gating packages" in n for n in result.notes)
    relaxed = parse_policy(b'[outcomes]\nregression_unlisted = "INFO"\npackage_not_rebuilt = "INFO"\n'
                           b'[coverage]\nrequire_working_packages = false\n', "policy.toml")
    assert _gate(gate_db, "6.1.0-50-amd64", policy=relaxed).outcome == "INFO"


# TOML that broke the parser's callers: integers past int()'s 4,300 digits (ValueError), hexadecimal
# ones of any length (a ValueError where they are printed), dotted keys whose every prefix tomllib keeps
# (memory: the square of the parts), nesting past the recursion limit.
OUTSIDE_INT64 = "an integer outside the 64-bit range TOML allows"
HOSTILE_TOML = [
    (b"[coverage]\nminimum_builds = 1" + b"0" * 4300 + b"\n", OUTSIDE_INT64),
    (b"[outcomes]\nfixed = 0x" + b"f" * 4000 + b"\n", OUTSIDE_INT64),
    (b"[coverage]\nminimum_builds = 0x8000000000000000\n", OUTSIDE_INT64),
    (b"[[waiver]]\ndriver = \"x\"\nreason = \"r\"\nwho = \"w\"\nexpires = [0o" + b"7" * 5000 + b"]\n", OUTSIDE_INT64),
    (b"outcomes" + b".a" * 5_000 + b" = 1\n", "a dotted key of more than 64 parts"),
    (b"x = {" + b"y = {" * 50_000 + b"}" * 50_000 + b"}\n", "nested too deeply"),
]


@pytest.mark.parametrize("text, message", [
    (b"[outcomes\n", "not valid TOML"),
    (b'[outcomes]\nregression = "FAILED"\n', "unknown key outcomes.regression"),
    (b'[outcomes]\nfixed = "GREAT"\n', "an outcome is one of PASSED, INFO, NEEDS_INSPECTION, FAILED"),
    (b'[drivers]\ngating = "acpi"\n', "drivers.gating must be a list"),
    (b'[coverage]\nminimum_builds = -1\n', "minimum_builds must be a whole number"),
    (b"\xff\xfe", "not UTF-8"),
    (b"a = " + b"[" * 5000 + b"]" * 5000, "policy.toml"),
    *HOSTILE_TOML,
])
def test_malformed_policies_are_one_line_errors(text, message):
    with pytest.raises(InputError, match=message):
        parse_policy(text, "policy.toml")


@pytest.mark.parametrize("text, message", [
    (b'[[waiver]]\ndriver = "x"\nwho = "w"\n', "'reason' is required"),
    (b'[[waiver]]\nreason = "r"\nwho = "w"\n', "waives everything"),
    (b'[[waiver]]\ndriver = "x"\nreason = "r"\nwho = "w"\nexpires = "soon"\n', "'expires' must be a date"),
    (b'[[waiver]]\ndriver = "x"\nreason = "r"\nwho = "w"\nseverity = 1\n', "unknown key severity"),
    (b'waiver = 3\n', "waivers are [[waiver]] tables"),
    *HOSTILE_TOML,
])
def test_malformed_waivers_are_one_line_errors(text, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse_waivers(text, "waivers.toml")


def test_cli_bad_policy_file_exits_2_with_one_line(gate_db, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[outcomes]\nfixed = "MAYBE"\n')
    result = subprocess.run([*KABIGATE, "gate", "--db", gate_db, "--candidate", "6.1.0-50-amd64",
                             "--policy", str(policy)], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "outcomes.fixed = 'MAYBE'" in result.stderr


@pytest.mark.parametrize("text, message", HOSTILE_TOML[:2])
def test_hostile_policy_and_waivers_are_exit_2_in_the_cli_and_400_from_the_api(gate_db, tmp_path, text, message):
    path = tmp_path / "hostile.toml"
    path.write_bytes(text)
    for option in ("--policy", "--waivers"):
        result = subprocess.run([*KABIGATE, "gate", "--db", gate_db, "--candidate", "6.1.0-50-amd64", option,
                                 str(path)], capture_output=True, text=True, check=False)
        assert result.returncode == 2 and result.stderr == f"kabigate: error: {path}: not valid TOML: {message}\n"
    with TestClient(create_app(gate_db, token=TOKEN)) as client:
        for field in ("policy", "waivers"):
            response = client.post("/api/v1/gate", json={"candidate": "6.1.0-50-amd64", field: text.decode()},
                                   headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 400 and message in response.json()["detail"], response.text


def test_junit_markdown_and_json_outputs(gate_db, tmp_path):
    junit, markdown = tmp_path / "gate.xml", tmp_path / "gate.md"
    result = subprocess.run([*KABIGATE, "gate", "--db", gate_db, "--candidate", "6.1.0-50-amd64", "--json",
                             "--junit", str(junit), "--markdown", str(markdown), "--matrix-url",
                             "https://ci.example.org/matrix.html"], capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["outcome"] == "NEEDS_INSPECTION" and report["counts"]["regression"] == 4
    assert report["baseline"]["release"] == "6.1.0-47-amd64"
    xml = junitparser.JUnitXml.fromfile(str(junit))
    (suite,) = list(xml)
    cases = [case for case in suite if not case.classname.endswith(".packages")]
    assert len(cases) == len(report["builds"])
    failed = [case for case in cases if case.result and isinstance(case.result[0], junitparser.Failure)]
    skipped = [case for case in cases if case.result and isinstance(case.result[0], junitparser.Skipped)]
    assert len(failed) == 4 and len(skipped) == report["counts"]["still_failing"]
    # one case per package: the store has no build for 50, so every package that worked on 47 breaks,
    # dahdi too (31 of 32 modules loaded on 47, none on 50)
    packages = {case.name: case for case in suite if case.classname.endswith(".packages")}
    assert set(packages) == {f"package {p['driver']}" for p in report["packages"]} and len(packages) == 5
    assert all(isinstance(case.result[0], junitparser.Failure) for case in packages.values())
    assert "package_not_rebuilt" in packages["package dahdi"].result[0].message
    acpi = next(case for case in failed if case.name.startswith("acpi-call"))
    assert "proc_create" in acpi.result[0].message and "disagrees about version" in acpi.result[0].text
    text = markdown.read_text()
    assert "**NEEDS_INSPECTION**" in text and "`proc_create`" in text and "https://ci.example.org/matrix.html" in text
    assert "### Packages the candidate breaks" in text and "| dahdi | partial | broken |" in text


def test_exit_0_when_nothing_regresses(gate_db):
    result = subprocess.run([*KABIGATE, "gate", "--db", gate_db, "--candidate", "6.1.0-56-amd64", "--baseline",
                             "6.1.0-56-amd64", "--json"], capture_output=True, text=True, check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["outcome"] == "INFO"  # still-failing builds are INFO
    assert report["counts"]["regression"] == 0 and report["counts"]["unaffected"] > 0


@pytest.fixture
def resultsdb():
    with resultsdb_server() as url:
        yield url


def test_publishes_a_result_resultsdb_accepts(gate_db, resultsdb):
    result = subprocess.run([*KABIGATE, "gate", "--db", gate_db, "--candidate", "6.1.0-50-amd64", "--resultsdb",
                             resultsdb, "--ref-url", "https://ci.example.org/job/1", "--item",
                             "kernel-6.1.170-1", "--json"], capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["resultsdb"]["id"] == "1"
    (posted,) = ResultsDB.received
    assert posted["outcome"] == "NEEDS_INSPECTION"
    # ref_url on the result: the testcase's one is ResultsDB's, overwritten by each publish
    assert posted["testcase"] == {"name": "kabigate.kernel-gate.functional"}
    assert posted["ref_url"] == "https://ci.example.org/job/1"
    assert posted["data"]["item"] == "kernel-6.1.170-1" and posted["data"]["type"] == "koji_build"
    assert posted["data"]["arch"] == "x86_64" and posted["data"]["scenario"] == "x86_64.debian-6.1"
    assert "4 regressions" in posted["note"]
    assert posted["data"]["kabigate_run"] == json.loads(result.stdout)["run"]


def test_a_gate_run_is_published_once_even_when_the_publisher_died_before_noting_it(gate_db, resultsdb, tmp_path):
    import shutil

    from kabigate.reports.gate import gate_json, resultsdb_payload
    from kabigate.services.gate import publish_gate, record_gate

    db = str(tmp_path / "store.db")
    shutil.copy(gate_db, db)
    with Store.open(db) as store:
        result = _gate(db, "6.1.0-50-amd64")
        run = record_gate(store, result, gate_json(result))
        payload = resultsdb_payload(store.gate_report(run.uuid))
        first = publish_gate(store, run, resultsdb, payload)
        # Killed after the POST, before the store noted it: the run still looks unpublished.
        again = publish_gate(store, run, resultsdb, payload)
        assert again == first and len(ResultsDB.received) == 1
        assert store.gate_run(run.uuid).resultsdb_id == first
        assert store.gate_report(run.uuid)["outcome"] == "NEEDS_INSPECTION"


def test_a_refused_result_is_a_one_line_error(gate_db, resultsdb):
    result = subprocess.run([*KABIGATE, "gate", "--db", gate_db, "--candidate", "6.1.0-50-amd64", "--resultsdb",
                             resultsdb, "--testcase", ""], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "HTTP 400: testcase: testcase name must be non-empty" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    unreachable = subprocess.run([*KABIGATE, "gate", "--db", gate_db, "--candidate", "6.1.0-50-amd64",
                                  "--resultsdb", "http://127.0.0.1:9/api/v2.0"], capture_output=True, text=True,
                                 check=False)
    assert unreachable.returncode == 2 and "cannot reach ResultsDB" in unreachable.stderr


def test_candidate_given_as_files_is_ingested_then_gated(gate_db, testdata, tmp_path):
    import shutil

    db = str(tmp_path / "store.db")
    shutil.copy(gate_db, db)
    with Store.open(db) as store:
        before = len(store.kernels())
    rt = str(testdata.kernel_root("6.1.0-47-rt-amd64"))
    result = subprocess.run([*KABIGATE, "gate", "--db", db, "--candidate", rt, "--stream", "debian-6.1-rt",
                             "--baseline", "6.1.0-47-amd64", "--json"], capture_output=True, text=True, check=False)
    report = json.loads(result.stdout)
    assert report["candidate"]["release"] == "6.1.0-47-rt-amd64"
    # The rt kernel's layout and vermagic (preempt_rt) differ: every generic 47 build regresses on it.
    acpi = next(b for b in report["builds"] if b["driver"] == "acpi-call" and b["built_for"] == "6.1.0-47-amd64")
    assert acpi["class"] == "regression"
    assert [r["code"] for r in acpi["reasons"][:2]] == ["module-layout-mismatch", "vermagic-mismatch"]
    with Store.open(db) as store:
        assert len(store.kernels()) == before + 1


def test_expiry_is_judged_on_the_day_given():
    (waiver,) = parse_waivers(b'[[waiver]]\ndriver = "x"\nreason = "r"\nwho = "w"\nexpires = 2027-01-31\n', "w")
    assert not waiver.expired(datetime.date(2027, 1, 31)) and waiver.expired(datetime.date(2027, 2, 1))


def _pool(testdata, folder, releases):
    for release in releases:
        for prefix in (f"linux-image-{release}-unsigned", f"linux-headers-{release}"):
            (deb,) = (testdata.root / "debs").glob(prefix + "_*.deb")
            (folder / deb.name).symlink_to(deb)


def test_watch_gates_each_new_kernel_once_and_publishes_once(testdata, tmp_path, resultsdb):
    db, pool, reports = str(tmp_path / "store.db"), tmp_path / "pool", tmp_path / "reports"
    pool.mkdir()
    with Store.open(db) as store:
        for built_for in ("6.1.0-47-amd64", "6.1.0-56-amd64"):
            entry = testdata.manifest["drivers"]["acpi-call"][built_for]
            for build in read_driver_builds([str(testdata.root / entry["dir"])], "acpi-call", entry["version"]):
                ingest_driver_build(store, build)
    watch = [*KABIGATE, "watch", "--db", db, "--once", "--stream", "debian-6.1", "--json", "--resultsdb", resultsdb,
             "--output-dir", str(reports), str(pool)]

    def run():
        result = subprocess.run(watch, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    _pool(testdata, pool, ["6.1.0-47-amd64", "6.1.0-50-amd64"])
    first = run()
    assert [(r["candidate"]["release"], r["baseline"] and r["baseline"]["release"]) for r in first] == \
           [("6.1.0-47-amd64", None), ("6.1.0-50-amd64", "6.1.0-47-amd64")]
    assert first[0]["counts"]["new"] == 2 and first[1]["counts"]["regression"] == 1
    assert (reports / "6.1.0-50-amd64.junit.xml").is_file() and (reports / "6.1.0-50-amd64.md").is_file()
    assert run() == []  # nothing new
    _pool(testdata, pool, ["6.1.0-56-amd64"])
    (third,) = run()
    assert third["candidate"]["release"] == "6.1.0-56-amd64" and third["counts"]["fixed"] == 1
    assert [r["data"]["kernel_release"] for r in ResultsDB.received] == \
           ["6.1.0-47-amd64", "6.1.0-50-amd64", "6.1.0-56-amd64"]


def test_watch_publishes_a_run_its_predecessor_recorded_but_did_not_publish(testdata, tmp_path, resultsdb):
    db, pool = str(tmp_path / "store.db"), tmp_path / "pool"
    pool.mkdir()
    _pool(testdata, pool, ["6.1.0-47-amd64"])
    # A watcher without --resultsdb stands for one killed after gating, before publishing.
    subprocess.run([*KABIGATE, "watch", "--db", db, "--once", "--stream", "s", str(pool)], check=True,
                   capture_output=True)
    with Store.open(db) as store:
        (run,) = store.gate_runs_of(store.kernels()[0].id)
    result = subprocess.run([*KABIGATE, "watch", "--db", db, "--once", "--stream", "s", "--resultsdb", resultsdb,
                             str(pool)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and f"published the earlier gate run {run.uuid}" in result.stderr
    (posted,) = ResultsDB.received
    assert posted["data"]["kabigate_run"] == run.uuid
    with Store.open(db) as store:
        assert [r.uuid for r in store.gate_runs_of(store.kernels()[0].id)] == [run.uuid]


def test_watch_reads_a_debian_packages_index(testdata, tmp_path):
    repository = tmp_path / "repo"
    (repository / "pool").mkdir(parents=True)
    _pool(testdata, repository / "pool", ["6.1.0-47-amd64"])
    stanzas = [f"Package: {deb.name.split('_')[0]}\nVersion: {deb.name.split('_')[1]}\nFilename: pool/{deb.name}\n"
               for deb in sorted((repository / "pool").iterdir())]
    (repository / "Packages").write_text("\n".join(stanzas))
    from kabigate.services.watch import offered_kernels

    (kernel,) = offered_kernels(str(repository / "Packages"))
    assert kernel.version == "6.1.170-3" and [p.rsplit("/", 1)[1].split("_")[0] for p in kernel.paths] == \
           ["linux-image-6.1.0-47-amd64-unsigned", "linux-headers-6.1.0-47-amd64"]
    (repository / "Packages").write_text("Package: linux-image-x\nFilename: ../../etc/passwd\n")
    with pytest.raises(InputError, match="no usable Filename"):
        offered_kernels(str(repository / "Packages"))


def test_watch_finds_kernels_in_a_yum_repository(testdata, tmp_path):
    import shutil

    from support import packaging as rpm_fixtures

    if not rpm_fixtures.available():
        pytest.skip("rpmbuild/createrepo_c missing (scripts/bootstrap installs them)")
    rpms = rpm_fixtures.build_packages(testdata, "6.1.0-47-amd64", {"acpi-call": "6.1.0-47-amd64",
                                                                     "jool": "6.1.0-47-amd64",
                                                                     "v4l2loopback": "6.1.0-56-amd64"})
    repository = tmp_path / "repo"
    repository.mkdir()
    for package in (rpms / "kernel").glob("kernel-*.rpm"):
        shutil.copy(package, repository)
    subprocess.run(["createrepo_c", "-q", str(repository)], check=True)
    from kabigate.services.watch import offered_kernels

    (kernel,) = offered_kernels(str(repository))
    assert sorted(p.rsplit("/", 1)[1].split("-6.1.0")[0] for p in kernel.paths) == \
           ["kernel-core", "kernel-devel", "kernel-modules"]
    db = str(tmp_path / "store.db")
    result = subprocess.run([*KABIGATE, "watch", "--db", db, "--once", "--stream", "el", "--json", str(repository)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["candidate"]["release"] == "6.1.0-47-amd64"


def test_the_gate_shows_its_stages_on_a_terminal_and_nothing_on_a_pipe(gate_db, tmp_path):
    import shutil

    db = str(tmp_path / "store.db")
    shutil.copy(gate_db, db)
    args = [*KABIGATE, "gate", "--db", db, "--candidate", RELEASES[1], "--stream", "debian-6.1", "--no-explain"]
    status, shown = run_on_terminal(args)
    assert status == 1  # 47 -> 50 regresses
    for stage in ("judging driver builds", "comparing exports", "judging packages", "recording the run"):
        assert stage in shown, shown
    assert "explaining CRC changes" not in shown and "publishing" not in shown  # stages not run are not shown
    piped = subprocess.run(args, capture_output=True, text=True, check=False)
    assert piped.returncode == 1 and piped.stderr == ""


def test_a_recorded_run_is_published_later_as_it_was_once(gate_db, resultsdb, tmp_path):
    import shutil

    db = str(tmp_path / "store.db")
    shutil.copy(gate_db, db)
    gated = subprocess.run([*KABIGATE, "gate", "--db", db, "--candidate", RELEASES[1], "--json"], capture_output=True,
                           text=True, check=False)
    assert gated.returncode == 1, gated.stderr
    report = json.loads(gated.stdout)
    assert not ResultsDB.received  # gated without --resultsdb: nothing published yet
    with Store.open(db) as store:
        runs = store.gate_runs()
    publish = [*KABIGATE, "gate", "--db", db, "--publish", report["run"], "--resultsdb", resultsdb, "--item",
               "kernel-6.1.170-1", "--json"]
    first = subprocess.run(publish, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    (posted,) = ResultsDB.received
    assert json.loads(first.stdout) == {"run": report["run"], "outcome": report["outcome"],
                                        "resultsdb": {"url": resultsdb, "id": "1"}}
    assert posted["outcome"] == report["outcome"] == "NEEDS_INSPECTION"
    assert posted["data"]["kabigate_run"] == report["run"] and posted["data"]["item"] == "kernel-6.1.170-1"
    assert posted["data"]["scenario"] == "x86_64.debian-6.1"
    again = subprocess.run(publish, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and json.loads(again.stdout)["resultsdb"]["id"] == "1"
    assert len(ResultsDB.received) == 1  # once
    with Store.open(db) as store:
        assert len(store.gate_runs()) == len(runs)  # published as recorded: nothing gated again
        assert store.gate_run(report["run"]).resultsdb_id == "1"
    for args, message in [(["--publish", "no-such-run", "--resultsdb", resultsdb], "no gate run no-such-run"),
                          (["--publish", report["run"]], "--publish: give --resultsdb URL"),
                          (["--publish", report["run"], "--candidate", RELEASES[1], "--resultsdb", resultsdb],
                           "--candidate do not apply"),
                          ([], "give --candidate KERNEL (or --publish RUN)")]:
        refused = subprocess.run([*KABIGATE, "gate", "--db", db, *args], capture_output=True, text=True, check=False)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1


def test_one_scenario_per_stream_and_arch_however_the_baseline_is_chosen(gate_db, resultsdb, tmp_path):
    import shutil

    db = str(tmp_path / "store.db")
    shutil.copy(gate_db, db)
    for choice in (["--baseline", RELEASES[0]], ["--stream", "debian-6.1"], []):
        subprocess.run([*KABIGATE, "gate", "--db", db, "--candidate", RELEASES[1], *choice, "--resultsdb",
                        resultsdb], capture_output=True, text=True, check=False)
    assert [posted["data"]["scenario"] for posted in ResultsDB.received] == ["x86_64.debian-6.1"] * 3


def test_a_run_recorded_without_its_stream_is_published_with_its_kernels_stream(gate_db, resultsdb, tmp_path):
    """Runs recorded by a gate against --baseline before it took the candidate's stream."""
    import shutil

    from kabigate.reports.gate import gate_json
    from kabigate.services.gate import record_gate

    db = str(tmp_path / "store.db")
    shutil.copy(gate_db, db)
    with Store.open(db) as store:
        result = run_gate(store, resolve_kernel(store, RELEASES[1]), resolve_kernel(store, RELEASES[0]))
        run = record_gate(store, result, gate_json(result))
        assert store.gate_report(run.uuid)["stream"] is None
    published = subprocess.run([*KABIGATE, "gate", "--db", db, "--publish", run.uuid, "--resultsdb", resultsdb],
                               capture_output=True, text=True, check=False)
    assert published.returncode == 0 and f"gate run {run.uuid} (NEEDS_INSPECTION) published" in published.stdout
    assert ResultsDB.received[0]["data"]["scenario"] == "x86_64.debian-6.1"


def test_a_published_result_says_which_waivers_applied(gate_db, resultsdb, tmp_path):
    waivers = tmp_path / "waivers.toml"
    waivers.write_text('[[waiver]]\ndriver = "jool"\nreason = "fixed in 4.1.11"\nwho = "w@example.org"\n')
    result = subprocess.run([*KABIGATE, "gate", "--db", gate_db, "--candidate", RELEASES[1], "--waivers", str(waivers),
                             "--resultsdb", resultsdb, "--json"], capture_output=True, text=True, check=False)
    report = json.loads(result.stdout)
    waived = [f for f in [*report["builds"], *report["packages"]] if f["waivers"]]
    assert waived and all(f["driver"] == "jool" for f in waived)
    (posted,) = ResultsDB.received
    assert posted["data"]["waived_by"] == [f"{waivers}#1"]
    assert posted["note"].endswith(f"; {len(waived)} findings waived by {waivers}#1")
