"""Content types and bodies: what a stream's bytes are and how an append body becomes an entry.

A byte stream stores each append as it came. A JSON stream (``application/json``) stores the
messages of an append as compact JSON texts joined by commas, so that a catch-up read is
``[`` + the entries joined by ``,`` + ``]`` without parsing anything: a POSTed array is flattened
one level, any other JSON value is one message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from durable_sessions.streams.errors import BadRequest

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type value, lowercased, without parameters."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def same_media_type(a: str | None, b: str | None) -> bool:
    """Whether two Content-Type values name the same media type (case and charset ignored)."""
    return media_type(a) == media_type(b)


def is_json(content_type: str | None) -> bool:
    """Whether a stream of this content type is in JSON mode."""
    return media_type(content_type) == "application/json"


def is_text(content_type: str | None) -> bool:
    """Whether SSE can carry this content type as text (otherwise it is base64-encoded)."""
    kind = media_type(content_type)
    return kind.startswith("text/") or kind == "application/json"


@dataclass(frozen=True, slots=True)
class Payload:
    """The bytes of one entry and the number of messages in it (1 for byte streams)."""

    data: bytes
    count: int


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def dump_message(value: Any) -> bytes:
    """One message as compact UTF-8 JSON text; ``BadRequest`` when it is not JSON.

    Numbers JSON can write but Python reads as infinite (``1e400``) are refused rather than
    stored as ``Infinity``, which no JSON parser would read back.
    """
    try:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            return text.encode()
        except UnicodeEncodeError:  # lone surrogates: keep them as \\u escapes
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"not representable as JSON: {exc}", code="invalid_json") from None


def json_payload(messages: Iterable[Any]) -> Payload | None:
    """The entry holding ``messages`` (Python values), or None when there are none.

    The messages are encoded in one call, as a compact JSON array: between its brackets is
    exactly each message's text (``dump_message``) joined by commas.
    """
    values = list(messages)
    if not values:
        return None
    if len(values) == 1:
        return Payload(dump_message(values[0]), 1)
    try:
        text = json.dumps(values, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        data = text.encode()[1:-1]
    except (ValueError, TypeError):
        # One by one: a lone surrogate (UnicodeEncodeError) is escaped in its own message only,
        # and a value JSON cannot hold is refused by dump_message, which says why.
        data = b",".join(dump_message(value) for value in values)
    return Payload(data, len(values))


def parse_json_body(body: bytes, *, allow_empty_array: bool) -> Payload | None:
    """Validate a JSON body and flatten a top-level array one level.

    Returns None for ``[]`` when ``allow_empty_array`` (a PUT creating an empty stream), and raises
    ``BadRequest`` for invalid JSON or for ``[]`` otherwise.
    """
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON: {exc}", code="invalid_json") from None
    if isinstance(value, list):
        if not value:
            if allow_empty_array:
                return None
            raise BadRequest("empty JSON array: an append needs messages", code="empty_array")
        return json_payload(value)
    return Payload(dump_message(value), 1)


def body_payload(body: bytes, content_type: str | None, *, creating: bool) -> Payload | None:
    """The entry for a request body on a stream of ``content_type`` (None when empty)."""
    if not body:
        return None
    if is_json(content_type):
        return parse_json_body(body, allow_empty_array=creating)
    return Payload(body, 1)


def split_messages(data: bytes) -> list[bytes]:
    """The message texts of a JSON entry (used when a fork keeps only part of an entry)."""
    return [dump_message(value) for value in json.loads(b"[" + data + b"]")]
