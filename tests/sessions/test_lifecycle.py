"""Fork and reset (durable_sessions/sessions/lifecycle.py), through the API."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from durable_sessions import state, streams
from durable_sessions.sessions import errors, writes
from durable_sessions.sessions.lifecycle import agent_events, presence_events
from durable_sessions.sessions.models import Agent, Device, Membership, Session

pytestmark = pytest.mark.django_db(transaction=True)


def post(client: APIClient, sid: str, content: str, message_id: str | None = None) -> str:
    body = {"content": content, **({"messageId": message_id} if message_id else {})}
    response = client.post(f"/v1/sessions/{sid}/messages", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()["messageId"]


def chunk(sid: str, message_id: str, seq: int, payload: dict) -> None:
    """An agent's token chunk, written as the runtime writes it."""
    session = Session.objects.get(pk=sid)
    writes.append_chunk(
        session, message_id=message_id, seq=seq, actor_id="bot", role="assistant", chunk=payload
    )


def text(sid: str, message_id: str, seq: int, delta: str, so_far: str) -> None:
    chunk(sid, message_id, seq, {"type": "content", "delta": delta, "content": so_far})


def messages(client: APIClient, sid: str) -> list[dict]:
    response = client.get(f"/v1/sessions/{sid}/messages", {"limit": 500})
    assert response.status_code == 200, response.content
    return response.json()["messages"]


def events(sid: str) -> list[dict]:
    out, offset = [], "-1"
    while True:
        result = streams.read(f"sessions/{sid}", offset)
        out += result.messages()
        offset = result.next
        if result.up_to_date:
            return out


def fork(client: APIClient, sid: str, body: dict | None = None, status: int = 201):
    response = client.post(f"/v1/sessions/{sid}/fork", body or {}, format="json")
    assert response.status_code == status, response.content
    return response.json()


def invite(client: APIClient, sid: str, username: str, role: str) -> None:
    response = client.post(
        f"/v1/sessions/{sid}/members", {"username": username, "role": role}, format="json"
    )
    assert response.status_code == 201, response.content


def add_agent(sid: str, user) -> None:
    session = Session.objects.get(pk=sid)
    Agent.objects.create(
        session=session,
        agent_id="helper",
        name="Helper",
        endpoint="https://agents.example/run?key=x",
        headers={"Authorization": "Bearer secret"},
        created_by=user,
    )
    writes.append_events(session, agent_events(session))


def go_online(sid: str, user, device: str) -> None:
    session = Session.objects.get(pk=sid)
    Device.objects.create(
        session=session,
        user=user,
        actor_id=user.username,
        device_id=device,
        name=user.username,
        last_seen_at=timezone.now(),
    )
    writes.append_events(session, presence_events(session))


# -- fork --------------------------------------------------------------------------------------


def test_a_whole_fork_has_the_same_messages_and_is_mine(as_alice, alice, session_id):
    post(as_alice, session_id, "hello")
    text(session_id, "a1", 0, "Hi", "Hi")
    chunk(session_id, "a1", 1, {"type": "done", "finishReason": "stop"})
    body = fork(as_alice, session_id)
    assert body["offset"] == "-1"
    new = Session.objects.get(pk=body["sessionId"])
    assert new.forked_from_id == uuid.UUID(session_id) and new.owner == alice
    assert Membership.objects.get(session=new).role == "owner"
    assert messages(as_alice, body["sessionId"]) == messages(as_alice, session_id)
    assert new.clock_ms >= Session.objects.get(pk=session_id).clock_ms
    # the fork's clock continues after the source's, and it is a session of its own
    post(as_alice, body["sessionId"], "only in the fork")
    forked = messages(as_alice, body["sessionId"])
    assert forked[-1]["createdAt"] > max(m["createdAt"] for m in forked[:-1])
    assert len(messages(as_alice, session_id)) == 2


