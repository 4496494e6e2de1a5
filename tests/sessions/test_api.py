"""The session API in process: routes, bodies, answers, roles and strict validation."""

from __future__ import annotations

import uuid

import pytest

from durable_sessions import streams

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, url, body):
    return client.post(url, body, format="json")


def test_put_creates_then_confirms(as_alice):
    sid = str(uuid.uuid4())
    first = as_alice.put(f"/v1/sessions/{sid}")
    assert first.status_code == 201, first.content
    assert first.json()["sessionId"] == sid
    assert first.json()["streamUrl"] == f"/v1/stream/sessions/{sid}"
    assert first.json()["role"] == "owner"
    again = as_alice.put(f"/v1/sessions/{sid}")
    assert again.status_code == 200
    assert streams.info(f"sessions/{sid}").content_type == "application/json"


def test_get_list_and_delete(as_alice, session_id):
    assert as_alice.get(f"/v1/sessions/{session_id}").json()["title"] == "Plans"
    listed = as_alice.get("/v1/sessions/").json()
    assert [s["sessionId"] for s in listed] == [session_id]
    assert as_alice.delete(f"/v1/sessions/{session_id}").status_code == 204
    assert as_alice.get(f"/v1/sessions/{session_id}").status_code == 404
    with pytest.raises(streams.StreamNotFound):
        streams.info(f"sessions/{session_id}")


def test_unknown_and_malformed_ids_are_404(as_alice):
    assert as_alice.get(f"/v1/sessions/{uuid.uuid4()}").status_code == 404
    assert as_alice.get("/v1/sessions/not-a-uuid").status_code == 404
    assert (
        post(as_alice, f"/v1/sessions/{uuid.uuid4()}/messages", {"content": "x"}).status_code == 404
    )


def test_post_and_read_messages(as_alice, alice, session_id):
    txid = str(uuid.uuid4())
    answer = post(
        as_alice, f"/v1/sessions/{session_id}/messages", {"content": "hello", "txid": txid}
    )
    assert answer.status_code == 200, answer.content
    mid = answer.json()["messageId"]
    page = as_alice.get(f"/v1/sessions/{session_id}/messages").json()
    assert [m["id"] for m in page["messages"]] == [mid]
    message = page["messages"][0]
    assert message["actorId"] == "alice" and message["role"] == "user"
    assert message["parts"] == [{"type": "text", "content": "hello"}]
    events = as_alice.get(f"/v1/sessions/{session_id}/events").json()
    assert events["offset"] == page["offset"]
    (event,) = events["events"]
    assert event["type"] == "chunk" and event["key"] == f"{mid}:0"
    assert event["headers"]["txid"] == txid
    assert event["value"]["createdAt"].endswith("Z") and len(event["value"]["createdAt"]) == 24


def test_created_at_never_decreases_and_messages_keep_their_order(as_alice, session_id):
    ids = [
        post(as_alice, f"/v1/sessions/{session_id}/messages", {"content": str(i)}).json()[
            "messageId"
        ]
        for i in range(20)
    ]
    events = as_alice.get(f"/v1/sessions/{session_id}/events").json()["events"]
    stamps = [e["value"]["createdAt"] for e in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    page = as_alice.get(f"/v1/sessions/{session_id}/messages?limit=5").json()
    assert [m["id"] for m in page["messages"]] == ids[-5:] and page["hasMore"] is True
    older = as_alice.get(f"/v1/sessions/{session_id}/messages?limit=5&before={ids[-5]}").json()
    assert [m["id"] for m in older["messages"]] == ids[-10:-5]


def test_a_message_id_is_never_reused_but_a_retry_is_harmless(as_alice, as_bob, bob, session_id):
    url = f"/v1/sessions/{session_id}/messages"
    mid = str(uuid.uuid4())
    assert post(as_alice, url, {"messageId": mid, "content": "one"}).json() == {"messageId": mid}
    assert post(as_alice, url, {"messageId": mid, "content": "one"}).status_code == 200
    assert post(as_alice, url, {"messageId": mid, "content": "two"}).status_code == 409
    post(as_alice, f"/v1/sessions/{session_id}/members", {"username": "bob", "role": "member"})
    assert post(as_bob, url, {"messageId": mid, "content": "one"}).status_code == 409
    events = as_alice.get(f"/v1/sessions/{session_id}/events").json()["events"]
    assert len(events) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": ""},
        {"content": 5},
        {"content": ["hi"]},
        {"content": "hi", "messageId": "nope"},
        {"content": "hi", "messageId": 12},
        {"content": "hi", "txid": 7},
        {"content": "hi", "role": "robot"},
        {"content": "hi", "role": 1},
        {"content": "hi", "actorId": 3},
        [],
        "text",
    ],
)
def test_bad_message_bodies_are_400_and_write_nothing(as_alice, session_id, body):
    answer = post(as_alice, f"/v1/sessions/{session_id}/messages", body)
    assert answer.status_code == 400, answer.content
    assert as_alice.get(f"/v1/sessions/{session_id}/events").json()["events"] == []


