"""Rebuilding the corpus' DKMS packages for a new kernel: kabigate against a shell loop of the same `dkms build`s.

The input: every Debian *-dkms .deb of the corpus (or the PACKAGEs given), each stored as built for
6.1.0-47 by `kabigate build` (the corpus' own -47 build, remembered as made from its .deb), and the
candidate kernel (default 6.1.0-56) stored from its linux-image and linux-headers .debs. The
packages to rebuild are those that do not work on the candidate (services.rebuild.needing_rebuild).

1. The standard: one shell running, for each package, the commands a repository's rebuild loop runs:
   `dpkg-deb -x`, `dkms build` with private trees against the candidate's headers folder (already
   extracted), as root, no sandbox.
2. kabigate in one process: the gate's rebuild (`gate --rebuild`, services.rebuild.rebuild_packages):
   the candidate's build tree extracted from its headers .debs, each package built by dkms in the
   bubblewrap sandbox, its outcome stored (the built modules ingested and judged on the stored kernels).
3. kabigate as a service: a PostgreSQL store and RabbitMQ (tests/support), one gate worker and two
   build workers (`kabigate worker --queues kabigate-builds`, one process each); `gate --queue` with
   drivers.rebuild, timed from the enqueue until the gate is done (its build tasks, each extracting
   the tree for itself, and the gate twice: asking, then judging).

One run each (a build takes seconds to minutes); the outcomes must agree (dkms's exit status).

    .venv/bin/python bench/rebuild_loop.py [--kernel 6.1.0-56-amd64] [--no-workers] [PACKAGE...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root

from kabigate.inputs.kernels import load_kernel
from kabigate.services.ingest import ingest_driver_build, ingest_kernel, read_driver_builds
from kabigate.services.rebuild import needing_rebuild, rebuild_packages
from kabigate.store import Store

KABIGATE = [str(Path(sys.executable).parent / "kabigate")]
BUILT_FOR = "6.1.0-47-amd64"
STREAM = "debian-6.1"


def seed(db: str, root: Path, manifest: dict, kernel: str, packages: list[str]) -> dict[str, Path]:
    """The store: the candidate from its .debs, -47 from its folder, each package's -47 build made
    from its .deb; the .debs by package."""
    debs = {}
    with Store.open(db) as store:
        ingest_kernel(store, load_kernel([str(root / manifest["kernels"][BUILT_FOR]["root"])]), STREAM)
        ingest_kernel(store, load_kernel([str(root / deb) for deb in manifest["stream_kernels"][kernel]["debs"]]),
                      STREAM)
        for package in packages:
            (deb,) = (root / "debs").glob(f"{package}-dkms_*.deb")
            entry = manifest["drivers"][package][BUILT_FOR]
            (build,) = read_driver_builds([str(root / entry["dir"])], package, entry["version"])
            ingest_driver_build(store, dataclasses.replace(build, source=str(deb), built_from=str(deb)))
            debs[package] = deb
    return debs


def shell_loop(debs: list[Path], release: str, headers: Path, work: Path) -> tuple[float, dict[str, bool]]:
    """The standard: one bash script of dpkg-deb -x and dkms build per package; (seconds, built by package)."""
    lines = [f"out={shlex.quote(str(work))}"]
    for number, deb in enumerate(debs):
        w = f"$out/{number}"
        lines += [f"mkdir -p {w}/dkms && dpkg-deb -x {shlex.quote(str(deb))} {w}/pkg",
                  f"src=$(ls {w}/pkg/usr/src) && name=$(. {w}/pkg/usr/src/$src/dkms.conf; echo \"$PACKAGE_NAME\")",
                  f"mok_signing_key={w}/mok.key mok_certificate={w}/mok.pub dkms build -m \"$name\" "
                  f"-v \"${{src#$name-}}\" -k {release} --dkmstree={w}/dkms --sourcetree={w}/pkg/usr/src "
                  f"--kernelsourcedir={shlex.quote(str(headers))} >{w}/log 2>&1; echo $? >{w}/status"]
    script = work / "loop.sh"
    script.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    subprocess.run(["bash", str(script)], check=True)
    elapsed = time.perf_counter() - start
    return elapsed, {deb.name: (work / str(n) / "status").read_text().strip() == "0" for n, deb in enumerate(debs)}


def one_process(db: str, kernel: str, drivers: list[str]) -> tuple[float, float, dict[str, bool]]:
    """(seconds, of which in the builds themselves, built by package)."""
    with Store.open(db) as store:
        (candidate,) = store.find_kernels(kernel)
        start = time.perf_counter()
        rebuilds = rebuild_packages(store, candidate, drivers)
        elapsed = time.perf_counter() - start
    not_tried = [r for r in rebuilds if r.outcome is None]
    if not_tried:
        sys.exit(f"{not_tried[0].driver} not rebuilt: {not_tried[0].reason}")
    outcomes = {Path(r.source or "").name: r.outcome == "built" for r in rebuilds}
    return elapsed, sum(r.seconds for r in rebuilds), outcomes


def workers(root: Path, manifest: dict, kernel: str, packages: list[str],
            workdir: Path) -> tuple[float, dict[str, bool]]:
    from support.pgserver import create_database, postgres_server
    from support.rabbitserver import RabbitMQ

    from kabigate.workers.app import configure, enqueue
    from kabigate.workers.config import Settings
    from kabigate.workers.work import gate_request

    with postgres_server() as postgres, RabbitMQ() as broker:
        db = create_database(postgres, "rebuildbench")
        seed(db, root, manifest, kernel, packages)  # as the template was (untimed)
        policy = workdir / "policy.toml"
        policy.write_text("[drivers]\nrebuild = true\n")
        config = workdir / "kabigate.toml"
        config.write_text(f'db = "{db}"\nbroker = "{broker.url}"\n[gate]\npolicy = "{policy}"\n')
        env = dict(os.environ, KABIGATE_CONFIG=str(config), KABIGATE_DB=db, KABIGATE_BROKER=broker.url)
        started = []
        for number, queues in enumerate(("kabigate", "kabigate-builds", "kabigate-builds")):
            with open(workdir / f"worker-{number}.log", "w") as log:
                started.append(subprocess.Popen([*KABIGATE, "worker", "--queues", queues, "--concurrency", "1",
                                                 "--hostname", f"bench{number}@%h", "--loglevel", "INFO"],
                                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        try:
            _wait_consumers(broker, {"kabigate": 1, "kabigate-builds": 2})
            configure(Settings(db=db, broker=broker.url))
            start = time.perf_counter()
            with Store.open(db) as store:
                enqueue(store, gate_request(kernel, STREAM))
            while True:
                with Store.open(db) as store:
                    tasks = store.tasks()
                if all(t.state in ("done", "failed") for t in tasks):
                    break
                if any(p.poll() is not None for p in started):
                    sys.exit(f"a worker exited: see {workdir}")
                time.sleep(0.2)
            elapsed = time.perf_counter() - start
        finally:
            for process in started:
                process.send_signal(signal.SIGTERM)
            for process in started:
                process.wait()
    failed = [t for t in tasks if t.state == "failed"]
    if failed:
        sys.exit(f"{failed[0].kind} failed: {failed[0].error}")
    return elapsed, {Path(t.args["source"]).name: t.result["outcome"] == "built" for t in tasks if t.kind == "build"}


def _wait_consumers(broker, wanted: dict[str, int]) -> None:
    import amqp

    while True:
        connection = amqp.Connection(f"127.0.0.1:{broker.port}", userid="guest", password="guest")
        connection.connect()
        try:
            found = {}
            for queue in wanted:
                try:
                    found[queue] = connection.channel().queue_declare(queue, passive=True).consumer_count
                except amqp.exceptions.NotFound:
                    found[queue] = 0
        finally:
            connection.close()
        if all(found[q] >= n for q, n in wanted.items()):
            return
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1.0-56-amd64")
    parser.add_argument("--no-workers", action="store_true", help="Leave out the service (PostgreSQL, RabbitMQ).")
    parser.add_argument("packages", nargs="*")
    args = parser.parse_args()
    root = testdata_root()
    manifest = json.loads((root / "manifest.json").read_text())
    packages = args.packages or sorted(p for p, builds in manifest["drivers"].items() if BUILT_FOR in builds
                                       and list((root / "debs").glob(f"{p}-dkms_*.deb")))
    with tempfile.TemporaryDirectory(prefix="kabigate-rebuild-bench-") as top:
        work = Path(top)
        template = str(work / "template.db")
        debs = seed(template, root, manifest, args.kernel, packages)
        with Store.open(template) as store:
            (candidate,) = store.find_kernels(args.kernel)
            drivers = needing_rebuild(store, candidate, None, ("*",))
        print(f"{len(drivers)} of {len(packages)} packages do not work on {args.kernel} and are rebuilt", flush=True)
        headers = root / manifest["build_kernels"][args.kernel]["headers_dir"]
        (work / "loop").mkdir()
        theirs, shell_built = shell_loop([debs[d] for d in drivers], args.kernel, headers, work / "loop")
        print(f"shell loop of dkms build        {theirs:8.1f} s   {sum(shell_built.values())} built", flush=True)
        copy = work / "one.db"
        with sqlite3.connect(template) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        ours, building, built = one_process(str(copy), args.kernel, drivers)
        print(f"kabigate, one process            {ours:8.1f} s   {sum(built.values())} built   "
              f"{ours / theirs:.2f}x   (builds and storing {building:.1f} s, the tree from its .debs "
              f"{ours - building:.1f} s)", flush=True)
        if built != shell_built:
            print(f"  outcomes differ: {sorted(k for k in built if built[k] != shell_built.get(k))}")
        if not args.no_workers:
            (work / "service").mkdir()
            served, served_built = workers(root, manifest, args.kernel, packages, work / "service")
            print(f"kabigate, 2 build workers        {served:8.1f} s   {sum(served_built.values())} built   "
                  f"{served / theirs:.2f}x", flush=True)
            if served_built != shell_built:
                print(f"  outcomes differ: {sorted(k for k in served_built if served_built[k] != shell_built.get(k))}")
        shutil.rmtree(work / "loop", ignore_errors=True)


if __name__ == "__main__":
    main()