def test_a_fork_at_a_message_ends_with_its_last_chunk(as_alice, session_id):
    first = post(as_alice, session_id, "one")
    text(session_id, "a1", 0, "Hel", "Hel")
    second = post(as_alice, session_id, "two, while a1 streams")
    text(session_id, "a1", 1, "lo", "Hello")
    chunk(session_id, "a1", 2, {"type": "done", "finishReason": "stop"})
    post(as_alice, session_id, "three")
    at_a1 = fork(as_alice, session_id, {"atMessageId": "a1"})["sessionId"]
    assert [m["id"] for m in messages(as_alice, at_a1)] == [first, "a1", second]
    assert messages(as_alice, at_a1)[1]["parts"] == [{"type": "text", "content": "Hello"}]
    # at the second message: a1 is there as far as it had got, and stopped
    at_second = fork(as_alice, session_id, {"atMessageId": second})["sessionId"]
    forked = {m["id"]: m for m in messages(as_alice, at_second)}
    assert list(forked) == [first, "a1", second]
    assert forked["a1"]["parts"] == [{"type": "text", "content": "Hel"}]
    assert forked["a1"]["status"] == "stop" and forked["a1"]["finishReason"] == "fork"
    # the fork continues the messages' seqs: none is written twice there either
    with pytest.raises(errors.Conflict):
        text(at_second, "a1", 1, "x", "Helx")
    assert post_status(as_alice, at_second, first) == 409


def post_status(client: APIClient, sid: str, message_id: str) -> int:
    response = client.post(
        f"/v1/sessions/{sid}/messages",
        {"content": "again", "messageId": message_id},
        format="json",
    )
    return response.status_code


def test_a_fork_cuts_an_append_that_holds_more_than_the_message(as_alice, session_id):
    session = Session.objects.get(pk=session_id)
    rows = [
        state.chunk_row(m, 0, actor_id="bot", role="assistant", chunk=c, created_at=t)
        for m, c, t in (
            ("x", {"type": "content", "delta": "x"}, "2030-01-01T00:00:00.000Z"),
            ("y", {"type": "content", "delta": "y"}, "2030-01-01T00:00:00.001Z"),
        )
    ]
    writes.append_events(session, [state.chunk_event(r) for r in rows])
    forked = fork(as_alice, session_id, {"atMessageId": "x"})["sessionId"]
    assert [m["id"] for m in messages(as_alice, forked)] == ["x"]


def test_fork_at_an_offset_and_with_a_new_id(as_alice, session_id):
    post(as_alice, session_id, "one")
    offset = as_alice.get(f"/v1/sessions/{session_id}/messages").json()["offset"]
    post(as_alice, session_id, "two")
    wanted = str(uuid.uuid4())
    body = fork(as_alice, session_id, {"atOffset": offset, "newSessionId": wanted})
    assert body["sessionId"] == wanted
    assert [m["parts"][0]["content"] for m in messages(as_alice, wanted)] == ["one"]
    empty = fork(as_alice, session_id, {"atOffset": "-1"})["sessionId"]
    assert messages(as_alice, empty) == []
    # taken ids: an existing session, the fork just made
    fork(as_alice, session_id, {"newSessionId": wanted}, status=409)
    fork(as_alice, session_id, {"newSessionId": session_id}, status=409)


@pytest.mark.parametrize(
    "body",
    [
        {"atMessageId": 5},
        {"newSessionId": "not-a-uuid"},
        {"atOffset": "1,2"},
        {"atOffset": "0000000000000009_0000000000000009"},
        {"atOffset": "0000000000000000_0000000000000005"},
        {"atMessageId": "m", "atOffset": "-1"},
        ["not", "an", "object"],
    ],
)
def test_bad_fork_bodies_are_400(as_alice, session_id, body):
    post(as_alice, session_id, "one")
    response = as_alice.post(f"/v1/sessions/{session_id}/fork", body, format="json")
    assert response.status_code == 400, response.content
    assert Session.objects.count() == 1


def test_unknown_message_and_session_are_404(as_alice, session_id):
    fork(as_alice, session_id, {"atMessageId": "nope"}, status=404)
    fork(as_alice, str(uuid.uuid4()), status=404)
    assert Session.objects.count() == 1


def test_owners_fork_with_agents_members_without_viewers_not(
    as_alice, as_bob, as_carol, alice, session_id
):
    add_agent(session_id, alice)
    go_online(session_id, alice, "laptop")
    invite(as_alice, session_id, "bob", "member")
    post(as_alice, session_id, "hi")
    mine = fork(as_alice, session_id)["sessionId"]
    copied = Agent.objects.get(session_id=mine)
    assert copied.headers == {"Authorization": "Bearer secret"} and copied.agent_id == "helper"
    assert as_alice.get(f"/v1/sessions/{mine}").status_code == 200
    rows = state.SessionState()
    rows.apply_all(events(mine))
    assert list(rows.agents()) == ["helper"] and rows.presence() == {}
    assert rows.agents()["helper"]["endpoint"] == "https://agents.example/run"
    # a member's fork: theirs, without the owners' agents (no secrets move to them)
    bobs = fork(as_bob, session_id)["sessionId"]
    assert Session.objects.get(pk=bobs).owner.username == "bob"
    assert not Agent.objects.filter(session_id=bobs).exists()
    rows = state.SessionState()
    rows.apply_all(events(bobs))
    assert rows.agents() == {} and len(rows.messages()) == 1
    assert as_alice.get(f"/v1/sessions/{bobs}").status_code == 403
    # a viewer may not fork, an outsider may not even see it
    fork(as_carol, session_id, status=403)
    invite(as_alice, session_id, "carol", "viewer")
    fork(as_carol, session_id, status=403)
    assert APIClient().post(f"/v1/sessions/{session_id}/fork", {}, format="json").status_code in (
        401,
        403,
    )


