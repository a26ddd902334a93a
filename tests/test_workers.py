"""kabigate as a service, on real servers started here: PostgreSQL (tests/support/pgserver.py) and RabbitMQ
(tests/support/rabbitserver.py) on loopback, `kabigate worker` and `kabigate listen` processes, build events
published with `kabigate announce` (fedora-messaging), on the real Debian kernels and DKMS drivers.

End to end: events -> listener -> workers ingest -> gate -> result messages and stored gate runs,
equal cell for cell to the single-machine SQLite run. Faults: a worker SIGKILLed mid-ingest, the
broker restarted mid-run, one build announced twice, bad events."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support.kojihub import KojiHub, RawXML
from support.pgserver import postgres_bindir
from support.rabbitserver import RabbitMQ, rabbitmq_installed
from support.realstore import DRIVERS, RELEASES, STREAM, build_store
from support.resultsdb import post_waiver

from kabigate.inputs.kernels import load_kernel
from kabigate.reports.gate import DEFAULT_TESTCASE, gate_json, kernel_item
from kabigate.services.gate import previous_in_stream, run_gate
from kabigate.services.ingest import ingest_driver_build, ingest_kernel, read_driver_builds
from kabigate.services.waiverdb import Target, import_waivers
from kabigate.store import Store

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not rabbitmq_installed() or postgres_bindir() is None,
                       reason="needs rabbitmq-server and postgresql (scripts/bootstrap installs them)"),
]

KABIGATE = [str(Path(sys.executable).parent / "kabigate")]
RESULTS_QUEUE = "test-gate-results"
NOTIFICATIONS_QUEUE = "test-notifications"
WAIT = 600  # seconds: a guard against a hang, never a measure (2 shared cores, TCG neighbours)


@pytest.fixture
def broker():
    with RabbitMQ() as server:
        yield server


class Cluster:
    """A store, a broker, and the kabigate processes a test starts (stopped at the end)."""

    def __init__(self, db: str, broker: RabbitMQ, workdir: Path, testdata):
        self.db, self.broker, self.workdir = db, broker, workdir
        self.config = workdir / "kabigate.toml"
        self.allow = [f"{testdata.root}/", f"{workdir}/"]
        self.configure()
        self.env = dict(os.environ, KABIGATE_CONFIG=str(self.config), KABIGATE_DB=db, KABIGATE_BROKER=broker.url)
        self.env.pop("FEDORA_MESSAGING_CONF", None)
        self.processes: list[subprocess.Popen] = []
        _declare_results_queue(broker)

    def configure(self, more: str = "") -> None:
        """The settings file (before starting processes): store, broker, allowed locations, `more`."""
        self.config.write_text(f'db = "{self.db}"\nbroker = "{self.broker.url}"\n[worker]\nmax_attempts = 3\n'
                               f'[listen]\nallow = {json.dumps(self.allow)}\n{more}')

    def start(self, *args: str) -> subprocess.Popen:
        with open(self.workdir / f"{args[0]}-{len(self.processes)}.log", "w") as log:
            process = subprocess.Popen([*KABIGATE, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes.append(process)
        return process

    def worker(self, concurrency: int = 1, queues: str | None = None) -> subprocess.Popen:
        return self.start("worker", "--concurrency", str(concurrency), "--hostname",
                          f"w{len(self.processes)}@%h", "--loglevel", "INFO", *(["--queues", queues] if queues else []))

    def listener(self) -> subprocess.Popen:
        process = self.start("listen")
        self._until(lambda: _queue(self.broker, "kabigate-events")[1] > 0, "the listener consumes")
        return process

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*KABIGATE, *args], check=False, env=self.env, capture_output=True, text=True,
                                timeout=WAIT)
        assert not check or result.returncode == 0, result.stderr
        return result

    def tasks(self) -> list[dict]:
        return json.loads(self.run("tasks", "--json", "--limit", "1000").stdout)["tasks"]

    def wait_for_tasks(self, count: int) -> list[dict]:
        """Until `count` tasks exist and none is queued or running; the tasks."""
        found: list[dict] = []

        def settled() -> bool:
            nonlocal found
            found = self.tasks()
            return len(found) >= count and all(t["state"] in ("done", "failed") for t in found)
        self._until(settled, f"{count} tasks settle")
        return found

    def _until(self, condition, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not condition():
            for process in self.processes:
                assert process.poll() is None or process.returncode in (0, -signal.SIGKILL), \
                    f"{process.args[1]} exited {process.returncode}: {self.logs()}"
            assert time.monotonic() < deadline, f"timed out waiting until {what}: {self.logs()}"
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(f"== {log.name}\n" + log.read_text()[-3000:] for log in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # the main process: a warm shutdown of its children
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def cluster(new_database, broker, tmp_path, testdata):
    db = new_database("workers")
    with Store.open(db):
        pass
    running = Cluster(db, broker, tmp_path, testdata)
    yield running
    running.stop()


# -- the broker, read directly (py-amqp, which Celery's kombu uses) ------------------------------

def _channel(broker: RabbitMQ):
    import amqp

    connection = amqp.Connection(f"127.0.0.1:{broker.port}", userid="guest", password="guest")
    connection.connect()
    return connection, connection.channel()


def _declare_results_queue(broker: RabbitMQ) -> None:
    connection, channel = _channel(broker)
    channel.queue_declare(RESULTS_QUEUE, durable=True, auto_delete=False)
    channel.queue_bind(RESULTS_QUEUE, "amq.topic", "#.kabigate.gate.result")
    channel.queue_declare(NOTIFICATIONS_QUEUE, durable=True, auto_delete=False)
    channel.queue_purge(NOTIFICATIONS_QUEUE)
    for topic in ("#.kabigate.package.#", "#.kabigate.stream.#"):
        channel.queue_bind(NOTIFICATIONS_QUEUE, "amq.topic", topic)
    connection.close()


def _queue(broker: RabbitMQ, queue: str) -> tuple[int, int]:
    """(messages waiting, consumers) of a queue; (0, 0) before it is declared."""
    import amqp

    connection, channel = _channel(broker)
    try:
        declared = channel.queue_declare(queue, passive=True)
        return declared.message_count, declared.consumer_count
    except amqp.exceptions.NotFound:
        return 0, 0
    finally:
        connection.close()


def gate_results(broker: RabbitMQ, queue: str = RESULTS_QUEUE) -> list:
    """The kabigate.gate.result messages published so far (or the notifications, from their queue),
    as fedora-messaging gives them to a consumer: the schema (kabigate_messages, found by its entry
    point) checks each body."""
    import pika
    from fedora_messaging.message import get_message

    connection, channel = _channel(broker)
    messages = []
    while (received := channel.basic_get(queue, no_ack=True)) is not None:
        properties = pika.BasicProperties(headers=received.properties.get("application_headers"),
                                          content_encoding=received.properties.get("content_encoding"),
                                          message_id=received.properties.get("message_id"))
        body = received.body.encode() if isinstance(received.body, str) else received.body  # py-amqp decodes
        messages.append(get_message(received.delivery_info["routing_key"], properties, body))
    connection.close()
    return messages


# -- what the stores hold ----------------------------------------------------------------------

def cells(url: str) -> dict:
    """Every verdict by natural keys, with its detail."""
    with Store.open(url) as store:
        kernels = {k.id: k.release for k in store.kernels()}
        builds = {b.id: (b.driver, b.version, b.built_for) for b in store.driver_builds()}
        return {(builds[b], kernels[k]): (c.loads, c.first_reason, c.failing_symbols, c.modules,
                                          json.dumps(store.verdict_detail(b, k)))
                for (b, k), c in store.cells(store_rules_version()).items()}


def store_rules_version() -> int:
    from kabigate.rules import RULES_VERSION

    return RULES_VERSION


def gate_summary(report: dict) -> tuple:
    return (report["candidate"]["release"], report["baseline"]["release"] if report["baseline"] else None,
            report["outcome"], tuple(sorted(report["counts"].items())),
            tuple(sorted((b["driver"], b["version"], b["built_for"], b["class"], b["outcome"])
                         for b in report["builds"])))


def driver_events(cluster: Cluster, testdata) -> int:
    """Announce the DRIVERS built for 6.1.0-47 and -56 (realstore's), one event a build."""
    count = 0
    for driver in DRIVERS:
        for built_for in (RELEASES[0], RELEASES[2]):
            entry = testdata.manifest["drivers"][driver][built_for]
            cluster.run("announce", "--kind", "drivers", "--name", driver, "--version", entry["version"],
                        str(testdata.root / entry["dir"]))
            count += 1
    return count


# -- end to end --------------------------------------------------------------------------------

@pytest.fixture
def resultsdb():
    """tests/support/resultsdb.py: the ResultsDB endpoint (it validates results as ResultsDB's API v2.0 does)."""
    import http.server
    import threading

    from support.resultsdb import ResultsDB

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ResultsDB)
    ResultsDB.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/api/v2.0", ResultsDB.received
    server.shutdown()
    server.server_close()


