"""Managing what the store holds: removing kernels and driver builds with every row that depends on
them, renaming streams, moving a kernel between streams, and pruning what nothing needs any more.
Each is one call inside one `Store.transaction()`: all of it happens, or none."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, exists, or_, select, update

from kabigate.errors import InputError
from kabigate.store import schema as t
from kabigate.store.records import RecordStore


@dataclass
class Removed:
    """Rows a removal or a prune deleted, by what they were."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, rows: int) -> None:
        if rows:
            self.counts[what] = self.counts.get(what, 0) + rows


class Upkeep(RecordStore):
    def remove_kernels(self, release: str) -> Removed:
        """Remove every stored kernel of `release` (each flavor), its verdicts, its places in streams
        and its gate runs; a gate run that had it as baseline keeps its report, without the link."""
        connection = self._writing()
        kernel_ids = [row.id for row in self.find_kernels(release)]
        if not kernel_ids:
            raise InputError(f"no kernel {release!r} in the store")
        removed = Removed()
        removed.add("verdicts", connection.execute(delete(t.verdict).where(t.verdict.c.kernel_id.in_(kernel_ids)))
                    .rowcount)
        connection.execute(update(t.gate_run).where(t.gate_run.c.baseline_id.in_(kernel_ids)).values(baseline_id=None))
        removed.add("gate runs", connection.execute(delete(t.gate_run).where(t.gate_run.c.kernel_id.in_(kernel_ids)))
                    .rowcount)
        streams = connection.execute(select(t.stream.c.name).join(t.stream_kernel).where(
            t.stream_kernel.c.kernel_id.in_(kernel_ids)).distinct()).scalars().all()
        connection.execute(delete(t.stream_kernel).where(t.stream_kernel.c.kernel_id.in_(kernel_ids)))
        removed.add("kernels", connection.execute(delete(t.kernel).where(t.kernel.c.id.in_(kernel_ids))).rowcount)
        for stream in streams:
            self._renumber_stream(stream)
        return removed

    def remove_builds(self, driver: str, version: str | None = None) -> Removed:
        """Remove a driver's stored builds (all, or those of one package version), their verdicts and
        the build failures recorded for the same versions; the driver itself when nothing is left."""
        connection = self._writing()
        driver_id = connection.execute(select(t.driver.c.id).where(
            t.driver.c.name == self.canonical_driver(driver))).scalar()
        if driver_id is None:
            raise InputError(f"no driver {driver!r} in the store")
        builds = select(t.driver_build.c.id).where(t.driver_build.c.driver_id == driver_id)
        failures = delete(t.build_failure).where(t.build_failure.c.driver_id == driver_id)
        if version is not None:
            builds = builds.where(t.driver_build.c.version == version)
            failures = failures.where(t.build_failure.c.version == version)
        build_ids = list(connection.execute(builds).scalars())
        removed = Removed()
        removed.add("build failures", connection.execute(failures).rowcount)
        if not build_ids and not removed.counts:
            raise InputError(f"no build of {driver!r}" + ("" if version is None else f" version {version!r}")
                             + " in the store")
        removed.add("verdicts", connection.execute(delete(t.verdict).where(t.verdict.c.build_id.in_(build_ids)))
                    .rowcount)
        connection.execute(delete(t.build_module).where(t.build_module.c.build_id.in_(build_ids)))
        removed.add("builds", connection.execute(delete(t.driver_build).where(t.driver_build.c.id.in_(build_ids)))
                    .rowcount)
        for build_id in build_ids:
            self._builds.pop(build_id, None)
        left = connection.execute(select(
            exists().where(t.driver_build.c.driver_id == driver_id)
            | exists().where(t.build_failure.c.driver_id == driver_id))).scalar()
        if not left:
            removed.add("aliases", connection.execute(delete(t.driver_alias).where(
                t.driver_alias.c.driver_id == driver_id)).rowcount)
            removed.add("drivers", connection.execute(delete(t.driver).where(t.driver.c.id == driver_id)).rowcount)
        return removed

    def alias_driver(self, driver: str, alias: str) -> Removed:
        """Make `alias` another name of `driver` (itself maybe named by an alias): ingests and look-ups
        by it go to `driver`. A driver stored under `alias` is merged into it: its builds, recorded
        build failures (one already recorded for the driver's same version and kernel wins) and
        aliases move; "merged" counts what moved."""
        connection = self._writing()
        name = self.canonical_driver(driver)
        driver_id = connection.execute(select(t.driver.c.id).where(t.driver.c.name == name)).scalar()
        if driver_id is None:
            raise InputError(f"no driver {driver!r} in the store")
        if alias == name:
            raise InputError(f"{alias!r} is the driver's own name")
        pointing = connection.execute(select(t.driver_alias.c.driver_id).where(t.driver_alias.c.alias == alias)
                                      ).scalar()
        if pointing is not None:
            if pointing == driver_id:
                return Removed()
            raise InputError(f"{alias!r} is already an alias of {self.canonical_driver(alias)!r}")
        merged = Removed()
        other = connection.execute(select(t.driver.c.id).where(t.driver.c.name == alias)).scalar()
        if other is not None:
            for row in connection.execute(select(t.build_failure.c.version, t.build_failure.c.kernel_release)
                                          .where(t.build_failure.c.driver_id == driver_id)).all():
                connection.execute(delete(t.build_failure).where(
                    t.build_failure.c.driver_id == other, t.build_failure.c.version == row.version,
                    t.build_failure.c.kernel_release == row.kernel_release))
            merged.add("builds", connection.execute(update(t.driver_build).where(
                t.driver_build.c.driver_id == other).values(driver_id=driver_id)).rowcount)
            merged.add("build failures", connection.execute(update(t.build_failure).where(
                t.build_failure.c.driver_id == other).values(driver_id=driver_id)).rowcount)
            merged.add("aliases", connection.execute(update(t.driver_alias).where(
                t.driver_alias.c.driver_id == other).values(driver_id=driver_id)).rowcount)
            connection.execute(delete(t.driver).where(t.driver.c.id == other))
        connection.execute(t.driver_alias.insert().values(alias=alias, driver_id=driver_id))
        return merged

    def rename_stream(self, old: str, new: str) -> None:
        """Rename a stream; the gate runs made in it follow the new name."""
        connection = self._writing()
        if connection.execute(select(t.stream.c.id).where(t.stream.c.name == new)).scalar() is not None:
            raise InputError(f"a stream {new!r} exists already")
        if connection.execute(update(t.stream).where(t.stream.c.name == old).values(name=new)).rowcount == 0:
            raise InputError(f"no stream {old!r} in the store")
        connection.execute(update(t.gate_run).where(t.gate_run.c.stream == old).values(stream=new))

    def move_kernel(self, release: str, source: str, target: str) -> None:
        """Move the kernels of `release` from stream `source` to stream `target` (made if new); both
        streams keep their version order."""
        connection = self._writing()
        kernel_ids = [row.id for row in self.find_kernels(release) if source in dict(row.streams)]
        if not kernel_ids:
            raise InputError(f"no kernel {release!r} in stream {source!r}")
        source_id = connection.execute(select(t.stream.c.id).where(t.stream.c.name == source)).scalar()
        connection.execute(delete(t.stream_kernel).where(t.stream_kernel.c.stream_id == source_id,
                                                         t.stream_kernel.c.kernel_id.in_(kernel_ids)))
        self._renumber_stream(source)
        for kernel_id in kernel_ids:
            self._put_in_stream(kernel_id, target)
        if source in self.enforcing_streams():  # judged again without its signature trust (the target's, if any)
            connection.execute(delete(t.verdict).where(t.verdict.c.kernel_id.in_(kernel_ids)))

    def prune(self, rules_version: int) -> Removed:
        """Delete verdicts judged by other versions of the rules (never read again: a newer
        kabigate judges again), streams without kernels, and modules no build holds any more."""
        connection = self._writing()
        removed = Removed()
        removed.add("old verdicts", connection.execute(
            delete(t.verdict).where(t.verdict.c.rules_version != rules_version)).rowcount)
        removed.add("empty streams", connection.execute(delete(t.stream).where(
            ~exists().where(t.stream_kernel.c.stream_id == t.stream.c.id))).rowcount)
        orphans = select(t.module.c.id).where(~exists().where(t.build_module.c.module_id == t.module.c.id))
        orphan_ids = list(connection.execute(orphans).scalars())
        connection.execute(delete(t.module_import).where(t.module_import.c.module_id.in_(orphan_ids)))
        removed.add("modules", connection.execute(delete(t.module).where(t.module.c.id.in_(orphan_ids))).rowcount)
        unused = ~or_(exists().where(t.driver_build.c.driver_id == t.driver.c.id),
                      exists().where(t.build_failure.c.driver_id == t.driver.c.id))
        connection.execute(delete(t.driver_alias).where(t.driver_alias.c.driver_id.in_(
            select(t.driver.c.id).where(unused))))
        removed.add("drivers", connection.execute(delete(t.driver).where(unused)).rowcount)
        return removed

    def _renumber_stream(self, stream: str) -> None:
        """Positions 0..n-1 in version order again after a kernel left (as _put_in_stream numbers)."""
        connection = self._writing()
        stream_id = connection.execute(select(t.stream.c.id).where(t.stream.c.name == stream)).scalar()
        first = connection.execute(select(t.stream_kernel.c.kernel_id).where(t.stream_kernel.c.stream_id == stream_id)
                                   .limit(1)).scalar()
        if first is not None:
            self._put_in_stream(first, stream)