def test_an_archived_session_can_be_forked_not_reset(as_alice, session_id):
    post(as_alice, session_id, "old")
    as_alice.patch(f"/v1/sessions/{session_id}", {"archived": True}, format="json")
    forked = fork(as_alice, session_id)["sessionId"]
    assert len(messages(as_alice, forked)) == 1
    assert as_alice.post(f"/v1/sessions/{forked}/messages", {"content": "new"}).status_code == 200
    response = as_alice.post(f"/v1/sessions/{session_id}/reset", {}, format="json")
    assert response.status_code == 409
    assert post_status(as_alice, session_id, str(uuid.uuid4())) == 409


# -- reset -------------------------------------------------------------------------------------


def test_reset_with_a_generation_in_flight_never_reuses_a_seq(as_alice, session_id):
    post(as_alice, session_id, "tell me")
    for seq, (delta, so_far) in enumerate([("A", "A"), ("B", "AB"), ("C", "ABC")]):
        text(session_id, "gen", seq, delta, so_far)
    response = as_alice.post(f"/v1/sessions/{session_id}/reset", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "success": True,
        "sessionId": session_id,
        "message": "Session reset",
    }
    text(session_id, "gen", 3, "D", "ABCD")  # the generation continues at its next seq
    for seq in (0, 2, 3):
        with pytest.raises(errors.Conflict) as caught:
            text(session_id, "gen", seq, "again", "again")
        assert getattr(caught.value, "duplicate", False)
    with pytest.raises(errors.Conflict):
        text(session_id, "gen", 5, "gap", "gap")
    after = messages(as_alice, session_id)
    assert [m["id"] for m in after] == ["gen"] and after[0]["lastSeq"] == 3
    log = events(session_id)
    keys = [e["key"] for e in log if e.get("type") == "chunk" and "value" in e]
    assert keys.count("gen:3") == 1 and len(keys) == len(set(keys))


def test_reset_re_appends_agents_and_online_presence(as_alice, as_bob, alice, bob, session_id):
    add_agent(session_id, alice)
    invite(as_alice, session_id, "bob", "member")
    go_online(session_id, bob, "phone")
    Device.objects.create(
        session_id=session_id,
        user=alice,
        actor_id="alice",
        device_id="old",
        status="offline",
        last_seen_at=timezone.now(),
    )
    post(as_alice, session_id, "hi")
    assert as_bob.post(f"/v1/sessions/{session_id}/reset", {}, format="json").status_code == 403
    assert as_alice.post(f"/v1/sessions/{session_id}/reset").status_code == 200
    log = events(session_id)
    start = max(i for i, e in enumerate(log) if e.get("headers", {}).get("control") == "reset")
    deleted = [(e["type"], e["key"]) for e in log[start + 1 :] if "value" not in e]
    after = [e for e in log[start + 1 :] if "value" in e]
    assert [(e["type"], e["key"]) for e in after] == [
        ("agent", "helper"),
        ("presence", "bob:phone"),
    ]
    # for StreamDB, which keeps its rows across a reset: what the reset drops is deleted
    assert [kind for kind, _key in deleted] == ["chunk"]
    assert after[1]["value"]["status"] == "online"
    assert "secret" not in str(after) and "key=x" not in str(after)
    as_alice.post(f"/v1/sessions/{session_id}/reset", {"clearPresence": True}, format="json")
    log = events(session_id)
    start = max(i for i, e in enumerate(log) if e.get("headers", {}).get("control") == "reset")
    assert [(e["type"], e.get("key")) for e in log[start + 1 :]] == [
        ("presence", "bob:phone"),  # deleted: presence cleared
        ("agent", "helper"),
    ]
    assert "value" not in log[start + 1]
    bad = as_alice.post(f"/v1/sessions/{session_id}/reset", {"clearPresence": "yes"}, format="json")
    assert bad.status_code == 400
