"""Two agents that come with durable_sessions, as Python async generators (``python:`` endpoints).

- ``demo`` (``python:durable_sessions.agents.builtin.demo``): offline, no model, no key. It
  answers the last user message word by word (``TOKEN_DELAY`` apart) in TanStack AI chunks,
  saying what it is and what it was told. Asked for a tool (a message with "tool" or
  "approve" in it), it calls ``get_time`` and asks for the call's approval (``tool_call``,
  ``approval-requested``, then ``done`` with ``finishReason: "tool_calls"``); invoked again
  once the approval is answered (the history then ends with the tool message ``history()``
  writes for it), it tells the time, or that it won't. Ids derive from the invocation's
  message id, so the same history gives the same chunks, bar the time it tells.
- ``openai_chat`` (``python:durable_sessions.agents.builtin.openai_chat``): any OpenAI-compatible
  Chat Completions API through the ``openai`` package, from the settings ``OPENAI_BASE_URL``,
  ``OPENAI_API_KEY`` and ``OPENAI_MODEL`` (a ``model`` in the agent's bodyTemplate wins; its
  other fields go into the request body). It yields each streamed chunk as a dict: the OpenAI
  dialect.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

from durable_sessions.agents.invoke import Invocation
from durable_sessions.conf import ds_settings

# Seconds between two words of the demo agent: slow enough to watch it stream (tests set 0).
TOKEN_DELAY = 0.03
DEMO_MODEL = "durable-sessions-demo"
TOOL_NAME = "get_time"
TOOL_WORDS = ("tool", "approve")
SUMMARY_WORDS = 12

OPENAI_DEFAULTS = {
    "OPENAI_BASE_URL": "https://api.openai.com/v1",
    "OPENAI_API_KEY": "",
    "OPENAI_MODEL": "gpt-4o-mini",
}


# -- demo --------------------------------------------------------------------------------


def _summary(text: str) -> str:
    words = text.split()
    shown = " ".join(words[:SUMMARY_WORDS])
    return shown + ("…" if len(words) > SUMMARY_WORDS else "")


def _last_user(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message
    return None


def _answered_call(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The answer to our last ``get_time`` call when the history ends with it, parsed."""
    if not messages or messages[-1].get("role") != "tool":
        return None
    call_id = messages[-1].get("tool_call_id")
    for message in reversed(messages):
        for call in message.get("tool_calls") or ():
            if call.get("id") == call_id and call["function"]["name"] == TOOL_NAME:
                content = messages[-1].get("content")
                try:
                    answer = json.loads(content) if isinstance(content, str) else content
                except ValueError:
                    answer = {"result": content}
                return answer if isinstance(answer, dict) else {"result": answer}
    return None


def _reply_to(message: dict[str, Any] | None, wants_tool: bool) -> str:
    if message is None:
        return (
            "Hello! I am the offline demo agent of durable_sessions: no model, no network, no"
            " key. Write me something and I will answer it."
        )
    who = message.get("name") or "there"
    text = str(message.get("content") or "")
    said = f"You wrote {len(text.split())} words: “{_summary(text)}”."
    if wants_tool:
        return (
            f"Hi {who}! I am the offline demo agent of durable_sessions. {said} You asked for a"
            f" tool, so I will call {TOOL_NAME}: approve or deny the call and I will go on."
        )
    return (
        f"Hi {who}! I am the offline demo agent of durable_sessions: no model, no network, no"
        f" key, just a script that streams word by word. {said} Ask me to use a tool (say"
        f" “tool” or “approve”) and I will request your approval before I call {TOOL_NAME}."
    )


def _answer_to(answer: dict[str, Any]) -> str:
    if answer.get("approved") is False:
        return f"denied: I won't call {TOOL_NAME}. Ask again whenever you like."
    if answer.get("approved") is True:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"approved: the time is {now}."
    if answer.get("pending"):
        return f"The {TOOL_NAME} call is still waiting for your approval."
    return f"{TOOL_NAME} returned: {json.dumps(answer, ensure_ascii=False)}."


async def _words(text: str, message_id: str) -> AsyncIterator[dict[str, Any]]:
    so_far = ""
    for index, word in enumerate(text.split(" ")):
        delta = word if index == 0 else " " + word
        so_far += delta
        if index and TOKEN_DELAY:
            await asyncio.sleep(TOKEN_DELAY)
        yield {
            "type": "content",
            "id": message_id,
            "model": DEMO_MODEL,
            "timestamp": int(time.time() * 1000),
            "role": "assistant",
            "delta": delta,
            "content": so_far,
        }


