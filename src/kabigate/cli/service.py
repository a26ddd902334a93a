"""`kabigate worker | listen | health | tasks`: kabigate as a service on RabbitMQ and a shared store.

`ingest ... --queue` and `gate ... --queue` (cli/store.py, cli/gate.py) enqueue through `queue_requests`;
`watch --queue` (cli/gate.py) through workers.app.enqueue_once, each kernel once across polls."""

from __future__ import annotations

import functools
import os
import sys

import click
from rich.table import Table

from kabigate.cli.shared import EXIT_INCOMPATIBLE, EXIT_OK, cells, emit_json, err, out
from kabigate.errors import InputError
from kabigate.reports.tasks import task_json
from kabigate.vocabulary import TaskState


def service_options(command):
    """--config, --db and --broker: the settings file, and what overrides it."""
    @click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="FILE",
                  help="Service settings (TOML; default: $KABIGATE_CONFIG).")
    @click.option("--db", metavar="URL", help="The shared store (default: $KABIGATE_DB, else the settings').")
    @click.option("--broker", metavar="AMQP_URL", help="RabbitMQ (default: $KABIGATE_BROKER, else the settings', "
                                                        "else amqp://guest:guest@127.0.0.1:5672//).")
    @functools.wraps(command)
    def with_settings(config_path, db, broker, **kwargs):
        from kabigate.workers.config import load_settings

        return command(load_settings(config_path, db=db, broker=broker), **kwargs)
    return with_settings


def queue_requests(store, requests: list, as_json: bool) -> None:
    """Enqueue requests (work.Request) for the workers and say what became of each."""
    from kabigate.workers.app import configure, enqueue
    from kabigate.workers.config import load_settings

    configure(load_settings())
    results = [(request, *enqueue(store, request)) for request in requests]
    if as_json:
        emit_json({"tasks": [{"key": task.key, "kind": task.kind, "state": task.state, "sent": sent}
                             for _request, task, sent in results]})
        return
    for _request, task, sent in results:
        out.print(f"{'queued' if sent else 'already ' + task.state}: {task.kind} {task.key}", markup=False)


@click.command()
@service_options
@click.option("--concurrency", "-c", type=click.IntRange(min=1), help="Worker processes (default: the settings', "
                                                                       "else one per CPU).")
@click.option("--hostname", "-n", metavar="NAME", help="This worker's name (default: celery@HOST).")
@click.option("--queues", "-Q", metavar="QUEUE[,QUEUE]",
              help="The queues it takes tasks from: kabigate (ingest, gate), kabigate-builds (package builds) "
                   "(default: the settings', else both).")
@click.option("--loglevel", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO",
              show_default=True)
def worker(settings, concurrency: int | None, hostname: str | None, queues: str | None, loglevel: str) -> None:
    """Run a Celery worker: ingest, gate and package build tasks from RabbitMQ into the shared store.

    \b
    Example:
      kabigate worker --config /etc/kabigate/service.toml
      kabigate worker --queues kabigate-builds --concurrency 2    # a build worker
    """
    import dataclasses

    from kabigate.store import Store
    from kabigate.workers.app import worker_main
    from kabigate.workers.config import QUEUES

    if queues is not None:
        chosen = tuple(dict.fromkeys(q.strip() for q in queues.split(",") if q.strip()))
        if not chosen or not set(chosen) <= set(QUEUES):
            raise click.BadParameter(f"some of {', '.join(QUEUES)}, comma-separated", param_hint="--queues")
        settings = dataclasses.replace(settings, queues=chosen)

    with Store.open(settings.db):  # a store the workers cannot open is an error now, not per task
        pass
    worker_main(settings, concurrency, hostname, loglevel)


@click.command()
@service_options
@click.option("--loglevel", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO",
              show_default=True)
def listen(settings, loglevel: str) -> None:
    """Consume build events (Koji's buildsys.build.state.change, kabigate.build.complete) with
    fedora-messaging and enqueue their ingest (and gate, for kernels).

    \b
    Example:
      kabigate listen --config /etc/kabigate/service.toml
    """
    import logging

    from kabigate.store import Store
    from kabigate.workers.listener import listen as consume

    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with Store.open(settings.db):
        pass
    try:
        consume(settings)
    except Exception as error:  # fedora-messaging's consumer stops on connection and config errors
        from fedora_messaging.exceptions import BaseException as MessagingError

        if isinstance(error, MessagingError):
            raise InputError(f"listen: {error}") from None
        raise


@click.command()
@service_options
@click.option("--kind", type=click.Choice(["kernel", "drivers"]), required=True,
              help="kernel: FILES are one kernel's packages; drivers: driver packages, a repository or module trees.")
