"""`kabigate gate`: may this kernel ship, given the stored driver builds? PASS or FAIL with evidence."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
from rich.text import Text

from kabigate.builder.source import Signing
from kabigate.cli.shared import (
    EXIT_INCOMPATIBLE,
    EXIT_OK,
    TERMINAL,
    emit_json,
    err,
    out,
    progress,
    say,
    stages,
    write_atomically,
)
from kabigate.cli.store import store_option
from kabigate.errors import InputError, read_capped
from kabigate.formats.gatepolicy import (
    DEFAULT_POLICY,
    MAX_POLICY_FILE,
    OUTCOMES,
    Policy,
    Waiver,
    parse_policy,
    parse_waivers,
)
from kabigate.inputs.kernels import load_kernel
from kabigate.inputs.packages import is_url
from kabigate.inputs.stablelists import read_stablelist
from kabigate.model import version_key
from kabigate.reports.gate import DEFAULT_TESTCASE, gate_json, gate_junit, gate_markdown, resultsdb_payload
from kabigate.services.gate import (
    GateResult,
    previous_in_stream,
    publish_gate,
    record_gate,
    release_architectures,
    resolve_kernel,
    run_gate,
    same_release_of,
    stream_of,
)
from kabigate.services.ingest import ingest_kernel
from kabigate.services.notify import channels_from_env, deliver_pending
from kabigate.services.packages import why_not
from kabigate.services.waiverdb import TOKEN_ENV, Target, import_waivers
from kabigate.services.watch import OfferedKernel, kernels_to_gate, offered_kernels
from kabigate.signing.keys import HASHES, PASSPHRASE_ENV, load_signing_key
from kabigate.store import GateRun, KernelRecord, Store, TaskRecord
from kabigate.vocabulary import GateClass, GateStage, Outcome

if TYPE_CHECKING:  # imported when --confirm-in-qemu is given (it needs qemu)
    from kabigate.services.confirm import Confirmation

OUTCOME_STYLE = {Outcome.PASSED: "bold green", Outcome.INFO: "bold green", Outcome.NEEDS_INSPECTION: "bold yellow",
                 Outcome.FAILED: "bold red"}


def judging_options(command):
    """What decides a gate: policy, waivers, stablelist, which drivers."""
    for option in reversed([
        click.option("--policy", "policy_path", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Gate policy (TOML); default: regressions through stablelisted symbols and stablelist "
                          "violations fail, other regressions need inspection."),
        click.option("--waivers", "waivers_path", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Waivers (TOML), applied with the store's waivers (kabigate waiver add)."),
        click.option("--stablelist", "stablelist_path", type=click.Path(), metavar="FILE",
                     help="The distribution's kABI stablelist (which symbols are promised stable): a list, or a "
                          "folder of Module.kabi_<arch> files or a kernel-abi-stablelists RPM (each architecture's)."),
        click.option("--driver", metavar="GLOB", help="Only the driver builds whose name matches."),
        click.option("--matrix-url", metavar="URL", help="Link to the HTML matrix in the Markdown summary."),
        click.option("--resultsdb", "resultsdb_url", metavar="URL",
                     help="Publish the outcome to this ResultsDB API (.../api/v2.0); token from "
                          "$KABIGATE_RESULTSDB_TOKEN."),
        click.option("--testcase", default=DEFAULT_TESTCASE, show_default=True, help="ResultsDB test case name."),
        click.option("--ref-url", metavar="URL", help="ResultsDB ref_url: where the details are (e.g. the CI job)."),
        click.option("--waiverdb", "waiverdb_url", metavar="URL",
                     help=f"Import WaiverDB's waivers of the test case into the store before each gate "
                          f"(.../api/v1.0; token from ${TOKEN_ENV})."),
        click.option("--product-version", metavar="NAME",
                     help="With --waiverdb: only the waivers of this product version (e.g. rhel-9.6)."),
    ]):
        command = option(command)
    return command


@dataclass(frozen=True)
class GateSettings:
    policy: Policy
    waivers: tuple[Waiver, ...]
    stablelist_path: str | None
    driver: str | None
    matrix_url: str | None
    resultsdb_url: str | None
    testcase: str
    ref_url: str | None
    waiverdb_url: str | None = None
    product_version: str | None = None
    explain: bool = False  # name each CRC change's most likely cause (BTF of the stored kernels' images)
    rebuild: bool = False  # rebuild the gating packages that do not work on the candidate first
    signing: Signing | None = None  # the key that signs the rebuilt modules

    def with_rebuild(self, rebuild: bool | None, sign_key: str | None, sign_cert: str | None) -> GateSettings:
        """The command line's --rebuild and signing key over the policy's."""
        if (sign_key is None) != (sign_cert is None):
            raise InputError("--sign-key and --sign-cert go together")
        signing = self.signing
        if sign_key is not None and sign_cert is not None:
            signing = signing_key(sign_key, sign_cert, self.policy.sign_hash, f"{self.policy.source}: signing.hash")
        return dataclasses.replace(self, rebuild=self.rebuild if rebuild is None else rebuild, signing=signing)

    @classmethod
    def from_options(cls, policy_path, waivers_path, stablelist_path, driver, matrix_url, resultsdb_url, testcase,
                     ref_url, waiverdb_url, product_version) -> GateSettings:
        policy = parse_policy(_read(policy_path), policy_path) if policy_path else DEFAULT_POLICY
        waivers = tuple(parse_waivers(_read(waivers_path), waivers_path)) if waivers_path else ()
        signing = None
        if policy.sign_key is not None and policy.sign_cert is not None:  # both or neither, as parsed
            signing = signing_key(policy.sign_key, policy.sign_cert, policy.sign_hash, f"{policy.source}: signing.hash")
        if product_version is not None and waiverdb_url is None:
            raise click.UsageError("--product-version goes with --waiverdb")
        return cls(policy, waivers, stablelist_path, driver, matrix_url, resultsdb_url, testcase, ref_url,
                   waiverdb_url, product_version, rebuild=policy.rebuild, signing=signing)


def signing_key(key: str, cert: str, hash_name: str, what: str) -> Signing:
    """The repository's signing key (its passphrase from $KBUILD_SIGN_PIN, as sign-file reads it)."""
    if hash_name not in HASHES:
        raise InputError(f"{what} {hash_name!r}: one of {', '.join(HASHES)}")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    return Signing(load_signing_key(key, cert, passphrase.encode() if passphrase else None), hash_name)


