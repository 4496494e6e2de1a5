"""Content types and bodies: what a stream's bytes are and how an append body becomes an entry.

A byte stream stores each append as it came. A JSON stream (``application/json``) stores the
messages of an append as compact JSON texts joined by commas, so that a catch-up read is
``[`` + the entries joined by ``,`` + ``]`` without parsing anything: a POSTed array is flattened
one level, any other JSON value is one message.

Every message is nested at most ``MAX_JSON_DEPTH`` arrays and objects deep, wherever it comes
from (a body, a websocket frame, Python values): Python's JSON parser and encoder recurse once per
level, so a deeper value would fail with ``RecursionError`` in whoever reads it later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from durable_sessions.conf import ds_settings
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


# The depth scan keeps only quotes and brackets, then drops what lies between quotes.
_STRUCTURE = b'"[]{}'
_NOT_STRUCTURE = bytes(byte for byte in range(256) if byte not in _STRUCTURE)
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_SIGNS = bytes.maketrans(b"[]", b"\x01\xff")  # +1 and, read as a signed byte, -1
_TOP_LEVEL_ARRAY = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*\[")


def too_deep(limit: int) -> BadRequest:
    """The error for JSON nested deeper than ``limit`` arrays and objects."""
    return BadRequest(
        f"a JSON message nests arrays and objects more than {limit} levels deep",
        code="json_too_deep",
    )


def nests_deeper(text: bytes, limit: int) -> bool:
    """Whether the UTF-8 JSON text ``text`` nests arrays and objects more than ``limit`` deep.

    Exact for valid JSON (brackets inside strings do not count); for invalid JSON the answer
    only matters to the parser, which refuses it anyway. Cheap: a text with at most ``limit``
    brackets is not scanned at all, and the scan runs in C but for one step per ``limit``
    brackets.
    """
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    if b"\\" in text:  # escaped backslashes, then escaped quotes: no quote ends a string there
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = text.translate(None, _NOT_STRUCTURE)
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])  # what lies outside strings
    if len(marks) <= limit:
        return False
    marks = marks.translate(_BRACKETS)
    depth = 0
    step = max(limit, 16)
    for start in range(0, len(marks), step):
        chunk = marks[start : start + step]
        opens = chunk.count(b"[")
        if depth + opens > limit:  # this chunk may pass the limit: follow it bracket by bracket
            signs = memoryview(chunk.translate(_SIGNS)).cast("b")
            if max(accumulate(signs, initial=depth)) > limit:
                return True
        depth += 2 * opens - len(chunk)
    return False


def check_depth(text: bytes, *, extra: int = 0) -> None:
    """``BadRequest`` (``json_too_deep``) when ``text`` nests deeper than ``MAX_JSON_DEPTH``
    plus ``extra`` levels (those that wrap the messages: a flattened array, a frame)."""
    limit = ds_settings.MAX_JSON_DEPTH
    if nests_deeper(text, limit + extra):
        raise too_deep(limit)


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
    except RecursionError:  # far deeper than any limit (the encoder recurses per level)
        raise too_deep(ds_settings.MAX_JSON_DEPTH) from None
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"not representable as JSON: {exc}", code="invalid_json") from None


def json_payload(messages: Iterable[Any]) -> Payload | None:
    """The entry holding ``messages`` (Python values), or None when there are none.

    The messages are encoded in one call, as a compact JSON array: between its brackets is
    exactly each message's text (``dump_message``) joined by commas. ``BadRequest`` when one is
    not JSON or is nested deeper than ``MAX_JSON_DEPTH``.
    """
    payload = _encode(list(messages))
    if payload is not None:
        check_depth(payload.data)  # the messages joined by commas: as deep as the deepest
    return payload


def _encode(values: list[Any]) -> Payload | None:
    if not values:
        return None
    if len(values) == 1:
        return Payload(dump_message(values[0]), 1)
    try:
        text = json.dumps(values, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        data = text.encode()[1:-1]
    except (ValueError, TypeError, RecursionError):
        # One by one: a lone surrogate (UnicodeEncodeError) is escaped in its own message only,
        # and a value JSON cannot hold is refused by dump_message, which says why.
        data = b",".join(dump_message(value) for value in values)
    return Payload(data, len(values))


def parse_json_body(body: bytes, *, allow_empty_array: bool) -> Payload | None:
    """Validate a JSON body and flatten a top-level array one level.

    Returns None for ``[]`` when ``allow_empty_array`` (a PUT creating an empty stream), and raises
    ``BadRequest`` for invalid JSON, for JSON nested deeper than ``MAX_JSON_DEPTH`` (a flattened
    array one level more), or for ``[]`` otherwise. The depth is checked on the text, before the
    parser sees it.
    """
    try:
        body = _utf8(body)
    except UnicodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}", code="invalid_json") from None
    flattened = _TOP_LEVEL_ARRAY.match(body) is not None
    check_depth(body, extra=1 if flattened else 0)
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:  # a safety net: the scan above refuses what could get here
        raise too_deep(ds_settings.MAX_JSON_DEPTH) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON: {exc}", code="invalid_json") from None
    if isinstance(value, list):
        if not value:
            if allow_empty_array:
                return None
            raise BadRequest("empty JSON array: an append needs messages", code="empty_array")
        return _encode(value)  # each message is within the limit: the body was checked
    return Payload(dump_message(value), 1)


def _utf8(body: bytes) -> bytes:
    """The body as UTF-8: the parser also reads UTF-16 and UTF-32, the depth scan does not."""
    if body and 0 < body[0] < 0x80 and body[1:2] != b"\x00":
        return body  # what json.detect_encoding calls UTF-8 (no BOM, no NUL byte first)
    encoding = json.detect_encoding(body)
    if encoding in ("utf-8", "utf-8-sig"):
        return body
    return body.decode(encoding).encode("utf-8", "surrogatepass")


def body_payload(body: bytes, content_type: str | None, *, creating: bool) -> Payload | None:
    """The entry for a request body on a stream of ``content_type`` (None when empty)."""
    if not body:
        return None
    if is_json(content_type):
        return parse_json_body(body, allow_empty_array=creating)
    return Payload(body, 1)


def split_messages(data: bytes) -> list[bytes]:
    """The message texts of a JSON entry (used when a fork keeps only part of an entry).

    ``BadRequest`` for an entry stored before ``MAX_JSON_DEPTH`` existed that is too deep to parse.
    """
    try:
        values = json.loads(b"[" + data + b"]")
    except RecursionError:
        raise too_deep(ds_settings.MAX_JSON_DEPTH) from None
    return [dump_message(value) for value in values]
