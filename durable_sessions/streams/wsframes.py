"""The websocket wire format (docs/websocket.md, WIRE.md section 5): frames in both directions.

Server to client, the same pairs as SSE, as JSON text frames::

    {"event": "data", "data": [...messages...]}          (text streams: a string;
                                                            binary: base64, "encoding": "base64")
    {"event": "control", "data": {"streamNextOffset": ..., "upToDate": ..., "streamClosed": ...}}

Client to server::

    {"op": "append", "id": <ref>, "data": <message or array>, "producer"?: {"id","epoch","seq"},
     "seq"?: <Stream-Seq>, "close"?: true, "encoding"?: "base64"}
        -> {"event": "ack", "id": <ref>, "streamNextOffset": ..., ...}
        or {"event": "error", "id": <ref>, "status": N, "code": ..., "message": ...}
    {"op": "ping", "id"?: <ref>}  -> {"event": "pong", "id": <ref>}

A connection ends with one of ``CLOSE_CODES``. A client frame is checked whole before anything is
queued: an unknown field or an option of the wrong type is an error frame, never ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from durable_sessions.conf import ds_settings
from durable_sessions.streams import protocol
from durable_sessions.streams.commit import AppendOp
from durable_sessions.streams.content import (
    Payload,
    check_depth,
    is_json,
    is_text,
    json_payload,
    too_deep,
)
from durable_sessions.streams.errors import BadRequest, PayloadTooLarge, StreamError
from durable_sessions.streams.records import Appended, ReadResult
from durable_sessions.streams.render import RenderCache

CLOSE_CODES = {
    "done": 1000,  # the stream is closed and everything was sent
    "too_slow": 4008,  # the client did not read for WEBSOCKET_SEND_TIMEOUT: resume from reason
    "bad_request": 4400,  # a bad path or offset in the URL
    "not_authenticated": 4401,
    "permission_denied": 4403,  # the policy, or a foreign Origin with a session cookie
    "stream_not_found": 4404,
    "stream_gone": 4410,  # deleted while followed (or soft-deleted)
    "internal_error": 1011,
}

APPEND_FIELDS = frozenset({"op", "id", "data", "encoding", "close", "seq", "producer"})
PRODUCER_FIELDS = ("id", "epoch", "seq")
# Levels a frame adds around its messages: the frame object, and ``data`` as an array.
ENVELOPE_DEPTH = 2


def compact(value: Any) -> str:
    """A frame's JSON text, without spaces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def close_code(exc: StreamError) -> int:
    """The close code for an error that ends a connection."""
    by_status = {400: "bad_request", 401: "not_authenticated", 403: "permission_denied",
                 404: "stream_not_found", 410: "stream_gone"}  # fmt: skip
    return CLOSE_CODES[by_status.get(exc.status, "internal_error")]


_frames = RenderCache()


def messages(result: ReadResult) -> tuple[dict[str, str], ...]:
    """The ASGI ``websocket.send`` messages of a batch (its data frame, if it has data, and its
    control frame), made once for all the readers at that position and shared by them (the
    ASGI servers only read them)."""
    return _frames.batch(result, _render)


def send_message(text: str) -> dict[str, str]:
    """The ASGI message that sends ``text`` as a frame."""
    return {"type": "websocket.send", "text": text}


def _render(result: ReadResult) -> tuple[dict[str, str], ...]:
    data = None
    if result.count:
        if is_json(result.info.content_type):
            payload = result.body.decode()
            data = f'{{"event":"data","data":{payload}}}'
        elif is_text(result.info.content_type):
            text = json.dumps(result.body.decode("utf-8", errors="replace"), ensure_ascii=False)
            data = f'{{"event":"data","data":{text}}}'
        else:
            encoded = base64.b64encode(result.body).decode()
            data = f'{{"event":"data","data":"{encoded}","encoding":"base64"}}'
    control: dict[str, Any] = {"streamNextOffset": str(result.next)}
    if result.up_to_date or result.closed:
        control["upToDate"] = True
    if result.closed:
        control["streamClosed"] = True
    control_frame = send_message(compact({"event": "control", "data": control}))
    return (control_frame,) if data is None else (send_message(data), control_frame)


def parse_frame(text: str | None) -> dict[str, Any]:
    """A client frame as a JSON object; BadRequest or PayloadTooLarge when it is not one."""
    if text is None:
        raise BadRequest("frames are JSON text", code="invalid_frame")
    if len(text) > ds_settings.MAX_APPEND_BYTES * 2 + 65536:
        raise PayloadTooLarge("frame too large")
    # Checked on the text, before the parser recurses: the frame and a data array are two levels
    # around the messages, whose own depth ``payload`` checks exactly.
    if text.count("[") + text.count("{") > ds_settings.MAX_JSON_DEPTH + ENVELOPE_DEPTH:
        check_depth(text.encode("utf-8", "surrogatepass"), extra=ENVELOPE_DEPTH)
    try:
        frame = json.loads(text)  # NaN and Infinity are refused where they matter: id, data
    except RecursionError:  # a safety net: the scan above refuses what could get here
        raise too_deep(ds_settings.MAX_JSON_DEPTH) from None
    except ValueError:
        raise BadRequest("frames are JSON text", code="invalid_frame") from None
    if not isinstance(frame, dict):
        raise BadRequest("a frame is a JSON object", code="invalid_frame")
    return frame


