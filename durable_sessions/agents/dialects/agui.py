"""AG-UI events, as TanStack AI chunks.

``TEXT_MESSAGE_CONTENT`` / ``TEXT_MESSAGE_CHUNK`` are text; the reasoning events
(``REASONING_MESSAGE_CONTENT`` / ``_CHUNK``, and the older ``THINKING_TEXT_MESSAGE_CONTENT``)
are thinking. ``TOOL_CALL_START`` / ``TOOL_CALL_ARGS`` (or ``TOOL_CALL_CHUNK``) become
``tool_call`` chunks; ``TOOL_CALL_END`` becomes ``tool-input-available`` with the arguments
parsed (where AG-UI clients run frontend tools); ``TOOL_CALL_RESULT`` is ``tool_result``.
``RUN_FINISHED`` is ``done`` (AG-UI has no finish reason: ``tool_calls`` while a call has no
result, else ``stop``), ``RUN_ERROR`` is ``error``. Lifecycle boundaries, steps, state, message
snapshots, activity, ``CUSTOM`` and ``RAW`` have no part of ours and are skipped.
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
    parsed,
    thinking,
)

IGNORED = frozenset(
    {"RUN_STARTED", "STEP_STARTED", "STEP_FINISHED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_END"}
    | {"THINKING_START", "THINKING_END", "THINKING_TEXT_MESSAGE_START"}
    | {"THINKING_TEXT_MESSAGE_END", "REASONING_START", "REASONING_END"}
    | {"REASONING_MESSAGE_START", "REASONING_MESSAGE_END", "REASONING_ENCRYPTED_VALUE"}
    | {"STATE_SNAPSHOT", "STATE_DELTA", "MESSAGES_SNAPSHOT", "ACTIVITY_SNAPSHOT"}
    | {"ACTIVITY_DELTA", "CUSTOM", "RAW"}
)
TEXT = frozenset({"TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CHUNK"})
THINKING = frozenset(
    {"REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_CHUNK", "THINKING_TEXT_MESSAGE_CONTENT"}
)
TYPES = IGNORED | TEXT | THINKING | {
    "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_CHUNK", "TOOL_CALL_END", "TOOL_CALL_RESULT",
    "RUN_FINISHED", "RUN_ERROR",
}  # fmt: skip


class AGUI(Dialect):
    """AG-UI protocol events."""

    name = "agui"

    @classmethod
    def detect(cls, event: dict[str, Any]) -> bool:
        """One of its (upper case) event types."""
        return event.get("type") in TYPES

    def __init__(self) -> None:
        self._calls = Calls()

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        """The chunks for one event."""
        kind = event.get("type")
        fields = Fields(event, f"ag-ui event {kind!r}")
        if kind in IGNORED:
            return []
        if kind in TEXT or kind in THINKING:
            # a *_CONTENT event must carry its delta; in a *_CHUNK event it is optional
            if str(kind).endswith("_CONTENT"):
                delta = fields.text("delta")
            else:
                delta = fields.maybe_text("delta") or ""
            return [content(delta) if kind in TEXT else thinking(delta)]
        if kind == "TOOL_CALL_START":
            return [self._calls.start(fields.text("toolCallId"), fields.text("toolCallName"))]
        if kind == "TOOL_CALL_ARGS":
            return [self._calls.append(fields.text("toolCallId"), fields.text("delta"), fields)]
        if kind == "TOOL_CALL_CHUNK":
            return self._chunk(fields)
        if kind == "TOOL_CALL_END":
            call_id = fields.text("toolCallId")
            call = self._calls.get(call_id, fields)
            ready = {"toolCallId": call_id, "toolName": call.name, "input": parsed(call.arguments)}
            return [{"type": "tool-input-available", **ready}]
        if kind == "TOOL_CALL_RESULT":
            call_id = fields.text("toolCallId")
            self._calls.answer(call_id)
            result = {"toolCallId": call_id, "content": fields.text("content")}
            return [{"type": "tool_result", **result}]
        if kind == "RUN_FINISHED":
            return [done(self._calls.finish_reason())]
        if kind == "RUN_ERROR":
            return [error(fields.text("message"), fields.maybe_text("code"))]
        fields.fail("not an AG-UI event type")

    def _chunk(self, fields: Fields) -> list[Chunk]:
        # the first TOOL_CALL_CHUNK of a call names it; the later ones may leave its id out
        call_id, name = fields.maybe_text("toolCallId"), fields.maybe_text("toolCallName")
        delta = fields.maybe_text("delta") or ""
        if call_id is not None and call_id not in self._calls.calls:
            if name is None:
                fields.fail(f"tool call {call_id!r} starts without a toolCallName")
            return [self._calls.start(call_id, name, delta)]
        call_id = call_id or self._calls.last
        if call_id is None:
            fields.fail("a tool call chunk before any tool call started")
        return [self._calls.append(call_id, delta, fields)] if delta else []
