"""The session actions: stop, tool results, approvals, regenerate (routes, writes, roles)."""

from __future__ import annotations

import json
import uuid

import pytest
from django.utils import timezone

from durable_sessions import streams
from durable_sessions.sessions import actions, errors, writes
from durable_sessions.sessions.models import Session
from tests.sessions.conftest import make_user, token_client

pytestmark = pytest.mark.django_db(transaction=True)

CALL = {
    "type": "tool_call",
    "toolCall": {
        "id": "call-1",
        "type": "function",
        "function": {"name": "weather", "arguments": "{}"},
    },
    "index": 0,
}
ASK = {
    "type": "approval-requested",
    "toolCallId": "call-1",
    "toolName": "weather",
    "input": {},
    "approval": {"id": "appr-1", "needsApproval": True},
}
DONE = {"type": "done", "finishReason": "tool_calls"}


def text(delta: str, so_far: str) -> dict:
    return {"type": "content", "delta": delta, "content": so_far}


def generate(session_id, message_id, chunks, agent="helper"):
    """An agent's generation, written as the runtime will: assistant chunks from seq 0."""
    session = Session.objects.get(pk=session_id)
    for seq, chunk in enumerate(chunks):
        writes.append_chunk(
            session, message_id=message_id, seq=seq, actor_id=agent, role="assistant", chunk=chunk
        )


def events(sid):
    return json.loads(streams.read(f"sessions/{sid}", "-1").body)


def chunks_of(sid, message_id):
    """``{seq: (row, decoded chunk, headers)}`` of a message, from the raw stream."""
    found = {}
    for event in events(sid):
        value = event.get("value") or {}
        if event.get("type") == "chunk" and value.get("messageId") == message_id:
            found[value["seq"]] = (value, json.loads(value["chunk"]), event["headers"])
    return found


def message(client, sid, message_id):
    page = client.get(f"/v1/sessions/{sid}/messages").json()["messages"]
    return next(m for m in page if m["id"] == message_id)


def post(client, url, body):
    return client.post(url, body, format="json")


@pytest.fixture
def members(session_id, as_alice, bob, carol):
    for username, role in (("bob", "member"), ("carol", "viewer")):
        answer = post(
            as_alice, f"/v1/sessions/{session_id}/members", {"username": username, "role": role}
        )
        assert answer.status_code == 201
    return session_id


# -- stop --------------------------------------------------------------------------------------


def test_stop_all_writes_stop_at_the_next_seq_of_each_active_generation(members, as_bob, as_alice):
    sid = members
    generate(sid, "g1", [text("Hel", "Hel"), text("lo", "Hello")])
    generate(sid, "g2", [text("Hi", "Hi")])
    generate(sid, "g3", [text("Done", "Done"), DONE])
    Session.objects.filter(pk=sid).update(generating_since=timezone.now())
    answer = post(as_bob, f"/v1/sessions/{sid}/stop", {"messageId": None})
    assert answer.status_code == 204, answer.content
    g1, g2, g3 = (chunks_of(sid, m) for m in ("g1", "g2", "g3"))
    assert sorted(g1) == [0, 1, 2] and g1[2][1] == {"type": "stop", "reason": "user"}
    assert g1[2][0]["role"] == "assistant" and g1[2][0]["actorId"] == "bob"
    assert sorted(g2) == [0, 1] and g2[1][1] == {"type": "stop", "reason": "user"}
    assert sorted(g3) == [0, 1]  # finished: untouched
    assert message(as_alice, sid, "g1")["status"] == "stop"
    assert message(as_alice, sid, "g1")["parts"] == [{"type": "text", "content": "Hello"}]
    assert Session.objects.get(pk=sid).generating_since is None
    # the runtime's next chunk of a stopped generation is refused: that is how it learns
    with pytest.raises(errors.Conflict) as caught:
        generate(sid, "g1", [text("Hel", "Hel"), text("lo", "Hello"), text("!", "Hello!")])
    assert getattr(caught.value, "duplicate", False)


