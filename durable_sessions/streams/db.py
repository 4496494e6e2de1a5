"""Raw DB-API connections to the streams database, for the log's hot paths.

The log runs its SQL on connections of its own rather than on Django's: the group-commit writer
holds one for its thread, and each reader thread holds one, so no request waits for Django's
per-thread connection handling. The connection parameters come from ``settings.DATABASES`` (the
alias in ``DURABLE_SESSIONS["DATABASE_ALIAS"]``), read when a connection is opened, so a test
database set up by the test runner is picked up.

SQL is written once with ``%s`` placeholders; ``Database.sql()`` adapts it to SQLite's ``?``.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any

from django.db import connections

from durable_sessions.conf import SQLITE_SYNCHRONOUS_VALUES, ds_settings
from durable_sessions.streams.errors import Unavailable

STREAM = "durable_sessions_stream"
SMALL_BATCH = 4  # rows up to which plain statements beat one unnest() statement
CONNECT_TIMEOUT = 10  # seconds, unless the database's OPTIONS say otherwise
ENTRY = "durable_sessions_entry"
PRODUCER = "durable_sessions_producer"

STREAM_COLUMNS = (
    "id, path, content_type, tail_seq, tail_bytes, last_stream_seq, closed, "
    "closed_by_producer, closed_by_epoch, closed_by_seq, ttl_seconds, expires_at, "
    "touched_at, deleted, source_id, fork_seq, fork_offset, fork_sub_offset, created_at, "
    "first_seq, first_bytes"
)

try:  # psycopg is a dependency, but SQLite-only deployments work without its C parts.
    import psycopg
    from psycopg import errors as pg_errors
except ImportError:  # pragma: no cover
    psycopg = None  # type: ignore[assignment]
    pg_errors = None  # type: ignore[assignment]


class ConnectionLost(Unavailable):
    """A connection broke under a query (503 if it happens again on a fresh connection)."""


class RetryTransaction(Exception):
    """Raised inside a transaction whose premise a concurrent writer changed: run it again."""


def retryable(exc: BaseException) -> bool:
    """Whether a failed transaction may simply be run again (deadlock, lock timeout, busy)."""
    if isinstance(exc, RetryTransaction):
        return True
    if pg_errors is not None and isinstance(
        exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure
    ):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def integrity_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a constraint violation (a concurrent insert of the same key)."""
    if psycopg is not None and isinstance(exc, psycopg.IntegrityError):
        return True
    return isinstance(exc, sqlite3.IntegrityError)


def connection_lost(exc: BaseException, conn: Any = None) -> bool:
    """Whether ``exc``, raised on ``conn``, means the connection is unusable and must be replaced.

    On Postgres the connection says so itself (``broken``/``closed``): a deadlock or a lock
    timeout is an ``OperationalError`` too, on a connection that is perfectly usable.
    """
    if psycopg is not None and isinstance(exc, psycopg.Error):
        if isinstance(conn, psycopg.Connection):
            return bool(conn.closed or conn.broken)
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
            exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))
        )
    return isinstance(exc, sqlite3.OperationalError | sqlite3.ProgrammingError) and (
        "closed" in str(exc) or "unable to open" in str(exc)
    )


def sqlite_synchronous() -> str:
    """The ``synchronous`` pragma for the log's SQLite connections (``SQLITE_SYNCHRONOUS``)."""
    value = str(ds_settings.SQLITE_SYNCHRONOUS).upper()
    if value not in SQLITE_SYNCHRONOUS_VALUES:  # the system check reports it; stay durable
        return "FULL"
    return value


def application_name() -> str:
    """What the log's connections of this thread call themselves in ``pg_stat_activity``:
    the thread's name and the process id."""
    return f"{threading.current_thread().name} pid {os.getpid()}"[:63]


