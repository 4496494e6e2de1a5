"""The conversation an agent is sent (WIRE.md 4), in the OpenAI chat shape every dialect reads.

``history(state, upto=...)`` turns a session's complete messages, in session order, up to and
including the message ``upto``, into ``[{"role", "content", ...}]``:

- a user or system message: ``{"role", "content": <its text>}``; a user message also carries
  ``"name"``, its actorId, so that an agent of a session with several people knows who spoke
  (OpenAI allows letters, digits, ``_`` and ``-``, at most 64: other characters become ``_``);
- an assistant message: its text as ``content`` (``None`` when it only calls tools), its
  tool-call parts as ``tool_calls: [{"id", "type": "function", "function": {"name",
  "arguments"}}]``, followed at once by one ``{"role": "tool", "tool_call_id", "content"}`` per
  call, in order (OpenAI refuses a tool call that no tool message answers right after it).
  The content is the call's result (a ``tool-result`` part anywhere in the history up to
  ``upto``, in the same message or in the tool-result message a client wrote); with no result,
  the approval's answer, ``{"approved": true}`` or ``{"approved": false}``; with neither (the
  approval or the result is still awaited), ``{"pending": true}``. A result with an error and
  no content says ``{"error": ...}``.
- a message of tool results only (what a client writes for a tool result) gives nothing of its
  own: its results answer their calls above. A result whose call is not in the history is left
  out (a tool message must follow its call).

Incomplete messages (a generation in flight, the one being answered included) are skipped, and
so are thinking parts and messages that end up empty. When ``upto`` is no message of the
session, the whole history is sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from durable_sessions.state import Message, SessionState

NAME_LIMIT = 64
NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
PENDING = json.dumps({"pending": True})


def openai_name(actor_id: str) -> str:
    """``actor_id`` as an OpenAI message ``name`` (``[A-Za-z0-9_-]{1,64}``)."""
    return NAME_CHARS.sub("_", actor_id)[:NAME_LIMIT] or "_"


def _text(message: Message) -> str:
    texts = [part.get("content") for part in message.parts if part.get("type") == "text"]
    return "\n\n".join(text for text in texts if isinstance(text, str) and text)


def _result_content(part: dict[str, Any]) -> str:
    content = part.get("content")
    if content is None or content == "":
        error = part.get("error")
        return json.dumps({"error": error}) if error else ""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


def _answer(call: dict[str, Any], results: dict[str, str]) -> str:
    call_id = call["id"]
    if call_id in results:
        return results[call_id]
    approval = call.get("approval")
    if isinstance(approval, dict) and isinstance(approval.get("approved"), bool):
        return json.dumps({"approved": approval["approved"]})
    return PENDING


def _included(state: SessionState, upto: str | None) -> list[Message]:
    messages = state.messages()
    if upto is not None:
        for index, message in enumerate(messages):
            if message.id == upto:
                messages = messages[: index + 1]
                break
    return [message for message in messages if message.complete]


def history(session_state: SessionState, *, upto: str | None = None) -> list[dict[str, Any]]:
    """The messages to send an agent, from ``session_state``'s complete messages up to and
    including ``upto`` (see the module docstring)."""
    messages = _included(session_state, upto)
    results: dict[str, str] = {}
    for message in messages:
        for part in message.parts:
            call_id = part.get("toolCallId")
            if part.get("type") == "tool-result" and isinstance(call_id, str):
                results.setdefault(call_id, _result_content(part))
    sent: list[dict[str, Any]] = []
    for message in messages:
        text = _text(message)
        if message.role != "assistant":
            if text:
                entry: dict[str, Any] = {"role": message.role, "content": text}
                if message.role == "user":
                    entry["name"] = openai_name(message.actor_id)
                sent.append(entry)
            continue
        calls = [
            part
            for part in message.parts
            if part.get("type") == "tool-call"
            and isinstance(part.get("id"), str)
            and isinstance(part.get("name"), str)
        ]
        if not text and not calls:
            continue  # tool results only (answered above), an empty or failed reply
        entry = {"role": "assistant", "content": text or None}
        if calls:
            entry["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        # Providers parse the arguments: an empty text is no JSON, {} is.
                        "arguments": call.get("arguments") or "{}",
                    },
                }
                for call in calls
            ]
        sent.append(entry)
        for call in calls:
            sent.append(
                {"role": "tool", "tool_call_id": call["id"], "content": _answer(call, results)}
            )
    return sent
