"""Fixtures of the agent runtime's tests: a user, and the scripted agents' records cleared."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.agents import scripted


@pytest.fixture
def scripts():
    """The scripted agents' records (calls, cancellations, starts), empty before and after."""
    scripted.reset()
    yield
    scripted.reset()


@pytest.fixture
def alice(transactional_db) -> User:
    return User.objects.create_user("alice", password="pw-alice")
