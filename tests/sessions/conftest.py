"""Fixtures of the sessions tests: users, their API clients, a session."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from durable_sessions.sessions import cache


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def make_user(username: str, **extra) -> User:
    """A user with a password ``pw-<username>``."""
    return User.objects.create_user(username, password=f"pw-{username}", **extra)


def token_client(user: User) -> APIClient:
    """An API client that authenticates with the user's token."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def alice(transactional_db) -> User:
    return make_user("alice")


@pytest.fixture
def bob(transactional_db) -> User:
    return make_user("bob")


@pytest.fixture
def carol(transactional_db) -> User:
    return make_user("carol")


@pytest.fixture
def as_alice(alice) -> APIClient:
    return token_client(alice)


@pytest.fixture
def as_bob(bob) -> APIClient:
    return token_client(bob)


@pytest.fixture
def as_carol(carol) -> APIClient:
    return token_client(carol)


@pytest.fixture
def session_id(as_alice) -> str:
    """A session owned by alice."""
    response = as_alice.post("/v1/sessions/", {"title": "Plans"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["sessionId"]
