"""Python agents for the runtime's tests (``python:tests.agents.scripted.<name>``).

Each is a real agent as the runtime runs it: an async generator of the invocation. What they
saw and when they were cancelled is recorded here, for the tests to read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

CALLS: list[Any] = []  # every invocation, in order
CANCELLED: dict[str, float] = {}  # messageId -> monotonic time its call was cancelled
STARTED: dict[str, float] = {}  # messageId -> monotonic time its call started


def reset() -> None:
    """Forget what earlier tests recorded."""
    CALLS.clear()
    CANCELLED.clear()
    STARTED.clear()


def _last_user_text(invocation: Any) -> str:
    for message in reversed(invocation.messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


async def echo(invocation: Any) -> AsyncIterator[Any]:
    """Answers ``echo: <the last user message>`` word by word (TanStack chunks)."""
    CALLS.append(invocation)
    for word in f"echo: {_last_user_text(invocation)}".split(" "):
        yield {"type": "content", "delta": word + " "}
    yield {"type": "done", "finishReason": "stop"}


async def plain(invocation: Any) -> AsyncIterator[Any]:
    """Yields plain strings (text deltas) and ends without a terminal chunk."""
    CALLS.append(invocation)
    for word in ("plain", "text", "reply"):
        yield word + " "


async def slow(invocation: Any) -> AsyncIterator[Any]:
    """A token every 20 ms, for 30 s: an answer to stop or interrupt."""
    CALLS.append(invocation)
    STARTED[invocation.message_id] = time.monotonic()
    try:
        for n in range(1500):
            yield {"type": "content", "delta": f"t{n} "}
            await asyncio.sleep(0.02)
        yield {"type": "done", "finishReason": "stop"}
    except (asyncio.CancelledError, GeneratorExit):
        CANCELLED[invocation.message_id] = time.monotonic()
        raise


async def steady(invocation: Any) -> AsyncIterator[Any]:
    """A token every 20 ms for 5 s, then ``done``: an answer longer than a short lease."""
    CALLS.append(invocation)
    for n in range(250):
        yield {"type": "content", "delta": f"t{n} "}
        await asyncio.sleep(0.02)
    yield {"type": "done", "finishReason": "stop"}


async def silent(invocation: Any) -> AsyncIterator[Any]:
    """Never says anything (the first-token timeout ends it)."""
    CALLS.append(invocation)
    await asyncio.Event().wait()
    yield {"type": "done"}  # (never reached)


async def broken(invocation: Any) -> AsyncIterator[Any]:
    """Fails before its first token."""
    CALLS.append(invocation)
    raise RuntimeError("the agent broke")
    yield {}  # (an async generator)


async def garbage(invocation: Any) -> AsyncIterator[Any]:
    """Starts well, then sends what no dialect is."""
    CALLS.append(invocation)
    yield {"type": "content", "delta": "fine "}
    yield {"type": "no-such-chunk", "x": 1}


async def approver(invocation: Any) -> AsyncIterator[Any]:
    """Asks to approve a tool call; invoked again with the decision, says what it was."""
    CALLS.append(invocation)
    decided = [m for m in invocation.messages if m.get("role") == "tool"]
    if decided:
        yield {"type": "content", "delta": f"decision: {decided[-1].get('content')}"}
        yield {"type": "done", "finishReason": "stop"}
        return
    call_id = f"call-{invocation.message_id[:8]}"
    yield {"type": "content", "delta": "may I? "}
    yield {
        "type": "tool_call",
        "toolCall": {
            "id": call_id,
            "type": "function",
            "function": {"name": "launch", "arguments": '{"what": "rocket"}'},
        },
        "index": 0,
    }
    yield {
        "type": "approval-requested",
        "toolCallId": call_id,
        "toolName": "launch",
        "input": {"what": "rocket"},
        "approval": {"id": f"ap-{call_id}", "needsApproval": True},
    }
    yield {"type": "done", "finishReason": "tool_calls"}
