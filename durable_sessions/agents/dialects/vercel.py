"""The Vercel AI SDK UI message stream (``ai`` 5 and later), as TanStack AI chunks.

Text and reasoning deltas become ``content`` and ``thinking``; a tool call's
``tool-input-start`` / ``tool-input-delta`` parts become ``tool_call`` chunks (an input sent
whole, without a start, becomes one ``tool_call`` holding it), ``tool-input-available`` also
becomes our ``tool-input-available`` (where the SDK's own client runs client tools), unless the
provider ran the tool; ``tool-approval-request`` becomes ``approval-requested``; outputs become
``tool_result``; ``finish`` is ``done``, ``error`` and ``abort`` are ``error``. Bookkeeping parts
(``start``, steps, text and reasoning boundaries), sources, files, message metadata and
``data-*`` parts have no part of ours and are skipped.
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
    json_text,
    thinking,
    tool_result,
)

IGNORED = frozenset(
    {"start", "start-step", "finish-step", "text-start", "text-end", "reasoning-start"}
    | {"reasoning-end", "source-url", "source-document", "file", "message-metadata"}
    # a denial is already on the session: it is our own approval-response
    | {"tool-output-denied"}
)
TYPES = IGNORED | {
    "text-delta", "reasoning-delta", "tool-input-start", "tool-input-delta",
    "tool-input-available", "tool-input-error", "tool-approval-request",
    "tool-output-available", "tool-output-error", "finish", "error", "abort",
}  # fmt: skip
FINISH_REASONS = {
    "stop": "stop", "length": "length", "content-filter": "content_filter",
    "tool-calls": "tool_calls", "error": None, "other": None,
    # not the SDK's spelling, but servers written after OpenAI's or TanStack's send it
    "content_filter": "content_filter", "tool_calls": "tool_calls",
}  # fmt: skip


class Vercel(Dialect):
    """UI message stream parts (``UIMessageChunk``)."""

    name = "vercel"

    @classmethod
    def detect(cls, event: dict[str, Any]) -> bool:
        """One of its part types (``data-*`` included); for ``error``, with ``errorText``."""
        kind = event.get("type")
        if kind == "error":
            return "errorText" in event
        return isinstance(kind, str) and (kind in TYPES or kind.startswith("data-"))

    def __init__(self) -> None:
        self._calls = Calls()

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        """The chunks for one part."""
        kind = event.get("type")
        fields = Fields(event, f"vercel part {kind!r}")
        if kind in IGNORED or (isinstance(kind, str) and kind.startswith("data-")):
            return []
        if kind in ("text-delta", "reasoning-delta"):
            fields.text("id")
            delta = fields.text("delta")
            return [content(delta) if kind == "text-delta" else thinking(delta)]
        if kind == "tool-input-start":
            return [self._calls.start(fields.text("toolCallId"), fields.text("toolName"))]
        if kind == "tool-input-delta":
            delta = fields.text("inputTextDelta")
            return [self._calls.append(fields.text("toolCallId"), delta, fields)]
        if kind in ("tool-input-available", "tool-input-error"):
            return self._input(kind, fields)
        if kind == "tool-approval-request":
            return [self._approval(fields)]
        if kind in ("tool-output-available", "tool-output-error"):
            call_id = fields.text("toolCallId")
            self._calls.answer(call_id)
            if kind == "tool-output-error":
                return [tool_result(call_id, {"error": fields.text("errorText")})]
            return [tool_result(call_id, fields.event.get("output"))]
        if kind == "finish":
            return [self._finish(fields)]
        if kind == "error":
            return [error(fields.text("errorText"))]
        if kind == "abort":
            reason = fields.maybe_text("reason")
            return [
                error("the agent aborted its stream" + (f": {reason}" if reason else ""), "aborted")
            ]
        fields.fail("not a part type of the AI SDK UI message stream")

    def _input(self, kind: str, fields: Fields) -> list[Chunk]:
        call_id, name, input_ = fields.text("toolCallId"), fields.text("toolName"), fields.input()
        out = []
        if call_id not in self._calls.calls:
            out.append(self._calls.start(call_id, name, json_text(input_)))
        call = self._calls.calls[call_id]
        call.input, call.has_input = input_, True
        if kind == "tool-input-available" and fields.event.get("providerExecuted") is not True:
            chunk = {"toolCallId": call_id, "toolName": name, "input": input_}
            out.append({"type": "tool-input-available", **chunk})
        return out

    def _approval(self, fields: Fields) -> Chunk:
        approval_id, call_id = fields.text("approvalId"), fields.text("toolCallId")
        call = self._calls.get(call_id, fields)
        asked = {"toolCallId": call_id, "toolName": call.name, "input": self._calls.input_of(call)}
        return {
            "type": "approval-requested",
            **asked,
            "approval": {"id": approval_id, "needsApproval": True},
        }

    def _finish(self, fields: Fields) -> Chunk:
        reason = fields.maybe_text("finishReason")
        if reason is None:  # optional in the protocol: read it from the calls
            return done(self._calls.finish_reason())
        if reason not in FINISH_REASONS:
            fields.fail(f"finishReason must be one of {', '.join(FINISH_REASONS)}, got {reason!r}")
        return done(FINISH_REASONS[reason])
