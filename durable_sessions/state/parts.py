"""The parts of a streamed message, folded from its token chunks as the reference client does.

The reference client (electric-sql/transport, ``packages/durable-session``) hands an assistant
message's chunks, in seq order, to TanStack AI's stream processor and shows the parts it
builds. ``PartsFold`` gives the same parts for the same chunks:

- ``content``: text. ``delta`` (the new text) wins over ``content`` (the text so far). The text
  part is the last part while text streams; after a tool call, a chunk whose ``content`` does
  not continue the text so far starts a new text part (so write both fields, WIRE.md 3).
- ``thinking``: one thinking part, updated in place.
- ``tool_call``: a ``tool-call`` part per ``toolCall.id`` whose ``arguments`` accumulate; its
  ``state`` goes ``awaiting-input`` / ``input-streaming`` -> ``input-complete`` when text
  arrives, at ``done`` and at the end of a complete message.
- ``tool_result``: a ``tool-result`` part per ``toolCallId``.
- ``approval-requested``: the tool call's ``state`` becomes ``approval-requested`` with
  ``approval: {id, needsApproval: true}``; our ``approval-response`` sets ``approval.approved``
  and ``state: approval-responded`` (the reference ignores it).
- ``tool-input-available``, ``done``, ``error``, ``stop``: no part of their own.

A chunk of the right type with the wrong fields is skipped, as the reference skips a chunk its
processor throws on.
"""

from __future__ import annotations

from typing import Any


def _string(value: object) -> str | None:
    return value if isinstance(value, str) else None


