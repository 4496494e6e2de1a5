"""Folding from any checkpoint gives what folding from the start gives (hypothesis).

Random session streams (user messages, token chunks of every shape, approvals, tool results,
presence and agent rows, deletes, resets, invalid events, ties and disorder in ``createdAt``
and ``seq``) are cut at random points; at each cut the fold is checkpointed as JSON, restored
and continued. The state, the messages and every view must equal the fold from the start, and
a fold whose messages were read after every event (the caches) must equal one never read.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable_sessions import state, streams
from durable_sessions.state import InvalidEvent, Materializer, SessionState

MESSAGES = ["m0", "m1", "m2", "m3"]
CALLS = ["c0", "c1"]
TIMES = [f"2025-12-13T06:16:2{n}.000Z" for n in range(4)]
INVALID = [
    {
        "type": "chunk",
        "key": "m0:0",
        "value": {"messageId": "m0"},
        "headers": {"operation": "insert"},
    },
    {"type": "chunk", "key": "m0:9", "value": {"x": 1}},
    {"type": "presence", "key": "a", "value": "online", "headers": {"operation": "upsert"}},
    {"headers": {"control": "rewind"}},
    ["not", "an", "event"],
]


def chunk_payloads() -> st.SearchStrategy[dict[str, Any]]:
    text = st.sampled_from(["", "a", "b", "ab", " c"])
    call = st.sampled_from(CALLS)
    return st.one_of(
        st.builds(lambda d, c: {"type": "content", "delta": d, "content": c}, text, text),
        st.builds(lambda d: {"type": "content", "delta": d}, text),
        st.builds(lambda c: {"type": "content", "content": c}, text),
        st.builds(lambda d: {"type": "thinking", "delta": d}, text),
        st.builds(
            lambda c, a: {
                "type": "tool_call",
                "toolCall": {
                    "id": c,
                    "type": "function",
                    "function": {"name": "f", "arguments": a},
                },
                "index": 0,
            },
            call,
            st.sampled_from(["", "{", '"x":1}']),
        ),
        st.builds(lambda c: {"type": "tool_result", "toolCallId": c, "content": "r"}, call),
        st.builds(
            lambda c: {
                "type": "tool-input-available",
                "toolCallId": c,
                "toolName": "f",
                "input": {},
            },
            call,
        ),
        st.builds(
            lambda c: {
                "type": "approval-requested",
                "toolCallId": c,
                "toolName": "f",
                "input": {},
                "approval": {"id": f"ap-{c}", "needsApproval": True},
            },
            call,
        ),
        st.builds(lambda c, ok: state.approval_response(f"ap-{c}", ok), call, st.booleans()),
        st.just({"type": "done", "finishReason": "stop", "usage": {"totalTokens": 1}}),
        st.just(state.stop_chunk()),
        st.just(state.error_chunk("boom", code="x")),
        st.just({"type": "message-start"}),
        st.just({"type": "message-end"}),
        st.builds(
            lambda c: state.tool_result_message(
                "m0", tool_call_id=c, output={"v": 1}, created_at=TIMES[0]
            ),
            call,
        ),
        st.just(state.whole_message("m0", role="user", content="hi", created_at=TIMES[1])),
    )


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any] | list[str]:
    kind = draw(
        st.sampled_from(["chunk"] * 8 + ["presence", "agent", "delete", "reset", "invalid"])
    )
    txid = draw(st.one_of(st.none(), st.sampled_from(["t1", "t2", "t3"])))
    if kind == "chunk":
        message_id = draw(st.sampled_from(MESSAGES))
        row = state.chunk_row(
            message_id,
            draw(st.integers(0, 5)),
            actor_id=draw(st.sampled_from(["alice", "bot"])),
            role=draw(st.sampled_from(["user", "assistant"])),
            chunk=draw(chunk_payloads()),
            created_at=draw(st.sampled_from(TIMES)),
        )
        return state.chunk_event(row, txid=txid)
    if kind == "presence":
        status = draw(st.sampled_from(["online", "away", "offline"]))
        return state.upsert(
            "presence",
            "alice:d1",
            {"actorId": "alice", "deviceId": "d1", "status": status},
            txid=txid,
        )
    if kind == "agent":
        if draw(st.booleans()):
            return state.delete("agent", "bot", txid=txid)
        return state.upsert("agent", "bot", {"agentId": "bot", "endpoint": "https://x.example"})
    if kind == "delete":
        return state.delete(
            "chunk", f"{draw(st.sampled_from(MESSAGES))}:{draw(st.integers(0, 5))}", txid=txid
        )
    if kind == "reset":
        return state.control("reset")
    return draw(st.sampled_from(INVALID))


def apply(s: SessionState, event: object) -> None:
    with contextlib.suppress(InvalidEvent):
        s.apply(event)


def views(s: SessionState) -> dict[str, Any]:
    """Everything a caller can read from a session state."""
    return {
        "snapshot": s.snapshot(),
        "messages": [m.as_dict() for m in s.messages()],
        "active": s.active_generations(),
        "seq": {m: s.next_seq(m) for m in MESSAGES},
        "calls": {c: s.find_tool_call(c) for c in CALLS},
        "approvals": {c: s.find_approval(f"ap-{c}") for c in CALLS},
        "presence": s.presence(),
        "agents": s.agents(),
        "txids": sorted(s.txids),
    }


def restore(s: SessionState) -> SessionState:
    return SessionState.from_snapshot(json.loads(json.dumps(s.snapshot())))


@settings(max_examples=300, deadline=None)
@given(
    stream=st.lists(events(), max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    data=st.data(),
)
def test_folding_from_any_checkpoint_equals_folding_from_the_start(stream, cuts, data):
    whole = SessionState()
    for event in stream:
        apply(whole, event)
    expected = views(whole)

    watched = SessionState()  # its messages read after every event: the caches must keep up
    for event in stream:
        apply(watched, event)
        watched.messages()
    assert views(watched) == expected

    resumed = SessionState()
    cut_points = set(cuts)
    for index, event in enumerate(stream):
        if index in cut_points:
            if data.draw(st.booleans(), label="read messages before the checkpoint"):
                resumed.messages()
            resumed = restore(resumed)
        apply(resumed, event)
    if len(stream) in cut_points:
        resumed = restore(resumed)
    assert views(resumed) == expected


def entries() -> st.SearchStrategy[list[list[Any]]]:
    return st.lists(st.lists(events(), min_size=1, max_size=5), min_size=1, max_size=8)


@pytest.mark.django_db(transaction=True)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=entries(), cut=st.integers(0, 8))
def test_a_materializer_restored_from_a_checkpoint_reads_only_what_follows(batches, cut):
    cut = min(cut, len(batches))
    path = f"state-prop/{uuid.uuid4().hex[:12]}"
    streams.create(path, content_type="application/json")
    try:
        for batch in batches[:cut]:
            streams.append_json(path, batch)
        first = Materializer(path, state_factory=SessionState)
        first.catch_up()
        checkpoint = json.loads(json.dumps(first.checkpoint()))
        for batch in batches[cut:]:
            streams.append_json(path, batch)
        resumed = Materializer.restore(path, checkpoint, state_factory=SessionState)
        resumed.catch_up()
        fresh = Materializer(path, state_factory=SessionState)
        fresh.catch_up()
        assert resumed.offset == fresh.offset
        assert resumed.skipped == fresh.skipped
        assert first.applied + resumed.applied == fresh.applied  # nothing applied twice
        assert views(resumed.state) == views(fresh.state)  # type: ignore[arg-type]
    finally:
        streams.delete(path)


def test_the_arrival_order_of_tied_messages_survives_a_checkpoint():
    # m0 arrives first, but after its first row is deleted the rows of m1 come first in the
    # table: a restore that took the order from the rows would put m1 first.
    tie = TIMES[0]

    def row(message_id: str, seq: int) -> dict[str, Any]:
        chunk = {"type": "content", "delta": message_id}
        value = state.chunk_row(
            message_id, seq, actor_id="bot", role="assistant", chunk=chunk, created_at=tie
        )
        return state.chunk_event(value)

    s = SessionState()
    s.apply_all([row("m0", 1), row("m1", 0), row("m0", 0), state.delete("chunk", "m0:1")])
    assert [m.id for m in s.messages()] == ["m0", "m1"]
    assert [m.id for m in restore(s).messages()] == ["m0", "m1"]