@dataclass(frozen=True)
class GateOutcome:
    result: GateResult
    document: dict
    published: str | None
    confirmations: Sequence[Confirmation] = ()  # with --confirm-in-qemu


def gate_kernel(store: Store, settings: GateSettings, candidate: KernelRecord, baseline: KernelRecord | None,
                stream: str | None, *, junit: str | None, markdown: str | None, item: str | None,
                confirm: int = 0) -> GateOutcome:
    """Run, record, write and publish one gate, and send the notifications it made (and any left
    pending); with `confirm`, that many builds are first confirmed in qemu and the confirmation is
    recorded with the run."""
    stablelist = read_stablelist(settings.stablelist_path, candidate.machine)
    channels = channels_from_env()  # a bad $KABIGATE_SMTP is said before the gate, not after
    if settings.waiverdb_url is not None:  # a waiver given in WaiverDB since the last gate applies to this one
        imported = import_waivers(store, Target.from_env(settings.waiverdb_url, settings.testcase,
                                                         settings.product_version))
        if imported.added or imported.revoked:
            err.print(f"WaiverDB: {len(imported.added)} waivers imported, {len(imported.revoked)} revoked",
                      markup=False)
    with stages(list(GateStage)) as step:
        result = run_gate(store, candidate, baseline, stream=stream, policy=settings.policy,
                          waivers=(*settings.waivers, *store.waivers()), stablelist=stablelist,
                          driver=settings.driver, explain=settings.explain, rebuild=settings.rebuild,
                          signing=settings.signing, step=step)
        if junit:
            write_atomically(junit, gate_junit(result))
        if markdown:
            write_atomically(markdown, gate_markdown(result, settings.matrix_url))
        document = gate_json(result)
        if confirm:
            step(GateStage.CONFIRM)
        confirmations = _confirm(store, result, confirm) if confirm else []
        if confirm:
            document["qemu_confirmation"] = [c.as_json() for c in confirmations]
        step(GateStage.RECORD)
        run = record_gate(store, result, document)
        document["run"] = run.uuid
        published = None
        if settings.resultsdb_url:
            step(GateStage.PUBLISH)
            published = _publish(store, settings, run, item, settings.resultsdb_url)
            document["resultsdb"] = {"url": settings.resultsdb_url, "id": published}
    deliver_pending(store, channels)  # bounded: an endpoint that hangs or fails is left for later
    return GateOutcome(result, document, published, confirmations)