def test_the_actor_is_the_authenticated_user(as_alice, session_id):
    url = f"/v1/sessions/{session_id}/messages"
    post(as_alice, url, {"content": "hi", "actorId": "mallory", "actorType": "agent"})
    as_alice.credentials(
        HTTP_AUTHORIZATION=as_alice._credentials["HTTP_AUTHORIZATION"], HTTP_X_ACTOR_ID="mallory"
    )
    post(as_alice, url, {"content": "again"})
    events = as_alice.get(f"/v1/sessions/{session_id}/events").json()["events"]
    assert {e["value"]["actorId"] for e in events} == {"alice"}


def test_roles(as_alice, as_bob, as_carol, session_id):
    base = f"/v1/sessions/{session_id}"
    assert (
        post(as_alice, f"{base}/members", {"username": "bob", "role": "member"}).status_code == 201
    )
    assert (
        post(as_alice, f"{base}/members", {"username": "carol", "role": "viewer"}).status_code
        == 201
    )
    assert (
        post(as_alice, f"{base}/members", {"username": "bob", "role": "viewer"}).status_code == 409
    )
    assert (
        post(as_alice, f"{base}/members", {"username": "nobody", "role": "viewer"}).status_code
        == 404
    )
    assert post(as_bob, f"{base}/messages", {"content": "hi"}).status_code == 200
    assert as_carol.get(f"{base}/messages").status_code == 200
    assert post(as_carol, f"{base}/messages", {"content": "hi"}).status_code == 403
    assert (
        post(as_bob, f"{base}/members", {"username": "carol", "role": "owner"}).status_code == 403
    )
    assert as_bob.delete(base).status_code == 403
    members = as_alice.get(f"{base}/members").json()["members"]
    assert {(m["username"], m["role"]) for m in members} == {
        ("alice", "owner"),
        ("bob", "member"),
        ("carol", "viewer"),
    }
    assert (
        as_alice.patch(f"{base}/members/carol", {"role": "member"}, format="json").status_code
        == 200
    )
    assert post(as_carol, f"{base}/messages", {"content": "now I may"}).status_code == 200
    assert as_carol.delete(f"{base}/members/carol").status_code == 204  # leaving
    assert as_carol.get(base).status_code == 403


def test_the_last_owner_stays(as_alice, session_id):
    base = f"/v1/sessions/{session_id}"
    assert (
        as_alice.patch(f"{base}/members/alice", {"role": "member"}, format="json").status_code
        == 409
    )
    assert as_alice.delete(f"{base}/members/alice").status_code == 409


def test_outsiders_get_403_and_anonymous_401(as_bob, session_id):
    from rest_framework.test import APIClient

    anonymous = APIClient()
    base = f"/v1/sessions/{session_id}"
    for client, code in ((as_bob, 403), (anonymous, 401)):
        assert client.get(base).status_code == code
        assert client.get(f"{base}/messages").status_code == code
        assert client.get(f"{base}/events").status_code == code
        assert client.get(f"{base}/members").status_code == code
        assert post(client, f"{base}/messages", {"content": "x"}).status_code == code
        assert client.delete(base).status_code == code
    assert anonymous.get("/v1/sessions/").status_code == 401


def test_archive_hides_and_refuses_writes(as_alice, session_id):
    base = f"/v1/sessions/{session_id}"
    assert as_alice.patch(base, {"archived": True}, format="json").json()["archived"] is True
    assert as_alice.get("/v1/sessions/").json() == []
    assert [s["sessionId"] for s in as_alice.get("/v1/sessions/?archived=true").json()] == [
        session_id
    ]
    assert post(as_alice, f"{base}/messages", {"content": "x"}).status_code == 409
    assert as_alice.get(f"{base}/messages").status_code == 200
    assert as_alice.patch(base, {"archived": False}, format="json").json()["archived"] is False
    assert post(as_alice, f"{base}/messages", {"content": "x"}).status_code == 200


def test_bad_offsets_are_400(as_alice, session_id):
    base = f"/v1/sessions/{session_id}/events"
    assert as_alice.get(f"{base}?offset=garbage").status_code == 400
    assert as_alice.get(f"{base}?limit=x").status_code == 200
    assert as_alice.get(f"/v1/sessions/{session_id}/messages?limit=0").status_code == 400
    assert as_alice.get(f"/v1/sessions/{session_id}/messages?before=zzz").status_code == 404


def test_schema_is_served(as_alice):
    answer = as_alice.get("/v1/schema/?format=json")
    assert answer.status_code == 200
    assert "/v1/sessions/{id}/messages" in answer.json()["paths"]


@pytest.mark.parametrize(
    "body",
    ["[" * 200_000 + "]" * 200_000, '{"content": NaN}', '{"content": "x"', "\xff", ""],
    ids=["nested-200k", "nan", "truncated", "not-utf8", "empty"],
)
def test_bodies_that_are_not_json_are_400_never_500(as_alice, session_id, body):
    base = f"/v1/sessions/{session_id}"
    for url in (f"{base}/messages", f"{base}/members", f"{base}/agents", f"{base}/login"):
        answer = as_alice.post(url, body, content_type="application/json")
        assert answer.status_code == 400, (url, answer.content[:200])
    beacon = as_alice.post(f"{base}/logout", body, content_type="text/plain")
    assert beacon.status_code == 400, beacon.content[:200]
    assert as_alice.get(f"{base}/events").json()["events"] == []
