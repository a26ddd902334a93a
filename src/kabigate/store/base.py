"""The store's foundation: opening a database (SQLite or PostgreSQL), its schema, transactions,
and the helpers every part of the `Store` shares: look-ups by key in chunks and the
content-addressed insert-or-ignore."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import platformdirs
from sqlalchemy import Connection, Engine, any_, bindparam, create_engine, event, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from kabigate.errors import InputError
from kabigate.model import Export, Module
from kabigate.store import schema as t

# Rows per statement when ids are looked up with IN (...): below SQLite's variable limit.
CHUNK = 900
# From this many rows, PostgreSQL gets them by COPY (fewer, by one INSERT from arrays; their ids are
# looked up with one array): row by row (psycopg's executemany, IN chunks) a kernel's 25,000 exports
# took 2.8 s against SQLite's 0.55.
BULK = 200
# Seconds an SQLite writer waits for another one to commit before "database is locked".
SQLITE_BUSY_TIMEOUT = 600
# pg_advisory_xact_lock key of schema changes ("kabigate" in ASCII)
_SCHEMA_LOCK = 0x6B61626967617465


class StoreError(InputError):
    """The store cannot be opened or used (bad URL, unreachable server, schema too old)."""



def default_url() -> str:
    """$KABIGATE_DB, else an SQLite file in the user's data directory."""
    return os.environ.get("KABIGATE_DB") or str(Path(platformdirs.user_data_dir("kabigate")) / "kabigate.db")


def engine_url(location: str) -> str:
    """A database URL from what a user typed: a URL, or a path to an SQLite file."""
    if "://" in location:
        return location
    return f"sqlite:///{os.path.abspath(os.path.expanduser(location))}"



