"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
from django.db import connection

from durable_sessions.streams.store import reset_store
from tests.servers import ServerProcess


@pytest.fixture(scope="session", autouse=True)
def _log_connections(django_db_setup, django_db_blocker):
    """Close the log's own connections before the test database is dropped."""
    yield
    reset_store()


@pytest.fixture(scope="session", autouse=True)
def _flush_survives_a_deadlock():
    """Between transactional tests, Django TRUNCATEs every table in one statement. On Postgres
    a background thread of this process (the subscriptions worker's lookup after a commit, a
    sweep) may hold one of those tables while it asks for another, and Postgres may choose the
    TRUNCATE as the deadlock's victim: then the flush fails and the next test finds the last
    one's rows. The flush is tried again (the harness's artefact: no product code takes such
    locks), up to five times."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    original = flush.Command.handle

    def handle(self, **options):
        for attempt in range(5):
            try:
                return original(self, **options)
            except CommandError as exc:
                if attempt == 4 or "deadlock" not in str(exc.__cause__):
                    raise

    flush.Command.handle = handle
    yield
    flush.Command.handle = original


@pytest.fixture
def postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture(scope="session")
def public_server(django_db_setup, django_db_blocker):
    """A daphne process on the test database with the streams open to anonymous clients."""
    with django_db_blocker.unblock():
        server = ServerProcess(public=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_server(django_db_setup, django_db_blocker):
    """A daphne process on the test database with the default permission policy."""
    with django_db_blocker.unblock():
        server = ServerProcess(public=False).start()
    yield server
    server.stop()
