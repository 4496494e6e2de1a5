"""The public StreamDB client (npm ``@durable-streams/state``) on a session made through the
session API, over SSE and long-poll, against a real daphne process.

The session is created with ``POST /v1/sessions/`` and written only through the API
(``POST /v1/sessions/<id>/messages``); StreamDB follows ``/v1/stream/sessions/<id>`` and
materializes exactly the rows the API wrote (the same rows ``GET .../events`` returns), every
one fitting the reference schema. ``awaitTxId`` with its default timeout (5 s) resolves for a
message posted with a ``txid``, by a token client and by a client that authenticates as the
reference client in a page does: the page's session cookie, no CSRF header, and what a browser
adds to a same-origin ``fetch`` (``Sec-Fetch-Site``, ``Origin``). The same cookie POST without
that is refused (403).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.authtoken.models import Token

from tests.interop.streamdb import run_streamdb, start_streamdb

pytestmark = pytest.mark.django_db(transaction=True)

MODES = pytest.mark.parametrize("live", ["sse", "long-poll"])
# The primary key StreamDB's schema gives each collection (streamdb.mjs).
PRIMARY_KEYS = {"chunk": "id", "presence": "id", "agent": "agentId"}


def token_headers(user: User) -> dict[str, str]:
    """``Authorization: Token <key>`` for ``user``."""
    return {"Authorization": f"Token {Token.objects.get_or_create(user=user)[0].key}"}


def cookie_headers(user: User) -> dict[str, str]:
    """The session cookie of a login of ``user`` (what a page's requests carry)."""
    client = Client()
    client.force_login(user)
    return {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}


@pytest.fixture
def api(private_server):
    with httpx.Client(base_url=f"{private_server.url}/v1/", timeout=10) as client:
        yield client


def new_session(api: httpx.Client, headers: dict[str, str]) -> str:
    """A session made through the API; its id."""
    created = api.post("sessions/", json={"title": "Interop"}, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()["sessionId"]


def post_message(api: httpx.Client, session_id: str, headers: dict[str, str], **body: Any) -> str:
    """A message posted through the API; its id."""
    answer = api.post(f"sessions/{session_id}/messages", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["messageId"]


def expected_rows(events: list[dict]) -> dict[str, dict[str, dict]]:
    """What StreamDB should hold after ``events`` (WIRE.md 2): the rows of every collection,
    each its value with the key in the primary key field."""
    rows: dict[str, dict[str, dict]] = {name: {} for name in PRIMARY_KEYS}
    for event in events:
        if "type" not in event or event["type"] not in rows:
            continue  # a control event, or a type of ours StreamDB ignores
        collection = rows[event["type"]]
        if event["headers"]["operation"] == "delete":
            collection.pop(event["key"], None)
        else:
            collection[event["key"]] = {
                **event["value"],
                PRIMARY_KEYS[event["type"]]: event["key"],
            }
    return rows


def events_of(api: httpx.Client, session_id: str, headers: dict[str, str]) -> tuple[list, str]:
    """Every event of the session (through the API) and the offset after them."""
    events: list[dict] = []
    offset = "-1"
    while True:
        page = api.get(f"sessions/{session_id}/events", params={"offset": offset}, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        events += body["events"]
        offset = body["offset"]
        if body["upToDate"]:
            return events, offset


@MODES
def test_streamdb_materializes_what_the_session_api_wrote(api, private_server, live):
    alice = User.objects.create_user(f"alice-{live}")
    token = token_headers(alice)
    sid = new_session(api, token)
    ids = [post_message(api, sid, token, content=f"message {n}") for n in range(5)]
    events, offset = events_of(api, sid, token)
    url = f"{private_server.url}/v1/stream/sessions/{sid}"
    report = run_streamdb(url, live=live, headers=token)
    assert report["invalid"] == []  # every row fits the reference schema
    assert report["collections"] == expected_rows(events)
    assert sorted(report["collections"]["chunk"]) == sorted(f"{m}:0" for m in ids)
    assert {row["actorId"] for row in report["collections"]["chunk"].values()} == {alice.username}
    assert report["offset"] == offset


@MODES
def test_await_txid_resolves_for_a_token_client(api, private_server, live):
    alice = User.objects.create_user(f"alice-{live}")
    token = token_headers(alice)
    sid = new_session(api, token)
    post_message(api, sid, token, content="before")
    txid = str(uuid.uuid4())
    body = {"content": "hi", "txid": txid}
    post = {"url": f"{api.base_url}sessions/{sid}/messages", "body": body}
    url = f"{private_server.url}/v1/stream/sessions/{sid}"
    report = run_streamdb(url, live=live, headers=token, txid=txid, post=post)
    assert report["post"]["status"] == 200, report["post"]
    assert report["txid"]["resolved"] is True
    assert report["txid"]["ms"] < 2500, report["txid"]  # the default timeout is 5 s
    mid = json.loads(report["post"]["body"])["messageId"]
    row = report["collections"]["chunk"][f"{mid}:0"]
    assert row["actorId"] == alice.username and row["role"] == "user"


@MODES
def test_await_txid_resolves_for_a_session_cookie_client_without_csrf_header(
    api, private_server, live
):
    """As the reference client in a page: the session cookie on every request, no CSRF token,
    and what the browser adds to a same-origin fetch; then it awaits the txid."""
    owner = User.objects.create_user(f"owner-{live}")
    bob = User.objects.create_user(f"bob-{live}")
    sid = new_session(api, token_headers(owner))
    invited = api.post(
        f"sessions/{sid}/members",
        json={"username": bob.username, "role": "member"},
        headers=token_headers(owner),
    )
    assert invited.status_code == 201, invited.text
    cookie = cookie_headers(bob)
    url = f"{private_server.url}/v1/stream/sessions/{sid}"
    txid = str(uuid.uuid4())
    # actorId in the body is ignored: the actor is the cookie's user.
    body = {"content": "from the page", "txid": txid, "actorId": owner.username}
    post = {"url": f"{api.base_url}sessions/{sid}/messages", "body": body}
    run = start_streamdb(
        url, live=live, headers=cookie, txid=txid, post=post, browser=private_server.url
    )
    try:
        report = run.result()
    finally:
        run.stop()
    sent = {k.lower() for k in report["post"]["headers"]}
    assert {"cookie", "origin", "sec-fetch-site"} <= sent
    assert not sent & {"x-csrftoken", "authorization"}
    assert report["post"]["status"] == 200, report["post"]
    assert report["txid"]["resolved"] is True
    assert report["txid"]["ms"] < 2500, report["txid"]
    (row,) = [r for r in report["collections"]["chunk"].values() if "from the page" in r["chunk"]]
    assert row["actorId"] == bob.username


@MODES
def test_a_cookie_post_without_same_origin_proof_is_refused(api, private_server, live):
    """The session API enforces the same-origin rule: without ``Origin`` or ``Sec-Fetch-Site``
    (and without a CSRF token) a cookie-authenticated POST is 403, and nothing is written."""
    alice = User.objects.create_user(f"alice-{live}")
    cookie = cookie_headers(alice)
    sid = new_session(api, token_headers(alice))
    url = f"{private_server.url}/v1/stream/sessions/{sid}"
    post = {"url": f"{api.base_url}sessions/{sid}/messages", "body": {"content": "forged"}}
    report = run_streamdb(url, live=live, headers=cookie, post=post, check=False)
    assert report["post"]["status"] == 403, report["post"]
    for foreign in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        refused = api.post(
            f"sessions/{sid}/messages", json={"content": "forged"}, headers=cookie | foreign
        )
        assert refused.status_code == 403, refused.text
    events, _ = events_of(api, sid, token_headers(alice))
    assert events == []