def test_stop_one_and_an_empty_body(members, as_bob):
    sid = members
    generate(sid, "g1", [text("a", "a")])
    generate(sid, "g2", [text("b", "b")])
    Session.objects.filter(pk=sid).update(generating_since=timezone.now())
    assert post(as_bob, f"/v1/sessions/{sid}/stop", {"messageId": "g1"}).status_code == 204
    assert sorted(chunks_of(sid, "g1")) == [0, 1] and sorted(chunks_of(sid, "g2")) == [0]
    assert Session.objects.get(pk=sid).generating_since is not None  # g2 still generates
    assert post(as_bob, f"/v1/sessions/{sid}/stop", {"messageId": "g1"}).status_code == 204
    assert sorted(chunks_of(sid, "g1")) == [0, 1]  # stopped already: nothing more
    assert as_bob.post(f"/v1/sessions/{sid}/stop").status_code == 204  # no body: all
    assert sorted(chunks_of(sid, "g2")) == [0, 1]
    assert Session.objects.get(pk=sid).generating_since is None


def test_stop_unknown_message_is_404(members, as_bob):
    assert post(as_bob, f"/v1/sessions/{members}/stop", {"messageId": "nope"}).status_code == 404


def test_stop_retries_when_a_writer_takes_the_seq_meanwhile(members, bob):
    sid = members
    generate(sid, "g1", [text("a", "a")])
    session = Session.objects.get(pk=sid)
    calls = []

    def wanted(msg):  # the runtime writes seq 1 between our read and our write
        calls.append(msg.last_seq)
        if len(calls) == 1:
            writes.append_chunk(
                session,
                message_id="g1",
                seq=1,
                actor_id="helper",
                role="assistant",
                chunk=text("b", "ab"),
            )
        return not msg.complete

    assert actions._append_next(
        session, "g1", actor_id="bob", chunk={"type": "stop", "reason": "user"}, wanted=wanted
    )
    written = chunks_of(sid, "g1")
    assert sorted(written) == [0, 1, 2] and written[2][1]["type"] == "stop"
    assert calls == [0, 1]


@pytest.mark.parametrize(
    "body", [{"messageId": 5}, {"messageId": "a b"}, {"messageId": ["g1"]}, ["g1"]], ids=repr
)
def test_stop_bad_bodies_are_400(members, as_bob, body):
    assert post(as_bob, f"/v1/sessions/{members}/stop", body).status_code == 400


# -- tool results ------------------------------------------------------------------------------


def test_tool_result_is_a_whole_assistant_message(members, as_bob, as_alice):
    sid = members
    generate(sid, "g1", [CALL, DONE])
    mid, txid = str(uuid.uuid4()), str(uuid.uuid4())
    body = {"toolCallId": "call-1", "output": {"temp": 20}, "messageId": mid, "txid": txid}
    answer = post(as_bob, f"/v1/sessions/{sid}/tool-results", body)
    assert answer.status_code == 204, answer.content
    [(row, chunk, headers)] = chunks_of(sid, mid).values()
    assert row["seq"] == 0 and row["role"] == "assistant" and row["actorId"] == "bob"
    assert headers["txid"] == txid
    assert chunk["type"] == "whole-message"
    part = {
        "type": "tool-result",
        "toolCallId": "call-1",
        "content": '{"temp": 20}',
        "state": "complete",
    }
    assert chunk["message"]["parts"] == [part] and chunk["message"]["role"] == "assistant"
    shown = message(as_alice, sid, mid)
    assert shown["isComplete"] and shown["parts"] == [part]
    # the same post again is answered as the first; another result under that id is 409
    assert post(as_bob, f"/v1/sessions/{sid}/tool-results", body).status_code == 204
    assert len(chunks_of(sid, mid)) == 1
    other = {**body, "output": "different"}
    assert post(as_bob, f"/v1/sessions/{sid}/tool-results", other).status_code == 409