def _publish(store: Store, settings: GateSettings, run: GateRun, item: str | None, api_url: str) -> str:
    report = store.gate_report(run.uuid)
    # A run recorded before a gate against --baseline knew its stream: the scenario is its kernel's stream.
    report = dict(report, stream=stream_of(store.kernel(run.kernel_id), report["stream"]))
    payload = resultsdb_payload(report, item=item, testcase=settings.testcase, ref_url=settings.ref_url)
    return publish_gate(store, run, api_url, payload, os.environ.get("KABIGATE_RESULTSDB_TOKEN"))


@click.command()
@click.option("--candidate", metavar="KERNEL",
              help="The kernel to gate: a release in the store, or its files as `check -k` takes them "
                   "(comma-joined), which are ingested first (required unless --publish).")
@click.option("--publish", "publish_run", metavar="RUN",
              help="Instead of gating, publish this recorded gate run (the `run` of `gate --json`) to --resultsdb "
                   "as it was recorded; once: a run ResultsDB has already is not posted again.")
@click.option("--baseline", metavar="KERNEL", help="Compare with this kernel (default: the candidate's "
                                                    "predecessor in its stream).")
@click.option("--stream", metavar="NAME", help="The candidate's stream (its baseline is the kernel before it).")
@judging_options
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), metavar="FILE", help="Write JUnit XML.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write a Markdown summary (a merge request comment).")
@click.option("--item", metavar="NVR", help="ResultsDB item (default: kernel-<package version>).")
@click.option("--queue", is_flag=True, help="Enqueue for the workers (kabigate worker), which gate with their "
                                           "settings' policy and publish the result; kernel files are ingested first.")
@click.option("--confirm-in-qemu", "confirm", type=click.IntRange(min=0), default=0, metavar="N",
              help="Boot the candidate in qemu and insmod N gated builds (regressions first): the kernel's "
                   "verdicts beside the stored ones; a disagreement exits 1.")
@click.option("--explain/--no-explain", default=True, show_default=True,
              help="Name each CRC change's most likely cause, from the BTF of the kernels' stored images.")
@click.option("--rebuild/--no-rebuild", default=None,
              help="First rebuild each gating package that does not work on the candidate, from the source its "
                   "stored build was made from (kabigate build), against the candidate's headers among its "
                   "sources; the rebuilt modules are stored and judged (default: the policy's drivers.rebuild).")
@click.option("--sign-key", type=click.Path(dir_okay=False), metavar="KEY",
              help="Sign the rebuilt modules with this key (default: the policy's [signing]).")
