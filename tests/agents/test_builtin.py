"""The built-in agents: the demo's approval round, and openai_chat against the fake upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from durable_sessions import state
from durable_sessions.agents import builtin
from durable_sessions.agents.history import history
from durable_sessions.agents.invoke import Invocation, InvocationError, Timeouts, events
from tests.agents.fake_upstream import FakeUpstream
from tests.state.chat import Chat, fold

DEMO = "python:durable_sessions.agents.builtin.demo"
OPENAI = "python:durable_sessions.agents.builtin.openai_chat"
# Generous: the openai package's first call (client, imports) takes seconds on a busy machine.
TIMEOUTS = Timeouts(connect=10.0, first_event=30.0, between_events=30.0, total=60.0)


@pytest.fixture(autouse=True)
def no_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin, "TOKEN_DELAY", 0)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


def invocation(
    endpoint: str, messages: list[dict[str, Any]], message_id: str = "a1", **template: Any
) -> Invocation:
    return Invocation(
        session_id="s1",
        agent_id="bot",
        message_id=message_id,
        messages=messages,
        body_template=template,
        headers={},
        endpoint=endpoint,
        trigger_message_id=None,
    )


async def run(inv: Invocation) -> list[dict[str, Any]]:
    return [event async for event in events(inv, timeouts=TIMEOUTS)]


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "content")


# -- demo --------------------------------------------------------------------------------


async def test_the_demo_answers_word_by_word_and_says_what_it_is() -> None:
    said = "Tell me about durable sessions please, in a few words"
    chunks = await run(invocation(DEMO, [{"role": "user", "content": said, "name": "alice"}]))
    assert [chunk["type"] for chunk in chunks][-1] == "done"
    assert chunks[-1]["finishReason"] == "stop"
    text = text_of(chunks)
    assert text.startswith("Hi alice!")
    assert "offline demo agent of durable_sessions" in text
    assert said in text and "approval" in text
    contents = [chunk for chunk in chunks if chunk["type"] == "content"]
    assert len(contents) == len(text.split(" "))
    assert contents[-1]["content"] == text  # both fields, as WIRE.md 3 asks


async def approval_round(approved: bool) -> str:
    chat = Chat()
    events_so_far = [chat.user("u1", "What time is it? Use the tool, I approve.")]
    first = await run(invocation(DEMO, history(fold(events_so_far)), message_id="a1"))
    assert [chunk["type"] for chunk in first][-3:] == ["tool_call", "approval-requested", "done"]
    asked = first[-2]
    assert asked["toolName"] == "get_time"
    assert asked["approval"] == {"id": "approval_a1", "needsApproval": True}
    assert first[-1]["finishReason"] == "tool_calls"
    # What the runtime writes of it, then the client's answer, as on a session stream.
    events_so_far += [chat.chunk("a1", chunk, actor="bot") for chunk in first]
    events_so_far.append(
        chat.chunk("a1", state.approval_response("approval_a1", approved), actor="bot")
    )
    second = await run(invocation(DEMO, history(fold(events_so_far)), message_id="a2"))
    assert second[-1]["type"] == "done" and second[-1]["finishReason"] == "stop"
    return text_of(second)


async def test_the_demo_asks_approval_and_tells_the_time_once_approved() -> None:
    assert (await approval_round(True)).startswith("approved: the time is ")


async def test_the_demo_asks_approval_and_declines_once_denied() -> None:
    assert (await approval_round(False)).startswith("denied: I won't")


async def test_the_demo_greets_an_empty_history() -> None:
    chunks = await run(invocation(DEMO, []))
    assert "offline demo agent" in text_of(chunks)


# -- openai_chat -------------------------------------------------------------------------


@pytest.fixture
def openai_settings(settings: Any, fake: FakeUpstream) -> None:
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "OPENAI_BASE_URL": f"{fake.url}/v1",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "fake-default",
    }


async def test_openai_chat_streams_the_openai_dialect_from_the_base_url(
    openai_settings: None, fake: FakeUpstream
) -> None:
    fake.script(
        tokens=["Hi", " there"],
        usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    )
    messages = [{"role": "user", "content": "hello", "name": "alice"}]
    chunks = await run(invocation(OPENAI, messages, model="m-x", temperature=0.5))
    deltas = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert deltas == "Hi there"
    assert chunks[-1]["usage"]["total_tokens"] == 7
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    (request,) = fake.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["model"] == "m-x"
    assert request.body["temperature"] == 0.5
    assert request.body["messages"] == messages
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}


async def test_openai_chat_uses_the_model_setting_and_streams_tool_calls(
    openai_settings: None, fake: FakeUpstream
) -> None:
    fake.script(
        tokens=[], tool_calls=[{"id": "call_1", "name": "get_time", "arguments": '{"tz": "UTC"}'}]
    )
    chunks = await run(invocation(OPENAI, [{"role": "user", "content": "time?"}]))
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0]["id"] == "call_1"
    assert "".join(call["function"].get("arguments", "") for call in calls) == '{"tz": "UTC"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert fake.requests[0].body["model"] == "fake-default"


async def test_openai_chat_fails_with_the_upstream_status(
    openai_settings: None, fake: FakeUpstream
) -> None:
    fake.script(status=500, body=json.dumps({"error": {"message": "boom"}}))
    with pytest.raises(InvocationError) as caught:
        await run(invocation(OPENAI, [{"role": "user", "content": "hi"}]))
    assert caught.value.code == "python_agent_failed"
    assert "500" in str(caught.value)
    assert len(fake.requests) == 1  # no retry of the SDK's own


async def test_openai_settings_fall_back_to_the_environment(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert builtin.openai_setting("OPENAI_MODEL") == "from-env"
    assert builtin.openai_setting("OPENAI_BASE_URL") == "https://api.openai.com/v1"
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "OPENAI_MODEL": "from-settings"}
    assert builtin.openai_setting("OPENAI_MODEL") == "from-settings"


async def test_openai_chat_without_a_key_for_openai_says_so(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(InvocationError) as caught:
        await run(invocation(OPENAI, [{"role": "user", "content": "hi"}]))
    assert caught.value.code == "python_agent_failed"
    assert "OPENAI_API_KEY" in str(caught.value)
