"""The `Store`: kernels, streams, driver builds and verdicts, in SQLite or PostgreSQL.

The only module that speaks SQL. Callers (the ingest/matrix services, later the gate, the web
app and workers) get plain records and model objects back, never rows or sessions.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import platformdirs
from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from kabigate.errors import InputError
from kabigate.formats.gatepolicy import WAIVER_KEYS, Waiver, waiver_from_mapping
from kabigate.model import Export, Kernel, Module, PackageOrigin, version_key
from kabigate.store import codec
from kabigate.store import schema as t
from kabigate.vocabulary import TaskState

# Rows per statement when ids are looked up with IN (...): below SQLite's variable limit.
_CHUNK = 900
# Seconds an SQLite writer waits for another one to commit before "database is locked".
SQLITE_BUSY_TIMEOUT = 600
# pg_advisory_xact_lock key of schema changes ("kabigate" in ASCII)
_SCHEMA_LOCK = 0x6B61626967617465


class StoreError(InputError):
    """The store cannot be opened or used (bad URL, unreachable server, schema too old)."""


@dataclass(frozen=True)
class KernelRecord:
    id: int
    release: str
    machine: str | None
    flavor: str
    vermagic: str | None
    module_layout_crc: int | None
    package_version: str | None
    build_date: str | None
    sources: tuple[str, ...]
    exports: int
    streams: tuple[tuple[str, int], ...]  # (stream, position)


@dataclass(frozen=True)
class BuildRecord:
    id: int
    driver: str
    package: str | None
    version: str | None
    arch: str | None
    format: str
    built_for: str | None
    source: str
    modules: tuple[str, ...]  # module names, in the build's order

    @property
    def label(self) -> str:
        return f"{self.driver} {self.version or '?'} (built for {self.built_for or '?'})"


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
class BuildFailure:
    driver: str
    version: str
    kernel_release: str
    error: str


TASK_STATES = tuple(TaskState)


@dataclass(frozen=True)
class TaskRecord:
    """A worker task (kabigate.workers): what was asked, where it stands."""

    key: str
    kind: str
    args: dict
    state: TaskState
    attempts: int
    error: str | None
    result: dict | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


def default_url() -> str:
    """$KABIGATE_DB, else an SQLite file in the user's data directory."""
    return os.environ.get("KABIGATE_DB") or str(Path(platformdirs.user_data_dir("kabigate")) / "kabigate.db")


def engine_url(location: str) -> str:
    """A database URL from what a user typed: a URL, or a path to an SQLite file."""
    if "://" in location:
        return location
    return f"sqlite:///{os.path.abspath(os.path.expanduser(location))}"


def flavor_of(release: str) -> str:
    """The kernel flavor a release names: Debian `6.1.0-47-rt-amd64` -> rt-amd64,
    `6.12.107+deb12-cloud-amd64` -> cloud-amd64; RHEL `5.14.0-427.el9.x86_64+rt` -> rt."""
    if "+" in release and not re.search(r"\+deb\d+", release):
        return release.rsplit("+", 1)[1]
    debian = re.match(r"^\d+\.\d+(?:\.\d+)?(?:-\d+|\+deb\d+)-(.+)$", release)
    return debian.group(1) if debian else "default"