@click.option("--sign-cert", type=click.Path(dir_okay=False), metavar="CERT", help="The signing key's certificate.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report.")
@store_option
def gate(store: Store, candidate: str | None, publish_run: str | None, baseline: str | None, stream: str | None,
         junit_path, markdown_path, item, queue: bool, confirm: int, explain: bool, rebuild: bool | None,
         sign_key: str | None, sign_cert: str | None, as_json: bool, **options) -> None:
    """Gate a candidate kernel on the stored driver builds. Exit 0 PASSED/INFO, 1 FAILED or
    NEEDS_INSPECTION, 2 error; with --publish, 0 once the run is published. The same release of
    every other architecture in the stream (6.1.0-56-arm64 beside 6.1.0-56-amd64) is gated too, each
    against its architecture's baseline, recorded and published as its own run; --junit and
    --markdown name theirs FILE.<arch>.EXT.

    \b
    Example:
      kabigate gate --candidate 6.1.0-53-amd64 --stream debian-6.1 --junit gate.xml --markdown gate.md
      kabigate gate --candidate 6.1.0-56-amd64 --rebuild --sign-key repo.key --sign-cert repo.crt
      kabigate gate --publish 0b9c6f7e-5a1d-4c2e-9f3b-2d8e4a6c1f00 --resultsdb https://resultsdb.example.org/api/v2.0
    """
    if publish_run is not None:
        given = [name for name, value in (("--candidate", candidate), ("--baseline", baseline), ("--stream", stream),
                                          ("--junit", junit_path), ("--markdown", markdown_path),
                                          ("--queue", queue or None), ("--confirm-in-qemu", confirm or None),
                                          ("--rebuild", rebuild), ("--sign-key", sign_key), ("--sign-cert", sign_cert))
                 if value is not None]
        if given:
            raise click.UsageError(f"--publish publishes a recorded run: {', '.join(given)} do not apply")
        _publish_recorded(store, publish_run, item, as_json, GateSettings.from_options(**options))
        return
    if candidate is None:
        raise click.UsageError("give --candidate KERNEL (or --publish RUN)")
    if queue:
        _queue_gate(store, candidate, baseline, stream, as_json,
                    given=[_option_name(name) for name, value in (("junit", junit_path), ("markdown", markdown_path),
                                                                   ("item", item), ("rebuild", rebuild),
                                                                   ("sign_key", sign_key), ("sign_cert", sign_cert),
                                                                   *options.items())
                           if value is not None and name != "testcase"])
        return
    settings = dataclasses.replace(GateSettings.from_options(**options), explain=explain).with_rebuild(
        rebuild, sign_key, sign_cert)
    candidate_record = _kernel(store, candidate, stream)
    given_baseline = _kernel(store, baseline, None) if baseline is not None else None
    chosen_stream = (stream_of(candidate_record, stream) if given_baseline is not None
                     else previous_in_stream(store, candidate_record, stream)[1])
    # The release on every architecture of the stream, each against its own baseline: one gate run each.
    outcomes = []
    for release in release_architectures(store, candidate_record, _release_stream(candidate_record, chosen_stream)):
        own = release.id == candidate_record.id
        baseline_record = (same_release_of(store, given_baseline, release.machine) if given_baseline is not None
                           else previous_in_stream(store, release, chosen_stream)[0])
        outcomes.append(gate_kernel(
            store, settings if own else dataclasses.replace(settings, rebuild=False), release, baseline_record,
            chosen_stream, junit=_per_architecture(junit_path, release, own),
            markdown=_per_architecture(markdown_path, release, own), item=item, confirm=confirm if own else 0))
    outcome = outcomes[0]
    confirmations = outcome.confirmations
    passed = all(o.result.passed for o in outcomes)
    if as_json:
        emit_json(dict(outcome.document, **architectures_json(outcomes)))
    else:
        for other in outcomes:
            _print_summary(other.result)
        if len(outcomes) > 1:
            out.print(f"all architectures: {'PASSED' if passed else 'NOT PASSED'} ("
                      + ", ".join(f"{o.result.candidate.machine} {o.result.outcome}" for o in outcomes) + ")",
                      markup=False)
        for confirmation in confirmations:
            kernel = "loads" if confirmation.kernel_loads else confirmation.kernel_reason
            stored = "loads" if confirmation.stored_loads else confirmation.stored_reason
            say(f"  qemu: {'agrees' if confirmation.agrees else 'DISAGREES'}  {confirmation.build}: kernel "
                f"{kernel}, kabigate {stored}")
        for published in outcomes:
            if published.published is not None:
                err.print(f"published to {settings.resultsdb_url}: result {published.published} "
                          f"({published.result.candidate.machine})", markup=False)
    agreed = all(c.agrees for c in confirmations)
    sys.exit(EXIT_OK if passed and agreed else EXIT_INCOMPATIBLE)


def _per_architecture(path: str | None, kernel: KernelRecord, own: bool) -> str | None:
    """Where another architecture's report goes: gate.xml -> gate.aarch64.xml."""
    if path is None or own:
        return path
    stem, suffix = os.path.splitext(path)
    return f"{stem}.{kernel.machine}{suffix}"


def architectures_json(outcomes: list[GateOutcome]) -> dict:
    """What `gate --json` adds to the candidate's report: each architecture's gate of the release (the
    candidate's first), and the outcome of them all (the most severe)."""
    return {"outcome_all_architectures": max((o.result.outcome for o in outcomes), key=OUTCOMES.index),
            "architectures": [{"arch": o.result.candidate.machine, "candidate": o.result.candidate.release,
                               "baseline": o.result.baseline.release if o.result.baseline else None,
                               "outcome": o.result.outcome, "run": o.document["run"],
                               "resultsdb_id": o.published} for o in outcomes]}


