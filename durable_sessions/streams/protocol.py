"""Parsing the protocol's request headers: strict, with a clear 400 for anything malformed.

Pure functions over header values, shared by the HTTP and websocket front ends.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from durable_sessions.streams.errors import BadRequest
from durable_sessions.streams.offsets import BEGINNING, NOW, START, Position, parse_offset

MAX_SAFE_INTEGER = 2**53 - 1
# About 317 years: any expiry a TTL sets stays a date (before 9999-12-31) that HEAD, the admin
# and Python's datetime can state.
MAX_TTL_DIGITS = 10
# RFC 3339 years run from 1 to 9999; an offset can push a time outside them in UTC.
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp()
_DECIMAL = re.compile(r"\A(0|[1-9][0-9]*)\Z")
_DIGITS = re.compile(r"\A[0-9]+\Z")
_RFC3339 = re.compile(r"\A\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")
_CONTENT_TYPE = re.compile(r"\A[!-~][ -~]*\Z")
# What no text column holds: NUL (Postgres refuses it) and lone surrogates (not UTF-8). Header
# values cannot carry them, but websocket frames (JSON escapes) and Python callers can.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def parse_flag(value: str | None) -> bool:
    """``Stream-Closed``: true only for ``true`` (any case); anything else means absent."""
    return value is not None and value.strip().lower() == "true"


def parse_ttl(value: str | None) -> int | None:
    """``Stream-TTL``: a non-negative decimal integer without sign, zeros, point or exponent,
    of at most ``MAX_TTL_DIGITS`` digits."""
    if value is None:
        return None
    value = value.strip()
    if not _DECIMAL.match(value) or len(value) > MAX_TTL_DIGITS:
        raise BadRequest(f"invalid Stream-TTL {value[:40]!r}", code="invalid_ttl")
    return int(value)


def parse_expires_at(value: str | None) -> float | None:
    """``Stream-Expires-At``: an RFC 3339 timestamp with a time zone, as epoch seconds; in UTC
    it must still fall in the years 1 to 9999 (``9999-12-31T23:00:00-02:00`` does not)."""
    if value is None:
        return None
    value = value.strip()
    if not _RFC3339.match(value):
        raise BadRequest(f"invalid Stream-Expires-At {value[:60]!r}", code="invalid_expires_at")
    try:
        epoch = datetime.fromisoformat(value.replace("z", "Z")).timestamp()
    except (ValueError, OverflowError):
        epoch = None
    if epoch is None or not _EARLIEST <= epoch <= _LATEST:
        raise BadRequest(f"invalid Stream-Expires-At {value[:60]!r}", code="invalid_expires_at")
    return epoch


def parse_content_type(value: str | None) -> str | None:
    """A Content-Type to store: printable ASCII, at most 255 characters."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > 255 or not _CONTENT_TYPE.match(value):
        raise BadRequest("invalid Content-Type", code="invalid_content_type")
    return value


def _integer(name: str, value: str) -> int:
    value = value.strip()
    if not _DIGITS.match(value) or len(value) > 16 or int(value) > MAX_SAFE_INTEGER:
        raise BadRequest(f"{name} must be an integer from 0 to 2^53-1", code="invalid_producer")
    return int(value)


def parse_producer(
    producer_id: str | None, epoch: str | None, seq: str | None
) -> tuple[str, int, int] | None:
    """The idempotent-producer headers: all three or none."""
    present = [value is not None for value in (producer_id, epoch, seq)]
    if not any(present):
        return None
    if not all(present):
        raise BadRequest(
            "Producer-Id, Producer-Epoch and Producer-Seq go together", code="invalid_producer"
        )
    assert producer_id is not None and epoch is not None and seq is not None
    producer_id = producer_id.strip()
    if not producer_id or len(producer_id) > 255:
        raise BadRequest("Producer-Id must be 1 to 255 characters", code="invalid_producer")
    if _UNSTORABLE.search(producer_id):
        raise BadRequest("Producer-Id holds NUL or a lone surrogate", code="invalid_producer")
    return producer_id, _integer("Producer-Epoch", epoch), _integer("Producer-Seq", seq)


