"""The server's chunk rows and payloads (durable_sessions/state/chunks.py)."""

from __future__ import annotations

import json

import pytest

from durable_sessions import state
from durable_sessions.state import InvalidEvent

T = "2025-12-13T06:16:23.767Z"


def test_timestamp_is_utc_with_milliseconds_truncated():
    assert state.timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert state.timestamp(1765606583.7679) == "2025-12-13T06:16:23.767Z"
    times = [1765606583.0 + n / 3000 for n in range(3000)]
    texts = [state.timestamp(t) for t in times]
    assert texts == sorted(texts)  # never decreasing for increasing times


def test_a_chunk_row_holds_its_chunk_as_a_json_string():
    row = state.chunk_row(
        "m1", 0, actor_id="alice", role="user", chunk={"type": "x", "é": 1}, created_at=T
    )
    assert row == {
        "messageId": "m1",
        "actorId": "alice",
        "role": "user",
        "chunk": '{"type":"x","é":1}',
        "seq": 0,
        "createdAt": T,
    }
    event = state.chunk_event(row, txid="tx")
    assert event["key"] == "m1:0" and event["type"] == "chunk"
    assert event["headers"] == {"operation": "insert", "txid": "tx"}
    assert state.decode_chunk_row("m1:0", row) == {"type": "x", "é": 1}


BAD_ROWS = [
    ({"message_id": ""}, "messageId must be a non-empty string"),
    ({"seq": -1}, "seq must be an integer from 0"),
    ({"seq": True}, "seq must be an integer from 0"),
    ({"seq": "1"}, "seq must be an integer from 0"),
    ({"actor_id": None}, "actorId must be a non-empty string"),
    ({"role": "agent"}, "role must be one of user, assistant, system"),
    ({"chunk": {"no": "type"}}, "a chunk is an object with a string type"),
    ({"chunk": "text"}, "a chunk is an object with a string type"),
    ({"chunk": {"type": "x", "v": float("inf")}}, "the chunk cannot be written as JSON"),
    ({"chunk": {"type": "x", "v": {1, 2}}}, "the chunk cannot be written as JSON"),
    ({"created_at": "2025-12-13T06:16:23Z"}, "createdAt must be YYYY-MM-DDTHH:MM:SS.sssZ"),
    ({"created_at": "2025-12-13T06:16:23.767+00:00"}, "createdAt must be"),
]


@pytest.mark.parametrize(("change", "message"), BAD_ROWS)
def test_chunk_row_refuses_bad_arguments(change, message):
    args = {
        "message_id": "m",
        "seq": 0,
        "actor_id": "a",
        "role": "user",
        "chunk": {"type": "x"},
        "created_at": T,
    }
    args.update(change)
    with pytest.raises(InvalidEvent) as caught:
        state.chunk_row(args.pop("message_id"), args.pop("seq"), **args)
    assert message in str(caught.value)


def test_whole_message_from_content_or_parts():
    assert state.whole_message("m1", role="user", content="Hello", created_at=T) == {
        "type": "whole-message",
        "message": {
            "id": "m1",
            "role": "user",
            "parts": [{"type": "text", "content": "Hello"}],
            "createdAt": T,
        },
    }
    parts = [{"type": "text", "content": "a"}, {"type": "thinking", "content": "b"}]
    assert (
        state.whole_message("m1", role="assistant", parts=parts, created_at=T)["message"]["parts"]
        == parts
    )
    for kwargs, message in [
        ({}, "content or parts"),
        ({"content": "a", "parts": []}, "content or parts"),
        ({"content": 5}, "content must be a string"),
        ({"parts": [{"content": "no type"}]}, "parts is a list of objects"),
        ({"parts": "text"}, "parts is a list of objects"),
    ]:
        with pytest.raises(InvalidEvent, match=message):
            state.whole_message("m1", role="user", created_at=T, **kwargs)
    with pytest.raises(InvalidEvent, match="role must be"):
        state.whole_message("m1", role="bot", content="x", created_at=T)


def test_tool_result_message_is_a_whole_assistant_message_with_a_string_content():
    chunk = state.tool_result_message(
        "m9", tool_call_id="call_1", output={"temp": 21}, created_at=T
    )
    assert chunk["type"] == "whole-message"
    assert chunk["message"]["role"] == "assistant" and chunk["message"]["id"] == "m9"
    assert chunk["message"]["parts"] == [
        {
            "type": "tool-result",
            "toolCallId": "call_1",
            "content": '{"temp": 21}',
            "state": "complete",
        }
    ]
    failed = state.tool_result_part("call_1", "boom", error="it broke")
    assert failed == {
        "type": "tool-result",
        "toolCallId": "call_1",
        "content": "boom",
        "state": "error",
        "error": "it broke",
    }
    with pytest.raises(InvalidEvent, match="toolCallId"):
        state.tool_result_part("", "x")
    with pytest.raises(InvalidEvent, match="tool output cannot be written as JSON"):
        state.tool_result_part("c", {"x": object()})


def test_server_chunks():
    assert state.stop_chunk() == {"type": "stop", "reason": "user"}
    assert state.stop_chunk("timeout") == {"type": "stop", "reason": "timeout"}
    assert state.error_chunk("agent failed") == {
        "type": "error",
        "error": {"message": "agent failed"},
    }
    assert state.error_chunk("503", code="http_503") == {
        "type": "error",
        "error": {"message": "503", "code": "http_503"},
    }
    assert state.approval_response("ap1", True) == {
        "type": "approval-response",
        "approvalId": "ap1",
        "approved": True,
    }
    with pytest.raises(InvalidEvent, match="approved must be a boolean"):
        state.approval_response("ap1", 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="approvalId"):
        state.approval_response("", False)
    with pytest.raises(InvalidEvent, match="error message"):
        state.error_chunk("")
    for chunk in (state.stop_chunk(), state.error_chunk("x"), state.approval_response("a", False)):
        row = state.chunk_row("m", 3, actor_id="srv", role="assistant", chunk=chunk, created_at=T)
        assert json.loads(row["chunk"]) == chunk
