"""Schemathesis against the session API's OpenAPI schema (``/v1/schema/``), in process.

Every operation of the schema gets generated requests, valid and not (hypothesis, a few
examples each, no deadline), from a token-authenticated client, against the WSGI application,
with one real session (owned by the caller, with a member) filling the ``{id}`` of the session
routes, so the examples reach the views and not only their 404. No answer may be a 500, and
every answer must be one the schema declares: its status, content type, headers and body.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.sessions.conftest import make_user, token_client

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 15  # per operation: the whole run stays well under a minute


# The schema the server serves, read at collection (it touches no database); its operations
# are called on the WSGI application. (A lazy ``schemathesis.pytest.from_fixture`` schema does
# not run on pytest 9: it reads ``Function._nodeid``, which is gone.)
schema = schemathesis.openapi.from_wsgi("/v1/schema/?format=json", get_wsgi_application())


@pytest.fixture
def caller(session_id, as_alice, bob) -> dict[str, Any]:
    """Alice's token, her session (Bob is a member) and a message in it."""
    invited = as_alice.post(
        f"/v1/sessions/{session_id}/members", {"username": "bob", "role": "member"}, format="json"
    )
    assert invited.status_code == 201, invited.content
    posted = as_alice.post(f"/v1/sessions/{session_id}/messages", {"content": "hi"}, format="json")
    assert posted.status_code == 200, posted.content
    make_user("dave")  # a user who is in no session
    return {
        "headers": {"Authorization": as_alice._credentials["HTTP_AUTHORIZATION"]},
        "session_id": session_id,
    }


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_500_and_every_answer_fits_the_schema(case, caller):
    if "id" in (case.path_parameters or {}):
        case.path_parameters["id"] = caller["session_id"]
    case.call_and_validate(headers=caller["headers"], checks=CHECKS)


def test_the_schema_is_served_to_anonymous_clients(client):
    answer = client.get("/v1/schema/?format=json")
    assert answer.status_code == 200
    assert set(answer.json()["paths"]) >= {"/v1/sessions/", "/v1/sessions/{id}/messages"}


def test_token_client_is_the_one_the_fixture_uses(alice):
    assert token_client(alice)._credentials["HTTP_AUTHORIZATION"].startswith("Token ")
