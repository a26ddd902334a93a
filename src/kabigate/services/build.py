"""A driver package's build (builder/source.py: kabigate build, gate --rebuild) and its outcome
stored: built modules ingested as a driver build (judged on every stored kernel, like `ingest
drivers` of a module tree) remembering the source they were built from, a failure or an exclusion
recorded with its error line and bounded log."""

from __future__ import annotations

import dataclasses
import os

from kabigate.builder.result import BuildResult
from kabigate.errors import InputError
from kabigate.model import driver_name
from kabigate.reports.verdicts import build_record_json
from kabigate.services import Advance, no_progress
from kabigate.services.ingest import RELEASE, checked_name, ingest_driver_build, read_driver_builds
from kabigate.store import Store
from kabigate.vocabulary import BuildOutcome


def store_build(store: Store, result: BuildResult, source: str, advance: Advance = no_progress) -> dict:
    """Store `result` (built from `source`); what was stored, as kabigate build --json shows it."""
    checked_name(result.package, "driver name")
    checked_name(result.kernel_release, "kernel release", RELEASE)
    if result.outcome == BuildOutcome.BUILT:
        (build,) = read_driver_builds([os.path.commonpath(result.modules) if len(result.modules) > 1
                                       else str(result.modules[0].parent)], name=result.package, version=result.version)
        ingested = ingest_driver_build(store, dataclasses.replace(build, source=source, built_from=source), advance)
        return {"build": dict(build_record_json(ingested.record), created=ingested.created,
                              verdicts=ingested.verdicts)}
    if result.version is None:
        raise InputError(f"{result.package}: a failed build is stored with its version: give --package-version")
    with store.transaction():
        # error is NOT NULL in the store: a result without one is stored with its outcome's word
        created = store.record_build_failure(driver_name(result.package), result.version, result.kernel_release,
                                             result.error or str(result.outcome), outcome=result.outcome,
                                             log=result.log)
    return {"failure": {"driver": driver_name(result.package), "version": result.version,
                        "kernel_release": result.kernel_release,
                        "outcome": result.outcome, "created": created}}


def build_log_json(store: Store, driver: str, version: str, kernel_release: str) -> dict | None:
    """A recorded failed or excluded build with its bounded log (`build-log`, /api/v1/build-logs): None if
    there is no such record; `log` null when none was kept (recorded by `ingest build-failure`, or before 0007)."""
    found = store.build_log(driver, version, kernel_release)
    if found is None:
        return None
    outcome, log = found
    (failure,) = [f for f in store.build_failures(driver)
                  if (f.driver, f.version, f.kernel_release) == (driver, version, kernel_release)]
    return {"driver": driver, "version": version, "kernel_release": kernel_release,
            "outcome": outcome or BuildOutcome.FAILED, "error": failure.error, "log": log}
