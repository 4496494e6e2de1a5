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
