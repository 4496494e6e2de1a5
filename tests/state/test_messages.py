"""Messages materialized from chunk rows, with the reference client's rules and ours
(durable_sessions/state/messages.py, parts.py)."""

from __future__ import annotations

import uuid

import pytest

from durable_sessions import state, streams
from durable_sessions.state import InvalidEvent, Materializer, SessionState
from tests.state.chat import Chat, dicts, fold


def tool_call(call_id: str, name: str, arguments: str, index: int = 0) -> dict:
    return {
        "type": "tool_call",
        "toolCall": {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        },
        "index": index,
    }


def test_a_conversation_as_the_reference_fixture_has_it():
    chat = Chat()
    events = [chat.user("u1", "Hello")]
    events.append(chat.chunk("a1", {"type": "content", "delta": "", "content": ""}))
    events += chat.text("a1", "Hi", " there", "!")
    events.append(
        chat.chunk("a1", {"type": "done", "finishReason": "stop", "usage": {"totalTokens": 160}})
    )
    events.append(chat.user("u2", "I don't know"))
    events += chat.text("a2", "No", " problem!")
    s = fold(events)
    messages = s.messages()
    assert [m.id for m in messages] == ["u1", "a1", "u2", "a2"]
    u1, a1, u2, a2 = messages
    assert u1.role == "user" and u1.actor_id == "alice" and u1.complete and u1.status == "done"
    assert u1.parts == [{"type": "text", "content": "Hello"}]
    assert a1.role == "assistant" and a1.actor_id == "bot"
    assert a1.parts == [{"type": "text", "content": "Hi there!"}]
    assert a1.complete and a1.status == "done" and a1.finish_reason == "stop"
    assert a1.usage == {"totalTokens": 160} and a1.last_seq == 4
    assert a1.created_at == events[1]["value"]["createdAt"]
    assert u2.parts == [{"type": "text", "content": "I don't know"}]
    assert a2.parts == [{"type": "text", "content": "No problem!"}]
    assert not a2.complete and a2.status == "streaming"
    assert s.active_generations() == ["a2"]
    assert a1.as_dict() == {
        "id": "a1",
        "role": "assistant",
        "actorId": "bot",
        "parts": [{"type": "text", "content": "Hi there!"}],
        "createdAt": a1.created_at,
        "isComplete": True,
        "status": "done",
        "finishReason": "stop",
        "usage": {"totalTokens": 160},
        "error": None,
        "lastSeq": 4,
    }


def test_the_legacy_user_message_shape_is_a_whole_message():
    chat = Chat()
    created = "2025-12-13T06:16:23.767Z"
    legacy = {
        "type": "user-message",
        "message": {
            "id": "u1",
            "role": "user",
            "parts": [{"type": "text", "content": "Hi"}],
            "createdAt": created,
        },
    }
    s = fold([chat.chunk("u1", legacy, role="user", actor="alice")])
    (message,) = s.messages()
    assert message.parts == [{"type": "text", "content": "Hi"}] and message.complete
    assert message.created_at == created  # the message's own createdAt wins for a whole message


def test_a_whole_message_ignores_the_chunks_after_it_but_counts_their_seq():
    chat = Chat()
    s = fold(
        [chat.user("u1", "Hi"), chat.chunk("u1", {"type": "content", "delta": "more"}, role="user")]
    )
    (message,) = s.messages()
    assert message.parts == [{"type": "text", "content": "Hi"}] and message.last_seq == 1
    assert s.next_seq("u1") == 2


def test_legacy_message_start_and_message_end():
    chat = Chat()
    events = [chat.chunk("a1", {"type": "message-start", "messageId": "a1", "role": "assistant"})]
    events += chat.text("a1", "Hel", "lo")
    s = fold(events)
    assert (
        s.message("a1").parts == [{"type": "text", "content": "Hello"}]
        and not s.message("a1").complete
    )
    s.apply(chat.chunk("a1", {"type": "message-end"}))
    assert s.message("a1").complete and s.message("a1").status == "done"


