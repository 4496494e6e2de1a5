"""OpenAI Chat Completions streaming chunks (``chat.completion.chunk``), as TanStack AI chunks.

Only choice 0 is read (an agent asked for one answer). Its ``delta.content`` (and ``refusal``)
is text, ``reasoning_content`` or ``reasoning`` (as compatible servers send it) is thinking.
``tool_calls`` deltas are kept per ``index``: the first names the call (``id``,
``function.name``), the later ones add ``function.arguments``; each becomes a ``tool_call``
chunk holding the new arguments. A new ``id`` at a known index is a new call (some compatible
servers send every call at index 0). ``finish_reason`` ends the answer, but ``done`` waits: with
``stream_options.include_usage`` the ``usage`` comes in a chunk of its own after it, and ``done``
carries it, so ``done`` is emitted with that chunk, or at ``finish`` when the stream ends. An
``{"error": {...}}`` event, as OpenAI sends one mid-stream, is ``error``.
"""

from __future__ import annotations

from typing import Any

from durable_sessions.agents.dialects.base import (
    Calls,
    Chunk,
    Dialect,
    Fields,
    content,
    done,
    error,
    thinking,
)

OBJECT = "chat.completion.chunk"
FINISH_REASONS = {
    "stop": "stop", "length": "length", "tool_calls": "tool_calls",
    "content_filter": "content_filter", "function_call": "tool_calls",
}  # fmt: skip
USAGE = {
    "prompt_tokens": "promptTokens", "completion_tokens": "completionTokens",
    "total_tokens": "totalTokens",
}  # fmt: skip


class OpenAIChat(Dialect):
    """Chat Completions ``stream: true`` chunks."""

    name = "openai"

    @classmethod
    def detect(cls, event: dict[str, Any]) -> bool:
        """Its ``object``, or ``choices``; or an error object without a ``type``."""
        if event.get("object") == OBJECT or "choices" in event:
            return True
        return "type" not in event and isinstance(event.get("error"), dict)

    def __init__(self) -> None:
        self._calls = Calls()
        self._ids: dict[int, str] = {}  # a call's upstream index -> its id
        self._finished = False
        self._reason: str | None = None
        self._usage: dict[str, int] | None = None

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        """The chunks for one streamed chunk."""
        fields = Fields(event, "openai chunk")
        if "choices" not in event and "error" in event:
            if isinstance(event["error"], str):
                return [error(event["error"])]
            body = fields.nested("error")
            code = body.event.get("code")
            return [error(body.text("message"), None if code is None else str(code))]
        if event.get("object", OBJECT) != OBJECT:
            fields.fail(f"object must be {OBJECT}, got {event.get('object')!r}")
        if "choices" not in event and "usage" not in event:
            fields.fail(f"not a {OBJECT}: it has no choices (keys: {', '.join(map(str, event))})")
        out: list[Chunk] = []
        for choice in fields.items("choices"):
            # after finish_reason only the usage may still come
            if choice.event.get("index", 0) == 0 and not self._finished:
                out += self._choice(choice)
        usage = fields.maybe_object("usage")  # null on every chunk but the last, if asked for
        if usage is not None:
            counts = Fields(usage, "openai chunk usage")
            read = {ours: counts.maybe_int(theirs) for theirs, ours in USAGE.items()}
            self._usage = {key: value for key, value in read.items() if value is not None}
            if self._finished:
                out += self.finish()
        return out

    def _choice(self, choice: Fields) -> list[Chunk]:
        delta = Fields(choice.maybe_object("delta") or {}, "openai chunk delta")
        out = [content(delta.maybe_text(key) or "") for key in ("content", "refusal")]
        out += [thinking(delta.maybe_text(key) or "") for key in ("reasoning_content", "reasoning")]
        for position, call in enumerate(delta.items("tool_calls")):
            out += self._tool_call(call, position)
        reason = choice.maybe_text("finish_reason")
        if reason is not None:
            self._finished, self._reason = True, FINISH_REASONS.get(reason)
        return out

    def _tool_call(self, call: Fields, position: int) -> list[Chunk]:
        index = call.maybe_int("index")
        index = position if index is None else index  # left out by some compatible servers
        function = Fields(call.maybe_object("function") or {}, f"{call.label} function")
        call_id, name = call.maybe_text("id"), function.maybe_text("name")
        arguments = function.maybe_text("arguments")
        known = self._ids.get(index)
        if call_id is not None and call_id != known:
            if name is None:
                function.fail(f"tool call {call_id!r} starts without a name")
            self._ids[index] = call_id
            return [self._calls.start(call_id, name, arguments or "")]
        if known is None:
            call.fail(f"arguments for tool call index {index} before its id and name")
        return [self._calls.append(known, arguments, call)] if arguments else []

    def finish(self) -> list[Chunk]:
        """The ``done`` owed when the answer finished but no usage followed."""
        return [done(self._reason, self._usage)] if self._finished else []