def test_tool_result_without_message_id_and_with_an_error(members, as_bob, as_alice):
    sid = members
    generate(sid, "g1", [CALL, DONE])
    body = {"toolCallId": "call-1", "output": None, "error": "no network"}
    assert post(as_bob, f"/v1/sessions/{sid}/tool-results", body).status_code == 204
    results = [
        m
        for m in as_alice.get(f"/v1/sessions/{sid}/messages").json()["messages"]
        if m["id"] != "g1"
    ]
    [result] = results
    uuid.UUID(result["id"])
    assert result["parts"][0]["state"] == "error" and result["parts"][0]["error"] == "no network"


def test_tool_result_for_an_unknown_call_is_404(members, as_bob):
    sid = members
    generate(sid, "g1", [CALL, DONE])
    body = {"toolCallId": "call-9", "output": 1}
    assert post(as_bob, f"/v1/sessions/{sid}/tool-results", body).status_code == 404
    assert len(events(sid)) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"output": 1},
        {"toolCallId": 5, "output": 1},
        {"toolCallId": "call-1"},
        {"toolCallId": "call-1", "output": 1, "error": 5},
        {"toolCallId": "call-1", "output": 1, "messageId": 5},
        {"toolCallId": "call-1", "output": 1, "messageId": "a:b"},
        {"toolCallId": "call-1", "output": 1, "txid": "not-a-uuid"},
        {"toolCallId": "call-1", "output": 1, "txid": 5},
        ["call-1"],
    ],
    ids=repr,
)
def test_tool_result_bad_bodies_are_400(members, as_bob, body):
    sid = members
    generate(sid, "g1", [CALL, DONE])
    assert post(as_bob, f"/v1/sessions/{sid}/tool-results", body).status_code == 400
    assert len(events(sid)) == 2


# -- approvals ---------------------------------------------------------------------------------


def test_approval_is_the_next_seq_of_the_asking_message(members, as_bob, as_alice):
    sid = members
    generate(sid, "g1", [CALL, ASK, DONE])
    txid = str(uuid.uuid4())
    answer = post(as_bob, f"/v1/sessions/{sid}/approvals/appr-1", {"approved": True, "txid": txid})
    assert answer.status_code == 204, answer.content
    written = chunks_of(sid, "g1")
    assert sorted(written) == [0, 1, 2, 3]
    row, chunk, headers = written[3]
    assert chunk == {"type": "approval-response", "approvalId": "appr-1", "approved": True}
    assert headers["txid"] == txid and row["role"] == "assistant"
    [call] = message(as_alice, sid, "g1")["parts"]
    assert call["approval"] == {"id": "appr-1", "needsApproval": True, "approved": True}
    # the same answer again writes nothing; the other answer is a conflict
    assert (
        post(as_bob, f"/v1/sessions/{sid}/approvals/appr-1", {"approved": True}).status_code == 204
    )
    refused = post(as_alice, f"/v1/sessions/{sid}/approvals/appr-1", {"approved": False})
    assert refused.status_code == 409 and refused.json()["detail"].endswith("already answered")
    assert sorted(chunks_of(sid, "g1")) == [0, 1, 2, 3]


def test_approval_while_the_generation_is_in_flight(members, as_bob):
    sid = members
    generate(sid, "g1", [CALL, ASK])
    assert (
        post(as_bob, f"/v1/sessions/{sid}/approvals/appr-1", {"approved": False}).status_code == 204
    )
    assert chunks_of(sid, "g1")[2][1]["approved"] is False


def test_unknown_approval_is_404(members, as_bob):
    sid = members
    generate(sid, "g1", [CALL, ASK, DONE])
    assert (
        post(as_bob, f"/v1/sessions/{sid}/approvals/appr-9", {"approved": True}).status_code == 404
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"approved": "true"},
        {"approved": 1},
        {"approved": None},
        {"approved": True, "txid": "x"},
        [True],
    ],
    ids=repr,
)
def test_approval_bad_bodies_are_400(members, as_bob, body):
    sid = members
    generate(sid, "g1", [CALL, ASK, DONE])
    assert post(as_bob, f"/v1/sessions/{sid}/approvals/appr-1", body).status_code == 400
    assert len(events(sid)) == 3