class StoreBase:
    """An open database and its transactions; `Store` adds what is kept in it."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._connection: Connection | None = None
        # Immutable rows already turned into model objects, by id: a long ingest judges every
        # build again on each new kernel. Dropped when a transaction rolls back (its ids come back).
        self._exports: dict[int, Export] = {}
        self._export_ids_by_digest: dict[str, int] = {}
        # A kernel's exports by name, by export set: export and export set rows are never deleted
        # or changed, so a long-lived store (a worker process, `watch`) keeps them across its work.
        self._set_exports: dict[int, dict[str, Export]] = {}
        # A build's modules with what they were read from (its row, its modules' digests and paths):
        # a build removed and its id taken again (SQLite) is read anew.
        self._builds: dict[int, tuple[tuple | None, list[Module]]] = {}
        # Builds this store wrote in the transaction under way: no other can have removed them yet,
        # so judging them at once reads nothing back (an ingest's 2 queries of 16).
        self._written_builds: set[int] = set()

    # -- opening and the schema ---------------------------------------------------------------

    @classmethod
    def open(cls, location: str | None = None, *, create: bool = True) -> Self:
        """Open the store at `location` (URL or SQLite path; default: default_url()).

        A new, empty database gets the current schema; one at an older schema revision is
        refused (`kabigate db upgrade` upgrades it), never rebuilt."""
        store = cls.connect(location, create=create)
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
    def connect(cls, location: str | None = None, *, create: bool = True) -> Self:
        """The store at `location` without checking its schema (for `db upgrade` and `db status`).
        Without `create`, a missing SQLite file is an error, not a new empty store: a mistyped path
        given to a read command is named, instead of an empty store created and read."""
        url = engine_url(location or default_url())
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(f"{location}: not a database URL or path") from None
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreError(f"{location}: kabigate stores live in SQLite or PostgreSQL, "
                             f"not {parsed.get_backend_name()}")
        if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        database = parsed.database
        if parsed.get_backend_name() == "sqlite":
            if not database or database == ":memory:":
                raise StoreError(f"{location}: an SQLite store needs a file path (sqlite:////path/to/kabigate.db)")
            if not create and not os.path.exists(database):
                raise StoreError(f"{database}: no kabigate store here (`kabigate ingest` or `kabigate db upgrade` "
                                 "creates one)")
            directory = os.path.dirname(database)
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
                found = connection.exec_driver_sql("PRAGMA quick_check(1)").scalar_one()
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

        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        if head is None:
            raise StoreError("kabigate's schema migrations are missing: a broken installation")
        return head

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
                finally:
                    self._connection = None
        except BaseException as error:  # rolled back, or its commit failed: the ids read or made in it come back
            self._exports.clear()
            self._export_ids_by_digest.clear()
            self._set_exports.clear()
            self._builds.clear()
            if isinstance(error, DBAPIError):
                raise StoreError(f"{self.url}: {_first_line(error.orig)}") from None
            raise
        finally:
            self._written_builds.clear()

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
        if len(rows) > 1 and self.engine.dialect.name == "postgresql":
            self._insert_rows(table, rows, "DO NOTHING")
        elif rows:
            self._writing().execute(self._insert(table).on_conflict_do_nothing(), rows)

    def _insert_new_rows(self, table, rows: list[dict]) -> None:
        """Insert rows no other transaction can hold (those of a row this one just made)."""
        if len(rows) > 1 and self.engine.dialect.name == "postgresql":
            self._insert_rows(table, rows, None)
        elif rows:
            self._writing().execute(table.insert(), rows)

    def _stored_ids(self, table, key_column, rows: list[dict]) -> dict:
        """_insert_ignoring_duplicates(), then the id of every row by its key (`key_column`)."""
        key = key_column.key
        if rows and self.engine.dialect.name == "postgresql":
            found = self._insert_rows(table, rows, "DO NOTHING", key_column)  # the ids of the rows inserted
            missing = [row[key] for row in rows if row[key] not in found]  # stored before
            if missing:
                found.update(self._ids_by(table, key_column, missing))
            return found
        self._insert_ignoring_duplicates(table, rows)
        return self._ids_by(table, key_column, [row[key] for row in rows])

    def _insert_rows(self, table, rows: list[dict], on_conflict: str | None, returning=None) -> dict:
        """Rows inserted on PostgreSQL in one statement, in their order (ON CONFLICT `on_conflict`): by
        COPY from BULK rows on, else INSERT ... SELECT from unnest() of one array per column. psycopg's
        executemany runs a statement per row: ~30 us each, where SQLite's take ~1 us (a build's
        150 imports, its module rows, its verdicts). With `returning` (the key column), the ids of
        the rows inserted, by key."""
        if len(rows) >= BULK:
            return self._copy_rows(table, rows, on_conflict, returning)
        quote = self.engine.dialect.identifier_preparer.quote
        names = list(rows[0])
        columns = ", ".join(quote(table.c[name].name) for name in names)
        arrays = [bindparam(f"kabigate_{number}", [row[name] for row in rows],
                            type_=postgresql.ARRAY(table.c[name].type)) for number, name in enumerate(names)]
        statement = f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} " \
                    f"FROM unnest({', '.join(f':{array.key}' for array in arrays)}) WITH ORDINALITY " \
                    f"AS kabigate_rows ({columns}, kabigate_row) ORDER BY kabigate_row{_on_conflict(on_conflict)}"
        if returning is None:
            self._writing().execute(text(statement).bindparams(*arrays))
            return {}
        statement += f" RETURNING {quote(returning.name)}, {quote(table.c.id.name)}"
        return dict(self._writing().execute(text(statement).bindparams(*arrays)).all())

    def _copy_rows(self, table, rows: list[dict], on_conflict: str | None, returning=None) -> dict:
        """Rows inserted on PostgreSQL (ON CONFLICT `on_conflict`): COPY into a temporary table (COPY
        has no conflict clause), then one INSERT ... SELECT in the rows' order, which keeps the
        key-order locking and numbers new rows in the order SQLite's row-by-row inserts do. With
        `returning` (the key column), the ids of the rows inserted, by key."""
        import psycopg  # the PostgreSQL driver: not loaded for SQLite stores

        connection = self._writing()
        quote = self.engine.dialect.identifier_preparer.quote
        names = list(rows[0])
        columns = ", ".join(quote(table.c[name].name) for name in names)
        target, staged = quote(table.name), quote(f"kabigate_copy_{table.name}")
        connection.exec_driver_sql(f"CREATE TEMPORARY TABLE {staged} ON COMMIT DROP AS "
                                   f"SELECT 0::bigint AS kabigate_row, {columns} FROM {target} WITH NO DATA")
        driver: psycopg.Connection = connection.connection.driver_connection  # type: ignore[assignment]
        try:
            with driver.cursor() as cursor, \
                    cursor.copy(f"COPY {staged} (kabigate_row, {columns}) FROM STDIN") as copy:
                for number, row in enumerate(rows):
                    copy.write_row((number, *(row[name] for name in names)))
        except psycopg.Error as error:
            raise StoreError(f"{self.url}: {_first_line(error)}") from None
        insert = f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {staged} ORDER BY kabigate_row" \
                 + _on_conflict(on_conflict)
        inserted: dict = {}
        if returning is None:
            connection.exec_driver_sql(insert)
        else:
            inserted = dict(connection.exec_driver_sql(
                f"{insert} RETURNING {quote(returning.name)}, {quote(table.c.id.name)}").all())
        connection.exec_driver_sql(f"DROP TABLE {staged}")
        return inserted

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
            if keys and self.engine.dialect.name == "postgresql":
                array = bindparam("keys", keys, type_=postgresql.ARRAY(key_column.type))
                if len(keys) >= CHUNK:  # a kernel's exports
                    return dict(connection.execute(select(key_column, table.c.id)
                                                   .where(key_column == any_(array))).all())
                # An index probe a key, as SQLite does: from ~150 keys PostgreSQL's planner reads all of
                # `symbol` instead (random_page_cost), 2 ms where the probes of a build's 400 take 0.7.
                quote = self.engine.dialect.identifier_preparer.quote
                return dict(connection.execute(text(
                    f"SELECT kabigate_keys.key, found.id FROM unnest(:keys) AS kabigate_keys (key), LATERAL "
                    f"(SELECT {quote(table.c.id.name)} AS id FROM {quote(table.name)} "
                    f"WHERE {quote(key_column.name)} = kabigate_keys.key LIMIT 1) AS found").bindparams(array)).all())
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start:start + CHUNK]
                for key, row_id in connection.execute(select(key_column, table.c.id).where(key_column.in_(chunk))):
                    found[key] = row_id
        return found

    def _symbol_ids(self, names: Iterable[str]) -> dict[str, int]:
        return self._looked_up_or_stored(t.symbol, t.symbol.c.name, sorted(set(names)))

    def _named_id(self, table, name: str) -> int:
        return self._looked_up_or_stored(table, table.c.name, [name])[name]

    def _looked_up_or_stored(self, table, name_column, names: list[str]) -> dict[str, int]:
        """The ids of rows that are only a unique name (symbols, drivers, streams), the names missing
        stored first (in the order given: sorted). Looked up first: most are stored already, and then one
        statement does."""
        found = self._ids_by(table, name_column, names)
        missing = [name for name in names if name not in found]
        if missing:
            found.update(self._stored_ids(table, name_column, [{name_column.key: name} for name in missing]))
        return found

    # -- size ---------------------------------------------------------------------------------

    def counts(self, tables: Iterable[str] | None = None) -> dict[str, int]:
        """Rows per table (all, or those named): for `kabigate db status` and the benchmarks."""
        wanted = [t.metadata.tables[name] for name in tables] if tables is not None else t.metadata.sorted_tables
        with self._reading() as connection:
            return {table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                    for table in wanted}

    def count_verdicts(self, rules_version: int) -> int:
        with self._reading() as connection:
            return connection.execute(select(func.count()).select_from(t.verdict)
                                      .where(t.verdict.c.rules_version == rules_version)).scalar_one()


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


def _on_conflict(clause: str | None) -> str:
    return "" if clause is None else f" ON CONFLICT {clause}"


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _first_line(error: BaseException | None) -> str:
    text = str(error or "database error").strip()
    return text.splitlines()[0] if text else type(error).__name__
