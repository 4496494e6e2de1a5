"""Building the ``chunk`` rows of a session stream, for the server's own writes (WIRE.md 3).

A chunk row is the value of a ``chunk`` change event keyed ``<messageId>:<seq>``::

    {"messageId": "m1", "actorId": "alice", "role": "user", "seq": 0,
     "chunk": "{\\"type\\":\\"whole-message\\",...}", "createdAt": "2025-01-01T00:00:00.000Z"}

``chunk`` is a JSON *string* (the reference clients parse it themselves). The payload builders
here (``whole_message``, ``tool_result_message``, ``stop_chunk``, ``error_chunk``,
``approval_response``) return the decoded payload; ``chunk_row`` encodes it, ``chunk_event``
wraps a row in its ``insert``. ``timestamp`` writes ``createdAt`` in the one format clients
order messages by.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from durable_sessions.state.events import InvalidEvent, insert

CHUNK_TYPE = "chunk"
ROLES = ("user", "assistant", "system")
TIMESTAMP_RE = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")


def timestamp(epoch: float) -> str:
    """``epoch`` seconds as ``YYYY-MM-DDTHH:MM:SS.sssZ`` (UTC, milliseconds, truncated so that
    a later time never gives a smaller text)."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def chunk_key(message_id: str, seq: int) -> str:
    """The event key of a chunk row: ``<messageId>:<seq>``."""
    return f"{message_id}:{seq}"


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{name} must be a non-empty string, got {value!r}")
    return value


def _created_at(value: object) -> str:
    if not isinstance(value, str) or not TIMESTAMP_RE.match(value):
        raise InvalidEvent(
            f"createdAt must be YYYY-MM-DDTHH:MM:SS.sssZ (state.chunks.timestamp()), got {value!r}"
        )
    return value


def chunk_row(
    message_id: str,
    seq: int,
    *,
    actor_id: str,
    role: str,
    chunk: dict[str, Any],
    created_at: str,
) -> dict[str, Any]:
    """The value of the chunk row ``seq`` (from 0) of ``message_id``, with ``chunk`` (a payload
    with a string ``type``) encoded as compact JSON. ``InvalidEvent`` for a bad argument."""
    _text(message_id, "messageId")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidEvent(f"seq must be an integer from 0, got {seq!r}")
    _text(actor_id, "actorId")
    if role not in ROLES:
        raise InvalidEvent(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(chunk, dict) or not isinstance(chunk.get("type"), str):
        raise InvalidEvent("a chunk is an object with a string type")
    try:
        encoded = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidEvent(f"the chunk cannot be written as JSON: {exc}") from None
    return {
        "messageId": message_id,
        "actorId": actor_id,
        "role": role,
        "chunk": encoded,
        "seq": seq,
        "createdAt": _created_at(created_at),
    }


def chunk_event(row: dict[str, Any], *, txid: str | None = None) -> dict[str, Any]:
    """The ``insert`` of a ``chunk_row`` under its key, with ``txid`` in its headers."""
    return insert(CHUNK_TYPE, chunk_key(row["messageId"], row["seq"]), row, txid=txid)


def text_parts(content: str) -> list[dict[str, Any]]:
    """The parts of a plain text message: one ``{"type": "text", "content": ...}``."""
    return [{"type": "text", "content": content}]


def whole_message(
    message_id: str,
    *,
    role: str,
    created_at: str,
    content: str | None = None,
    parts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``whole-message`` payload: a complete message at seq 0, from ``content`` (one text
    part) or from ``parts`` (exactly one of them)."""
    _text(message_id, "messageId")
    if role not in ROLES:
        raise InvalidEvent(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if (content is None) == (parts is None):
        raise InvalidEvent("a whole message has content or parts (one of them)")
    if content is not None:
        if not isinstance(content, str):
            raise InvalidEvent(f"content must be a string, got {type(content).__name__}")
        parts = text_parts(content)
    assert parts is not None
    if not isinstance(parts, list) or not all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in parts
    ):
        raise InvalidEvent("parts is a list of objects with a string type")
    return {
        "type": "whole-message",
        "message": {
            "id": message_id,
            "role": role,
            "parts": parts,
            "createdAt": _created_at(created_at),
        },
    }


def tool_result_part(
    tool_call_id: str, output: object, *, error: str | None = None
) -> dict[str, Any]:
    """The part a client shows for a tool's result: ``content`` is ``output`` as a string
    (JSON-encoded unless it is one), ``state`` is ``complete`` or ``error``."""
    _text(tool_call_id, "toolCallId")
    if isinstance(output, str):
        content = output
    else:
        try:
            content = json.dumps(output, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidEvent(f"the tool output cannot be written as JSON: {exc}") from None
    part: dict[str, Any] = {
        "type": "tool-result",
        "toolCallId": tool_call_id,
        "content": content,
        "state": "error" if error else "complete",
    }
    if error:
        part["error"] = error
    return part


def tool_result_message(
    message_id: str,
    *,
    tool_call_id: str,
    output: object,
    created_at: str,
    error: str | None = None,
) -> dict[str, Any]:
    """A tool result as the server writes it: a ``whole-message`` under the client's
    ``message_id``, role ``assistant``, holding one ``tool_result_part``."""
    part = tool_result_part(tool_call_id, output, error=error)
    return whole_message(message_id, role="assistant", parts=[part], created_at=created_at)


def stop_chunk(reason: str = "user") -> dict[str, Any]:
    """The server's last chunk of a stopped generation."""
    return {"type": "stop", "reason": _text(reason, "reason")}


def error_chunk(message: str, code: str | None = None) -> dict[str, Any]:
    """The server's last chunk of a failed generation: ``error`` is ``{message, code?}``."""
    error: dict[str, Any] = {"message": _text(message, "the error message")}
    if code is not None:
        error["code"] = _text(code, "the error code")
    return {"type": "error", "error": error}


def approval_response(approval_id: str, approved: bool) -> dict[str, Any]:
    """The answer to an approval, appended as the next seq of the message that asked."""
    if not isinstance(approved, bool):
        raise InvalidEvent(f"approved must be a boolean, got {approved!r}")
    return {
        "type": "approval-response",
        "approvalId": _text(approval_id, "approvalId"),
        "approved": approved,
    }