# -- regenerate --------------------------------------------------------------------------------


def test_regenerate(members, as_alice, as_bob):
    sid = members
    mid = post(as_alice, f"/v1/sessions/{sid}/messages", {"content": "hello"}).json()["messageId"]
    body = {"fromMessageId": mid, "content": "hello", "actorId": "forged", "actorType": "agent"}
    refused = post(as_bob, f"/v1/sessions/{sid}/regenerate", body)
    assert refused.status_code == 400 and "no agent" in refused.json()["detail"]
    agent = {"id": "helper", "endpoint": "https://8.8.8.8/agent"}
    assert post(as_alice, f"/v1/sessions/{sid}/agents", {"agents": [agent]}).status_code == 200
    before = events(sid)
    answer = post(as_bob, f"/v1/sessions/{sid}/regenerate", body)
    assert answer.status_code == 200 and answer.json() == {"success": True}
    [request] = events(sid)[len(before) :]  # a request row; the runtime answers it
    assert request["type"] == "regenerate-request"
    assert request["value"]["fromMessageId"] == mid and request["value"]["agentId"] == "helper"
    assert request["value"]["actorId"] == "bob"  # the forged actorId changed nothing
    unknown = {**body, "fromMessageId": "nope"}
    assert post(as_bob, f"/v1/sessions/{sid}/regenerate", unknown).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"content": "x"},
        {"fromMessageId": 5, "content": "x"},
        {"fromMessageId": "m"},
        {"fromMessageId": "m", "content": 5},
        ["m"],
    ],
    ids=repr,
)
def test_regenerate_bad_bodies_are_400(members, as_bob, body):
    assert post(as_bob, f"/v1/sessions/{members}/regenerate", body).status_code == 400


# -- roles -------------------------------------------------------------------------------------

ROUTES = [
    ("stop", {"messageId": None}),
    ("tool-results", {"toolCallId": "call-1", "output": 1}),
    ("approvals/appr-1", {"approved": True}),
    ("regenerate", {"fromMessageId": "g1", "content": "x"}),
]


@pytest.mark.parametrize(("route", "body"), ROUTES, ids=[r for r, _ in ROUTES])
def test_role_matrix(members, as_alice, as_bob, as_carol, client, route, body):
    sid = members
    generate(sid, "g1", [CALL, ASK])
    assert (
        post(
            as_alice,
            f"/v1/sessions/{sid}/agents",
            {"agents": [{"id": "helper", "endpoint": "https://8.8.8.8/"}]},
        ).status_code
        == 200
    )
    url = f"/v1/sessions/{sid}/{route}"
    before = len(events(sid))
    assert post(as_carol, url, body).status_code == 403
    outsider = token_client(make_user("dave"))
    assert post(outsider, url, body).status_code == 403
    assert client.post(url, body, content_type="application/json").status_code == 401
    assert len(events(sid)) == before
    staff = token_client(make_user("root", is_staff=True))
    assert post(as_bob, url, body).status_code in {200, 204}
    assert post(staff, url, body).status_code in {200, 204}
    assert (
        as_alice.patch(f"/v1/sessions/{sid}", {"archived": True}, format="json").status_code == 200
    )
    assert post(as_alice, url, body).status_code == 409
    assert post(as_bob, f"/v1/sessions/{uuid.uuid4()}/{route}", body).status_code == 404


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_a_deeply_nested_tool_output_is_stored_or_refused_never_500(members, as_bob, depth):
    sid = members
    generate(sid, "g1", [CALL, DONE])
    output = '{"d":' * depth + "{}" + "}" * depth  # written by hand: json.dumps would recurse
    answer = as_bob.post(
        f"/v1/sessions/{sid}/tool-results",
        '{"toolCallId": "call-1", "output": ' + output + "}",
        content_type="application/json",
    )
    if depth <= 100:
        assert answer.status_code == 204, answer.content[:300]
    else:
        assert answer.status_code == 400, answer.content[:300]
        assert len(events(sid)) == 2  # nothing written