class Store:
    """Everything kabigate remembers. Open with `Store.open(url)`; use as a context manager."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._connection: Connection | None = None
        # Immutable rows already turned into model objects, by id: a long ingest judges every
        # build again on each new kernel. Dropped when a transaction rolls back (its ids come back).
        self._exports: dict[int, Export] = {}
        self._export_ids_by_digest: dict[str, int] = {}
        self._builds: dict[int, list[Module]] = {}

    # -- opening and the schema ---------------------------------------------------------------

    @classmethod
    def open(cls, location: str | None = None, *, create: bool = True) -> Store:
        """Open the store at `location` (URL or SQLite path; default: default_url()).

        A new, empty database gets the current schema; one at an older schema revision is
        refused (`kabigate db upgrade` upgrades it), never rebuilt."""
        store = cls.connect(location)
        try:
            current, head = store.revisions()
            if current is None and create:
                store.upgrade()
            elif current is None:
                raise StoreError(f"{store.url}: no kabigate store here (run kabigate db upgrade to create one)")
            elif current != head:
                known = current in store._migration_chain()
                raise StoreError(f"{store.url}: store schema is at revision {current}, this kabigate needs {head}: "
                                 + ("run `kabigate db upgrade`" if known else "it was written by a newer kabigate"))
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def connect(cls, location: str | None = None) -> Store:
        """The store at `location` without checking its schema (for `db upgrade` and `db status`)."""
        url = engine_url(location or default_url())
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(f"{location}: not a database URL or path") from None
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreError(f"{location}: kabigate stores live in SQLite or PostgreSQL, not {parsed.get_backend_name()}")
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            directory = os.path.dirname(parsed.database)
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as error:
                raise StoreError(f"{directory}: {error.strerror}") from None
        # psycopg prepares a statement run 5 times; PostgreSQL then plans the id lookups
        # (`digest IN (900 values)`) generically, as sequential scans: 100x slower. Never prepare.
        connect_args = {"prepare_threshold": None} if parsed.get_backend_name() == "postgresql" else {}
        try:
            engine = create_engine(parsed, connect_args=connect_args)
        except (ArgumentError, ImportError) as error:
            raise StoreError(f"{location}: {error}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        try:
            with engine.connect():
                pass
        except DBAPIError as error:
            engine.dispose()
            raise StoreError(f"{store.url}: cannot open the database: {_first_line(error.orig)}") from None
        if engine.dialect.name == "sqlite":
            store._quick_check()
        return store

    def _quick_check(self) -> None:
        """Refuse a damaged SQLite file (a bad disk, a copy of a file being written, a hand edit):
        SQLite reads a damaged page only when a query meets it, and then may give wrong rows rather
        than an error. quick_check reads every page once (the demo's 30 MB store: 55 ms)."""
        try:
            with self.engine.connect() as connection:
                found = connection.exec_driver_sql("PRAGMA quick_check(1)").scalar()
        except OperationalError as error:  # locked, I/O: not the file's content
            self.engine.dispose()
            raise StoreError(f"{self.url}: cannot open the database: {_first_line(error.orig)}") from None
        except DBAPIError as error:  # "database disk image is malformed", "file is not a database"
            found = _first_line(error.orig)
        if found != "ok":
            self.engine.dispose()
            raise StoreError(f"store {self.url} is damaged (quick_check: {found.splitlines()[-1]})")

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _alembic_config(self):
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        return config

    def _migration_chain(self) -> list[str]:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(self._alembic_config())
        return [revision.revision for revision in script.walk_revisions()]

    def revisions(self) -> tuple[str | None, str]:
        """(the database's schema revision or None, the revision this kabigate writes)."""
        from alembic.runtime.migration import MigrationContext

        with self._reading() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        return current, self._head()

    def _head(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    def upgrade(self) -> tuple[str | None, str]:
        """Apply pending migrations; returns (revision before, revision after). Under a lock held to
        the commit, so that parallel first ingests into a new store create its schema once."""
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from sqlalchemy import inspect

        config = self._alembic_config()
        try:
            with self.engine.begin() as connection:
                if self.engine.dialect.name == "sqlite":
                    connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now, DDL in the transaction
                else:
                    connection.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
                before = MigrationContext.configure(connection).get_current_revision()
                if before is None and inspect(connection).get_table_names():
                    raise StoreError(f"{self.url}: the database has tables but no kabigate schema revision")
                if before is not None and before not in self._migration_chain():
                    raise StoreError(f"{self.url}: store schema is at revision {before}, which this kabigate "
                                     f"(revision {self._head()}) does not know: it was written by a newer kabigate")
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except DBAPIError as error:
            raise StoreError(f"{self.url}: {_first_line(error.orig)}") from None
        return before, self._head()

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One unit of work: everything written inside is committed together or not at all."""
        if self._connection is not None:
            yield
            return
        try:
            with self.engine.begin() as connection:
                self._connection = connection
                try:
                    yield
                except BaseException:
                    self._exports.clear()
                    self._export_ids_by_digest.clear()
                    self._builds.clear()
                    raise
                finally:
                    self._connection = None
        except DBAPIError as error:
            raise StoreError(f"{self.url}: {_first_line(error.orig)}") from None

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        if self._connection is not None:
            yield self._connection
            return
        try:
            with self.engine.connect() as connection:
                yield connection
        except DBAPIError as error:
            raise StoreError(f"{self.url}: {_first_line(error.orig)}") from None

    def _writing(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("store writes happen inside Store.transaction()")
        return self._connection

    def _insert_ignoring_duplicates(self, table, rows: list[dict]) -> None:
        """Insert the rows whose unique key is not stored yet. Content-addressed rows are added this
        way, then looked up: two ingests storing the same row at once both succeed, the later one
        waiting for the earlier one's commit (one SQLite writer at a time; PostgreSQL waits on the
        uncommitted key). Give rows in the order of their unique key: parallel transactions then
        lock keys in one order and never deadlock."""
        if rows:
            self._writing().execute(self._insert(table).on_conflict_do_nothing(), rows)

    def _insert_if_new(self, table, row: dict) -> int | None:
        """Insert a row unless its unique key is stored (as _insert_ignoring_duplicates); its id, or
        None when it was there (rowcount says -1 with RETURNING on psycopg: ask for the id)."""
        return self._writing().execute(self._insert(table).on_conflict_do_nothing().returning(table.c.id),
                                       row).scalar()

    def _insert(self, table):
        return (postgresql if self.engine.dialect.name == "postgresql" else sqlite).insert(table)

    def _ids_by(self, table, key_column, keys: Iterable) -> dict:
        keys = list(dict.fromkeys(keys))
        found = {}
        with self._reading() as connection:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                for key, row_id in connection.execute(select(key_column, table.c.id).where(key_column.in_(chunk))):
                    found[key] = row_id
        return found

    def _symbol_ids(self, names: Iterable[str]) -> dict[str, int]:
        names = sorted(set(names))
        self._insert_ignoring_duplicates(t.symbol, [{"name": name} for name in names])
        return self._ids_by(t.symbol, t.symbol.c.name, names)

    def _named_id(self, table, name: str) -> int:
        self._insert_ignoring_duplicates(table, [{"name": name}])
        return self._ids_by(table, table.c.name, [name])[name]

    # -- kernels ------------------------------------------------------------------------------

    def add_kernel(self, kernel: Kernel, stream: str | None = None) -> tuple[KernelRecord, bool]:
        """Store a kernel (and put it in `stream`); (record, False) when it is already stored."""
        if kernel.release is None:
            raise InputError(f"{', '.join(kernel.sources)}: the kernel release is unknown (no vermagic); "
                             "give --vermagic or a tree with an in-tree module")
        exports = sorted(kernel.exports.values(), key=lambda e: e.name)
        export_digests = [codec.export_digest(e) for e in exports]
        digest = hashlib.sha256(json.dumps([kernel.release, kernel.machine, kernel.vermagic,
                                            sorted(kernel.config.items()), export_digests]).encode()).hexdigest()
        connection = self._writing()
        kernel_id = self._ids_by(t.kernel, t.kernel.c.digest, [digest]).get(digest)
        created = False
        if kernel_id is None:
            export_ids = self._export_ids(exports, export_digests)
            self._exports.update(zip(export_ids, exports))  # a gate reads the new kernel back at once
            members = sorted(export_ids)
            set_digest = hashlib.sha256(codec.pack_ids(members)).hexdigest()
            self._insert_ignoring_duplicates(t.export_set, [{"digest": set_digest, "size": len(members),
                                                              "members": codec.pack_ids(members)}])
            layout = kernel.exports.get("module_layout")
            kernel_id = self._insert_if_new(t.kernel, {
                "digest": digest, "release": kernel.release, "machine": kernel.machine,
                "flavor": flavor_of(kernel.release), "vermagic": kernel.vermagic,
                "module_layout_crc": layout.crc if layout else None,
                "export_set_id": self._ids_by(t.export_set, t.export_set.c.digest, [set_digest])[set_digest],
                "config": codec.pack_config(kernel.config), "package_version": kernel.package_version,
                "module_struct_size": kernel.module_struct_size, "build_date": None,
                "sources": json.dumps(kernel.sources), "ingested_at": _now(),
            })
            created = kernel_id is not None
            if not created:  # a parallel ingest stored the same kernel since the look-up above
                kernel_id = self._ids_by(t.kernel, t.kernel.c.digest, [digest])[digest]
        if not created:
            self._add_sources(kernel_id, kernel.sources)
            if kernel.module_struct_size is not None:  # a kernel stored before it was kept, read again
                connection.execute(t.kernel.update().where(
                    t.kernel.c.id == kernel_id, t.kernel.c.module_struct_size.is_(None)).values(
                    module_struct_size=kernel.module_struct_size))
        if stream is not None:
            self._put_in_stream(kernel_id, stream)
        return self.kernel(kernel_id), created

    def _add_sources(self, kernel_id: int, sources: list[str]) -> None:
        """The same kernel read again from elsewhere (packages after a tree, a mirror): remember where."""
        connection = self._writing()
        known = json.loads(connection.scalar(select(t.kernel.c.sources).where(t.kernel.c.id == kernel_id)))
        if not set(sources) <= set(known):
            connection.execute(t.kernel.update().where(t.kernel.c.id == kernel_id)
                               .values(sources=json.dumps(known + [s for s in sources if s not in known])))

    def _export_ids(self, exports: list[Export], digests: list[str]) -> list[int]:
        known = {d: self._export_ids_by_digest[d] for d in digests if d in self._export_ids_by_digest}
        known.update(self._ids_by(t.export, t.export.c.digest, [d for d in digests if d not in known]))
        new = sorted(((e, d) for e, d in zip(exports, digests) if d not in known), key=lambda pair: pair[1])
        if new:
            symbols = self._symbol_ids(e.name for e, _ in new)
            self._insert_ignoring_duplicates(t.export, [
                {"digest": d, "symbol_id": symbols[e.name], "crc": e.crc, "export_type": e.export_type,
                 "namespace": e.namespace, "owner": e.owner} for e, d in new])
            known.update(self._ids_by(t.export, t.export.c.digest, [d for _, d in new]))
        self._export_ids_by_digest.update(known)
        return [known[d] for d in digests]

    def _put_in_stream(self, kernel_id: int, stream: str) -> None:
        """Add the kernel to the stream and renumber the stream in version order."""
        connection = self._writing()
        stream_id = self._named_id(t.stream, stream)
        # PostgreSQL: parallel ingests into one stream number it one after the other, each seeing
        # the other's kernel (SQLite has one writer anyway)
        connection.execute(select(t.stream.c.id).where(t.stream.c.id == stream_id).with_for_update())
        self._insert_ignoring_duplicates(t.stream_kernel, [{"stream_id": stream_id, "kernel_id": kernel_id,
                                                            "position": -1}])
        members = connection.execute(
            select(t.kernel.c.id, t.kernel.c.release, t.kernel.c.package_version)
            .join(t.stream_kernel, t.stream_kernel.c.kernel_id == t.kernel.c.id)
            .where(t.stream_kernel.c.stream_id == stream_id)).all()
        ordered = sorted(members, key=lambda row: (version_key(row.package_version or row.release),
                                                   version_key(row.release)))
        for position, row in enumerate(ordered):
            connection.execute(t.stream_kernel.update()
                               .where(t.stream_kernel.c.stream_id == stream_id,
                                      t.stream_kernel.c.kernel_id == row.id)
                               .values(position=position))

    def kernels(self, stream: str | None = None) -> list[KernelRecord]:
        """Stored kernels: those of `stream` in its order, or all (by stream, then release)."""
        records = self._kernel_records()
        if stream is None:
            return sorted(records, key=lambda r: (not r.streams, r.streams[:1], version_key(r.release)))
        if stream not in self.streams():
            raise InputError(f"no stream named {stream!r} in the store (streams: {', '.join(self.streams()) or 'none'})")
        in_stream = [(dict(r.streams)[stream], r) for r in records if stream in dict(r.streams)]
        return [record for _, record in sorted(in_stream, key=lambda pair: pair[0])]

    def kernel(self, kernel_id: int) -> KernelRecord:
        return self._kernel_records(t.kernel.c.id == kernel_id)[0]

    def find_kernels(self, release: str) -> list[KernelRecord]:
        return self._kernel_records(t.kernel.c.release == release)

    def _kernel_records(self, *where) -> list[KernelRecord]:
        with self._reading() as connection:
            streams: dict[int, list[tuple[str, int]]] = {}
            for kernel_id, name, position in connection.execute(
                    select(t.stream_kernel.c.kernel_id, t.stream.c.name, t.stream_kernel.c.position)
                    .join(t.stream, t.stream.c.id == t.stream_kernel.c.stream_id)):
                streams.setdefault(kernel_id, []).append((name, position))
            rows = connection.execute(
                select(t.kernel, t.export_set.c.size)
                .join(t.export_set, t.export_set.c.id == t.kernel.c.export_set_id).where(*where)
                .order_by(t.kernel.c.id)).all()
        return [KernelRecord(
            id=row.id, release=row.release, machine=row.machine, flavor=row.flavor, vermagic=row.vermagic,
            module_layout_crc=row.module_layout_crc, package_version=row.package_version,
            build_date=row.build_date, sources=tuple(json.loads(row.sources)), exports=row.size,
            streams=tuple(sorted(streams.get(row.id, ()))),
        ) for row in rows]

    def streams(self) -> list[str]:
        with self._reading() as connection:
            return list(connection.scalars(select(t.stream.c.name).order_by(t.stream.c.name)))

    def load_kernel(self, kernel_id: int) -> Kernel:
        """The stored kernel as the loader rules take it."""
        with self._reading() as connection:
            row = connection.execute(
                select(t.kernel, t.export_set.c.members)
                .join(t.export_set, t.export_set.c.id == t.kernel.c.export_set_id)
                .where(t.kernel.c.id == kernel_id)).one()
            ids = codec.unpack_ids(row.members)
            missing = [i for i in ids if i not in self._exports]
            for start in range(0, len(missing), _CHUNK):
                chunk = missing[start:start + _CHUNK]
                for export_id, name, crc, export_type, namespace, owner in connection.execute(
                        select(t.export.c.id, t.symbol.c.name, t.export.c.crc, t.export.c.export_type,
                               t.export.c.namespace, t.export.c.owner)
                        .join(t.symbol, t.symbol.c.id == t.export.c.symbol_id).where(t.export.c.id.in_(chunk))):
                    self._exports[export_id] = Export(name, crc, owner, export_type, namespace)
        lost = sum(i not in self._exports for i in ids)
        if lost:
            raise StoreError(f"store {self.url} is damaged: kernel {row.release} names {lost} exports it does not hold")
        exports = {export.name: export for export in (self._exports[i] for i in ids)}
        return Kernel(release=row.release, vermagic=row.vermagic, machine=row.machine, exports=exports,
                      config=codec.unpack_config(row.config), sources=json.loads(row.sources),
                      package_version=row.package_version, module_struct_size=row.module_struct_size)

    # -- driver builds ------------------------------------------------------------------------

    def add_driver_build(self, driver: str, modules: list[Module], *, version: str | None, package: str | None,
                         arch: str | None, format: str, source: str,
                         greylist: tuple[str, ...] | None = None) -> tuple[BuildRecord, bool]:
        """Store one driver build (a package's modules, or a tree's): (record, False) if already stored."""
        facts = [codec.module_facts(m) for m in modules]
        module_digests = [codec.facts_digest(f) for f in facts]
        digest = hashlib.sha256(json.dumps([driver, version, package, arch, format, module_digests]).encode()
                                ).hexdigest()
        build_id = self._ids_by(t.driver_build, t.driver_build.c.digest, [digest]).get(digest)
        if build_id is not None:
            return self.driver_build(build_id), False
        connection = self._writing()
        module_ids = self._module_ids(modules, facts, module_digests)
        vermagic = next((m.vermagic for m in modules if m.vermagic), None)
        build_id = self._insert_if_new(t.driver_build, {
            "digest": digest, "driver_id": self._named_id(t.driver, driver), "package": package, "version": version,
            "arch": arch, "format": format, "built_for": vermagic.split(" ", 1)[0] if vermagic else None,
            "source": source, "greylist": None if greylist is None else json.dumps(list(greylist)),
            "ingested_at": _now(),
        })
        if build_id is None:  # a parallel ingest stored the same build since the look-up above
            return self.driver_build(self._ids_by(t.driver_build, t.driver_build.c.digest, [digest])[digest]), False
        connection.execute(t.build_module.insert(), [
            {"build_id": build_id, "position": i, "module_id": module_id, "path": m.path}
            for i, (m, module_id) in enumerate(zip(modules, module_ids))])
        return self.driver_build(build_id), True

    def _module_ids(self, modules: list[Module], facts: list[dict], digests: list[str]) -> list[int]:
        known = self._ids_by(t.module, t.module.c.digest, digests)
        new = {digest: (module, fact) for module, fact, digest in sorted(zip(modules, facts, digests),
                                                                          key=lambda triple: triple[2])
               if digest not in known}
        if new:
            symbols = self._symbol_ids(i.name for module, _ in new.values() for i in module.imports)
            self._insert_ignoring_duplicates(t.module, [
                {"digest": digest, "name": module.name, "machine": module.machine, "vermagic": module.vermagic,
                 "license": module.license, "signer": module.signature.signer if module.signature else None,
                 "facts": codec.pack(fact)} for digest, (module, fact) in new.items()])
            known.update(self._ids_by(t.module, t.module.c.digest, new))
            imports = []
            for digest, (module, _) in new.items():
                crcs = {v.name: v.crc for v in module.versions or ()}
                imports += [(known[digest], symbols[i.name], crcs.get(i.name), i.weak)
                            for i in {i.name: i for i in module.imports}.values()]  # listed twice: one import
            # a module a parallel ingest stored has its imports already
            self._insert_ignoring_duplicates(t.module_import, [
                {"module_id": module_id, "symbol_id": symbol_id, "crc": crc, "weak": weak}
                for module_id, symbol_id, crc, weak in sorted(imports)])
        return [known[d] for d in digests]

    def driver_builds(self, pattern: str | None = None) -> list[BuildRecord]:
        """Stored builds, by driver name then version; `pattern` is a shell glob on the driver name."""
        records = self._build_records()
        if pattern is not None:
            records = [r for r in records if fnmatch.fnmatchcase(r.driver, pattern)]
        return sorted(records, key=lambda r: (r.driver, version_key(r.version or ""), version_key(r.built_for or ""),
                                              r.id))

    def driver_build(self, build_id: int) -> BuildRecord:
        return self._build_records(t.driver_build.c.id == build_id)[0]

    def _build_records(self, *where) -> list[BuildRecord]:
        with self._reading() as connection:
            names: dict[int, list[str]] = {}
            for build_id, name in connection.execute(
                    select(t.build_module.c.build_id, t.module.c.name)
                    .join(t.module, t.module.c.id == t.build_module.c.module_id)
                    .order_by(t.build_module.c.build_id, t.build_module.c.position)):
                names.setdefault(build_id, []).append(name)
            rows = connection.execute(
                select(t.driver_build, t.driver.c.name.label("driver"))
                .join(t.driver, t.driver.c.id == t.driver_build.c.driver_id).where(*where)).all()
        return [BuildRecord(id=row.id, driver=row.driver, package=row.package, version=row.version, arch=row.arch,
                            format=row.format, built_for=row.built_for, source=row.source,
                            modules=tuple(names.get(row.id, ()))) for row in rows]

    def load_build(self, build_id: int) -> list[Module]:
        """The build's modules as the loader rules take them, in the build's order."""
        return self.load_builds([build_id])[build_id]

    def load_builds(self, build_ids: list[int]) -> dict[int, list[Module]]:
        """Several builds' modules at once (judging a new kernel reads every stored build)."""
        missing = [build_id for build_id in build_ids if build_id not in self._builds]
        modules: dict[int, list[Module]] = {build_id: [] for build_id in missing}
        with self._reading() as connection:
            for start in range(0, len(missing), _CHUNK):
                chunk = missing[start:start + _CHUNK]
                origins = {row.id: _origin(row) for row in connection.execute(
                    select(t.driver_build).where(t.driver_build.c.id.in_(chunk)))}
                for build_id, path, facts in connection.execute(
                        select(t.build_module.c.build_id, t.build_module.c.path, t.module.c.facts)
                        .join(t.module, t.module.c.id == t.build_module.c.module_id)
                        .where(t.build_module.c.build_id.in_(chunk))
                        .order_by(t.build_module.c.build_id, t.build_module.c.position)):
                    modules[build_id].append(codec.module_from_facts(codec.unpack(facts), path, origins[build_id]))
        self._builds.update(modules)
        return {build_id: self._builds[build_id] for build_id in build_ids}

    def record_build_failure(self, driver: str, version: str, kernel_release: str, error: str) -> bool:
        """Remember that a driver version failed to build for a kernel; False if already recorded."""
        return self._insert_if_new(t.build_failure, {
            "driver_id": self._named_id(t.driver, driver), "version": version, "kernel_release": kernel_release,
            "error": error, "recorded_at": _now()}) is not None

    def build_failures(self, pattern: str | None = None) -> list[BuildFailure]:
        with self._reading() as connection:
            rows = connection.execute(
                select(t.driver.c.name, t.build_failure.c.version, t.build_failure.c.kernel_release,
                       t.build_failure.c.error)
                .join(t.driver, t.driver.c.id == t.build_failure.c.driver_id)).all()
        failures = [BuildFailure(*row) for row in rows]
        if pattern is not None:
            failures = [f for f in failures if fnmatch.fnmatchcase(f.driver, pattern)]
        return sorted(failures, key=lambda f: (f.driver, version_key(f.version), version_key(f.kernel_release)))

    # -- verdicts -----------------------------------------------------------------------------

    def pairs_needing_verdicts(self, rules_version: int, *, kernel_ids: list[int] | None = None,
                               build_ids: list[int] | None = None) -> list[tuple[int, int]]:
        """(build, kernel) pairs with no verdict, or one made by other rules, among those given."""
        query = select(t.verdict.c.build_id, t.verdict.c.kernel_id).where(t.verdict.c.rules_version == rules_version)
        # Only the verdicts of the kernels (or builds) asked about: a store holds hundreds of thousands.
        if kernel_ids is not None and len(kernel_ids) <= _CHUNK:
            query = query.where(t.verdict.c.kernel_id.in_(kernel_ids))
        elif build_ids is not None and len(build_ids) <= _CHUNK:
            query = query.where(t.verdict.c.build_id.in_(build_ids))
        with self._reading() as connection:
            kernels = kernel_ids if kernel_ids is not None else list(connection.scalars(select(t.kernel.c.id)))
            builds = build_ids if build_ids is not None else list(connection.scalars(select(t.driver_build.c.id)))
            current = set(connection.execute(query).all())
        return [(b, k) for k in kernels for b in builds if (b, k) not in current]

    def save_verdicts(self, verdicts: list[StoredVerdict]) -> None:
        """Store verdicts, replacing those of the same cells (an upsert, in key order: two `matrix`
        runs recomputing the same stale cells at once both succeed)."""
        if not verdicts:
            return
        insert = self._insert(t.verdict)
        self._writing().execute(
            insert.on_conflict_do_update(index_elements=[t.verdict.c.build_id, t.verdict.c.kernel_id],
                                         set_={column: insert.excluded[column] for column in
                                               ("rules_version", "loads", "modules", "modules_loading",
                                                "first_reason", "failing_symbols", "detail")}),
            [{"build_id": v.cell.build_id, "kernel_id": v.cell.kernel_id, "rules_version": v.cell.rules_version,
              "loads": v.cell.loads, "modules": v.cell.modules, "modules_loading": v.cell.modules_loading,
              "first_reason": v.cell.first_reason, "failing_symbols": v.cell.failing_symbols,
              "detail": codec.pack(v.detail)}
             for v in sorted(verdicts, key=lambda v: (v.cell.build_id, v.cell.kernel_id))])

    def cells(self, rules_version: int, *, build_ids: list[int] | None = None,
              kernel_ids: list[int] | None = None) -> dict[tuple[int, int], Cell]:
        """Current verdicts, keyed by (build id, kernel id)."""
        query = select(t.verdict.c.build_id, t.verdict.c.kernel_id, t.verdict.c.rules_version, t.verdict.c.loads,
                       t.verdict.c.modules, t.verdict.c.modules_loading, t.verdict.c.first_reason,
                       t.verdict.c.failing_symbols).where(t.verdict.c.rules_version == rules_version)
        wanted_builds = None if build_ids is None else set(build_ids)
        wanted_kernels = None if kernel_ids is None else set(kernel_ids)
        if kernel_ids is not None and build_ids is not None and len(kernel_ids) + len(build_ids) <= _CHUNK:
            # a page of a matrix: only its cells are read (the primary key's build_id comes first)
            query = query.where(t.verdict.c.build_id.in_(build_ids), t.verdict.c.kernel_id.in_(kernel_ids))
        elif kernel_ids is not None and len(kernel_ids) <= _CHUNK:
            query = query.where(t.verdict.c.kernel_id.in_(kernel_ids))
        elif build_ids is not None and len(build_ids) <= _CHUNK:
            query = query.where(t.verdict.c.build_id.in_(build_ids))
        with self._reading() as connection:
            rows = connection.execute(query).all()
        return {(row.build_id, row.kernel_id): Cell(*row) for row in rows
                if (wanted_builds is None or row.build_id in wanted_builds)
                and (wanted_kernels is None or row.kernel_id in wanted_kernels)}

    def cell_counts(self, rules_version: int, kernel_ids: list[int]) -> list[tuple[int, bool, str | None, int]]:
        """(build id, loads, first reason, cells) over these kernels' current verdicts: a matrix's totals
        and each build's failing reasons without reading every cell."""
        counts: dict[tuple[int, bool, str | None], int] = {}
        with self._reading() as connection:
            for start in range(0, len(kernel_ids), _CHUNK):
                for build_id, loads, reason, count in connection.execute(
                        select(t.verdict.c.build_id, t.verdict.c.loads, t.verdict.c.first_reason, func.count())
                        .where(t.verdict.c.rules_version == rules_version,
                               t.verdict.c.kernel_id.in_(kernel_ids[start:start + _CHUNK]))
                        .group_by(t.verdict.c.build_id, t.verdict.c.loads, t.verdict.c.first_reason)):
                    key = (build_id, bool(loads), reason)
                    counts[key] = counts.get(key, 0) + count
        return [(*key, count) for key, count in counts.items()]

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
                for start in range(0, len(build_ids), _CHUNK):
                    for build_id, blob in connection.execute(
                            select(t.verdict.c.build_id, t.verdict.c.detail)
                            .where(t.verdict.c.kernel_id == kernel_id,
                                   t.verdict.c.build_id.in_(build_ids[start:start + _CHUNK]))):
                        details[(build_id, kernel_id)] = codec.unpack(blob)
        return details

    # -- demand -------------------------------------------------------------------------------

    def imports_of(self, build_ids: list[int]) -> list[tuple[int, str, int | None]]:
        """(build id, symbol, the module's CRC for it) for every import of these builds' modules."""
        rows = []
        with self._reading() as connection:
            for start in range(0, len(build_ids), _CHUNK):
                rows += connection.execute(
                    select(t.build_module.c.build_id, t.symbol.c.name, t.module_import.c.crc)
                    .join(t.module_import, t.module_import.c.module_id == t.build_module.c.module_id)
                    .join(t.symbol, t.symbol.c.id == t.module_import.c.symbol_id)
                    .where(t.build_module.c.build_id.in_(build_ids[start:start + _CHUNK]))).all()
        return [tuple(row) for row in rows]

    def greylists(self, build_ids: list[int]) -> dict[int, tuple[str, ...]]:
        """The greylist.txt each of these builds' packages shipped (ELRepo kmods), when one did."""
        found = {}
        with self._reading() as connection:
            for start in range(0, len(build_ids), _CHUNK):
                for build_id, greylist in connection.execute(
                        select(t.driver_build.c.id, t.driver_build.c.greylist)
                        .where(t.driver_build.c.id.in_(build_ids[start:start + _CHUNK]),
                               t.driver_build.c.greylist.is_not(None))):
                    found[build_id] = tuple(json.loads(greylist))
        return found

    # -- gate runs ----------------------------------------------------------------------------

    def record_gate_run(self, kernel_id: int, baseline_id: int | None, stream: str | None, outcome: str,
                        report: dict) -> GateRun:
        run = uuid.uuid4()
        self._writing().execute(t.gate_run.insert().values(
            uuid=str(run), kernel_id=kernel_id, baseline_id=baseline_id, stream=stream, outcome=outcome,
            report=codec.pack(report), created_at=_now()))
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
            who=checked.who, expires=checked.expires, created_at=_now())).inserted_primary_key[0]

    def waivers(self, include_revoked: bool = False) -> list[Waiver]:
        """Stored waivers, oldest first; each with its id and source "store#ID"."""
        query = select(t.waiver).order_by(t.waiver.c.id)
        if not include_revoked:
            query = query.where(t.waiver.c.revoked_at.is_(None))
        with self._reading() as connection:
            rows = connection.execute(query).all()
        return [dataclasses.replace(_checked_waiver({key: getattr(row, key) for key in WAIVER_KEYS},
                                                    f"store#{row.id}", row.id),
                                    created_at=row.created_at, revoked_at=row.revoked_at) for row in rows]

    def revoke_waiver(self, waiver_id: int) -> Waiver:
        """Revoke a stored waiver (it is kept, no longer applied); the waiver as revoked."""
        connection = self._writing()
        row = connection.execute(select(t.waiver.c.revoked_at).where(t.waiver.c.id == waiver_id)).first()
        if row is None:
            raise InputError(f"no waiver {waiver_id} in the store")
        if row.revoked_at is not None:
            raise InputError(f"waiver {waiver_id} was already revoked on {row.revoked_at:%Y-%m-%d %H:%M}")
        connection.execute(t.waiver.update().where(t.waiver.c.id == waiver_id).values(revoked_at=_now()))
        return next(w for w in self.waivers(include_revoked=True) if w.id == waiver_id)

    # -- worker tasks -------------------------------------------------------------------------

    def queue_task(self, key: str, kind: str, args: dict) -> TaskRecord:
        """Record a request (state queued) unless one of this key exists; its record."""
        now = _now()
        self._insert_ignoring_duplicates(t.task, [{"key": key, "kind": kind, "args": json.dumps(args),
                                                   "state": TaskState.QUEUED, "attempts": 0, "created_at": now,
                                                   "updated_at": now}])
        return self.task(key)

    def claim_task(self, key: str, kind: str, args: dict, *, redelivered: bool, max_attempts: int) -> TaskRecord | None:
        """Take a task for this worker (state running), or None when it is not this delivery's to do:
        done or failed already, or running elsewhere and this delivery is a duplicate rather than a
        redelivery (the broker redelivers only what a lost worker or connection left unacknowledged).
        A task delivered more than `max_attempts` times is recorded as failed instead."""
        self.queue_task(key, kind, args)
        connection = self._writing()
        row = self.lock_task(key)
        if row.state in (TaskState.DONE, TaskState.FAILED) or (row.state == TaskState.RUNNING and not redelivered):
            return None
        if row.attempts >= max_attempts:
            why = row.error or "the worker running it was lost each time"
            self.finish_task(key, TaskState.FAILED, error=f"given up after {row.attempts} attempts: {why}")
            return None
        connection.execute(t.task.update().where(t.task.c.key == key)
                           .values(state=TaskState.RUNNING, attempts=row.attempts + 1, updated_at=_now()))
        return self.task(key)

    def lock_task(self, key: str) -> TaskRecord:
        """A task, locked until the transaction ends (PostgreSQL: FOR UPDATE; SQLite has one writer):
        two workers given the same task decide one after the other."""
        self._writing()
        rows = self.tasks(key=key, for_update=True)
        if not rows:
            raise InputError(f"no task {key} in the store")
        return rows[0]

    def finish_task(self, key: str, state: TaskState, *, error: str | None = None, result: dict | None = None) -> None:
        """Set a task's state (done, failed; queued again before a retry) and its error or result."""
        if state not in TASK_STATES:
            raise ValueError(state)
        values = {"state": state, "updated_at": _now(), "error": error}
        if result is not None:
            values["result"] = json.dumps(result)
        self._writing().execute(t.task.update().where(t.task.c.key == key).values(**values))

    def task(self, key: str) -> TaskRecord:
        tasks = self.tasks(key=key)
        if not tasks:
            raise InputError(f"no task {key} in the store")
        return tasks[0]

    def tasks(self, state: TaskState | None = None, *, key: str | None = None, limit: int | None = None,
              for_update: bool = False) -> list[TaskRecord]:
        """Tasks, most recently updated first."""
        query = select(t.task).order_by(t.task.c.updated_at.desc(), t.task.c.id.desc()).limit(limit)
        if for_update:
            query = query.with_for_update()
        if state is not None:
            query = query.where(t.task.c.state == state)
        if key is not None:
            query = query.where(t.task.c.key == key)
        with self._reading() as connection:
            rows = connection.execute(query).all()
        return [TaskRecord(row.key, row.kind, json.loads(row.args), TaskState(row.state), row.attempts, row.error,
                           None if row.result is None else json.loads(row.result), row.created_at, row.updated_at)
                for row in rows]

    def prune_tasks(self, before: datetime.datetime) -> int:
        """Delete the done and failed tasks last updated before `before`; how many. Queued and
        running tasks are kept, however old: a worker may be on one, and its key is what makes a
        redelivery a no-op. A pruned key is forgotten: the same request later is done again."""
        deleted = self._writing().execute(t.task.delete().where(
            t.task.c.state.in_((TaskState.DONE, TaskState.FAILED)), t.task.c.updated_at < before))
        return deleted.rowcount

    def task_counts(self) -> dict[TaskState, int]:
        with self._reading() as connection:
            found = dict(connection.execute(select(t.task.c.state, func.count()).group_by(t.task.c.state)).all())
        return {state: found.get(state, 0) for state in TASK_STATES}

    # -- size ---------------------------------------------------------------------------------

    def counts(self, tables: Iterable[str] | None = None) -> dict[str, int]:
        """Rows per table (all, or those named): for `kabigate db status` and the benchmarks."""
        wanted = [t.metadata.tables[name] for name in tables] if tables is not None else t.metadata.sorted_tables
        with self._reading() as connection:
            return {table.name: connection.scalar(select(func.count()).select_from(table)) for table in wanted}

    def count_verdicts(self, rules_version: int) -> int:
        with self._reading() as connection:
            return connection.scalar(select(func.count()).select_from(t.verdict)
                                     .where(t.verdict.c.rules_version == rules_version))


def _origin(build) -> PackageOrigin | None:
    """The package a stored build came from, as modules read from it carry it."""
    if build.format not in ("rpm", "deb"):
        return None
    return PackageOrigin(build.source, build.package or "", build.version or "", build.arch or "", build.format,
                         None if build.greylist is None else tuple(json.loads(build.greylist)))


def _checked_waiver(fields: dict, source: str, waiver_id: int | None = None) -> Waiver:
    """A waiver checked by the waivers file's rules (a stored one was checked when added, and again
    when read: a row written by hand is no way around them)."""
    return waiver_from_mapping({k: v for k, v in fields.items() if v is not None}, source, source, waiver_id)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # busy_timeout first (switching a new file to WAL takes a lock too): a writer waits for the one
    # writing, which holds the lock for its whole ingest, judging included; long, as PostgreSQL
    # waits on a row lock. WAL: readers (a web page, `matrix`) go on while an ingest writes; a
    # killed writer's uncommitted pages are never seen.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _first_line(error: BaseException | None) -> str:
    text = str(error or "database error").strip()
    return text.splitlines()[0] if text else type(error).__name__