def test_build_events_become_stored_gates_and_result_messages_equal_to_the_single_machine_run(
        cluster, testdata, tmp_path, resultsdb, waiverdb):
    """... and each gate imports WaiverDB's waivers first: one given there for -50 applies to its gate."""
    resultsdb_url, posted = resultsdb
    reference = build_store(testdata, tmp_path / "single.db")
    with Store.open(reference) as single:
        waived = single.find_kernels(RELEASES[1])[0]
    post_waiver(waiverdb, "jane", {"subject_type": "koji_build", "testcase": DEFAULT_TESTCASE,
                                   "product_version": "debian-12", "comment": "known ABI break",
                                   "subject_identifier": kernel_item(waived.release, waived.package_version)})
    cluster.configure(f'[gate]\nresultsdb = "{resultsdb_url}"\nwaiverdb = "{waiverdb}"\n'
                      'product_version = "debian-12"\n')
    cluster.run("subscribe", "add", "--stream", STREAM, "--bus", "--owner", "maintainers")
    cluster.listener()
    cluster.worker(concurrency=2)
    builds = driver_events(cluster, testdata)
    cluster.wait_for_tasks(builds)
    for number, release in enumerate(RELEASES, 1):  # kernel builds come one after another
        cluster.run("announce", "--kind", "kernel", "--stream", STREAM, str(testdata.kernel_root(release)))
        cluster.wait_for_tasks(builds + 2 * number)  # its ingest and its gate

    tasks = cluster.tasks()
    assert {t["state"] for t in tasks} == {"done"}, tasks
    assert all(t["attempts"] == 1 for t in tasks)

    assert cells(cluster.db) == cells(reference)
    assert len(cells(reference)) == len(RELEASES) * 2 * len(DRIVERS)

    with Store.open(reference) as single:
        import_waivers(single, Target(waiverdb, DEFAULT_TESTCASE, "debian-12", None))
        expected = []
        for release in RELEASES:
            candidate = single.find_kernels(release)[0]
            baseline, stream = previous_in_stream(single, candidate, STREAM)
            expected.append(gate_summary(gate_json(run_gate(single, candidate, baseline, stream=stream,
                                                            waivers=tuple(single.waivers())))))
    with Store.open(cluster.db) as shared:
        assert [w.kernel for w in shared.waivers()] == [RELEASES[1]]  # imported by the gates, once
    with Store.open(cluster.db) as shared:
        runs = {shared.kernel(run.kernel_id).release: run for run in shared.gate_runs()}
        stored = [gate_summary(shared.gate_report(runs[release].uuid)) for release in RELEASES]
    assert stored == expected
    assert any(summary[2] != "PASSED" for summary in expected)  # the corpus has real regressions

    messages = gate_results(cluster.broker)
    assert sorted(m.id for m in messages) == sorted(run.uuid for run in runs.values())
    assert sorted((r["data"]["kernel_release"], r["outcome"]) for r in posted) == \
        sorted((release, run.outcome) for release, run in runs.items())  # ResultsDB, once a gate
    for message in messages:
        release = message.body["candidate"]["release"]
        assert type(message).__name__ == "GateResultV1"
        assert message.body["outcome"] == runs[release].outcome
        assert message.body["resultsdb"] == runs[release].resultsdb_id is not None
        assert message.body["counts"] == dict(expected[RELEASES.index(release)][3])
        assert message.topic == "kabigate.gate.result" and release in message.summary

    # The stream's subscription on the bus: each event the gates recorded, once, on its topic.
    with Store.open(cluster.db) as shared:
        events = {event.uuid: event for event in shared.events()}
    notifications = gate_results(cluster.broker, NOTIFICATIONS_QUEUE)
    assert events and sorted(m.id for m in notifications) == sorted(events)
    for message in notifications:
        event = events[message.id]
        assert type(message).__name__ == "NotificationV1" and message.body == event.payload
        assert message.topic == (f"kabigate.package.{event.driver}" if event.driver else  # a topic's dots split it
                                 f"kabigate.stream.{STREAM.replace('.', '_')}")


