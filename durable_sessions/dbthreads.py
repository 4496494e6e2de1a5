"""The Django connections of the app's own long-lived threads.

Django's ``close_old_connections`` is made for request threads: with ``CONN_MAX_AGE = 0`` (the
setting Django recommends under ASGI, and the host project's) it closes the connection after
every use, so the next use opens a new one: on Postgres a new backend process, several
milliseconds and a burst of Python each time. The agent runtime's database threads and the
subscriptions' worker serve call after call, hundreds a second under load; they keep their
connection instead (``tidy`` after each call) and close it only when it is broken, when a call
left it inside a transaction, or when the thread is done or goes idle (``close``).
"""

from __future__ import annotations

from django.db import connections


def tidy() -> None:
    """After a call on this thread: close what is broken or left mid-transaction, keep the
    rest for the next call (whatever ``CONN_MAX_AGE`` says)."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.in_atomic_block or conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"]:
            conn.close()
        elif conn.errors_occurred:
            if conn.is_usable():
                conn.errors_occurred = False
            else:
                conn.close()


def close() -> None:
    """Close this thread's connections (it is done, or idle for a while)."""
    connections.close_all()