@click.option("--stream", metavar="NAME", help="The kernel's stream: its gate follows the ingest.")
@click.option("--name", help="Driver name for module trees.")
@click.option("--version", "version", help="Driver version for module trees.")
@click.option("--build-id", metavar="ID", help="The build system's id: a build announced again is done once.")
@click.argument("files", nargs=-1, required=True, metavar="FILE_OR_URL...")
def announce(settings, kind: str, stream: str | None, name: str | None, version: str | None,
             build_id: str | None, files: tuple[str, ...]) -> None:
    """Publish a kabigate.build.complete message: a finished build, for the workers to ingest.

    For build systems other than Koji: the build's packages are at FILES (paths the workers see,
    or URLs).

    \b
    Example:
      kabigate announce --config /etc/kabigate/service.toml --kind drivers https://repo.example/kmod-jool.rpm
    """
    from jsonschema.exceptions import ValidationError

    from kabigate.workers.messaging import PublishError, publish
    from kabigate_messages import BuildCompleteV1

    body = {"kind": kind, "files": [f if "://" in f else os.path.abspath(f) for f in files]}
    body.update({key: value for key, value in (("stream", stream), ("name", name), ("version", version),
                                               ("build_id", build_id)) if value is not None})
    message = BuildCompleteV1(body=body)
    try:
        message.validate()
        publish(settings, message)
    except ValidationError as error:
        raise InputError(f"announce: {error.message}") from None
    except PublishError as error:
        raise InputError(str(error)) from None
    out.print(f"published {message.topic} {message.id}", markup=False)


@click.command()
@service_options
@click.option("--timeout", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds to wait for workers to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
def health(settings, timeout: float, as_json: bool) -> None:
    """The service's health: store, broker, queues, workers, tasks. Exit 1 when something is down.

    \b
    Example:
      kabigate health --config /etc/kabigate/service.toml --json
    """
    from kabigate.workers.health import check_health

    report = check_health(settings, timeout)
    if as_json:
        emit_json(report)
    else:
        store, broker = report["store"], report["broker"]
        out.print(f"store   {'ok' if store['ok'] else 'DOWN'}  {store['url']}  {store.get('error') or ''}",
                  markup=False)
        out.print(f"broker  {'ok' if broker['ok'] else 'DOWN'}  {broker['url']}  {broker.get('error') or ''}",
                  markup=False)
        for name, queue in report["queues"].items():
            out.print(f"queue   {name}: {queue['messages']} waiting, {queue['consumers']} consumers", markup=False)
        out.print(f"workers {len(report['workers'])}: {', '.join(report['workers']) or '-'}", markup=False)
        if store["ok"]:
            out.print("tasks   " + ", ".join(f"{n} {state}" for state, n in report["tasks"].items()), markup=False)
            for failure in report["recent_failures"]:
                out.print(f"  failed {failure['kind']} {failure['key']}: {failure['error']}", markup=False)
    sys.exit(EXIT_OK if report["ok"] else EXIT_INCOMPATIBLE)


@click.command()
@click.option("--state", type=click.Choice([s.value for s in TaskState]), help="Only tasks in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--prune", is_flag=True, help="Delete done and failed tasks last updated more than --older-than "
                                            "days ago (never queued or running ones).")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), metavar="DAYS",
              help="With --prune: the age of the tasks deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@click.option("--db", "db", metavar="PATH_OR_URL", envvar="KABIGATE_DB", help="The store (default: $KABIGATE_DB).")
def tasks(state: str | None, limit: int, prune: bool, older_than: float | None, as_json: bool,
          db: str | None) -> None:
    """The workers' tasks, most recent first: what was asked, its state, its error or result.

    \b
    Example:
      kabigate tasks --state failed --json
    """
    from kabigate.store import Store

    if prune != (older_than is not None):
        raise InputError("--prune and --older-than DAYS go together")
    if older_than is not None:  # with --prune, as checked above
        if state is not None:
            raise InputError("--prune deletes done and failed tasks: no --state")
        _prune_tasks(Store, db, older_than, as_json)
        return
    with Store.open(db, create=False) as store:
        records = store.tasks(None if state is None else TaskState(state), limit=limit)
    if as_json:
        emit_json({"tasks": [task_json(t) for t in records]})
        return
    table = Table("updated", "kind", "state", "tries", "what", "error or result", box=None)
    for t in records:
        what = ", ".join(os.path.basename(p) for p in t.args.get("paths", [])) or t.args.get("release", "")
        outcome = t.error or ", ".join(f"{k}={v}" for k, v in (t.result or {}).items())
        table.add_row(*cells(f"{t.updated_at:%Y-%m-%d %H:%M:%S}", t.kind, t.state, str(t.attempts), what, outcome))
    out.print(table)
    if not records:
        err.print("no tasks", markup=False)


def _prune_tasks(store_class, db: str | None, days: float, as_json: bool) -> None:
    import datetime

    try:
        before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
    except (OverflowError, ValueError):  # inf, nan, a million years
        raise InputError(f"--older-than {days:g}: not a number of days a date can go back") from None
    with store_class.open(db) as store, store.transaction():
        pruned = store.prune_tasks(before)
    if as_json:
        emit_json({"pruned": pruned, "before": before.isoformat()})
    else:
        out.print(f"pruned {pruned} done or failed tasks last updated before {before:%Y-%m-%d %H:%M:%S} UTC",
                  markup=False)