def test_a_build_announced_twice_is_done_once_and_bad_events_are_recorded_or_dropped(cluster, testdata, tmp_path):
    cluster.listener()
    cluster.worker()
    kernel = str(testdata.kernel_root(RELEASES[0]))
    for _ in range(2):
        cluster.run("announce", "--kind", "kernel", "--stream", STREAM, kernel)
    cluster.run("announce", "--kind", "drivers", "--name", "x", str(tmp_path / "kabigate.toml"))  # not a module
    outside = cluster.run("announce", "--kind", "kernel", "--stream", STREAM, "/etc/hostname")  # not allowed
    assert outside.returncode == 0  # published; the listener drops it
    tasks = cluster.wait_for_tasks(3)  # the kernel's ingest and gate, the bad driver build
    by_kind = {t["kind"]: t for t in tasks}
    assert len(tasks) == 3 and set(by_kind) == {"ingest-kernel", "gate", "ingest-drivers"}
    assert by_kind["ingest-kernel"]["state"] == by_kind["gate"]["state"] == "done"
    failed = by_kind["ingest-drivers"]
    assert failed["state"] == "failed" and failed["attempts"] == 1  # bad input: not retried
    assert "kabigate.toml" in failed["error"] and "\n" not in failed["error"]
    with Store.open(cluster.db) as store:
        assert store.counts(["kernel", "gate_run"]) == {"kernel": 1, "gate_run": 1}
    assert len(gate_results(cluster.broker)) == 1
    cluster._until(lambda: "is not under an allowed location" in cluster.logs(), "the listener drops the event")

    health = json.loads(cluster.run("health", "--json").stdout)
    assert health["ok"] and health["tasks"] == {"queued": 0, "running": 0, "waiting": 0, "done": 2, "failed": 1}
    assert health["recent_failures"][0]["error"] == failed["error"]


def _kernel_pool(testdata, folder: Path, releases) -> Path:
    """A folder of the kernels' image and headers .debs, as `watch` polls it."""
    folder.mkdir()
    for release in releases:
        for prefix in (f"linux-image-{release}-unsigned", f"linux-headers-{release}"):
            (folder / Path(_deb(testdata, prefix)).name).symlink_to(_deb(testdata, prefix))
    return folder