def _publish_recorded(store: Store, run_id: str, item: str | None, as_json: bool, settings: GateSettings) -> None:
    """gate --publish: a recorded run to ResultsDB as it was, its report not recomputed."""
    if not settings.resultsdb_url:
        raise click.UsageError("--publish: give --resultsdb URL")
    run = store.gate_run(run_id)
    published = _publish(store, settings, run, item, settings.resultsdb_url)
    if as_json:
        emit_json({"run": run.uuid, "outcome": run.outcome,
                   "resultsdb": {"url": settings.resultsdb_url, "id": published}})
    else:
        out.print(f"gate run {run.uuid} ({run.outcome}) published to {settings.resultsdb_url}: result {published}",
                  markup=False)


def _confirm(store: Store, result, count: int):
    from kabigate.boot.qemu import qemu_available
    from kabigate.services.confirm import confirm_in_qemu
    why = qemu_available()
    if why is not None:
        raise InputError(f"--confirm-in-qemu: cannot boot a kernel here: {why}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KVM falling back to TCG is no news for a gate
        return confirm_in_qemu(store, result, count)


@click.command()
@click.argument("repositories", nargs=-1, required=True, metavar="REPO_OR_URL...")
@click.option("--stream", required=True, metavar="NAME", help="The stream these repositories' kernels form.")
@judging_options
@click.option("--output-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Write <release>.junit.xml and <release>.md for each gated kernel here.")
@click.option("--interval", type=click.IntRange(min=10), default=600, show_default=True,
              help="Seconds between polls.")
@click.option("--once", is_flag=True, help="Poll once, gate what is new, and exit (for cron).")
@click.option("--queue", is_flag=True,
              help="Enqueue each new kernel's ingest and gate for the workers (kabigate worker), once, instead of "
                   "gating here: they gate with their settings' policy, and its rebuilds go to the build workers.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON report line per gated kernel (with --queue: per enqueued kernel, its task key).")
@store_option(creates=True)
def watch(store: Store, repositories: tuple[str, ...], stream: str, output_dir: str | None, interval: int,
          once: bool, queue: bool, as_json: bool, **options) -> None:
    """Poll kernel repositories (yum repodata, a folder of .debs, a Debian Packages index); ingest
    and gate each kernel not gated yet, oldest first, once. Restart-safe: a kernel half-processed
    when the watcher died is processed again, and a gate run is never published twice. With
    --queue, each new kernel is enqueued for the workers instead, once: its task's key (the
    packages and the stream) is not enqueued again by a later poll or watcher.

    \b
    Example:
      kabigate watch --stream debian-6.1 --once https://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz
      kabigate watch --stream debian-6.1 --queue /srv/mirror/kernels/
    """
    if queue:
        _refuse_with_queue([_option_name(name) for name, value in (("output_dir", output_dir), *options.items())
                            if value is not None and name != "testcase"])
        _watch_queue(store, repositories, stream, interval, once, as_json)
        return
    settings = GateSettings.from_options(**options)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
    while True:
        for kernel in kernels_to_gate(store, _offered(repositories), settings.resultsdb_url):
            _watch_one(store, settings, kernel, stream, output_dir, as_json)
        if once:
            return
        time.sleep(interval)


def _offered(repositories: tuple[str, ...]) -> list[OfferedKernel]:
    return sorted((k for location in repositories for k in offered_kernels(location)),
                  key=lambda k: version_key(k.version))


def _watch_queue(store: Store, repositories: tuple[str, ...], stream: str, interval: int, once: bool,
                 as_json: bool) -> None:
    """watch --queue: each kernel not gated yet is enqueued as one ingest-and-gate request; its key
    makes it once across polls and restarts (workers.app.enqueue_once)."""
    from kabigate.workers.app import configure, enqueue_once
    from kabigate.workers.config import load_settings
    from kabigate.workers.work import ingest_kernel_request

    configure(load_settings())
    while True:
        for kernel in kernels_to_gate(store, _offered(repositories), None):
            # the paths as the workers see them, the same whatever folder the watcher runs in
            paths = [p if is_url(p) else os.path.abspath(p) for p in kernel.paths]
            task = enqueue_once(store, ingest_kernel_request(paths, stream, gate=True))
            if task is None:
                continue
            if as_json:
                sys.stdout.write(json.dumps(watch_queued_json(task, kernel, stream)) + "\n")
                sys.stdout.flush()
            else:
                out.print(f"queued: ingest and gate of {kernel.label} in {stream}: {task.kind} {task.key}",
                          markup=False)
        if once:
            return
        time.sleep(interval)


def watch_queued_json(task: TaskRecord, kernel: OfferedKernel, stream: str) -> dict:
    """`watch --queue --json`'s line per enqueued kernel: its task, and the kernel as the repository
    names it (the release of a Debian kernel, the package name-version-release.arch of a yum one)."""
    return {"key": task.key, "kind": task.kind, "state": task.state, "kernel": kernel.label,
            "version": kernel.version, "stream": stream}


def _watch_one(store: Store, settings: GateSettings, offered, stream: str, output_dir: str | None,
               as_json: bool) -> None:
    record = next((k for k in store.kernels() if offered.source in k.sources), None)
    runs = store.gate_runs_of(record.id) if record is not None else []
    # Gated before the watcher died, not yet published: publish that run, do not gate again (a kernel
    # gated already is offered again only when publishing).
    if runs and settings.resultsdb_url:
        published = _publish(store, settings, runs[0], None, settings.resultsdb_url)
        err.print(f"{offered.label}: published the earlier gate run {runs[0].uuid}: result {published}",
                  markup=False)
        return
    with progress(f"reading {offered.label}", len(offered.paths)) as advance:
        kernel = load_kernel(list(offered.paths), None, advance)
    with progress(f"judging driver builds on {kernel.release}", len(store.driver_builds())) as advance:
        record = ingest_kernel(store, kernel, stream, advance).record
    baseline, _ = previous_in_stream(store, record, stream)
    files = {kind: os.path.join(output_dir, f"{record.release}.{kind}") if output_dir else None
             for kind in ("junit.xml", "md")}
    outcome = gate_kernel(store, settings, record, baseline, stream, junit=files["junit.xml"], markdown=files["md"],
                          item=None)
    if as_json:
        sys.stdout.write(json.dumps(outcome.document) + "\n")
        sys.stdout.flush()
    else:
        _print_summary(outcome.result)


def _option_name(parameter: str) -> str:
    named = {"resultsdb_url": "--resultsdb", "waiverdb_url": "--waiverdb"}
    return named.get(parameter) or "--" + parameter.removesuffix("_path").replace("_", "-")


def _queue_gate(store: Store, candidate: str, baseline: str | None, stream: str | None, as_json: bool,
                given: list[str]) -> None:
    from kabigate.cli.service import queue_requests
    from kabigate.workers.work import gate_request, ingest_kernel_request

    _refuse_with_queue(given)
    paths = [p for p in candidate.split(",") if p]
    if _names_files(paths):
        if baseline is not None or stream is None:
            raise click.UsageError("--queue with kernel files: give --stream (the baseline is the kernel before it)")
        request = ingest_kernel_request([p if is_url(p) else os.path.abspath(p) for p in paths], stream, gate=True)
    else:
        # every architecture of the release in the stream, one gate each, as gate without --queue does
        record = resolve_kernel(store, candidate, stream)
        given_baseline = resolve_kernel(store, baseline) if baseline is not None else None
        requests = []
        for kernel in release_architectures(store, record, _release_stream(record, stream)):
            own_baseline = same_release_of(store, given_baseline, kernel.machine)
            requests.append(gate_request(kernel.release, stream, own_baseline.release if own_baseline else None,
                                         once=False))
        queue_requests(store, requests, as_json)
        return
    queue_requests(store, [request], as_json)


def _names_files(paths: list[str]) -> bool:
    """Whether a kernel argument names files or http(s) URLs (as `watch --queue` takes them), not a stored release."""
    return any(os.path.exists(p) or is_url(p) for p in paths)


def _refuse_with_queue(given: list[str]) -> None:
    """The options that apply only in this process, refused with --queue."""
    if given:
        raise click.UsageError(f"--queue: the workers gate with their settings; {', '.join(given)} do not apply")


def _release_stream(candidate: KernelRecord, stream: str | None) -> str | None:
    """The stream whose other architectures a gate of the candidate covers: the one given, else its only one."""
    streams = [name for name, _ in candidate.streams]
    return stream or (streams[0] if len(streams) == 1 else None)


def _read(path: str) -> bytes:
    return read_capped(path, MAX_POLICY_FILE, "larger than a policy file can be")


def _kernel(store: Store, argument: str, stream: str | None) -> KernelRecord:
    """A stored kernel by release, or kernel files (ingested into `stream`)."""
    paths = [p for p in argument.split(",") if p]
    if not _names_files(paths):
        return resolve_kernel(store, argument, stream)
    with progress(f"reading {os.path.basename(paths[0])}", len(paths)) as advance:
        kernel = load_kernel(paths, None, advance)
    with progress(f"judging driver builds on {kernel.release}", len(store.driver_builds())) as advance:
        return ingest_kernel(store, kernel, stream, advance).record


def _print_summary(result) -> None:
    style = OUTCOME_STYLE[result.outcome]
    baseline = result.baseline.release if result.baseline else "none (first of its stream)"
    headline = (f"  gate of {result.candidate.release} ({result.candidate.machine or 'architecture unknown'}) "
                f"against {baseline}" + (f" in {result.stream}" if result.stream else ""))
    out.print(Text.assemble((result.outcome, style), headline), soft_wrap=not TERMINAL)  # at words on a terminal
    if result.stablelist:
        say(f"  stablelist: {result.stablelist}")
    counts = ", ".join(f"{result.count(k)} {k.replace('_', ' ')}"
                       for k in GateClass)
    say(f"  driver builds: {counts}; {result.coverage} gating")
    working = sum(1 for finding in result.packages if finding.after.works)
    say(f"  packages: {working} of {len(result.packages)} work on {result.candidate.release}, "
        f"{len(result.broken_packages)} broken by it")
    for rebuild in result.rebuilds:  # those not tried are in the notes
        if rebuild.outcome is not None:
            signed = f", signed by {rebuild.signer}" if rebuild.signer else ""
            say(f"  rebuilt package {rebuild.driver} for {result.candidate.release}: {rebuild.outcome} "
                f"({rebuild.seconds:.1f} s{signed})" + (f": {rebuild.reason}" if rebuild.reason else ""))
    for finding in result.broken_packages:
        waived = "  waived by " + ", ".join(w.source for w in finding.waivers) if finding.waivers else ""
        say(f"  {finding.outcome:<16} package {finding.driver}: {finding.before.state} -> "
            f"{finding.after.state}: {why_not(finding.after)}{waived}")
    for finding in result.regressions:
        symbols = sorted({s.name + (" (stablelisted)" if s.stablelisted else "") for s in finding.symbols})
        codes = sorted({reason["code"] for reason in finding.reasons})
        waived = "  waived by " + ", ".join(w.source for w in finding.waivers) if finding.waivers else ""
        build = finding.build
        say(f"  {finding.outcome:<16} {build.driver} {build.version or ''} (built for {build.built_for}): "
            f"{', '.join(codes)}: {', '.join(symbols[:8])}{' ...' if len(symbols) > 8 else ''}{waived}")
    for violation in result.kernel_findings:
        say(f"  {violation.outcome:<16} stablelisted {violation.symbol}: {violation.change} "
            f"{violation.old} -> {violation.new}")
    if result.export_changes:
        changes = result.export_changes
        say(f"  exports: {changes['removed_stablelisted'] + changes['removed_unlisted']} removed, "
            f"{changes['changed_stablelisted'] + changes['changed_unlisted']} changed "
            f"({changes['changed_stablelisted']} on the stablelist), {changes['added']} added")
    if result.changes_in_use:
        used = ", ".join(f"{c.symbol} ({c.builds})" for c in result.changes_in_use[:10])
        more = f" and {len(result.changes_in_use) - 10} more" if len(result.changes_in_use) > 10 else ""
        say(f"  changed exports the stored builds use: {used}{more}")
    for note in result.notes:
        say(f"  note: {note}")

