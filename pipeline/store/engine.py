"""The Store: one SQLAlchemy engine over SQLite (default) or PostgreSQL, migrated on first use.

SQLite runs in WAL mode with a busy timeout, and every transaction begins
IMMEDIATE: two processes on one file then wait for each other instead of
failing half-way, which the exactly-once rules of sending rely on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Column, Connection, Engine, Insert, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from pipeline.errors import StoreConflict, StoreError, StoreUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 30_000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def insert_new(connection: Connection, table: Table, *key: Column[Any]) -> Insert:
    """``INSERT ... ON CONFLICT (key...) DO NOTHING`` on SQLite and PostgreSQL alike: a row that is there
    already stays as it is, in one statement, so two writers never race between a check and an insert (on
    PostgreSQL the second waits for the first to commit, then inserts nothing)."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=list(key))


def database_url(url: str, root: Path) -> str:
    """The URL with a relative SQLite path resolved against the settings folder."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"invalid database url {url!r}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        if not path.is_absolute():
            parsed = parsed.set(database=str(root / path))
    return parsed.render_as_string(hide_password=False)


class Store:
    """The pipeline's database: a migrated engine and transactions."""

    def __init__(self, url: str):
        self.url = url
        try:
            self.engine: Engine = create_engine(url, **_engine_options(url))
        except (ArgumentError, ImportError) as exc:
            raise StoreError(f"cannot open database {make_url(url).render_as_string()}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            _sqlite_pragmas(self.engine)
        self._migrated = False

    @classmethod
    def from_settings(cls, settings) -> Store:
        store = cls(database_url(settings.database.url, settings.root))
        store.migrate()
        return store

    @property
    def display_url(self) -> str:
        """The URL without its password, fit to show."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def migrate(self) -> None:
        """Apply every Alembic migration not yet applied (once per process)."""
        if self._migrated:
            return
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                if self.engine.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(727274)"))  # one migrator at a time
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except DBAPIError as exc:  # not a database, unreadable, unreachable
            raise StoreError(f"cannot open database {self.display_url}: {_first_line(exc)}") from None
        self._migrated = True

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction: committed when the block ends, rolled back on an exception."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except DBAPIError as exc:
            raise _store_error(exc) from None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction; on SQLite it takes no write lock, so a long listing blocks no sender."""
        try:
            with self.engine.connect() as connection:
                connection = connection.execution_options(sqlite_begin="DEFERRED")
                with connection.begin():
                    yield connection
        except DBAPIError as exc:
            raise _store_error(exc) from None

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(exc: DBAPIError) -> str:
    """The driver's message without what PostgreSQL adds on further lines (DETAIL, HINT, the row's values,
    which may quote an address or a whole edition): an error is one line."""
    return (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]


# SQLSTATEs of a transaction PostgreSQL rolled back to settle a conflict: a deadlock, a serialisation failure.
CONFLICT_STATES = frozenset({"40P01", "40001"})


def _store_error(exc: DBAPIError) -> StoreError:
    """One line for a database error; a lost or refused connection (or SQLite still locked after its busy
    timeout) is ``StoreUnavailable``, which a caller may try again; a transaction rolled back for a deadlock
    or a serialisation failure is ``StoreConflict``, one of those."""
    if getattr(exc.orig, "sqlstate", None) in CONFLICT_STATES:
        return StoreConflict(f"database conflict: {_first_line(exc)} (another transaction needed the same rows; "
                             "nothing of this one was written)")
    if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
        return StoreUnavailable(f"database unavailable: {_first_line(exc)}")
    return StoreError(f"database error: {_first_line(exc)}")


def _engine_options(url: str) -> dict:
    if make_url(url).get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": BUSY_TIMEOUT_MS / 1000}}
    return {"pool_pre_ping": True}


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # let "begin" below issue BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


__all__ = ["SQLAlchemyError", "Store", "StoreError", "StoreUnavailable", "database_url", "insert_new", "utcnow"]