def _done(message_id: str, reason: str, words: int, prompt: list[dict[str, Any]]) -> dict[str, Any]:
    prompt_words = sum(len(str(m.get("content") or "").split()) for m in prompt)
    return {
        "type": "done",
        "id": message_id,
        "model": DEMO_MODEL,
        "timestamp": int(time.time() * 1000),
        "finishReason": reason,
        "usage": {
            "promptTokens": prompt_words,
            "completionTokens": words,
            "totalTokens": prompt_words + words,
        },
    }


async def demo(invocation: Invocation) -> AsyncIterator[dict[str, Any]]:
    """The offline demo agent (see the module docstring)."""
    messages, message_id = invocation.messages, invocation.message_id
    answer = _answered_call(messages)
    if answer is not None and not answer.get("pending"):
        text = _answer_to(answer)
        async for chunk in _words(text, message_id):
            yield chunk
        yield _done(message_id, "stop", len(text.split()), messages)
        return
    last = _last_user(messages)
    content = str(last.get("content") or "").lower() if last else ""
    wants_tool = any(word in content for word in TOOL_WORDS)
    text = _reply_to(last, wants_tool)
    async for chunk in _words(text, message_id):
        yield chunk
    if not wants_tool:
        yield _done(message_id, "stop", len(text.split()), messages)
        return
    call_id, arguments = f"call_{message_id}", json.dumps({"timezone": "UTC"})
    yield {
        "type": "tool_call",
        "id": message_id,
        "model": DEMO_MODEL,
        "timestamp": int(time.time() * 1000),
        "toolCall": {
            "id": call_id,
            "type": "function",
            "function": {"name": TOOL_NAME, "arguments": arguments},
        },
        "index": 0,
    }
    yield {
        "type": "approval-requested",
        "id": message_id,
        "model": DEMO_MODEL,
        "timestamp": int(time.time() * 1000),
        "toolCallId": call_id,
        "toolName": TOOL_NAME,
        "input": {"timezone": "UTC"},
        "approval": {"id": f"approval_{message_id}", "needsApproval": True},
    }
    yield _done(message_id, "tool_calls", len(text.split()), messages)


# -- OpenAI-compatible models ------------------------------------------------------------


def openai_setting(name: str) -> str:
    """The setting ``name`` of ``OPENAI_DEFAULTS``: ``DURABLE_SESSIONS[name]`` when it is not
    None, else the environment variable of that name, else the default."""
    value = getattr(ds_settings, name)
    if value is None:
        value = os.environ.get(name) or OPENAI_DEFAULTS[name]
    return str(value)


async def openai_chat(invocation: Invocation) -> AsyncIterator[dict[str, Any]]:
    """An OpenAI-compatible chat model, streamed (see the module docstring)."""
    from openai import AsyncOpenAI  # imported on first use: the package is big to load

    template = dict(invocation.body_template)
    model = template.pop("model", None) or openai_setting("OPENAI_MODEL")
    for ours in ("messages", "stream", "stream_options"):
        template.pop(ours, None)
    # The runtime retries a failure before the first token itself; the SDK's retries would
    # hide the time they take from the invocation's timeouts.
    base_url, key = openai_setting("OPENAI_BASE_URL"), openai_setting("OPENAI_API_KEY")
    if not key and base_url == OPENAI_DEFAULTS["OPENAI_BASE_URL"]:
        raise RuntimeError("OPENAI_API_KEY is not set (the setting or the environment variable)")
    client = AsyncOpenAI(
        base_url=base_url,
        api_key=key or "none",  # servers of one's own often want none; the SDK wants one
        max_retries=0,
    )
    try:
        stream = await client.chat.completions.create(
            model=str(model),
            # Our history is the Chat Completions shape; the SDK's TypedDicts are that shape.
            messages=cast("list[Any]", invocation.messages),
            stream=True,
            stream_options={"include_usage": True},
            extra_body=template or None,
        )
        try:
            async for chunk in stream:
                yield chunk.model_dump(mode="json", exclude_none=True)
        finally:
            await stream.close()
    finally:
        await client.close()
