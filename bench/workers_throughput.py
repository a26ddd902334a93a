#!/usr/bin/env python3
"""Benchmark: kabigate as a service (Celery workers on RabbitMQ, a PostgreSQL store) on the real corpus.

Servers are private ones started here (tests/support/pgserver.py, tests/support/rabbitserver.py), on 127.0.0.1.
The corpus: the amd64 kernels whose image + headers .debs scripts/fetch-testdata keeps (read as
they come from the archive, tens of MB each) and every driver build of the manifest.

1. Ingest throughput. The standard: one process ingesting one item after another (the
   single-machine way, `kabigate ingest`'s code), into PostgreSQL. Then the same items enqueued
   (what `ingest ... --queue` does) for 1 and for 2 worker processes, timed from the first enqueue
   until the last task is done; the stores must hold the same verdicts as the standard's.
2. Event -> published gate result. With the drivers stored, a listener and an idle worker, each
   kernel is announced (a kabigate.build.complete message, as `kabigate announce` sends it) and
   timed until its kabigate.gate.result message arrives; against the same work done inline
   (ingest, then gate and record).
3. Per-row sizes in PostgreSQL after the corpus (for the README's sizing of a deployment).

    .venv/bin/python bench/workers_throughput.py [--kernels N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.pgserver import create_database, postgres_server
from support.rabbitserver import RabbitMQ
from support.testdata import testdata_root

from kabigate.store import Store

KABIGATE = [str(REPO / ".venv" / "bin" / "kabigate")]
STREAM = "debian-6.1"
_databases = itertools.count()


def corpus(root: Path, limit: int | None) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """(release, "image.deb,headers.deb") of the amd64 kernels with both .debs, oldest first; the
    driver builds as `ingest drivers` arguments."""
    manifest = json.loads((root / "manifest.json").read_text())
    kernels = []
    for release in sorted(manifest["kernels"], key=lambda r: [int(p) if p.isdigit() else p for p in r.split("-")]):
        image = sorted((root / "debs").glob(f"linux-image-{release}-unsigned_*_amd64.deb"))
        headers = sorted((root / "debs").glob(f"linux-headers-{release}_*_amd64.deb"))
        if image and headers:
            kernels.append((release, f"{image[0]},{headers[0]}"))
    drivers = [["--name", driver, "--version", build["version"], str(root / build["dir"])]
               for driver, builds in sorted(manifest["drivers"].items()) for build in builds.values()]
    return kernels[:limit], drivers


def cells(url: str) -> dict:
    from kabigate.rules import RULES_VERSION

    with Store.open(url) as store:
        kernels = {k.id: k.release for k in store.kernels()}
        builds = {b.id: (b.driver, b.version, b.built_for) for b in store.driver_builds()}
        return {(builds[b], kernels[k]): (c.loads, c.first_reason, c.failing_symbols)
                for (b, k), c in store.cells(RULES_VERSION).items()}


def wait_done(url: str, count: int, processes: Processes, timeout: float = 3600) -> None:
    """Until `count` tasks are done; the store opened once (opening one checks its schema: ~60 ms of
    CPU a poll would be taken from the workers being timed)."""
    deadline = time.monotonic() + timeout
    with Store.open(url) as store:
        while True:
            processes.check()
            tasks = store.tasks()
            if len(tasks) >= count and all(t.state in ("done", "failed") for t in tasks):
                failed = [t for t in tasks if t.state == "failed"]
                if failed:
                    sys.exit(f"task failed: {failed[0].error}")
                return
            if time.monotonic() > deadline:
                sys.exit("timed out")
            time.sleep(0.2)


class Processes:
    def __init__(self, env: dict, logdir: Path):
        self.env, self.logdir, self.started = env, logdir, []

    def start(self, *args: str) -> None:
        with open(self.logdir / f"{args[0]}-{len(self.started)}.log", "w") as log:
            self.started.append(subprocess.Popen([*KABIGATE, *args], env=self.env, stdout=log,
                                                 stderr=subprocess.STDOUT, start_new_session=True))

    def check(self) -> None:
        for process in self.started:
            if process.poll() is not None:
                sys.exit(f"kabigate {process.args[1]} exited {process.returncode}: see {self.logdir}")

    def stop(self) -> None:
        for process in self.started:
            process.terminate()
        for process in self.started:
            process.wait()
        self.started = []


def wait_consumers(broker: RabbitMQ, queue: str, count: int) -> None:
    import amqp

    while True:
        connection = amqp.Connection(f"127.0.0.1:{broker.port}", userid="guest", password="guest")
        connection.connect()
        try:
            if connection.channel().queue_declare(queue, passive=True).consumer_count >= count:
                return
        except amqp.exceptions.NotFound:
            pass
        finally:
            connection.close()
        time.sleep(0.2)


def ingest_inline(db: str, kernels, drivers) -> float:
    """The standard: one process ingesting one item after another (kabigate ingest's own code)."""
    from kabigate.inputs.kernels import load_kernel
    from kabigate.services.ingest import ingest_driver_build, ingest_kernel, read_driver_builds

    start = time.perf_counter()
    with Store.open(db) as store:
        for arguments in drivers:
            for build in read_driver_builds([arguments[4]], arguments[1], arguments[3]):
                ingest_driver_build(store, build)
        for _release, files in kernels:
            ingest_kernel(store, load_kernel(files.split(",")), STREAM)
    return time.perf_counter() - start


def requests(kernels, drivers) -> list:
    from kabigate.workers.work import ingest_drivers_request, ingest_kernel_request

    return [*(ingest_drivers_request([arguments[4]], arguments[1], arguments[3]) for arguments in drivers),
            *(ingest_kernel_request(files.split(","), STREAM) for _release, files in kernels)]


def throughput(postgres: str, broker: RabbitMQ, kernels, drivers, workers: int, workdir: Path) -> tuple[float, str]:
    from kabigate.workers.app import configure, enqueue
    from kabigate.workers.config import Settings

    db = create_database(postgres, f"bench{next(_databases)}")
    env = dict(os.environ, KABIGATE_DB=db, KABIGATE_BROKER=broker.url)
    env.pop("KABIGATE_CONFIG", None)
    Store.open(db).close()  # the schema, before the workers start
    processes = Processes(env, workdir)
    for number in range(workers):
        processes.start("worker", "--concurrency", "1", "--hostname", f"bench{number}@%h", "--loglevel", "WARNING")
    wait_consumers(broker, "kabigate", workers)
    configure(Settings(db=db, broker=broker.url))
    start = time.perf_counter()
    with Store.open(db) as store:
        for request in requests(kernels, drivers):
            enqueue(store, request)
    wait_done(db, len(drivers) + len(kernels), processes)
    elapsed = time.perf_counter() - start
    processes.stop()
    return elapsed, db


def latency(postgres: str, broker: RabbitMQ, kernels, drivers, workdir: Path) -> tuple[list[float], list[float]]:
    """(event -> gate result message, per kernel), (inline ingest + gate, per kernel)."""
    import amqp

    from kabigate.inputs.kernels import load_kernel
    from kabigate.reports.gate import gate_json
    from kabigate.services.gate import previous_in_stream, record_gate, run_gate
    from kabigate.services.ingest import ingest_kernel
    from kabigate.workers.config import Settings
    from kabigate.workers.messaging import publish
    from kabigate_messages import BuildCompleteV1

    inline_db = create_database(postgres, f"bench{next(_databases)}")
    ingest_inline(inline_db, [], drivers)
    inline = []
    with Store.open(inline_db) as store:
        for _release, files in kernels:
            start = time.perf_counter()
            record = ingest_kernel(store, load_kernel(files.split(",")), STREAM).record
            baseline, stream = previous_in_stream(store, record, STREAM)
            result = run_gate(store, record, baseline, stream=stream)
            record_gate(store, result, gate_json(result))
            inline.append(time.perf_counter() - start)

    db = create_database(postgres, f"bench{next(_databases)}")
    ingest_inline(db, [], drivers)
    config = workdir / "kabigate.toml"
    config.write_text(f'db = "{db}"\nbroker = "{broker.url}"\n[listen]\nallow = ["{testdata_root()}/"]\n')
    env = dict(os.environ, KABIGATE_DB=db, KABIGATE_BROKER=broker.url, KABIGATE_CONFIG=str(config))
    connection = amqp.Connection(f"127.0.0.1:{broker.port}", userid="guest", password="guest")
    connection.connect()
    channel = connection.channel()
    channel.queue_declare("bench-results", durable=False, auto_delete=False)
    channel.queue_bind("bench-results", "amq.topic", "#.kabigate.gate.result")
    processes = Processes(env, workdir)
    processes.start("listen", "--loglevel", "WARNING")
    processes.start("worker", "--concurrency", "1", "--loglevel", "WARNING")
    wait_consumers(broker, "kabigate-events", 1)
    wait_consumers(broker, "kabigate", 1)
    settings = Settings(db=db, broker=broker.url)
    latencies, published = [], []
    for _release, files in kernels:
        start = time.perf_counter()
        published.append(time.time())
        publish(settings, BuildCompleteV1(body={"kind": "kernel", "stream": STREAM, "files": files.split(",")}))
        while channel.basic_get("bench-results", no_ack=True) is None:
            processes.check()
            time.sleep(0.02)
        latencies.append(time.perf_counter() - start)
    connection.close()
    processes.stop()
    with Store.open(db) as store:  # where the time goes, from the task rows' timestamps
        tasks = sorted(store.tasks(), key=lambda t: t.created_at)
    ingests = [t for t in tasks if t.kind == "ingest-kernel"]
    gates = [t for t in tasks if t.kind == "gate"]
    if len(ingests) == len(gates) == len(published):
        median = statistics.median
        enqueued = median(i.created_at.timestamp() - p for i, p in zip(ingests, published))
        ingested = median((i.updated_at - i.created_at).total_seconds() for i in ingests)
        gated = median((g.updated_at - g.created_at).total_seconds() for g in gates)
        print(f"  where it goes (medians): event -> task enqueued by the listener {enqueued:.2f} s, "
              f"ingest enqueued -> done {ingested:.2f} s, gate enqueued -> done and published {gated:.2f} s")
    return latencies, inline


def sizes(url: str) -> None:
    """Bytes per row of the store's tables in PostgreSQL (tables with their indexes and TOAST)."""
    from sqlalchemy import text

    with Store.open(url) as store, store.engine.connect() as connection:
        counts = store.counts()
        print("PostgreSQL size per table (with indexes and TOAST):")
        total = 0
        for table, rows in counts.items():
            size = connection.execute(text("SELECT pg_total_relation_size(:t)"), {"t": table}).scalar()
            total += size
            if rows:
                print(f"  {table:<16} {rows:>9,} rows {size / 1024:>9,.0f} KiB  {size / rows:>9,.0f} B/row")
        print(f"  total {total / 1048576:.1f} MiB")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # stop the servers on the way out
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=int, help="only the first N kernels")
    parser.add_argument("--latency-only", action="store_true", help="only the event -> gate result latency")
    args = parser.parse_args()
    root = testdata_root()
    kernels, drivers = corpus(root, args.kernels)
    print(f"corpus: {len(kernels)} kernels (image + headers .debs: {', '.join(r for r, _ in kernels)}), "
          f"{len(drivers)} driver builds; {os.cpu_count()} CPUs")
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"kabigate-bench-workers-{os.getpid()}"
    workdir.mkdir()
    with postgres_server() as postgres, RabbitMQ() as broker:
        if args.latency_only:
            report_latency(postgres, broker, kernels, drivers, workdir)
            return
        db = create_database(postgres, "inline")
        standard = ingest_inline(db, kernels, drivers)
        expected = cells(db)
        items = len(kernels) + len(drivers)
        print(f"ingest, one item after another in one process (the standard): {standard:6.1f} s "
              f"({items / standard * 60:.1f} items/min)")
        timings = {}
        for workers in (1, 2):
            elapsed, url = throughput(postgres, broker, kernels, drivers, workers, workdir)
            assert cells(url) == expected, f"{workers} workers: the store differs from the standard's"
            timings[workers] = elapsed
            print(f"ingest, {workers} worker process{'es' if workers > 1 else '  '} via RabbitMQ:                     "
                  f"{elapsed:6.1f} s ({items / elapsed * 60:.1f} items/min, {standard / elapsed:.2f}x the standard)")
        print(f"scaling 1 -> 2 workers: {timings[1] / timings[2]:.2f}x")
        report_latency(postgres, broker, kernels, drivers, workdir)
        sizes(db)


def report_latency(postgres: str, broker: RabbitMQ, kernels, drivers, workdir: Path) -> None:
    event, inline = latency(postgres, broker, kernels, drivers, workdir)
    ratio = statistics.median(event) / statistics.median(inline)
    print(f"event -> gate result message, median of {len(event)}: {statistics.median(event):.1f} s "
          f"(inline ingest + gate {statistics.median(inline):.1f} s: {ratio:.2f}x)")


if __name__ == "__main__":
    main()
