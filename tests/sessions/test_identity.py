"""Who acts: tokens, the session cookie under the same-origin check, and the session streams'
policy (read by members, written by nobody through the protocol)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.sessions.conftest import make_user
from tests.streams.asgi import request

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cookie_client(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def post_message(client: Client, session_id: str, **headers: str):
    return client.post(
        f"/v1/sessions/{session_id}/messages",
        json.dumps({"content": "hi"}),
        content_type="application/json",
        headers=headers,
    )


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Sec-Fetch-Site": "same-origin"}, 200),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Sec-Fetch-Site": "none"}, 403),
        ({"Origin": "http://testserver"}, 200),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({}, 403),
    ],
)
def test_cookie_writes_need_the_same_origin(cookie_client, session_id, headers, status):
    answer = post_message(cookie_client, session_id, **headers)
    assert answer.status_code == status, answer.content


def test_a_cookie_write_with_a_csrf_token_passes(cookie_client, session_id):
    cookie_client.get("/admin/login/")  # sets the CSRF cookie
    token = cookie_client.cookies["csrftoken"].value
    assert post_message(cookie_client, session_id, **{"X-CSRFToken": token}).status_code == 200
    assert post_message(cookie_client, session_id, **{"X-CSRFToken": "x" * 32}).status_code == 403


def test_cookie_reads_need_no_origin(cookie_client, session_id):
    assert cookie_client.get(f"/v1/sessions/{session_id}/messages").status_code == 200


def _auth(user) -> list[tuple[str, str]]:
    token, _ = Token.objects.get_or_create(user=user)
    return [("authorization", f"Token {token.key}")]


async def _stream(method, session_id, user=None, body=b"", query=""):
    from channels.db import database_sync_to_async

    headers = [] if user is None else await database_sync_to_async(_auth)(user)
    headers.append(("content-type", "application/json"))
    return await request(method, f"sessions/{session_id}", headers=headers, body=body, query=query)


async def test_nobody_writes_a_session_stream_directly(alice, session_id):
    from channels.db import database_sync_to_async

    staff = await database_sync_to_async(make_user)("root", is_staff=True, is_superuser=True)
    forged = json.dumps(
        {"type": "chunk", "key": "m:0", "value": {}, "headers": {"operation": "insert"}}
    )
    for user in (alice, staff):
        assert (await _stream("POST", session_id, user, forged.encode())).status == 403
        assert (await _stream("DELETE", session_id, user)).status == 403
        assert (await _stream("PUT", session_id, user)).status == 403
    assert (await _stream("POST", session_id, None, forged.encode())).status == 401
    read = await _stream("GET", session_id, alice)
    assert read.status == 200 and read.json() == []


async def test_session_streams_are_read_by_members_only(alice, bob, session_id):
    assert (await _stream("GET", session_id, bob)).status == 403
    assert (await _stream("GET", session_id, None)).status == 401
    assert (await _stream("GET", session_id, alice)).status == 200
