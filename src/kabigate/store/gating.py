"""What the store keeps of gating: each gate run (its outcome, report and where it was published)
and the waivers the gate applies."""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from kabigate.errors import InputError
from kabigate.formats.gatepolicy import WAIVER_KEYS, Waiver, waiver_from_mapping
from kabigate.store import codec
from kabigate.store import schema as t
from kabigate.store.base import StoreBase, utc_now
from kabigate.vocabulary import WaiverLink


@dataclass(frozen=True)
class GateRun:
    uuid: str
    kernel_id: int
    baseline_id: int | None
    stream: str | None
    outcome: str
    created_at: datetime.datetime
    published_to: str | None
    resultsdb_id: str | None



@dataclass(frozen=True)
class WaiverDbLink:
    """A stored waiver's copy in WaiverDB: the waiver it waives there for one item and testcase."""
    waiver_id: int
    api_url: str
    waiverdb_id: str
    direction: WaiverLink
    subject_identifier: str
    testcase: str
    product_version: str
    scenario: str | None


class GateStore(StoreBase):
    """Gate runs and waivers."""

    def record_gate_run(self, kernel_id: int, baseline_id: int | None, stream: str | None, outcome: str,
                        report: dict) -> GateRun:
        run = uuid.uuid4()
        self._writing().execute(t.gate_run.insert().values(
            uuid=str(run), kernel_id=kernel_id, baseline_id=baseline_id, stream=stream, outcome=outcome,
            report=codec.pack(report), created_at=utc_now()))
        return self.gate_run(str(run))

    def mark_published(self, run: str, published_to: str, resultsdb_id: str) -> None:
        self._writing().execute(t.gate_run.update().where(t.gate_run.c.uuid == run)
                                .values(published_to=published_to, resultsdb_id=resultsdb_id))

    def gate_run(self, run: str) -> GateRun:
        runs = self.gate_runs(t.gate_run.c.uuid == run)
        if not runs:
            raise InputError(f"no gate run {run} in the store")
        return runs[0]

    def gate_runs_of(self, kernel_id: int) -> list[GateRun]:
        return self.gate_runs(t.gate_run.c.kernel_id == kernel_id)

    def gate_runs(self, *where) -> list[GateRun]:
        """Gate runs, newest first."""
        with self._reading() as connection:
            rows = connection.execute(select(t.gate_run).where(*where).order_by(t.gate_run.c.id.desc())).all()
        return [GateRun(row.uuid, row.kernel_id, row.baseline_id, row.stream, row.outcome, row.created_at,
                        row.published_to, row.resultsdb_id) for row in rows]

    def gate_report(self, run: str) -> dict:
        with self._reading() as connection:
            blob = connection.scalar(select(t.gate_run.c.report).where(t.gate_run.c.uuid == run))
        if blob is None:
            raise InputError(f"no gate run {run} in the store")
        return codec.unpack(blob)

    # -- waivers ------------------------------------------------------------------------------

    def add_waiver(self, waiver: Waiver) -> int:
        """Store a waiver (checked as a waivers file's are); its id."""
        checked = _checked_waiver({key: getattr(waiver, key) for key in WAIVER_KEYS}, "waiver")
        return self._writing().execute(t.waiver.insert().values(
            driver=checked.driver, symbol=checked.symbol, kernel=checked.kernel, reason=checked.reason,
            who=checked.who, expires=checked.expires, created_at=utc_now()).returning(t.waiver.c.id)).scalar_one()

    def waivers(self, include_revoked: bool = False) -> list[Waiver]:
        """Stored waivers, oldest first; each with its id and source "store#ID"."""
        query = select(t.waiver).order_by(t.waiver.c.id)
        if not include_revoked:
            query = query.where(t.waiver.c.revoked_at.is_(None))
        with self._reading() as connection:
            rows = connection.execute(query).all()
            imported = {row.waiver_id: row.waiverdb_id for row in connection.execute(
                select(t.waiver_link.c.waiver_id, t.waiver_link.c.waiverdb_id)
                .where(t.waiver_link.c.direction == WaiverLink.IMPORTED))}
        # One imported from WaiverDB says so wherever it applied (a published result's waived_by).
        return [dataclasses.replace(_checked_waiver({key: getattr(row, key) for key in WAIVER_KEYS},
                                                    f"store#{row.id}", row.id),
                                    source=f"store#{row.id}" + (f" (WaiverDB {imported[row.id]})"
                                                                if row.id in imported else ""),
                                    created_at=row.created_at, revoked_at=row.revoked_at) for row in rows]

    def link_waiver(self, link: WaiverDbLink) -> None:
        """Note that stored waiver `link.waiver_id` is WaiverDB waiver `link.waiverdb_id` at `link.api_url`."""
        self._writing().execute(t.waiver_link.insert().values(dataclasses.asdict(link)))

    def waiver_links(self, api_url: str) -> list[WaiverDbLink]:
        """The stored waivers' copies at this WaiverDB API."""
        with self._reading() as connection:
            rows = connection.execute(select(t.waiver_link).where(t.waiver_link.c.api_url == api_url)
                                      .order_by(t.waiver_link.c.waiver_id)).all()
        return [WaiverDbLink(row.waiver_id, row.api_url, row.waiverdb_id, WaiverLink(row.direction),
                             row.subject_identifier, row.testcase, row.product_version, row.scenario) for row in rows]

    def revoke_waiver(self, waiver_id: int) -> Waiver:
        """Revoke a stored waiver (it is kept, no longer applied); the waiver as revoked."""
        connection = self._writing()
        row = connection.execute(select(t.waiver.c.revoked_at).where(t.waiver.c.id == waiver_id)).first()
        if row is None:
            raise InputError(f"no waiver {waiver_id} in the store")
        if row.revoked_at is not None:
            raise InputError(f"waiver {waiver_id} was already revoked on {row.revoked_at:%Y-%m-%d %H:%M}")
        connection.execute(t.waiver.update().where(t.waiver.c.id == waiver_id).values(revoked_at=utc_now()))
        return next(w for w in self.waivers(include_revoked=True) if w.id == waiver_id)


def _checked_waiver(fields: dict, source: str, waiver_id: int | None = None) -> Waiver:
    """A waiver checked by the waivers file's rules (a stored one was checked when added, and again
    when read: a row written by hand is no way around them)."""
    return waiver_from_mapping({k: v for k, v in fields.items() if v is not None}, source, source, waiver_id)
