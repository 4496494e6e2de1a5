"""TanStack AI chunks: our own shapes, checked and passed through with their known fields only.

The types are the closed set of TanStack AI's ``StreamChunk`` (``content``, ``thinking``,
``tool_call``, ``tool_result``, ``tool-input-available``, ``approval-requested``, ``done``,
``error``), each with the base fields ``id``, ``model`` and ``timestamp``. An unknown type is
malformed rather than skipped: with a closed set it is an agent speaking something else, and
skipping it could drop text silently. ``content`` of a ``content`` chunk is dropped (the
coalescer writes it again); an ``error`` written as a plain string, as the reference does, is
made the object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from durable_sessions.agents.dialects.base import Chunk, Dialect, Fields, error, kind_of

TYPES = frozenset(
    {"content", "thinking", "tool_call", "tool_result", "tool-input-available"}
    | {"approval-requested", "done", "error"}
)
FINISH_REASONS = (None, "stop", "length", "content_filter", "tool_calls")
USAGE = ("promptTokens", "completionTokens", "totalTokens")


class TanStack(Dialect):
    """TanStack AI ``StreamChunk`` objects."""

    name = "tanstack"

    @classmethod
    def detect(cls, event: dict[str, Any]) -> bool:
        """One of its types; for ``error`` (Vercel has one too) with an ``error`` field."""
        kind = event.get("type")
        if kind == "error":
            return "error" in event and "errorText" not in event
        return kind in TYPES

    def __init__(self) -> None:
        self._thinking = ""
        self._indexes: dict[str, int] = {}  # for a tool_call sent without its index

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        """The chunk, checked, with its known fields only."""
        kind = event.get("type")
        fields = Fields(event, f"tanstack chunk {kind!r}")
        read = self._readers.get(kind) if isinstance(kind, str) else None
        if read is None:
            fields.fail(f"not a TanStack AI chunk type ({', '.join(sorted(TYPES))})")
        return [{"type": kind, **self._base(fields), **read(self, fields)}]

    @staticmethod
    def _base(fields: Fields) -> Chunk:
        base: Chunk = {key: fields.maybe_text(key) for key in ("id", "model")}
        stamp = fields.event.get("timestamp")
        if stamp is not None and (isinstance(stamp, bool) or not isinstance(stamp, int | float)):
            fields.fail(f"timestamp must be a number, got {kind_of(stamp)}")
        base["timestamp"] = stamp
        return {key: value for key, value in base.items() if value is not None}

    def _content(self, fields: Fields) -> Chunk:
        if fields.maybe_text("role") not in (None, "assistant"):
            fields.fail("role must be assistant")
        return {"delta": fields.text("delta")}

    def _thinking_chunk(self, fields: Fields) -> Chunk:
        delta, content = fields.maybe_text("delta"), fields.maybe_text("content")
        if delta is None:
            # delta is optional in TanStack's thinking chunk: the new text is what content adds
            if content is None or not content.startswith(self._thinking):
                fields.fail("without a delta, content must continue the thinking so far")
            delta = content[len(self._thinking) :]
        self._thinking += delta
        return {"delta": delta}

    def _tool_call(self, fields: Fields) -> Chunk:
        call = fields.nested("toolCall")
        if call.event.get("type", "function") != "function":
            call.fail("type must be function")
        call_id, function = call.text("id"), call.nested("function")
        arguments = function.maybe_text("arguments") or ""
        named = {"name": function.text("name"), "arguments": arguments}
        index = fields.maybe_int("index")
        if index is None:
            index = self._indexes.setdefault(call_id, len(self._indexes))
        return {"toolCall": {"id": call_id, "type": "function", "function": named}, "index": index}

    def _tool_result(self, fields: Fields) -> Chunk:
        return {"toolCallId": fields.text("toolCallId"), "content": fields.text("content")}

    def _tool_input(self, fields: Fields) -> Chunk:
        call_id, name = fields.text("toolCallId"), fields.text("toolName")
        return {"toolCallId": call_id, "toolName": name, "input": fields.input()}

    def _approval(self, fields: Fields) -> Chunk:
        approval = fields.nested("approval")
        if approval.event.get("needsApproval") is not True:
            approval.fail("needsApproval must be true")
        asked = {"id": approval.text("id"), "needsApproval": True}
        return {**self._tool_input(fields), "approval": asked}

    def _done(self, fields: Fields) -> Chunk:
        reason = fields.event.get("finishReason")
        if reason not in FINISH_REASONS:
            fields.fail(f"finishReason must be one of {FINISH_REASONS}, got {reason!r}")
        usage = fields.maybe_object("usage")
        if usage is None:
            return {"finishReason": reason}
        counts = Fields(usage, f"{fields.label} usage")
        read = {key: counts.maybe_int(key) for key in USAGE}
        return {"finishReason": reason, "usage": {k: v for k, v in read.items() if v is not None}}

    def _error(self, fields: Fields) -> Chunk:
        if isinstance(fields.event.get("error"), str):
            return error(fields.text("error"))
        body = fields.nested("error")
        return error(body.text("message"), body.maybe_text("code"))

    _readers: ClassVar[dict[str, Callable[[TanStack, Fields], Chunk]]] = {
        "content": _content,
        "thinking": _thinking_chunk,
        "tool_call": _tool_call,
        "tool_result": _tool_result,
        "tool-input-available": _tool_input,
        "approval-requested": _approval,
        "done": _done,
        "error": _error,
    }