def test_content_chunks_with_only_delta_or_only_content_coalesce():
    chat = Chat()
    s = fold(
        [
            chat.chunk("a", {"type": "content", "delta": "one"}),
            chat.chunk("a", {"type": "content", "delta": " two"}),
            chat.chunk("b", {"type": "content", "content": "one"}),
            chat.chunk("b", {"type": "content", "content": "one two"}),
            chat.chunk("b", {"type": "content", "content": "one"}),  # already in the text
            chat.chunk("b", {"type": "content", "content": "!"}),  # not a prefix: appended
        ]
    )
    assert s.message("a").parts == [{"type": "text", "content": "one two"}]
    assert s.message("b").parts == [{"type": "text", "content": "one two!"}]


def test_text_then_tool_call_then_text_gives_three_parts():
    chat = Chat()
    events = chat.text("a", "Let me ", "check.")
    events.append(chat.chunk("a", tool_call("call_1", "weather", "")))
    events.append(chat.chunk("a", tool_call("call_1", "weather", '{"city":')))
    events.append(chat.chunk("a", tool_call("call_1", "weather", '"Paris"}')))
    events += chat.text("a", "It is ", "sunny.")
    events.append(chat.chunk("a", {"type": "done", "finishReason": "stop"}))
    s = fold(events)
    assert s.message("a").parts == [
        {"type": "text", "content": "Let me check."},
        {
            "type": "tool-call",
            "id": "call_1",
            "name": "weather",
            "arguments": '{"city":"Paris"}',
            "state": "input-complete",
        },
        {"type": "text", "content": "It is sunny."},
    ]
    assert s.find_tool_call("call_1") == "a" and s.find_tool_call("call_2") is None


def test_after_a_tool_call_a_delta_without_content_continues_the_whole_text_as_the_reference_does():
    chat = Chat()
    events = [
        chat.chunk("a", {"type": "content", "delta": "A"}),
        chat.chunk("a", tool_call("c", "f", "{}")),
    ]
    events.append(chat.chunk("a", {"type": "content", "delta": "B"}))
    s = fold(events)
    assert [p["type"] for p in s.message("a").parts] == ["text", "tool-call", "text"]
    assert s.message("a").parts[2] == {
        "type": "text",
        "content": "AB",
    }  # why WIRE.md asks for content


def test_tool_call_states_while_streaming():
    chat = Chat()
    s = fold([chat.chunk("a", tool_call("c1", "f", ""))])
    assert s.message("a").parts[0]["state"] == "awaiting-input"
    s.apply(chat.chunk("a", tool_call("c1", "f", '{"x"')))
    assert s.message("a").parts[0]["state"] == "input-streaming"
    s.apply(chat.chunk("a", tool_call("c2", "g", "{}", index=1)))
    assert [p["state"] for p in s.message("a").parts] == ["input-streaming", "input-streaming"]
    s.apply(chat.chunk("a", {"type": "stop", "reason": "user"}))  # the end completes every call
    assert [p["state"] for p in s.message("a").parts] == ["input-complete", "input-complete"]
    assert s.message("a").status == "stop" and s.message("a").finish_reason == "user"


def test_a_tool_call_chunk_without_its_fields_is_skipped():
    chat = Chat()
    s = fold(
        [
            chat.chunk("a", {"type": "tool_call"}),
            chat.chunk("a", {"type": "tool_call", "toolCall": {"id": "x"}}),
        ]
    )
    assert s.message("a").parts == []


def test_thinking_is_one_part_updated_in_place():
    chat = Chat()
    s = fold(
        [
            chat.chunk("a", {"type": "thinking", "delta": "Hmm", "content": "Hmm"}),
            chat.chunk("a", {"type": "content", "delta": "Yes", "content": "Yes"}),
            chat.chunk("a", {"type": "thinking", "delta": ", ok", "content": "Hmm, ok"}),
        ]
    )
    assert s.message("a").parts == [
        {"type": "thinking", "content": "Hmm, ok"},
        {"type": "text", "content": "Yes"},
    ]


def test_tool_result_and_tool_input_available_chunks():
    chat = Chat()
    s = fold(
        [
            chat.chunk("a", tool_call("c1", "f", "{}")),
            chat.chunk(
                "a",
                {"type": "tool-input-available", "toolCallId": "c1", "toolName": "f", "input": {}},
            ),
            chat.chunk("a", {"type": "tool_result", "toolCallId": "c1", "content": "42"}),
            chat.chunk("a", {"type": "tool_result", "toolCallId": "c1", "content": "43"}),
        ]
    )
    assert s.message("a").parts == [
        {
            "type": "tool-call",
            "id": "c1",
            "name": "f",
            "arguments": "{}",
            "state": "input-streaming",
        },
        {"type": "tool-result", "toolCallId": "c1", "content": "43", "state": "complete"},
    ]