def test_watch_queue_enqueues_each_new_kernel_once_for_the_workers_to_ingest_and_gate(cluster, testdata, tmp_path):
    """A folder of two kernels' .debs polled twice before any worker runs, and again after: each kernel
    is one ingest-and-gate task, sent once (two messages on the queue), and the workers gate both."""
    pool = _kernel_pool(testdata, tmp_path / "pool", RELEASES[:2])
    entry = testdata.manifest["drivers"]["acpi-call"][RELEASES[0]]
    with Store.open(cluster.db) as store:
        for build in read_driver_builds([str(testdata.root / entry["dir"])], "acpi-call", entry["version"]):
            ingest_driver_build(store, build)
    refused = cluster.run("watch", "--queue", "--once", "--stream", STREAM, "--output-dir", str(tmp_path / "r"),
                          "--stablelist", str(pool), str(pool), check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "--output-dir, --stablelist do not apply" in refused.stderr

    def poll() -> list[dict]:
        return [json.loads(line) for line in cluster.run("watch", "--queue", "--once", "--json", "--stream", STREAM,
                                                         str(pool)).stdout.splitlines()]
    first = poll()
    assert [(line["kernel"], line["kind"], line["state"]) for line in first] == \
        [(release, "ingest-kernel", "queued") for release in RELEASES[:2]]
    assert poll() == []  # still queued: not sent again
    assert _queue(cluster.broker, "kabigate") == (2, 0)

    cluster.worker()
    tasks = cluster.wait_for_tasks(4)  # each kernel's ingest and the gate it asks for
    assert sorted((t["kind"], t["state"], t["attempts"]) for t in tasks) == \
        [("gate", "done", 1)] * 2 + [("ingest-kernel", "done", 1)] * 2
    ingests = {t["key"]: t for t in tasks if t["kind"] == "ingest-kernel"}
    assert sorted(ingests) == sorted(line["key"] for line in first)
    assert {t["result"]["release"] for t in ingests.values()} == set(RELEASES[:2])
    assert poll() == []  # ingested and gated: nothing new
    with Store.open(cluster.db) as store:
        assert store.counts(["kernel", "gate_run", "task"]) == {"kernel": 2, "gate_run": 2, "task": 4}
        gated = {store.kernel(run.kernel_id).release: run for run in store.gate_runs()}
        reports = {release: store.gate_report(run.uuid) for release, run in gated.items()}
    assert reports[RELEASES[0]]["baseline"] is None
    assert reports[RELEASES[1]]["baseline"]["release"] == RELEASES[0]
    assert reports[RELEASES[1]]["counts"]["regression"] == 1  # acpi-call for -47 no longer loads on -50
    assert len(gate_results(cluster.broker)) == 2


# -- package builds, on their own queue ---------------------------------------------------------

@pytest.mark.skipif(not (shutil.which("bwrap") and shutil.which("dkms")), reason="needs dkms, bubblewrap")
def test_a_gate_that_rebuilds_hands_its_builds_to_the_build_workers_and_gates_when_they_are_done(
        cluster, testdata, tmp_path):
    """acpi-call built for 6.1.0-50 by `kabigate build` no longer loads on -56; with drivers.rebuild, the
    gate asks for its rebuild (a build task on the kabigate-builds queue) and waits, its worker free. A
    worker of the kabigate queue alone never takes the build; a build worker does, stores the rebuilt
    package, and queues the gate again, which then passes with the rebuild. One real dkms build."""
    streams = testdata.manifest.get("stream_kernels", {})
    if "6.1.0-56-amd64" not in streams:
        pytest.skip("the corpus has no stream kernels (scripts/fetch-testdata fetches them)")
    with Store.open(cluster.db) as store:  # -56 from its .debs: its headers .debs make the rebuild's tree
        ingest_kernel(store, load_kernel([str(testdata.kernel_root("6.1.0-50-amd64"))]), STREAM)
        ingest_kernel(store, load_kernel([str(testdata.root / deb) for deb in streams["6.1.0-56-amd64"]["debs"]]),
                      STREAM)
    (source,) = (testdata.root / "debs").glob("acpi-call-dkms_*.deb")
    cluster.run("build", "-k", str(testdata.root / testdata.manifest["build_kernels"]["6.1.0-50-amd64"]["root"]),
                str(source))
    policy = tmp_path / "policy.toml"
    policy.write_text("[drivers]\nrebuild = true\n")
    cluster.configure(f'[gate]\npolicy = "{policy}"\n')
    cluster.worker(queues="kabigate")
    cluster.run("gate", "--queue", "--candidate", "6.1.0-56-amd64", "--stream", STREAM)

    def waiting() -> bool:
        return (sorted((t["kind"], t["state"]) for t in cluster.tasks()) == [("build", "queued"), ("gate", "waiting")]
                and _queue(cluster.broker, "kabigate-builds")[0] == 1)
    cluster._until(waiting, "the gate waits for its build, queued for a build worker")
    health = json.loads(cluster.run("health", "--json").stdout)
    assert health["queues"]["kabigate-builds"] == {"messages": 1, "consumers": 0, "declared": True}
    assert health["tasks"]["waiting"] == 1

    cluster.worker(queues="kabigate-builds")
    tasks = {t["kind"]: t for t in cluster.wait_for_tasks(2)}
    assert {kind: (t["state"], t["attempts"]) for kind, t in tasks.items()} == {"gate": ("done", 1),
                                                                               "build": ("done", 1)}
    build = tasks["build"]
    assert (build["args"]["driver"], build["args"]["source"], build["result"]["outcome"]) == \
        ("acpi-call", str(source), "built")
    assert tasks["gate"]["result"]["awaits"] == [build["key"]] and tasks["gate"]["result"]["outcome"] == "INFO"
    with Store.open(cluster.db) as store:
        (run,) = store.gate_runs()
        report = store.gate_report(run.uuid)
        assert sorted(b.built_for for b in store.driver_builds("acpi-call")) == ["6.1.0-50-amd64", "6.1.0-56-amd64"]
    assert [(r["driver"], r["outcome"]) for r in report["rebuilds"]] == [("acpi-call", "built")]
    (package,) = report["packages"]
    assert (package["state"], package["build"]["built_for"]) == ("loads-after-rebuild", "6.1.0-56-amd64")
    gate_log, build_log = (cluster.workdir / "worker-0.log").read_text(), (cluster.workdir / "worker-1.log").read_text()
    assert f"build {build['key']} done" in build_log and "Task kabigate.build[" not in gate_log
    assert len(gate_results(cluster.broker)) == 1


def test_worker_queues_are_the_known_ones(tmp_path):
    config = tmp_path / "kabigate.toml"
    config.write_text('[worker]\nqueues = ["kabigate", "builds"]\n')
    run = subprocess.run([*KABIGATE, "worker", "--config", str(config)], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "worker queues are some of kabigate, kabigate-builds, not kabigate, builds" in \
        run.stderr
    run = subprocess.run([*KABIGATE, "worker", "--queues", "kabigate,nope"], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 2 and "--queues" in run.stderr


# -- Koji --------------------------------------------------------------------------------------

def publish_raw(broker: RabbitMQ, topic: str, body: bytes, schema: str = "base.message") -> None:
    """A message as fedora-messaging publishers send it (Koji's come from its fedora-messaging
    plugin), made by hand: its body need not be valid."""
    import amqp

    connection, channel = _channel(broker)
    channel.basic_publish(amqp.Message(body, content_type="application/json", content_encoding="utf-8",
                                       message_id=str(uuid.uuid4()), delivery_mode=2, application_headers={
                                           "fedora_messaging_schema": schema, "fedora_messaging_severity": 20}),
                          exchange="amq.topic", routing_key=topic)
    connection.close()


@pytest.fixture
def koji_packages(testdata, tmp_path):
    """Koji's package tree (topurl/packages/NAME/VERSION/RELEASE/ARCH/) of real kernel RPMs
    (tests/support/packaging.py: kernel-core and kernel-devel of 6.1.0-47), served over HTTP on 127.0.0.1."""
    import functools
    import http.server
    import threading

    from support import packaging as rpm_fixtures

    if not rpm_fixtures.available():
        pytest.skip("rpmbuild/createrepo_c missing (scripts/bootstrap installs them)")
    rpms = rpm_fixtures.build_packages(testdata, "6.1.0-47-amd64", {"acpi-call": "6.1.0-47-amd64",
                                                                     "jool": "6.1.0-47-amd64",
                                                                     "v4l2loopback": "6.1.0-56-amd64"})
    tree = tmp_path / "koji" / "packages" / "kernel" / "6.1.0" / "47_amd64" / "x86_64"
    tree.mkdir(parents=True)
    for package in (rpms / "kernel").glob("kernel-*.rpm"):
        (tree / package.name).symlink_to(package)
    for package in (rpms / "kmods").glob("kmod-*.rpm"):  # kmod-acpi-call-1.0-1.47_amd64.x86_64.rpm
        name, version, release = package.name.removesuffix(".x86_64.rpm").rsplit("-", 2)
        folder = tmp_path / "koji" / "packages" / name / version / release / "x86_64"
        folder.mkdir(parents=True)
        (folder / package.name).symlink_to(package)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(tmp_path / "koji")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_koji_kernel_build_is_read_from_kojis_package_tree_and_gated_once(cluster, koji_packages):
    cluster.allow.append(f"{koji_packages}/")
    cluster.configure(f'[koji]\ntopurl = "{koji_packages}"\nstreams = {{ "*_amd64" = "el-test" }}\n')
    cluster.listener()
    cluster.worker()
    topic = "org.fedoraproject.prod.buildsys.build.state.change"
    build = {"build_id": 2600001, "name": "kernel", "version": "6.1.0", "release": "47_amd64", "epoch": None,
             "owner": "kernel-team", "instance": "primary", "attribute": "state", "old": 0, "new": 1}
    publish_raw(cluster.broker, topic, json.dumps(build).encode())
    publish_raw(cluster.broker, topic, json.dumps(build).encode())  # Koji's message, delivered twice
    publish_raw(cluster.broker, topic, json.dumps(dict(build, build_id=2600002, new=3)).encode())  # FAILED
    publish_raw(cluster.broker, topic, json.dumps(dict(build, build_id=2600003, name="bash")).encode())
    publish_raw(cluster.broker, topic, b"{not json")
    publish_raw(cluster.broker, topic, b"[" * 100000 + b"]" * 100000)  # json.loads: RecursionError
    publish_raw(cluster.broker, "kabigate.build.complete", json.dumps({"kind": "kernel"}).encode(),
                schema="kabigate.build.complete.v1")  # fails its schema: no files
    # Last, an event that makes a (failing) task: the listener takes messages in order, so once it
    # is there every message before it has been handled.
    cluster.run("announce", "--kind", "drivers", str(cluster.config))
    tasks = cluster.wait_for_tasks(3)
    assert sorted((t["kind"], t["state"], t["attempts"]) for t in tasks) == [
        ("gate", "done", 1), ("ingest-drivers", "failed", 1), ("ingest-kernel", "done", 1)]
    ingest = next(t for t in tasks if t["kind"] == "ingest-kernel")
    assert ingest["args"]["paths"] == [
        f"{koji_packages}/packages/kernel/6.1.0/47_amd64/x86_64/kernel-{part}-6.1.0-47_amd64.x86_64.rpm"
        for part in ("core", "devel")]
    with Store.open(cluster.db) as store:
        assert [k.release for k in store.kernels("el-test")] == ["6.1.0-47-amd64"]
        assert len(store.gate_runs()) == 1
    (message,) = gate_results(cluster.broker)
    assert message.body["candidate"]["release"] == "6.1.0-47-amd64" and message.body["stream"] == "el-test"


# -- faults ------------------------------------------------------------------------------------

def _deb(testdata, prefix: str) -> str:
    return str(next((testdata.root / "debs").glob(f"{prefix}_*.deb")))


class HeldFiles:
    """Files over HTTP on 127.0.0.1, every request held until release(): a task reading them is
    running (mid-read, nothing stored) for as long as the test needs, and `requests` (which only
    grows) says when it has started."""

    def __init__(self, files: list[str]):
        import http.server
        import threading

        self.files = {os.path.basename(f): f for f in files}
        self.requests = 0
        self.released = threading.Event()
        held = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                held.requests += 1
                held.released.wait(WAIT)
                with open(held.files[self.path.lstrip("/")], "rb") as file:
                    data = file.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the reader was killed meanwhile
                    self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/"

    def urls(self) -> str:
        """The files' URLs, as one kernel's comma-separated argument to `ingest kernel`."""
        return ",".join(self.base + name for name in self.files)

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held_kernel(testdata):
    """6.1.0-50's image and headers .debs, held (HeldFiles)."""
    held = HeldFiles([_deb(testdata, "linux-image-6.1.0-50-amd64-unsigned"),
                      _deb(testdata, "linux-headers-6.1.0-50-amd64")])
    yield held
    held.close()


def test_a_worker_killed_mid_ingest_leaves_its_task_to_another_and_the_store_complete(cluster, testdata, held_kernel):
    cluster.allow.append(held_kernel.base)  # workers download only from listen.allow
    cluster.configure()
    first = cluster.worker()
    cluster.run("ingest", "drivers", "--queue", "--name", "acpi-call", "--version", "1.2.2-2.1",
                str(testdata.driver_dir("acpi-call", RELEASES[0])))
    cluster.run("ingest", "kernel", "--queue", "--stream", STREAM, held_kernel.urls())
    cluster._until(lambda: held_kernel.requests > 0, "the kernel's ingest reads its packages")
    os.killpg(first.pid, signal.SIGKILL)  # the whole worker: its main process and the one reading the .debs
    first.wait()
    with Store.open(cluster.db) as store:
        assert store.counts(["kernel"]) == {"kernel": 0}  # it died before committing anything
    held_kernel.release()
    cluster.worker()
    tasks = cluster.wait_for_tasks(2)
    kernel_task = next(t for t in tasks if t["kind"] == "ingest-kernel")
    assert kernel_task["state"] == "done" and kernel_task["attempts"] == 2, kernel_task
    with Store.open(cluster.db) as store:
        counts = store.counts(["kernel", "driver_build", "verdict", "stream_kernel", "task"])
    assert counts == {"kernel": 1, "driver_build": 1, "verdict": 1, "stream_kernel": 1, "task": 2}


def test_the_broker_restarted_mid_run_and_the_run_completes(cluster, testdata, held_kernel):
    cluster.allow.append(held_kernel.base)  # workers download only from listen.allow
    cluster.configure()
    cluster.worker()  # one process, taking one message at a time (worker_prefetch_multiplier=1)
    cluster.run("ingest", "kernel", "--queue", "--stream", STREAM, held_kernel.urls())  # RELEASES[1], held
    cluster._until(lambda: held_kernel.requests > 0, "the worker reads the first kernel")
    for release in (RELEASES[0], RELEASES[2]):  # waiting in the broker's queue behind it
        cluster.run("ingest", "kernel", "--queue", "--stream", STREAM, str(testdata.kernel_root(release)))
    for driver in DRIVERS[:2]:
        cluster.run("ingest", "drivers", "--queue", "--name", driver, "--version", "v",
                    str(testdata.driver_dir(driver, RELEASES[0])))
    held_kernel.release()  # (a read held past the broker's restart might meet its 60 s read timeout)
    cluster.broker.restart()  # durable queue, persistent messages: the 4 waiting are still there
    tasks = cluster.wait_for_tasks(len(RELEASES) + 2)
    assert {t["state"] for t in tasks} == {"done"}, tasks
    with Store.open(cluster.db) as store:
        assert sorted(k.release for k in store.kernels()) == sorted(RELEASES)
        assert store.counts(["kernel", "driver_build", "verdict"]) == {
            "kernel": len(RELEASES), "driver_build": 2, "verdict": 2 * len(RELEASES)}


# -- settings and unreachable servers: one line, exit 2 (health: exit 1) ----------------------------

@pytest.mark.parametrize("config, message", [
    ("db = 5\n", "db must be a str"),
    ("[worker]\nthreads = 2\n", "unknown setting worker.threads"),
    ("broker = 'redis://localhost'\n", "the broker is an amqp:// or amqps:// URL"),
    ("[koji]\nstreams = { '*' = 1 }\n", "must map patterns to stream names"),
    ("[gate]\nexplain = 'yes'\n", "gate.explain must be a bool"),
    ("db = \n", "not valid TOML"),
    ("[worker]\nmax_attempts = 0x" + "f" * 40 + "\n", "an integer outside the 64-bit range"),
    ("a" + ".a" * 20000 + " = 1\n", "a dotted key of more than 64 parts"),  # tomllib: memory grows with its square
])
def test_bad_settings_are_one_line_errors(config, message, tmp_path):
    path = tmp_path / "kabigate.toml"
    path.write_text(config)
    result = subprocess.run([*KABIGATE, "health", "--config", str(path)], check=False, capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreachable_broker_is_an_error_for_enqueueing_and_down_for_health(tmp_path, testdata):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, KABIGATE_BROKER=f"amqp://guest:guest@127.0.0.1:{port}//",
               KABIGATE_DB=str(tmp_path / "store.db"))
    env.pop("KABIGATE_CONFIG", None)
    queued = subprocess.run([*KABIGATE, "ingest", "kernel", "--queue", str(testdata.kernel_root(RELEASES[0]))],
                            check=False, env=env, capture_output=True, text=True, timeout=WAIT)
    assert queued.returncode == 2 and "cannot enqueue" in queued.stderr, queued.stderr
    assert len(queued.stderr.strip().splitlines()) == 1, queued.stderr
    health = subprocess.run([*KABIGATE, "health", "--json", "--timeout", "1"], check=False, env=env,
                            capture_output=True, text=True, timeout=WAIT)
    report = json.loads(health.stdout)
    assert health.returncode == 1 and report["store"]["ok"] and not report["broker"]["ok"], health.stdout
    # watch --queue records a kernel's task only once the broker has it: the next poll sends it
    watched = subprocess.run([*KABIGATE, "watch", "--queue", "--once", "--stream", STREAM,
                              str(_kernel_pool(testdata, tmp_path / "pool", RELEASES[:1]))],
                             check=False, env=env, capture_output=True, text=True, timeout=WAIT)
    assert watched.returncode == 2 and "cannot enqueue" in watched.stderr, watched.stderr
    assert len(watched.stderr.strip().splitlines()) == 1, watched.stderr
    with Store.open(str(tmp_path / "store.db")) as store:
        # ingest --queue's alone (recorded: asked again, it is sent)
        assert [(t.kind, t.state) for t in store.tasks()] == [("ingest-kernel", "queued")]


# -- scripts/serve-cluster ----------------------------------------------------------------------

def test_serve_cluster_starts_postgresql_rabbitmq_workers_and_a_listener_then_stops_them_all(testdata):
    import shutil
    import socket
    import tempfile

    def free_ports(count: int) -> int:
        while True:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                first = probe.getsockname()[1]
            if first + count < 65536 and all(_port_free(first + i) for i in range(count)):
                return first

    directory = tempfile.mkdtemp(prefix="kabigate-cluster-")
    os.chmod(directory, 0o755)  # as root, PostgreSQL runs as postgres and must reach its data
    script = [str(Path(__file__).resolve().parent.parent / "scripts" / "serve-cluster")]
    options = ["--dir", directory, "--workers", "2", "--concurrency", "1", "--pg-port", str(free_ports(1)),
               "--amqp-port", str(free_ports(3))]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KABIGATE_") or k == "KABIGATE_TESTDATA"}
    try:
        started = subprocess.run([*script, "start", *options], check=False, env=env, capture_output=True, text=True,
                                 timeout=WAIT)
        assert started.returncode == 0, started.stderr
        assert "workers 2: worker1@" in started.stdout and "kabigate-events: 0 waiting, 1 consumers" in started.stdout
        exports = started.stdout.strip().splitlines()[-1].removeprefix("export ").split()
        env.update(variable.split("=", 1) for variable in exports)
        subprocess.run([*KABIGATE, "ingest", "kernel", "--queue", "--stream", STREAM,
                        str(testdata.kernel_root(RELEASES[0]))], check=True, env=env, capture_output=True)
        deadline = time.monotonic() + WAIT
        def tasks_now() -> list[dict]:
            listed = subprocess.run([*KABIGATE, "tasks", "--json"], check=True, env=env, capture_output=True, text=True)
            return json.loads(listed.stdout)["tasks"]

        while (tasks := tasks_now())[0]["state"] != "done":
            assert time.monotonic() < deadline and tasks[0]["state"] in ("queued", "running"), tasks
            time.sleep(0.5)
        status = subprocess.run([*script, "status", "--dir", directory], check=False, env=env, capture_output=True,
                                text=True)
        assert status.returncode == 0 and "1 done" in status.stdout, status.stdout
    finally:
        stopped = subprocess.run([*script, "stop", *options], check=False, env=env, capture_output=True, text=True,
                                 timeout=WAIT)
        leftover = os.listdir(os.path.join(directory, "run"))
        shutil.rmtree(directory, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert leftover == []  # every worker, the listener and RabbitMQ stopped by their pid files
    ports = [int(options[options.index(option) + 1]) for option in ("--pg-port", "--amqp-port")]
    assert not any(_listening(port) for port in ports)  # PostgreSQL and RabbitMQ are down


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


# -- build events from the network: checked field by field -----------------------------------------

KOJI = "org.fedoraproject.prod.buildsys.build.state.change"
KOJI_BUILD = {"build_id": 7, "name": "kernel", "version": "6.12.0", "release": "55.el10", "new": 1,
              "instance": "primary"}


@pytest.mark.parametrize("topic, body, message", [
    ("kabigate.build.complete", ["not", "an", "object"], "not a JSON object"),
    ("kabigate.build.complete", {"kind": "kernel", "files": "x.rpm"}, "files must be a list"),
    ("kabigate.build.complete", {"kind": "kernel", "files": ["https://h/a\nb.rpm"]}, "files must be a list"),
    ("kabigate.build.complete", {"kind": "kernel", "files": ["/etc/shadow"]}, "not under an allowed location"),
    ("kabigate.build.complete", {"kind": "kernel", "files": ["https://h/" + "a" * 5000]}, "files must be a list"),
    ("kabigate.build.complete", {"kind": "kmod", "files": ["https://h/a.rpm"]}, "kind must be kernel or drivers"),
    ("kabigate.build.complete", {"kind": "kernel", "files": ["https://h/a.rpm"], "stream": 5}, "are strings"),
    (KOJI, dict(KOJI_BUILD, version="../../etc"), "no usable version and release"),
    (KOJI, dict(KOJI_BUILD, release=None), "no usable version and release"),
])
def test_bad_build_events_are_input_errors(topic, body, message):
    from kabigate.errors import InputError
    from kabigate.workers.config import Settings
    from kabigate.workers.events import event_request

    settings = Settings(koji_topurl="https://kojipkgs.example.org", koji_streams={"*.el10": "c10s"})
    with pytest.raises(InputError, match=message):
        event_request(topic, body, settings)


def test_koji_events_become_requests_only_for_completed_kernel_builds_of_a_stream():
    from kabigate.workers.config import Settings
    from kabigate.workers.events import event_request

    settings = Settings(koji_topurl="https://kojipkgs.example.org/", koji_streams={"*.el10": "c10s"})
    request = event_request(KOJI, KOJI_BUILD, settings)
    assert request.kind == "ingest-kernel" and request.args["stream"] == "c10s" and request.args["gate"]
    assert request.args["paths"] == [
        "https://kojipkgs.example.org/packages/kernel/6.12.0/55.el10/x86_64/kernel-core-6.12.0-55.el10.x86_64.rpm",
        "https://kojipkgs.example.org/packages/kernel/6.12.0/55.el10/x86_64/kernel-devel-6.12.0-55.el10.x86_64.rpm"]
    assert event_request(KOJI, dict(KOJI_BUILD, version="6.12.1"), settings).key == request.key  # the build id
    assert event_request(KOJI, dict(KOJI_BUILD, build_id=8), settings).key != request.key
    assert event_request(KOJI, dict(KOJI_BUILD, new=3), settings) is None  # FAILED
    assert event_request(KOJI, dict(KOJI_BUILD, name="bash"), settings) is None
    assert event_request(KOJI, dict(KOJI_BUILD, release="1.fc42"), settings) is None  # no stream gated
    assert event_request("org.fedoraproject.prod.bodhi.update.comment", {}, settings) is None


# -- Koji kmod builds: their RPMs asked of Koji's hub (tests/support/kojihub.py, a real XML-RPC server) -------

KMOD_BUILDS = {3001: ("kmod-acpi-call", "1.0", "1.47_amd64"), 3002: ("kmod-jool", "1.0", "1.47_amd64"),
               3003: ("kmod-v4l2loopback", "1.0", "1.56_amd64"), 2600001: ("kernel", "6.1.0", "47_amd64")}


@pytest.fixture
def koji_hub(koji_packages, tmp_path):

    with KojiHub(tmp_path / "koji", KMOD_BUILDS) as hub:
        yield hub


def _koji_settings(koji_packages: str, hub, **more):
    from kabigate.workers.config import Settings

    return Settings(**{"koji_topurl": koji_packages, "koji_hub": hub.url, **more})


def test_a_koji_kmod_build_is_read_through_the_hub_as_a_driver_ingest_of_its_real_rpms(koji_packages, koji_hub):
    from kabigate.services.ingest import read_driver_builds
    from kabigate.workers.events import event_request
    from kabigate.workers.koji import kmod_request

    settings = _koji_settings(koji_packages, koji_hub)
    body = {"build_id": 3001, "name": "kmod-acpi-call", "version": "1.0", "release": "1.47_amd64", "new": 1,
            "old": 0, "attribute": "state", "instance": "primary", "owner": "kmods-sig", "epoch": None}
    request = event_request(KOJI, body, settings)
    assert request.kind == "ingest-drivers"
    assert request.args["paths"] == [
        f"{koji_packages}/packages/kmod-acpi-call/1.0/1.47_amd64/x86_64/kmod-acpi-call-1.0-1.47_amd64.x86_64.rpm"]
    assert request.key == event_request(KOJI, dict(body, version="2"), settings).key  # the build id
    (build,) = read_driver_builds(request.args["paths"])  # the URL is the real package, over HTTP
    assert (build.package, build.version, [m.name for m in build.modules]) == ("kmod-acpi-call", "1.0-1.47_amd64",
                                                                              ["acpi_call"])
    assert event_request(KOJI, dict(body, new=3), settings) is None  # FAILED
    assert event_request(KOJI, dict(body, build_id=2600001, name="bash"), settings) is None  # no hub call
    # By name, or by its RPMs' Requires: kernel(sym) = CRC, as kmodtool writes them (getRPMDeps).
    by_name_only = _koji_settings(koji_packages, koji_hub, koji_kmod_packages=("kmod-acpi-call",))
    assert event_request(KOJI, dict(body, build_id=3002, name="kmod-jool"), by_name_only) is None
    by_requires = _koji_settings(koji_packages, koji_hub, koji_kmod_packages=(), koji_kmod_requires=True)
    assert event_request(KOJI, dict(body, build_id=3002, name="kmod-jool"), by_requires).args["paths"] == [
        f"{koji_packages}/packages/kmod-jool/1.0/1.47_amd64/x86_64/kmod-jool-1.0-1.47_amd64.x86_64.rpm"]
    # the kernel's own RPMs provide kernel(sym) and require none: not a kmod build
    assert kmod_request(2600001, "primary", "kernel", by_requires) is None
    assert kmod_request(3003, "primary", "kmod-v4l2loopback", _koji_settings(
        koji_packages, koji_hub, koji_arches=("aarch64",))) is None  # no RPM of these arches
    assert event_request(KOJI, body, _koji_settings(koji_packages, koji_hub, koji_hub=None)) is None  # kmods off


def _huge() -> str:
    return "x" * (17 << 20)


@pytest.mark.parametrize("answers, message", [
    ({"getBuild": lambda: (_ for _ in ()).throw(ValueError("no such build"))}, "fault 1: <class 'ValueError'>"),
    ({"getBuild": _huge}, "bad answer: an answer of more than 16 MiB"),
    ({"getBuild": lambda: ["not", "a", "build"]}, "not a build"),
    ({"getBuild": lambda: {"id": 3001, "name": 7, "version": "1", "release": "1", "state": 1}}, "name: '7' is not"),
    ({"getBuild": lambda: {"id": 3001, "name": "kmod-acpi-call", "version": "1.0", "release": "../../../etc",
                           "state": 1}}, "is not an RPM name, version or release"),
    ({"getBuild": lambda: {"id": 3001, "name": "kmod-acpi-call", "version": "1.0", "release": "1", "state": 1,
                           "volume_name": ".."}}, "volume_name: '..' is not"),
    ({"getBuild": lambda: {"id": 3999, "name": "kmod-acpi-call", "version": "1.0", "release": "1", "state": 1}},
     "answered for another build"),
    ({"getBuild": lambda: {"id": 3001, "name": "kmod-acpi-call", "version": "1.0", "release": "1", "state": 0}},
     "not complete"),
    ({"listRPMs": lambda: {"rpms": []}}, "not a list of RPMs"),
    ({"listRPMs": lambda: [{"id": 1, "name": "kmod-acpi-call", "version": "1.0", "release": "1", "arch": "..",
                            "build_id": 3001}]}, "arch: '..' is not"),
    ({"listRPMs": lambda: [{"id": 1, "name": "bash", "version": "5", "release": "1", "arch": "x86_64",
                            "build_id": 42}]}, "is not of this build"),
    ({"listRPMs": lambda: [{"id": "1", "name": "bash", "version": "5", "release": "1", "arch": "x86_64",
                            "build_id": 3001}]}, "has no RPM id"),
])
def test_hostile_koji_hub_answers_are_one_line_input_errors(koji_packages, koji_hub, answers, message):
    from kabigate.errors import InputError
    from kabigate.workers.koji import HubUnavailable, kmod_request

    koji_hub.hostile[3001] = answers
    with pytest.raises(InputError) as raised:
        kmod_request(3001, "primary", "kmod-acpi-call", _koji_settings(koji_packages, koji_hub))
    assert message in str(raised.value) and "\n" not in str(raised.value) and len(str(raised.value)) < 600
    assert not isinstance(raised.value, HubUnavailable)


def test_an_unreachable_koji_hub_gives_the_message_back(koji_packages, koji_hub):
    import socket

    from kabigate.workers.config import Settings
    from kabigate.workers.koji import HubUnavailable, kmod_request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(koji_topurl=koji_packages, koji_hub=f"http://127.0.0.1:{port}/kojihub")
    with pytest.raises(HubUnavailable, match="Connection refused"):
        kmod_request(3001, "primary", "kmod-acpi-call", settings)
    # the listener's callback, given Koji's message: not dropped (Drop) but given back (Nack)
    from fedora_messaging.exceptions import Nack
    from fedora_messaging.message import Message

    from kabigate.workers.listener import EventConsumer

    message = Message(topic=KOJI, body={"build_id": 3001, "name": "kmod-acpi-call", "version": "1.0",
                                        "release": "1.47_amd64", "new": 1, "instance": "primary"})
    with pytest.raises(Nack):
        EventConsumer(settings)(message)


def test_koji_kmod_builds_through_the_listener_are_ingested_and_judged_on_stored_kernels(
        cluster, testdata, koji_packages, koji_hub):
    cluster.allow.append(f"{koji_packages}/")
    cluster.configure(f'[koji]\ntopurl = "{koji_packages}"\nhub = "{koji_hub.url}"\n')
    cluster.run("ingest", "kernel", "--stream", STREAM, str(testdata.kernel_root(RELEASES[0])))  # 6.1.0-47
    koji_hub.hostile[3666] = {"getBuild": lambda: {"id": 3666, "name": "kmod-evil", "version": "1",
                                                    "release": "../../../../etc", "state": 1}}
    koji_hub.hostile[3667] = {"getBuild": lambda: RawXML("<value><struct><member><name>id</name></member>"
                                                         "</struct></value>")}  # xmlrpc.client: IndexError
    cluster.listener()
    cluster.worker()
    topic = "org.fedoraproject.prod.buildsys.build.state.change"
    base = {"attribute": "state", "old": 0, "new": 1, "instance": "primary", "owner": "kmods-sig", "epoch": None}
    for build_id in (3001, 3003, 3001):  # the second 3001: Koji's message delivered twice
        name, version, release = KMOD_BUILDS[build_id]
        publish_raw(cluster.broker, topic, json.dumps(
            dict(base, build_id=build_id, name=name, version=version, release=release)).encode())
    for build_id in (3666, 3667):
        publish_raw(cluster.broker, topic, json.dumps(dict(base, build_id=build_id, name="kmod-evil", version="1",
                                                           release="1")).encode())
    cluster.run("announce", "--kind", "drivers", str(cluster.config))  # last: every message before is handled
    tasks = cluster.wait_for_tasks(3)
    assert sorted((t["kind"], t["state"], t["attempts"]) for t in tasks) == [
        ("ingest-drivers", "done", 1), ("ingest-drivers", "done", 1), ("ingest-drivers", "failed", 1)]
    with Store.open(cluster.db) as store:
        builds = {b.package: b for b in store.driver_builds()}
        assert set(builds) == {"kmod-acpi-call", "kmod-v4l2loopback"}
        (kernel,) = store.kernels()
        verdicts = {package: store.cells(store_rules_version())[(b.id, kernel.id)].loads
                    for package, b in builds.items()}
    assert verdicts == {"kmod-acpi-call": True, "kmod-v4l2loopback": False}  # built for -47; for -56
    assert not gate_results(cluster.broker)  # a driver ingest, then nothing else
    cluster._until(lambda: "koji getBuild(3666) release: '../../../../etc' is not an RPM name" in cluster.logs(),
                   "the listener drops the hostile hub's answer")
    assert re.search(r"dropped message \S+: koji getBuild: \S+: bad answer: IndexError", cluster.logs())
