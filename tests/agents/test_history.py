"""history(): what an agent is sent, from real session states built of chunk rows."""

from __future__ import annotations

import json
from typing import Any

from durable_sessions import state
from durable_sessions.agents.history import history, openai_name
from tests.state.chat import Chat, fold


def tool_call(call_id: str, name: str = "get_time", arguments: str = "{}") -> dict[str, Any]:
    return {
        "type": "tool_call",
        "toolCall": {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        },
        "index": 0,
    }


def approval_requested(call_id: str, approval_id: str) -> dict[str, Any]:
    return {
        "type": "approval-requested",
        "toolCallId": call_id,
        "toolName": "get_time",
        "input": {},
        "approval": {"id": approval_id, "needsApproval": True},
    }


def asking(chat: Chat, message_id: str, call_id: str) -> list[dict[str, Any]]:
    """An assistant message that says a word, calls a tool and asks for approval."""
    return [
        *chat.text(message_id, "Let me check."),
        chat.chunk(message_id, tool_call(call_id)),
        chat.chunk(message_id, approval_requested(call_id, f"ap-{call_id}")),
        chat.chunk(message_id, {"type": "done", "finishReason": "tool_calls"}),
    ]


def test_text_messages_with_names_and_incomplete_ones_skipped() -> None:
    chat = Chat()
    events = [
        chat.chunk(
            "s0",
            state.whole_message("s0", role="system", content="Be brief.", created_at=chat.now()),
            role="system",
            actor="server",
        ),
        chat.user("u1", "Hello there", actor="alice@example.com"),
        *chat.text("a1", "Hi ", "Alice"),
        chat.chunk("a1", {"type": "done", "finishReason": "stop"}),
        chat.user("u2", "And you, bob?", actor="carol"),
        *chat.text("a2", "Still typ"),  # a generation in flight
    ]
    assert history(fold(events)) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there", "name": "alice_example_com"},
        {"role": "assistant", "content": "Hi Alice"},
        {"role": "user", "content": "And you, bob?", "name": "carol"},
    ]


def test_upto_includes_that_message_and_nothing_after() -> None:
    chat = Chat()
    events = [
        chat.user("u1", "one"),
        *chat.text("a1", "reply"),
        chat.chunk("a1", {"type": "stop", "reason": "user"}),
        chat.user("u2", "two"),
    ]
    s = fold(events)
    assert [m["content"] for m in history(s, upto="a1")] == ["one", "reply"]
    assert [m["content"] for m in history(s, upto="u2")] == ["one", "reply", "two"]
    assert [m["content"] for m in history(s, upto="unknown")] == ["one", "reply", "two"]


def test_an_approved_and_a_denied_call_answer_with_the_decision() -> None:
    chat = Chat()
    events = [
        chat.user("u1", "what time is it? use the tool"),
        *asking(chat, "a1", "c1"),
        chat.chunk("a1", state.approval_response("ap-c1", True)),
        *asking(chat, "a2", "c2"),
        chat.chunk("a2", state.approval_response("ap-c2", False)),
    ]
    sent = history(fold(events))
    assert sent[1] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ],
    }
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": '{"approved": true}'}
    assert sent[4] == {"role": "tool", "tool_call_id": "c2", "content": '{"approved": false}'}


def test_a_tool_result_message_answers_its_call_right_after_it() -> None:
    chat = Chat()
    result = state.tool_result_message(
        "r1", tool_call_id="c1", output={"time": "12:00"}, created_at=chat.now()
    )
    events = [
        chat.user("u1", "time?"),
        chat.chunk("a1", tool_call("c1", arguments="")),
        chat.chunk("a1", approval_requested("c1", "ap-c1")),
        chat.chunk("a1", {"type": "done", "finishReason": "tool_calls"}),
        chat.chunk("a1", state.approval_response("ap-c1", True)),
        chat.user("u2", "hurry up"),  # before the result came
        chat.chunk("r1", result, role="assistant", actor="alice"),
    ]
    sent = history(fold(events))
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]
    assert sent[1]["content"] is None
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": '{"time": "12:00"}'}
    # Up to the approval only, the result is not known yet: the decision answers.
    assert history(fold(events), upto="u2")[2]["content"] == '{"approved": true}'


def test_a_call_awaiting_its_answer_is_pending_and_an_orphan_result_is_left_out() -> None:
    chat = Chat()
    orphan = state.tool_result_message(
        "r9", tool_call_id="nobody", output="x", created_at=chat.now()
    )
    events = [
        chat.user("u1", "time?"),
        *asking(chat, "a1", "c1"),
        chat.chunk("r9", orphan, role="assistant", actor="alice"),
        chat.user("u2", "never mind"),
    ]
    sent = history(fold(events))
    assert sent[2] == {
        "role": "tool",
        "tool_call_id": "c1",
        "content": json.dumps({"pending": True}),
    }
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user"]


def test_a_server_side_tool_result_in_the_same_message_answers_it() -> None:
    chat = Chat()
    events = [
        chat.user("u1", "search"),
        chat.chunk("a1", tool_call("c1", name="search", arguments='{"q": "x"}')),
        chat.chunk("a1", {"type": "tool_result", "toolCallId": "c1", "content": "found 3"}),
        *chat.text("a1", "Found three."),
        chat.chunk("a1", {"type": "done", "finishReason": "stop"}),
    ]
    sent = history(fold(events))
    assert sent[1]["content"] == "Found three."
    assert sent[1]["tool_calls"][0]["function"] == {"name": "search", "arguments": '{"q": "x"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": "found 3"}


def test_an_empty_or_failed_reply_without_text_is_skipped() -> None:
    chat = Chat()
    events = [
        chat.user("u1", "hi"),
        chat.chunk("a1", {"type": "error", "error": {"message": "upstream 500"}}),
    ]
    assert history(fold(events)) == [{"role": "user", "content": "hi", "name": "alice"}]


def test_openai_names() -> None:
    assert openai_name("bob") == "bob"
    assert openai_name("Zoë O'Neil") == "Zo__O_Neil"
    assert openai_name("x" * 100) == "x" * 64
    assert openai_name("") == "_"