def test_an_approval_is_requested_then_answered_as_the_next_seq_of_the_same_message():
    chat = Chat()
    events = [
        chat.chunk("a", tool_call("c1", "delete_file", '{"path":"/tmp/x"}')),
        chat.chunk(
            "a",
            {
                "type": "approval-requested",
                "toolCallId": "c1",
                "toolName": "delete_file",
                "input": {"path": "/tmp/x"},
                "approval": {"id": "ap1", "needsApproval": True},
            },
        ),
    ]
    s = fold(events)
    part = s.message("a").parts[0]
    assert part["state"] == "approval-requested" and part["approval"] == {
        "id": "ap1",
        "needsApproval": True,
    }
    s.apply(chat.chunk("a", {"type": "done", "finishReason": "tool_calls"}))
    part = s.message("a").parts[0]
    assert part["approval"] == {"id": "ap1", "needsApproval": True}  # kept when the input completes
    assert s.find_approval("ap1") == ("a", 3) and s.find_approval("nope") is None
    s.apply(chat.chunk("a", state.approval_response("ap1", False), seq=3))
    message = s.message("a")
    assert message.parts[0]["state"] == "approval-responded"
    assert message.parts[0]["approval"] == {"id": "ap1", "needsApproval": True, "approved": False}
    assert message.complete and message.status == "done" and s.active_generations() == []
    assert s.next_seq("a") == 4


def test_a_tool_result_written_by_the_server_is_a_complete_message_under_the_clients_id():
    chat = Chat()
    created = chat.now()
    chunk = state.tool_result_message(
        "r1", tool_call_id="c1", output={"ok": True}, created_at=created
    )
    s = fold(
        [
            chat.chunk("a", tool_call("c1", "f", "{}")),
            chat.chunk("r1", chunk, actor="alice", created_at=created),
        ]
    )
    result = s.message("r1")
    assert result.role == "assistant" and result.actor_id == "alice" and result.complete
    assert result.parts == [
        {"type": "tool-result", "toolCallId": "c1", "content": '{"ok": true}', "state": "complete"}
    ]
    assert s.active_generations() == ["a"]


def test_errors_end_a_generation_as_objects_or_as_the_references_string():
    chat = Chat()
    s = fold(
        [
            chat.chunk("a", {"type": "content", "delta": "x"}),
            chat.chunk("a", state.error_chunk("agent answered 502", code="http_502")),
            chat.chunk("b", {"type": "error", "error": "plain"}),
        ]
    )
    assert s.message("a").status == "error" and s.message("a").complete
    assert s.message("a").error == {"message": "agent answered 502", "code": "http_502"}
    assert s.message("a").parts == [{"type": "text", "content": "x"}]
    assert s.message("b").error == {"message": "plain"}


def test_the_first_end_of_a_generation_wins():
    chat = Chat()
    s = fold(
        [
            chat.chunk("a", {"type": "done", "finishReason": "stop"}),
            chat.chunk("a", state.stop_chunk()),
        ]
    )
    assert s.message("a").status == "done" and s.message("a").finish_reason == "stop"


def test_chunks_are_folded_in_seq_order_whatever_the_arrival_order():
    chat = Chat()
    s = fold(
        [
            chat.chunk("a", {"type": "content", "delta": " world"}, seq=1),
            chat.chunk("a", {"type": "content", "delta": "Hello"}, seq=0),
        ]
    )
    assert s.message("a").parts == [{"type": "text", "content": "Hello world"}]


def test_messages_are_ordered_by_their_earliest_created_at_then_by_arrival():
    chat = Chat()
    same = "2025-12-13T06:16:25.000Z"
    s = fold(
        [
            chat.chunk(
                "late", {"type": "content", "delta": "x"}, created_at="2025-12-13T06:16:26.000Z"
            ),
            chat.chunk("tie-2", {"type": "content", "delta": "x"}, created_at=same),
            chat.chunk("tie-1", {"type": "content", "delta": "x"}, created_at=same),
        ]
    )
    assert [m.id for m in s.messages()] == ["tie-2", "tie-1", "late"]
    s.apply(
        chat.chunk("late", {"type": "content", "delta": "y"}, created_at="2025-12-13T06:16:24.000Z")
    )
    assert [m.id for m in s.messages()] == ["late", "tie-2", "tie-1"]
    assert s.message("late").created_at == "2025-12-13T06:16:26.000Z"  # the createdAt of seq 0


