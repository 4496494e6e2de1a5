"""Tests of durable_sessions/agents/dialects: each dialect's recorded-style stream, normalised and
folded by ``state.parts.PartsFold``, gives the parts a reader shows; detection; terminals; and
malformed events, which raise ``MalformedOutput`` naming the event."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from durable_sessions.agents.dialects import FORMATS, MalformedOutput, Normalizer, detect
from durable_sessions.state import PartsFold

WEATHER_ARGS = '{"city": "Paris"}'
TEXT_PART = {"type": "text", "content": "Let me check the weather."}
CALL_PART = {
    "type": "tool-call",
    "id": "call_1",
    "name": "get_weather",
    "arguments": WEATHER_ARGS,
    "state": "input-complete",
}


def normalise(events: list[Any], format: str = "auto") -> tuple[Normalizer, list[dict[str, Any]]]:
    normalizer = Normalizer(format)
    chunks = [chunk for event in events for chunk in normalizer.feed(event)]
    return normalizer, chunks + normalizer.finish()


def fold(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts = PartsFold()
    for chunk in chunks:
        parts.feed(chunk)
    parts.finish()
    return parts.parts


def of_type(chunks: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [chunk for chunk in chunks if chunk["type"] == kind]


# -- recorded-style streams, one per dialect (written from each protocol's documented shapes) --


def tanstack(kind: str, timestamp: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "id": "r1", "model": "gpt-4o", "timestamp": timestamp, **fields}


def tanstack_call(timestamp: int, arguments: str) -> dict[str, Any]:
    function = {"name": "get_weather", "arguments": arguments}
    call = {"id": "call_1", "type": "function", "function": function}
    return tanstack("tool_call", timestamp, index=0, toolCall=call)


TANSTACK = [
    tanstack("thinking", 1, content="The user"),
    tanstack("thinking", 2, delta=" wants weather", content="The user wants weather"),
    tanstack("content", 3, delta="Let me", content="Let me", role="assistant"),
    tanstack("content", 4, delta=" check the weather.", content="Let me check the weather."),
    tanstack_call(5, ""),
    tanstack_call(6, '{"city"'),
    tanstack_call(7, ': "Paris"}'),
    tanstack(
        "done",
        8,
        finishReason="tool_calls",
        usage={"promptTokens": 12, "completionTokens": 9, "totalTokens": 21},
    ),
]

VERCEL = [
    {"type": "start", "messageId": "msg_1"},
    {"type": "start-step"},
    {"type": "reasoning-start", "id": "rs_1"},
    {"type": "reasoning-delta", "id": "rs_1", "delta": "The user"},
    {"type": "reasoning-delta", "id": "rs_1", "delta": " wants weather"},
    {"type": "reasoning-end", "id": "rs_1"},
    {"type": "text-start", "id": "txt_1"},
    {"type": "text-delta", "id": "txt_1", "delta": "Let me"},
    {"type": "text-delta", "id": "txt_1", "delta": ""},
    {"type": "text-delta", "id": "txt_1", "delta": " check the weather."},
    {"type": "text-end", "id": "txt_1"},
    {"type": "tool-input-start", "toolCallId": "call_1", "toolName": "get_weather"},
    {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": '{"city"'},
    {"type": "tool-input-delta", "toolCallId": "call_1", "inputTextDelta": ': "Paris"}'},
    {
        "type": "tool-input-available",
        "toolCallId": "call_1",
        "toolName": "get_weather",
        "input": {"city": "Paris"},
    },
    {"type": "data-weather-card", "data": {"loading": True}},
    {"type": "finish-step"},
    {"type": "finish"},
]


def openai_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [choice],
        "usage": None,
        **extra,
    }


def openai_args(arguments: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}


OPENAI = [
    openai_chunk({"role": "assistant", "content": "", "refusal": None}),
    openai_chunk({"reasoning_content": "The user wants weather"}),
    openai_chunk({"content": "Let me"}),
    openai_chunk({"content": " check the weather."}),
    openai_chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    openai_chunk(openai_args('{"city"')),
    openai_chunk(openai_args(': "Paris"}')),
    openai_chunk({}, "tool_calls"),
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    },
]

AGUI = [
    {"type": "RUN_STARTED", "threadId": "th_1", "runId": "run_1"},
    {"type": "REASONING_START", "messageId": "rm_1"},
    {"type": "REASONING_MESSAGE_START", "messageId": "rm_1", "role": "assistant"},
    {"type": "REASONING_MESSAGE_CONTENT", "messageId": "rm_1", "delta": "The user"},
    {"type": "REASONING_MESSAGE_CONTENT", "messageId": "rm_1", "delta": " wants weather"},
    {"type": "REASONING_MESSAGE_END", "messageId": "rm_1"},
    {"type": "REASONING_END", "messageId": "rm_1"},
    {"type": "TEXT_MESSAGE_START", "messageId": "m_1", "role": "assistant"},
    {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m_1", "delta": "Let me"},
    {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m_1", "delta": " check the weather."},
    {"type": "TEXT_MESSAGE_END", "messageId": "m_1"},
    {
        "type": "TOOL_CALL_START",
        "toolCallId": "call_1",
        "toolCallName": "get_weather",
        "parentMessageId": "m_1",
    },
    {"type": "TOOL_CALL_ARGS", "toolCallId": "call_1", "delta": '{"city"'},
    {"type": "TOOL_CALL_ARGS", "toolCallId": "call_1", "delta": ': "Paris"}'},
    {"type": "TOOL_CALL_END", "toolCallId": "call_1"},
    {"type": "STATE_SNAPSHOT", "snapshot": {"city": "Paris"}},
    {"type": "CUSTOM", "name": "progress", "value": 1},
    {"type": "RUN_FINISHED", "threadId": "th_1", "runId": "run_1"},
]

STREAMS = {"tanstack": TANSTACK, "vercel": VERCEL, "openai": OPENAI, "agui": AGUI}
THINKING_PART = {"type": "thinking", "content": "The user wants weather"}


@pytest.mark.parametrize("format", ["auto", "explicit"])
@pytest.mark.parametrize("dialect", sorted(STREAMS))
def test_a_recorded_stream_folds_to_text_thinking_and_a_tool_call(
    dialect: str, format: str
) -> None:
    normalizer, chunks = normalise(STREAMS[dialect], dialect if format == "explicit" else "auto")
    assert normalizer.format == dialect
    assert fold(chunks) == [THINKING_PART, TEXT_PART, CALL_PART]
    assert chunks[-1]["type"] == "done" and chunks[-1]["finishReason"] == "tool_calls"
    assert normalizer.terminal == chunks[-1]
    assert len(of_type(chunks, "done")) == 1
    for chunk in of_type(chunks, "content") + of_type(chunks, "thinking"):
        assert set(chunk) - {"id", "model", "timestamp"} == {"type", "delta"}, chunk
        assert chunk["delta"]
    for chunk in of_type(chunks, "tool_call"):
        assert chunk["index"] == 0 and chunk["toolCall"]["type"] == "function"
        assert chunk["toolCall"]["function"]["name"] == "get_weather"
    # arguments are deltas: they add up to the whole, and the fold appends them
    arguments = [
        chunk["toolCall"]["function"]["arguments"] for chunk in of_type(chunks, "tool_call")
    ]
    assert "".join(arguments) == WEATHER_ARGS


@pytest.mark.parametrize("dialect", ["vercel", "agui"])
def test_a_tool_whose_input_is_complete_is_announced_for_the_client(dialect: str) -> None:
    _, chunks = normalise(STREAMS[dialect])
    assert of_type(chunks, "tool-input-available") == [
        {
            "type": "tool-input-available",
            "toolCallId": "call_1",
            "toolName": "get_weather",
            "input": {"city": "Paris"},
        }
    ]


def test_openai_done_is_emitted_once_at_the_end_with_the_usage_that_came_last() -> None:
    normalizer = Normalizer()
    out = [normalizer.feed(event) for event in OPENAI]
    assert all(chunk["type"] != "done" for batch in out[:-1] for chunk in batch)
    usage = {"promptTokens": 12, "completionTokens": 9, "totalTokens": 21}
    assert out[-1] == [{"type": "done", "finishReason": "tool_calls", "usage": usage}]
    assert normalizer.finish() == []


def test_openai_done_without_a_usage_chunk_comes_at_finish() -> None:
    normalizer = Normalizer("openai")
    assert normalizer.feed(openai_chunk({"content": "Hi"})) == [{"type": "content", "delta": "Hi"}]
    assert normalizer.feed(openai_chunk({}, "length")) == []
    assert normalizer.terminal is None
    assert normalizer.finish() == [{"type": "done", "finishReason": "length"}]
    assert normalizer.terminal == {"type": "done", "finishReason": "length"}
    assert normalizer.finish() == []


def test_openai_usage_in_the_finishing_chunk_ends_it_there() -> None:
    normalizer = Normalizer()
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    chunks = normalizer.feed(openai_chunk({"content": "Hi"}, "stop", usage=usage))
    assert chunks == [
        {"type": "content", "delta": "Hi"},
        {
            "type": "done",
            "finishReason": "stop",
            "usage": {"promptTokens": 3, "completionTokens": 1, "totalTokens": 4},
        },
    ]
    assert normalizer.feed(openai_chunk({"content": "late"})) == []


def test_openai_calls_at_one_index_with_new_ids_are_separate_calls() -> None:
    call = {"index": 0, "function": {"name": "search", "arguments": '{"q":1}'}}
    _, chunks = normalise(
        [
            openai_chunk({"tool_calls": [{**call, "id": "a"}]}),
            openai_chunk({"tool_calls": [{**call, "id": "b"}]}),
            openai_chunk({}, "tool_calls"),
        ]
    )
    parts = fold(chunks)
    assert [(part["id"], part["arguments"]) for part in parts] == [
        ("a", '{"q":1}'),
        ("b", '{"q":1}'),
    ]
    assert [chunk["index"] for chunk in of_type(chunks, "tool_call")] == [0, 1]


@pytest.mark.parametrize(
    ("finish_reason", "ours"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("function_call", "tool_calls"),
        ("other", None),
    ],
)
def test_openai_finish_reasons(finish_reason: str, ours: str | None) -> None:
    _, chunks = normalise([openai_chunk({}, finish_reason)])
    assert chunks == [{"type": "done", "finishReason": ours}]


def test_openai_error_event_is_an_error() -> None:
    error = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}
    normalizer, chunks = normalise([{"error": error}])
    assert normalizer.format == "openai"
    assert chunks == [
        {"type": "error", "error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}
    ]


def test_vercel_server_tool_output_approval_and_finish_reason() -> None:
    _, chunks = normalise(
        [
            {"type": "start"},
            {
                "type": "tool-input-available",
                "toolCallId": "c1",
                "toolName": "lookup",
                "input": {"id": 7},
                "providerExecuted": True,
            },
            {"type": "tool-output-available", "toolCallId": "c1", "output": {"found": True}},
            {
                "type": "tool-input-available",
                "toolCallId": "c2",
                "toolName": "delete",
                "input": {"id": 7},
            },
            {"type": "tool-approval-request", "approvalId": "ap1", "toolCallId": "c2"},
            {"type": "finish", "finishReason": "tool-calls", "messageMetadata": {"x": 1}},
        ]
    )
    assert [chunk["type"] for chunk in chunks] == [
        "tool_call",
        "tool_result",
        "tool_call",
        "tool-input-available",
        "approval-requested",
        "done",
    ]
    assert chunks[1] == {"type": "tool_result", "toolCallId": "c1", "content": '{"found":true}'}
    assert chunks[4] == {
        "type": "approval-requested",
        "toolCallId": "c2",
        "toolName": "delete",
        "input": {"id": 7},
        "approval": {"id": "ap1", "needsApproval": True},
    }
    assert chunks[-1] == {"type": "done", "finishReason": "tool_calls"}
    parts = fold(chunks)
    assert parts[0]["arguments"] == '{"id":7}' and parts[0]["state"] == "input-complete"
    assert parts[1] == {
        "type": "tool-result",
        "toolCallId": "c1",
        "content": '{"found":true}',
        "state": "complete",
    }
    # the fold keeps the approval when done completes the input (as the reference does)
    assert parts[2]["approval"] == {"id": "ap1", "needsApproval": True}


@pytest.mark.parametrize(
    ("reason", "ours"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content-filter", "content_filter"),
        ("tool-calls", "tool_calls"),
        ("tool_calls", "tool_calls"),
        ("error", None),
        ("other", None),
    ],
)
def test_vercel_finish_reasons(reason: str, ours: str | None) -> None:
    _, chunks = normalise([{"type": "finish", "finishReason": reason}])
    assert chunks == [{"type": "done", "finishReason": ours}]


@pytest.mark.parametrize(
    ("events", "error"),
    [
        ([{"type": "error", "errorText": "overloaded"}], {"message": "overloaded"}),
        (
            [{"type": "start"}, {"type": "abort", "reason": "client left"}],
            {"message": "the agent aborted its stream: client left", "code": "aborted"},
        ),
        (
            [
                {"type": "RUN_STARTED", "threadId": "t", "runId": "r"},
                {"type": "RUN_ERROR", "message": "boom", "code": "E1"},
            ],
            {"message": "boom", "code": "E1"},
        ),
        (
            [{"type": "error", "error": {"message": "nope", "code": "x"}}],
            {"message": "nope", "code": "x"},
        ),
        ([{"type": "error", "error": "plain"}], {"message": "plain"}),
    ],
)
def test_errors_are_terminal(events: list[Any], error: dict[str, str]) -> None:
    normalizer, chunks = normalise(events)
    assert chunks[-1] == {"type": "error", "error": error} == normalizer.terminal


def test_agui_chunk_events_and_results() -> None:
    _, chunks = normalise(
        [
            {"type": "RUN_STARTED", "threadId": "t", "runId": "r"},
            {"type": "TEXT_MESSAGE_CHUNK", "messageId": "m", "delta": "Looking"},
            {
                "type": "TOOL_CALL_CHUNK",
                "toolCallId": "c1",
                "toolCallName": "lookup",
                "delta": '{"id"',
            },
            {"type": "TOOL_CALL_CHUNK", "delta": ":7}"},
            {"type": "TOOL_CALL_RESULT", "messageId": "t1", "toolCallId": "c1", "content": "found"},
            {"type": "RUN_FINISHED", "threadId": "t", "runId": "r"},
        ]
    )
    parts = fold(chunks)
    assert parts[1]["arguments"] == '{"id":7}'
    assert parts[2] == {
        "type": "tool-result",
        "toolCallId": "c1",
        "content": "found",
        "state": "complete",
    }
    assert chunks[-1] == {"type": "done", "finishReason": "stop"}  # the call has its result


@pytest.mark.parametrize("dialect", sorted(STREAMS))
def test_events_after_the_terminal_are_ignored(dialect: str) -> None:
    normalizer, _ = normalise(STREAMS[dialect])
    terminal = normalizer.terminal
    assert terminal is not None
    for late in [*STREAMS[dialect], "not even an object", None, {"type": "bogus"}]:
        assert normalizer.feed(late) == []
    assert normalizer.finish() == []
    assert normalizer.terminal is terminal


def test_a_stream_without_a_terminal_leaves_it_to_the_runtime() -> None:
    normalizer, chunks = normalise(VERCEL[:-1])
    assert normalizer.terminal is None and chunks[-1]["type"] == "tool-input-available"
    assert Normalizer().finish() == []


@pytest.mark.parametrize(
    ("event", "dialect"),
    [
        ({"object": "chat.completion.chunk", "choices": []}, "openai"),
        ({"choices": [{"delta": {"content": "x"}}]}, "openai"),
        ({"error": {"message": "x"}}, "openai"),
        ({"type": "RUN_STARTED", "threadId": "t", "runId": "r"}, "agui"),
        ({"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "x"}, "agui"),
        ({"type": "content", "delta": "x", "content": "x"}, "tanstack"),
        ({"type": "done", "finishReason": "stop"}, "tanstack"),
        ({"type": "error", "error": {"message": "x"}}, "tanstack"),
        (
            {"type": "tool-input-available", "toolCallId": "c", "toolName": "n", "input": {}},
            "tanstack",
        ),
        ({"type": "error", "errorText": "x"}, "vercel"),
        ({"type": "start"}, "vercel"),
        ({"type": "text-delta", "id": "t", "delta": "x"}, "vercel"),
        ({"type": "data-card", "data": {}}, "vercel"),
        ({"type": "error", "message": "x"}, None),
        ({"type": "text", "text": "x"}, None),
        ({"delta": "x"}, None),
        ({}, None),
    ],
)
def test_detection(event: dict[str, Any], dialect: str | None) -> None:
    assert detect(event) == dialect


@pytest.mark.parametrize(
    ("format", "event", "message"),
    [
        ("auto", ["a", "list"], "an agent event must be a JSON object, got an array"),
        ("auto", "data", "must be a JSON object, got a string"),
        ("vercel", None, "must be a JSON object, got null"),
        (
            "auto",
            {"type": "text", "text": "hi"},
            "cannot tell the dialect of the first agent event",
        ),
        ("auto", {"type": "error", "message": "x"}, "cannot tell the dialect"),
        (
            "vercel",
            {"type": "text-delta", "id": "t", "delta": 5},
            "vercel part 'text-delta': delta must be a string, got a number",
        ),
        ("vercel", {"type": "text-delta", "delta": "x"}, "vercel part 'text-delta': id is missing"),
        (
            "vercel",
            {"type": "tool-input-delta", "toolCallId": "zz", "inputTextDelta": "{"},
            "vercel part 'tool-input-delta': no tool call 'zz' was started",
        ),
        ("vercel", {"type": "finish", "finishReason": "done"}, "finishReason must be one of"),
        ("vercel", {"type": "bogus"}, "vercel part 'bogus': not a part type"),
        ("vercel", {"type": 3}, "vercel part 3: not a part type"),
        (
            "tanstack",
            {"type": "text", "text": "x"},
            "tanstack chunk 'text': not a TanStack AI chunk type",
        ),
        (
            "tanstack",
            {"type": "tool_call", "toolCall": {"id": "c"}},
            "tanstack chunk 'tool_call' toolCall: function is missing (an object)",
        ),
        ("tanstack", {"type": "content", "delta": ["x"]}, "delta must be a string, got an array"),
        ("tanstack", {"type": "done", "finishReason": "finished"}, "finishReason must be one of"),
        (
            "tanstack",
            {"type": "done", "usage": {"promptTokens": "3"}},
            "promptTokens must be an integer",
        ),
        (
            "tanstack",
            {"type": "content", "delta": "x", "timestamp": "now"},
            "timestamp must be a number",
        ),
        (
            "openai",
            {"object": "chat.completion", "choices": []},
            "object must be chat.completion.chunk",
        ),
        (
            "openai",
            {"type": "text-delta", "delta": "x"},
            "openai chunk: not a chat.completion.chunk",
        ),
        ("openai", {"choices": "x"}, "openai chunk: choices must be an array, got a string"),
        (
            "openai",
            {"choices": [{"delta": {"content": 1}}]},
            "openai chunk delta: content must be a string",
        ),
        (
            "openai",
            {
                "choices": [
                    {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}
                ]
            },
            "arguments for tool call index 0 before its id and name",
        ),
        (
            "openai",
            {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c"}]}}]},
            "tool call 'c' starts without a name",
        ),
        ("agui", {"type": "BOGUS"}, "ag-ui event 'BOGUS': not an AG-UI event type"),
        (
            "agui",
            {"type": "TOOL_CALL_ARGS", "toolCallId": "c9", "delta": "{"},
            "ag-ui event 'TOOL_CALL_ARGS': no tool call 'c9' was started",
        ),
        ("agui", {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m"}, "delta is missing"),
        ("agui", {"type": "RUN_ERROR", "code": "E"}, "ag-ui event 'RUN_ERROR': message is missing"),
    ],
)
def test_malformed_events(format: str, event: Any, message: str) -> None:
    normalizer = Normalizer(format)
    with pytest.raises(MalformedOutput, match=re.escape(message)):
        normalizer.feed(event)


def test_malformed_output_is_a_value_error_and_formats_are_checked() -> None:
    assert issubclass(MalformedOutput, ValueError)
    assert FORMATS == ("auto", "tanstack", "vercel", "openai", "agui")
    with pytest.raises(ValueError, match="format must be one of"):
        Normalizer("anthropic")


def test_tanstack_keeps_only_known_fields_and_derives_a_thinking_delta() -> None:
    normalizer = Normalizer("tanstack")
    chunk = {"type": "content", "delta": "Hi", "content": "Hi", "secret": "x", "model": "m"}
    assert normalizer.feed(chunk) == [{"type": "content", "model": "m", "delta": "Hi"}]
    assert normalizer.feed({"type": "thinking", "content": "ab"}) == [
        {"type": "thinking", "delta": "ab"}
    ]
    assert normalizer.feed({"type": "thinking", "content": "abc"}) == [
        {"type": "thinking", "delta": "c"}
    ]
    with pytest.raises(MalformedOutput, match="continue the thinking so far"):
        normalizer.feed({"type": "thinking", "content": "xyz"})
    result = {"type": "tool_result", "toolCallId": "c", "content": "ok", "extra": json.dumps({})}
    assert normalizer.feed(result) == [{"type": "tool_result", "toolCallId": "c", "content": "ok"}]