class Database:
    """Opens and configures connections for one Django database alias."""

    def __init__(self, alias: str | None = None) -> None:
        self.alias = alias or ds_settings.DATABASE_ALIAS
        vendor = connections[self.alias].vendor
        if vendor not in {"postgresql", "sqlite"}:
            raise Unavailable(f"durable_sessions supports Postgres and SQLite, not {vendor}")
        self.vendor = vendor
        self.is_postgres = vendor == "postgresql"

    @functools.cache  # noqa: B019  (one Database per process; the cache lives as long)
    def sql(self, statement: str) -> str:
        """``statement`` with placeholders in this database's style."""
        return statement if self.is_postgres else statement.replace("%s", "?")

    def placeholders(self, count: int) -> str:
        """``%s, %s, ...`` for an ``IN (...)`` list of ``count`` values."""
        return ", ".join(["%s"] * count)

    def connect(self) -> Any:
        """A new autocommit connection; transactions are opened explicitly with ``begin()``."""
        wrapper = connections[self.alias]
        try:
            if self.is_postgres:
                params = wrapper.get_connection_params()
                for key in ("cursor_factory", "context"):
                    params.pop(key, None)
                options = wrapper.settings_dict.get("OPTIONS", {})
                if "prepare_threshold" not in options:
                    params.pop("prepare_threshold", None)  # psycopg's default: prepare hot SQL
                params.setdefault("connect_timeout", CONNECT_TIMEOUT)  # a host that went away
                params.setdefault("application_name", application_name())
                return psycopg.connect(**params, autocommit=True)
            name = str(wrapper.settings_dict["NAME"])
            uri = name.startswith("file:")
            conn = sqlite3.connect(
                name, uri=uri, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={sqlite_synchronous()}")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        except Exception as exc:
            raise Unavailable(f"cannot connect to the streams database: {exc}") from exc

    def begin(self, conn: Any) -> None:
        """Open a write transaction (SQLite: take the write lock now, not at first write)."""
        conn.execute("BEGIN" if self.is_postgres else "BEGIN IMMEDIATE")

    def insert_many(
        self, cur: Any, table: str, columns: dict[str, str], rows: list[tuple], suffix: str = ""
    ) -> None:
        """Insert ``rows``. ``columns`` maps each column to its SQL type.

        Postgres gets one array per column and ``unnest`` turns them back into rows: one
        statement to plan and run, however many rows. A few rows go as plain statements, which
        cost less to encode and to run than the arrays.
        """
        names = ", ".join(columns)
        if self.is_postgres and len(rows) > SMALL_BATCH:
            arrays = ", ".join(f"%s::{kind}[]" for kind in columns.values())
            cur.execute(
                f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays})"
                f"{' WHERE true ' + suffix if suffix else ''}",
                [list(column) for column in zip(*rows, strict=True)],
            )
            return
        values = self.placeholders(len(columns))
        cur.executemany(self.sql(f"INSERT INTO {table} ({names}) VALUES ({values}) {suffix}"), rows)

    def update_many(
        self, cur: Any, table: str, key: str, columns: dict[str, str], rows: list[tuple]
    ) -> None:
        """``UPDATE`` one row per tuple of ``rows``: the new values, then the ``key`` value."""
        if self.is_postgres and len(rows) > SMALL_BATCH:
            arrays = ", ".join(f"%s::{kind}[]" for kind in (*columns.values(), "bigint"))
            assignments = ", ".join(f"{name} = v.{name}" for name in columns)
            cur.execute(
                f"UPDATE {table} AS t SET {assignments} FROM unnest({arrays})"
                f" AS v({', '.join(columns)}, {key}) WHERE t.{key} = v.{key}",
                [list(column) for column in zip(*rows, strict=True)],
            )
            return
        assignments = ", ".join(f"{name} = %s" for name in columns)
        cur.executemany(self.sql(f"UPDATE {table} SET {assignments} WHERE {key} = %s"), rows)

    def pipeline(self, conn: Any) -> AbstractContextManager[Any]:
        """Batch the statements sent on ``conn`` until a result is needed (Postgres only)."""
        return conn.pipeline() if self.is_postgres else nullcontext()

    def lock_clause(self) -> str:
        """Row-lock suffix for SELECTs in a write transaction (SQLite locks the whole file)."""
        return " FOR UPDATE" if self.is_postgres else ""


class ThreadConnections:
    """One connection per thread, opened lazily and replaced after a connection failure."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.database.connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def discard(self) -> None:
        """Drop this thread's connection (after an error that may have broken it)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            with suppress(Exception):
                conn.close()

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor on this thread's connection; the connection is dropped if it breaks.

        On Postgres the cursor fetches results in binary format: entry bytes arrive as they are
        stored instead of hex-encoded.
        """
        conn = self.get()
        try:
            yield conn.cursor(binary=True) if self.database.is_postgres else conn.cursor()
        except Exception as exc:
            if connection_lost(exc, conn):
                self.discard()
                raise ConnectionLost(f"streams database connection lost: {exc}") from exc
            raise

    def close_all(self) -> None:
        """Close every connection opened through this object (used at shutdown and in tests)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with suppress(Exception):
                conn.close()
        self._local = threading.local()