def shown(value: Any) -> str:
    """A client's value quoted in an error message, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def frame_id(frame: dict[str, Any]) -> Any:
    """The frame's ``id``, echoed in its answer: a string, a finite number, a boolean or null.

    An object or array is refused (its answer's ``id`` is then null), as are ``NaN``, the
    infinities and numbers too large for a double, which could not be echoed as JSON.
    """
    ref = frame.get("id")
    if isinstance(ref, dict | list):
        raise BadRequest("id is a string, a number, a boolean or null", code="invalid_frame")
    if isinstance(ref, float) and not math.isfinite(ref):
        raise BadRequest("id is not a finite number", code="invalid_frame")
    return ref


def append_op(frame: dict[str, Any], path: str, content_type: str) -> AppendOp:
    """The append an ``append`` frame asks for, on a stream of ``content_type``.

    Every field is checked (an option that is null counts as absent), whatever the stream's
    state: a frame that is refused writes nothing.
    """
    unknown = sorted(set(frame) - APPEND_FIELDS)
    if unknown:
        raise BadRequest(
            f"unknown field {shown(unknown[0])} in an append frame", code="unknown_field"
        )
    close = frame.get("close")
    if close is not None and not isinstance(close, bool):
        raise BadRequest("close is true or false", code="invalid_frame")
    op = AppendOp(
        path,
        payload(frame, content_type),
        None,
        close is True,
        stream_seq(frame),
        producer(frame),
    )
    if op.payload is None and not op.close:
        raise BadRequest("an append needs data", code="empty_body")
    return op


def payload(frame: dict[str, Any], content_type: str) -> Payload | None:
    """The bytes an append frame carries: messages on a JSON stream, else text or base64."""
    encoding = frame.get("encoding")
    if encoding is not None and is_json(content_type):
        raise BadRequest("no encoding on a JSON stream: data is JSON", code="invalid_frame")
    if encoding is not None and encoding != "base64":
        raise BadRequest(f"unknown encoding {shown(encoding)}: only 'base64'", code="invalid_frame")
    if "data" not in frame:
        return None
    data = frame["data"]
    if is_json(content_type):
        values = data if isinstance(data, list) else [data]
        if not values:
            raise BadRequest("empty JSON array: an append needs messages", code="empty_array")
        return json_payload(values)
    if not isinstance(data, str):
        raise BadRequest("data must be a string on a non-JSON stream", code="invalid_frame")
    if encoding == "base64":
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("invalid base64 data", code="invalid_frame") from None
    else:
        try:
            raw = data.encode()
        except UnicodeEncodeError:  # a lone surrogate ("\ud806" in the frame's JSON)
            raise BadRequest(
                "data is not valid Unicode text (a lone surrogate): send base64",
                code="invalid_frame",
            ) from None
    return Payload(raw, 1) if raw else None


def stream_seq(frame: dict[str, Any]) -> str | None:
    """The frame's ``seq`` (the HTTP ``Stream-Seq`` header), checked."""
    seq = frame.get("seq")
    if seq is not None and not isinstance(seq, str):
        raise BadRequest("seq must be a string", code="invalid_stream_seq")
    return protocol.parse_stream_seq(seq)


def producer(frame: dict[str, Any]) -> tuple[str, int, int] | None:
    """The frame's idempotent producer ``(id, epoch, seq)``, checked."""
    producer = frame.get("producer")
    if producer is None:
        return None
    if not isinstance(producer, dict) or set(producer) - set(PRODUCER_FIELDS):
        raise BadRequest("producer is {id, epoch, seq}", code="invalid_producer")
    values = [producer.get(key) for key in PRODUCER_FIELDS]
    if not isinstance(values[0], str) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values[1:]
    ):
        raise BadRequest("producer is {id: string, epoch: int, seq: int}", code="invalid_producer")
    return protocol.parse_producer(values[0], str(values[1]), str(values[2]))


def ack_frame(result: Appended, ref: Any) -> str:
    """The answer to a committed append."""
    ack: dict[str, Any] = {"event": "ack", "id": ref, "streamNextOffset": str(result.next)}
    if result.closed:
        ack["streamClosed"] = True
    if result.duplicate:
        ack["duplicate"] = True
    if result.producer_epoch is not None:
        ack["producerEpoch"] = result.producer_epoch
        ack["producerSeq"] = result.producer_seq
    return compact(ack)


def error_frame(exc: StreamError, ref: Any = None) -> str:
    """The answer to a frame that failed (or the reason a connection is about to close)."""
    frame = {
        "event": "error",
        "id": ref,
        "status": exc.status,
        "code": exc.code,
        "message": exc.message,
    }
    if exc.headers:
        frame["headers"] = exc.headers
    return compact(frame)