def test_deleting_chunk_rows_and_reset():
    chat = Chat()
    s = fold([chat.user("u1", "a"), *chat.text("a1", "x", "y")])
    s.apply(state.delete("chunk", "a1:1"))
    assert s.message("a1").parts == [{"type": "text", "content": "x"}]
    s.apply(state.delete("chunk", "a1:0"))
    assert s.message("a1") is None and [m.id for m in s.messages()] == ["u1"]
    s.apply(state.control("reset"))
    assert s.messages() == [] and s.active_generations() == []
    assert (
        s.next_seq("a1") == 2 and s.next_seq("u1") == 1
    )  # seq is never reused, not even after a reset
    assert s.next_seq("unknown") == 0


def test_presence_and_agent_rows():
    s = SessionState()
    s.apply(
        state.upsert(
            "presence", "alice:d1", {"actorId": "alice", "deviceId": "d1", "status": "online"}
        )
    )
    s.apply(state.upsert("agent", "bot", {"agentId": "bot", "endpoint": "https://a.example/x"}))
    s.apply(
        state.upsert(
            "presence", "alice:d1", {"actorId": "alice", "deviceId": "d1", "status": "away"}
        )
    )
    assert s.presence() == {"alice:d1": {"actorId": "alice", "deviceId": "d1", "status": "away"}}
    assert list(s.agents()) == ["bot"]
    s.apply(state.delete("agent", "bot"))
    assert s.agents() == {}


GOOD_ROW = {
    "messageId": "m",
    "actorId": "a",
    "role": "user",
    "chunk": '{"type":"content"}',
    "seq": 0,
    "createdAt": "2025-12-13T06:16:25.000Z",
}
BAD_ROWS = [
    ({"messageId": None}, "has no string messageId"),
    ({"actorId": ""}, "has no string actorId"),
    ({"chunk": {"type": "content"}}, "has no string chunk"),
    ({"createdAt": 5}, "has no string createdAt"),
    ({"seq": "0"}, "seq that is not an integer"),
    ({"seq": False}, "seq that is not an integer"),
    ({"role": "agent"}, "has the role 'agent'"),
    ({"seq": 1}, "is not keyed <messageId>:<seq>"),
    ({"chunk": "{nope"}, "is not JSON"),
    ({"chunk": "[1]"}, "not an object with a string type"),
    ({"chunk": '{"type":"whole-message","message":{"id":"m"}}'}, "has no message parts"),
]


@pytest.mark.parametrize(("change", "message"), BAD_ROWS)
def test_a_bad_chunk_row_is_refused_with_what_is_wrong(change, message):
    s = SessionState()
    with pytest.raises(InvalidEvent) as caught:
        s.apply(state.insert("chunk", "m:0", {**GOOD_ROW, **change}, txid="t"))
    assert message in str(caught.value)
    assert s.messages() == [] and s.rows("chunk") == {} and not s.has_txid("t")


@pytest.mark.django_db(transaction=True)
def test_a_materializer_of_a_session_skips_bad_rows_and_keeps_the_good_ones():
    path = f"state-test/{uuid.uuid4().hex[:12]}"
    chat = Chat()
    streams.create(path, content_type="application/json")
    streams.append_json(
        path,
        [
            chat.user("u1", "hi", txid="tx1"),
            state.insert("chunk", "m:0", {**GOOD_ROW, "chunk": "{"}),
        ],
    )
    streams.append_json(path, chat.text("a1", "hel", "lo"))
    folder = Materializer(path, state_factory=SessionState)
    assert folder.catch_up() == 3 and folder.skipped == 1
    assert isinstance(folder.state, SessionState)
    assert [m["id"] for m in dicts(folder.state)] == ["u1", "a1"] and folder.state.has_txid("tx1")
    restored = Materializer.restore(path, folder.checkpoint(), state_factory=SessionState)
    streams.append_json(path, [chat.chunk("a1", {"type": "done"})])
    assert restored.catch_up() == 1
    assert restored.state.message("a1").complete
    streams.delete(path)
