"""What the store keeps of judging: each (driver build, kernel) cell's verdict under a version of
the rules, with its detail, and the imports and greylists that symbol demand reads."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select

from kabigate.store import codec
from kabigate.store import schema as t
from kabigate.store.base import CHUNK, StoreBase
from kabigate.store.records import same_architecture


@dataclass(frozen=True)
class Cell:
    """One driver build on one kernel, as stored."""

    build_id: int
    kernel_id: int
    rules_version: int
    loads: bool
    modules: int
    modules_loading: int
    first_reason: str | None
    failing_symbols: int


@dataclass(frozen=True)
class StoredVerdict:
    """A cell and its detail (each module: its reasons and warnings), ready to be saved."""

    cell: Cell
    detail: list[dict]



class VerdictStore(StoreBase):
    """Verdicts by cell: which are missing or stale, saving them, reading them back."""

    def pairs_needing_verdicts(self, rules_version: int, *, kernel_ids: list[int] | None = None,
                               build_ids: list[int] | None = None) -> list[tuple[int, int]]:
        """(build, kernel) pairs with no verdict, or one made by other rules, among those given."""
        # builds this transaction wrote (an ingest): no verdict yet, their machines known (their modules kept)
        written = kernel_ids is None and build_ids is not None and self._written_builds.issuperset(build_ids)
        query = select(t.verdict.c.build_id, t.verdict.c.kernel_id).where(t.verdict.c.rules_version == rules_version)
        # Only the verdicts of the kernels (or builds) asked about: a store holds hundreds of thousands.
        if kernel_ids is not None and len(kernel_ids) <= CHUNK:
            query = query.where(t.verdict.c.kernel_id.in_(kernel_ids))
        elif build_ids is not None and len(build_ids) <= CHUNK:
            query = query.where(t.verdict.c.build_id.in_(build_ids))
        with self._reading() as connection:
            kernels = dict(connection.execute(select(t.kernel.c.id, t.kernel.c.machine)).all())
            if written and build_ids is not None:
                builds = {b: modules[0].machine if (modules := self._builds[b][1]) else None for b in build_ids}
                current: set = set()
            else:
                # only the builds asked about (a new one's verdicts: one build of thousands)
                builds = self._build_machines(connection, build_ids if build_ids is not None
                                              and len(build_ids) <= CHUNK else None)
                current = set(connection.execute(query).all())
        return [(b, k) for k in (kernel_ids if kernel_ids is not None else kernels)
                for b in (build_ids if build_ids is not None else builds)
                if (b, k) not in current and same_architecture(builds.get(b), kernels.get(k))]

    def count_pairs(self) -> int:
        """(build, kernel) pairs that are judged: each build on each kernel of its architecture."""
        with self._reading() as connection:
            kernels = Counter(connection.scalars(select(t.kernel.c.machine)))
            builds = Counter(self._build_machines(connection).values())
        return sum(count * (sum(builds.values()) if machine is None else builds[machine] + builds[None])
                   for machine, count in kernels.items())

    @staticmethod
    def _build_machines(connection, build_ids: list[int] | None = None) -> dict[int, str | None]:
        """Each build's (of these) architecture: its first module's (a build without modules: None)."""
        query = (select(t.build_module.c.build_id, t.module.c.machine)
                 .join(t.module, t.module.c.id == t.build_module.c.module_id).where(t.build_module.c.position == 0))
        if build_ids is not None:
            return dict.fromkeys(build_ids) | dict(
                connection.execute(query.where(t.build_module.c.build_id.in_(build_ids))).all())
        machines: dict[int, str | None] = dict.fromkeys(connection.scalars(select(t.driver_build.c.id)))
        machines.update(connection.execute(query).all())
        return machines

    def save_verdicts(self, verdicts: list[StoredVerdict]) -> None:
        """Store verdicts, replacing those of the same cells (an upsert, in key order: two `matrix`
        runs recomputing the same stale cells at once both succeed; of one cell given twice, the last)."""
        if not verdicts:
            return
        cells = {(v.cell.build_id, v.cell.kernel_id): v for v in verdicts}
        rows = [{"build_id": v.cell.build_id, "kernel_id": v.cell.kernel_id, "rules_version": v.cell.rules_version,
                 "loads": v.cell.loads, "modules": v.cell.modules, "modules_loading": v.cell.modules_loading,
                 "first_reason": v.cell.first_reason, "failing_symbols": v.cell.failing_symbols,
                 "detail": codec.pack(v.detail)} for _, v in sorted(cells.items())]
        replaced = ("rules_version", "loads", "modules", "modules_loading", "first_reason", "failing_symbols",
                    "detail")
        if self.engine.dialect.name == "postgresql":
            self._insert_rows(t.verdict, rows, "(build_id, kernel_id) DO UPDATE SET "
                            + ", ".join(f"{column} = EXCLUDED.{column}" for column in replaced))
            return
        insert = self._insert(t.verdict)
        self._writing().execute(
            insert.on_conflict_do_update(index_elements=[t.verdict.c.build_id, t.verdict.c.kernel_id],
                                         set_={column: insert.excluded[column] for column in replaced}), rows)

    def cells(self, rules_version: int, *, build_ids: list[int] | None = None,
              kernel_ids: list[int] | None = None) -> dict[tuple[int, int], Cell]:
        """Current verdicts, keyed by (build id, kernel id)."""
        query = select(t.verdict.c.build_id, t.verdict.c.kernel_id, t.verdict.c.rules_version, t.verdict.c.loads,
                       t.verdict.c.modules, t.verdict.c.modules_loading, t.verdict.c.first_reason,
                       t.verdict.c.failing_symbols).where(t.verdict.c.rules_version == rules_version)
        wanted_builds = None if build_ids is None else set(build_ids)
        wanted_kernels = None if kernel_ids is None else set(kernel_ids)
        if kernel_ids is not None and build_ids is not None and len(kernel_ids) + len(build_ids) <= CHUNK:
            # a page of a matrix: only its cells are read (the primary key's build_id comes first)
            query = query.where(t.verdict.c.build_id.in_(build_ids), t.verdict.c.kernel_id.in_(kernel_ids))
        elif kernel_ids is not None and len(kernel_ids) <= CHUNK:
            query = query.where(t.verdict.c.kernel_id.in_(kernel_ids))
        elif build_ids is not None and len(build_ids) <= CHUNK:
            query = query.where(t.verdict.c.build_id.in_(build_ids))
        with self._reading() as connection:
            rows = connection.execute(query).all()
        return {(row.build_id, row.kernel_id): Cell(*row) for row in rows
                if (wanted_builds is None or row.build_id in wanted_builds)
                and (wanted_kernels is None or row.kernel_id in wanted_kernels)}

    def cell_words(self, rules_version: int, kernel_ids: list[int]) -> list[tuple[int, int, bool, str | None, int]]:
        """(build id, kernel id, loads, first reason, failing symbols) of every current verdict on these
        kernels, in one query on the index ix_verdict_cells (no verdict's detail is read): a whole matrix."""
        v = t.verdict.c
        query = select(v.build_id, v.kernel_id, v.loads, v.first_reason, v.failing_symbols).where(
            v.rules_version == rules_version)
        if len(kernel_ids) <= CHUNK:
            query = query.where(v.kernel_id.in_(kernel_ids))
        wanted = set(kernel_ids)
        with self._reading() as connection:
            # the driver's own rows: a SQLAlchemy Row each costs more than the query itself (~2x, 200,000 cells)
            rows = connection.execute(query).cursor.fetchall()
        return [(b, k, bool(loads), reason, symbols) for b, k, loads, reason, symbols in rows if k in wanted]

    def cell_counts(self, rules_version: int, kernel_ids: list[int]) -> list[tuple[int, bool, str | None, int]]:
        """(build id, loads, first reason, cells) over these kernels' current verdicts: a matrix's totals
        and each build's failing reasons without reading every cell."""
        counts: dict[tuple[int, bool, str | None], int] = {}
        with self._reading() as connection:
            for start in range(0, len(kernel_ids), CHUNK):
                for build_id, loads, reason, count in connection.execute(
                        select(t.verdict.c.build_id, t.verdict.c.loads, t.verdict.c.first_reason, func.count())
                        .where(t.verdict.c.rules_version == rules_version,
                               t.verdict.c.kernel_id.in_(kernel_ids[start:start + CHUNK]))
                        .group_by(t.verdict.c.build_id, t.verdict.c.loads, t.verdict.c.first_reason)):
                    key = (build_id, bool(loads), reason)
                    counts[key] = counts.get(key, 0) + count
        return [(*key, count) for key, count in counts.items()]

    def loading_cells(self, rules_version: int, kernel_ids: list[int]) -> list[tuple[int, int]]:
        """(build id, kernel id) of every cell that loads on these kernels: which packages work along a
        stream without reading (or building) a Cell for each of its failing cells."""
        pairs: list[tuple[int, int]] = []
        with self._reading() as connection:
            for start in range(0, len(kernel_ids), CHUNK):
                pairs += (tuple(row) for row in connection.execute(
                    select(t.verdict.c.build_id, t.verdict.c.kernel_id)
                    .where(t.verdict.c.rules_version == rules_version, t.verdict.c.loads.is_(True),
                           t.verdict.c.kernel_id.in_(kernel_ids[start:start + CHUNK]))))
        return pairs

    def verdict_detail(self, build_id: int, kernel_id: int) -> list[dict] | None:
        """Each module's reasons and warnings for one cell, as saved."""
        with self._reading() as connection:
            blob = connection.scalar(select(t.verdict.c.detail).where(t.verdict.c.build_id == build_id,
                                                                      t.verdict.c.kernel_id == kernel_id))
        return None if blob is None else codec.unpack(blob)

    def verdict_details(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], list[dict]]:
        """Several cells' details at once, keyed by (build id, kernel id)."""
        by_kernel: dict[int, list[int]] = {}
        for build_id, kernel_id in keys:
            by_kernel.setdefault(kernel_id, []).append(build_id)
        details = {}
        with self._reading() as connection:
            for kernel_id, build_ids in by_kernel.items():
                for start in range(0, len(build_ids), CHUNK):
                    for build_id, blob in connection.execute(
                            select(t.verdict.c.build_id, t.verdict.c.detail)
                            .where(t.verdict.c.kernel_id == kernel_id,
                                   t.verdict.c.build_id.in_(build_ids[start:start + CHUNK]))):
                        details[(build_id, kernel_id)] = codec.unpack(blob)
        return details

    # -- demand -------------------------------------------------------------------------------

    def imports_of(self, build_ids: list[int]) -> list[tuple[int, str, int | None]]:
        """(build id, symbol, the module's CRC for it) for every import of these builds' modules."""
        rows: list[tuple[int, str, int | None]] = []
        with self._reading() as connection:
            for start in range(0, len(build_ids), CHUNK):
                rows += (tuple(row) for row in connection.execute(
                    select(t.build_module.c.build_id, t.symbol.c.name, t.module_import.c.crc)
                    .join(t.module_import, t.module_import.c.module_id == t.build_module.c.module_id)
                    .join(t.symbol, t.symbol.c.id == t.module_import.c.symbol_id)
                    .where(t.build_module.c.build_id.in_(build_ids[start:start + CHUNK]))))
        return rows

    def importers_of(self, name: str) -> list[tuple[int, str, int | None]]:
        """(build id, module path, the module's CRC for it) of every stored module importing the symbol `name`."""
        with self._reading() as connection:
            return [tuple(row) for row in connection.execute(
                select(t.build_module.c.build_id, t.build_module.c.path, t.module_import.c.crc)
                .join(t.module_import, t.module_import.c.module_id == t.build_module.c.module_id)
                .join(t.symbol, t.symbol.c.id == t.module_import.c.symbol_id)
                .where(t.symbol.c.name == name).order_by(t.build_module.c.build_id, t.build_module.c.position))]

    def greylists(self, build_ids: list[int]) -> dict[int, tuple[str, ...]]:
        """The greylist.txt each of these builds' packages shipped (ELRepo kmods), when one did."""
        found = {}
        with self._reading() as connection:
            for start in range(0, len(build_ids), CHUNK):
                for build_id, greylist in connection.execute(
                        select(t.driver_build.c.id, t.driver_build.c.greylist)
                        .where(t.driver_build.c.id.in_(build_ids[start:start + CHUNK]),
                               t.driver_build.c.greylist.is_not(None))):
                    found[build_id] = tuple(json.loads(greylist))
        return found