def check_options(
    *,
    content_type: object = None,
    ttl: object = None,
    expires_at: object = None,
    stream_seq: object = None,
    producer: object = None,
) -> None:
    """The options of a create or an append given as Python values (the Python API), checked
    by the rules their headers follow over HTTP: ``BadRequest`` for what a header could not
    say (a TTL of centuries, an expiry that is no date, a Stream-Seq holding NUL...)."""
    if content_type is not None and (
        not isinstance(content_type, str) or parse_content_type(content_type) != content_type
    ):
        raise BadRequest("invalid content type", code="invalid_content_type")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl < 10**MAX_TTL_DIGITS
    ):
        raise BadRequest(
            f"ttl is an integer of at most {MAX_TTL_DIGITS} digits", code="invalid_ttl"
        )
    if expires_at is not None and (
        isinstance(expires_at, bool)
        or not isinstance(expires_at, int | float)
        or not _EARLIEST <= expires_at <= _LATEST
    ):
        raise BadRequest("expires_at is epoch seconds within the years 1 to 9999",
                         code="invalid_expires_at")  # fmt: skip
    if ttl is not None and expires_at is not None:
        raise BadRequest("ttl and expires_at exclude each other", code="invalid_ttl")
    if stream_seq is not None:
        if not isinstance(stream_seq, str):
            raise BadRequest("seq is a string", code="invalid_stream_seq")
        parse_stream_seq(stream_seq)
    if producer is not None:
        if (
            not isinstance(producer, tuple)
            or len(producer) != 3
            or not isinstance(producer[0], str)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in producer[1:])
        ):
            raise BadRequest("producer is (id, epoch, seq)", code="invalid_producer")
        if (
            producer[1] < 0
            or producer[2] < 0
            or parse_producer(producer[0], str(producer[1]), str(producer[2])) != producer
        ):
            raise BadRequest("invalid producer", code="invalid_producer")


def parse_stream_seq(value: str | None) -> str | None:
    """``Stream-Seq``: an opaque, non-empty string compared byte-wise."""
    if value is None:
        return None
    if not value or len(value) > 1024:
        raise BadRequest("Stream-Seq must be 1 to 1024 characters", code="invalid_stream_seq")
    if _UNSTORABLE.search(value):
        raise BadRequest("Stream-Seq holds NUL or a lone surrogate", code="invalid_stream_seq")
    return value


def parse_fork_offset(value: str | None) -> Position | None:
    """``Stream-Fork-Offset``: an offset (``-1`` is the start; ``now`` is the default tail)."""
    if value is None or value.strip() == NOW:
        return None
    value = value.strip()
    return START if value == BEGINNING else parse_offset(value)


def parse_sub_offset(value: str | None) -> int:
    """``Stream-Fork-Sub-Offset``: a non-negative decimal integer (default 0)."""
    if value is None:
        return 0
    value = value.strip()
    if not _DECIMAL.match(value) or len(value) > 16:
        raise BadRequest(f"invalid Stream-Fork-Sub-Offset {value[:40]!r}", code="invalid_fork")
    return int(value)


def parse_stream_path(path: str, max_length: int) -> str:
    """A stream path from a URL: non-empty segments, no ``.``/``..``, no control characters."""
    if not path or len(path) > max_length:
        raise BadRequest(f"a stream path has 1 to {max_length} characters", code="invalid_path")
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        raise BadRequest("a stream path has no control characters", code="invalid_path")
    if _UNSTORABLE.search(path):
        raise BadRequest("a stream path has no lone surrogates", code="invalid_path")
    segments = path.split("/")
    if any(segment in {"", ".", ".."} for segment in segments):
        raise BadRequest("a stream path has no empty, '.' or '..' segments", code="invalid_path")
    if segments[0] == "__ds":
        raise BadRequest("paths under __ds/ are reserved", code="reserved_path")
    return path
