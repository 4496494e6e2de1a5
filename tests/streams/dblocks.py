"""Holding the database's locks from a connection of the test's own, to hold up the log."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection

from durable_sessions.streams.db import STREAM, Database


def backends(thread_prefix: str) -> list[dict[str, Any]]:
    """Postgres: this process's connections to the test database held by threads whose name
    starts with ``thread_prefix`` (the log names its connections after thread and process)."""
    with Database().connect() as conn:
        rows = conn.execute(
            "SELECT pid, application_name, wait_event_type, state FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE %s",
            [thread_prefix + "%"],
        ).fetchall()
    mine = f" pid {os.getpid()}"
    rows = [row for row in rows if row[1].endswith(mine)]
    return [dict(zip(("pid", "name", "wait", "state"), row, strict=True)) for row in rows]


@contextmanager
def held_stream(path: str) -> Iterator[Any]:
    """Hold the write lock that a change to ``path`` needs: on SQLite the file's write lock, on
    Postgres the stream row's lock. Yields the connection holding it."""
    if connection.vendor == "postgresql":
        conn = Database().connect()
        try:
            conn.execute("BEGIN")
            conn.execute(f"SELECT id FROM {STREAM} WHERE path = %s FOR UPDATE", [path])
            yield conn
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    conn = sqlite3.connect(str(connection.settings_dict["NAME"]), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()