class PartsFold:
    """The parts of one message, built chunk by chunk (``feed``), then ``finish``."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self._segment = ""  # the text of the current text part
        self._emitted = ""  # what the text part shows
        self._tools_since_text = False
        self._thinking = ""
        self._calls: dict[str, dict[str, str]] = {}  # id -> name, arguments, state

    def feed(self, chunk: dict[str, Any]) -> None:
        """Fold one decoded chunk."""
        handler = _HANDLERS.get(chunk.get("type"))  # type: ignore[arg-type]
        if handler is not None:
            handler(self, chunk)

    def finish(self) -> None:
        """The message is complete: every tool call's input is complete, the text is shown."""
        self._complete_calls()
        if self._segment != self._emitted:
            self._show_text()

    # -- text and thinking ----------------------------------------------------------------

    def _content(self, chunk: dict[str, Any]) -> None:
        self._complete_calls()
        delta, content = _string(chunk.get("delta")), _string(chunk.get("content"))
        previous = self._segment
        if (
            self._tools_since_text
            and previous
            and delta is not None
            and content is not None
            and (
                len(content) < len(previous)
                or not (content.startswith(previous) or previous.startswith(content))
            )
        ):
            if previous != self._emitted:
                self._show_text()
            self._segment = self._emitted = ""
            self._tools_since_text = False
        self._segment = _grow(self._segment, delta, content)
        if self._segment != self._emitted:
            self._show_text()

    def _show_text(self) -> None:
        self._emitted = self._segment
        part = {"type": "text", "content": self._segment}
        if self.parts and self.parts[-1].get("type") == "text":
            self.parts[-1] = part
        else:
            self.parts.append(part)

    def _thinking_chunk(self, chunk: dict[str, Any]) -> None:
        delta, content = _string(chunk.get("delta")), _string(chunk.get("content"))
        self._thinking = _grow(self._thinking, delta, content)
        part = {"type": "thinking", "content": self._thinking}
        for index, existing in enumerate(self.parts):
            if existing.get("type") == "thinking":
                self.parts[index] = part
                return
        self.parts.append(part)

    # -- tool calls -----------------------------------------------------------------------

    def _tool_call(self, chunk: dict[str, Any]) -> None:
        call = chunk.get("toolCall")
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(function, dict):
            return
        call_id, name = _string(call.get("id")), _string(function.get("name"))
        arguments = _string(function.get("arguments")) or ""
        if call_id is None:
            return
        self._tools_since_text = True
        known = self._calls.get(call_id)
        if known is None:
            if name is None:
                return
            state = "input-streaming" if arguments else "awaiting-input"
            known = self._calls[call_id] = {"name": name, "arguments": arguments, "state": state}
        else:
            known["arguments"] += arguments
            if known["state"] == "awaiting-input" and arguments:
                known["state"] = "input-streaming"
        self._show_call(call_id, known)

    def _show_call(self, call_id: str, call: dict[str, str]) -> None:
        part: dict[str, Any] = {
            "type": "tool-call",
            "id": call_id,
            "name": call["name"],
            "arguments": call["arguments"],
            "state": call["state"],
        }
        index = self._call_index(call_id)
        if index is None:
            self.parts.append(part)
            return
        existing = self.parts[index]
        if isinstance(existing.get("approval"), dict):
            part["approval"] = dict(existing["approval"])
        if "output" in existing:
            part["output"] = existing["output"]
        self.parts[index] = part

    def _call_index(self, call_id: str) -> int | None:
        for index, part in enumerate(self.parts):
            if part.get("type") == "tool-call" and part.get("id") == call_id:
                return index
        return None

    def _complete_calls(self) -> None:
        for call_id, call in self._calls.items():
            if call["state"] != "input-complete":
                call["state"] = "input-complete"
                self._show_call(call_id, call)

    def _tool_result(self, chunk: dict[str, Any]) -> None:
        call_id = _string(chunk.get("toolCallId"))
        if call_id is None:
            return
        part: dict[str, Any] = {"type": "tool-result", "toolCallId": call_id}
        if "content" in chunk:
            part["content"] = chunk["content"]
        part["state"] = "complete"
        for index, existing in enumerate(self.parts):
            if existing.get("type") == "tool-result" and existing.get("toolCallId") == call_id:
                self.parts[index] = part
                return
        self.parts.append(part)

    # -- approvals ------------------------------------------------------------------------

    def _approval_requested(self, chunk: dict[str, Any]) -> None:
        approval = chunk.get("approval")
        call_id = _string(chunk.get("toolCallId"))
        approval_id = _string(approval.get("id")) if isinstance(approval, dict) else None
        if call_id is None or approval_id is None:
            return
        index = self._call_index(call_id)
        if index is not None:
            part = dict(self.parts[index])
            part["state"] = "approval-requested"
            part["approval"] = {"id": approval_id, "needsApproval": True}
            self.parts[index] = part

    def _approval_response(self, chunk: dict[str, Any]) -> None:
        approval_id, approved = _string(chunk.get("approvalId")), chunk.get("approved")
        if approval_id is None or not isinstance(approved, bool):
            return
        for index, part in enumerate(self.parts):
            approval = part.get("approval")
            if (
                part.get("type") == "tool-call"
                and isinstance(approval, dict)
                and approval.get("id") == approval_id
            ):
                self.parts[index] = {
                    **part,
                    "state": "approval-responded",
                    "approval": {**approval, "approved": approved},
                }
                return

    def _done(self, chunk: dict[str, Any]) -> None:
        self._complete_calls()


def _grow(text: str, delta: str | None, content: str | None) -> str:
    """The text so far after a chunk: ``delta`` appended, else ``content`` when it extends
    the text (or is already in it), else ``content`` appended."""
    if delta:
        return text + delta
    if content:
        if content.startswith(text):
            return content
        if text.startswith(content):
            return text
        return text + content
    return text


_HANDLERS = {
    "content": PartsFold._content,
    "thinking": PartsFold._thinking_chunk,
    "tool_call": PartsFold._tool_call,
    "tool_result": PartsFold._tool_result,
    "approval-requested": PartsFold._approval_requested,
    "approval-response": PartsFold._approval_response,
    "done": PartsFold._done,
}
