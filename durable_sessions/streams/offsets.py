"""Offsets and cursors: their one textual form, parsing, and the live-read cursor clock.

An offset names the position *before* entry ``seq`` of a stream: ``<seq>_<bytes>``, both parts
16 zero-padded decimal digits, where ``bytes`` is the stream's byte position there. Offsets sort
lexicographically in stream order, every stream starts at ``0000000000000000_0000000000000000``,
and neither sentinel (``-1``, ``now``) can ever be produced.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass

from durable_sessions.streams.errors import BadRequest

_WIDTH = 16
_OFFSET_RE = re.compile(r"\A(\d{16})_(\d{16})\Z")

BEGINNING = "-1"
NOW = "now"

# Cursors count 20-second intervals since 2024-10-09T00:00:00Z (the protocol's defaults).
CURSOR_EPOCH = 1728432000.0
CURSOR_INTERVAL = 20.0


@dataclass(frozen=True, slots=True)
class Position:
    """A decoded offset: the entry sequence number and the byte position before it."""

    seq: int
    bytes: int

    def __str__(self) -> str:
        return format_offset(self.seq, self.bytes)


START = Position(0, 0)


def format_offset(seq: int, byte_pos: int) -> str:
    """The offset string of the position before entry ``seq`` at byte ``byte_pos``."""
    return f"{seq:0{_WIDTH}d}_{byte_pos:0{_WIDTH}d}"


def parse_offset(value: str) -> Position:
    """Decode a concrete offset (not a sentinel); raise ``BadRequest`` when it is malformed."""
    match = _OFFSET_RE.match(value)
    if match is None:
        raise BadRequest(f"malformed offset {value[:80]!r}", code="invalid_offset")
    return Position(int(match.group(1)), int(match.group(2)))


def parse_read_offset(value: str | None) -> Position | str:
    """Decode the ``offset`` query parameter: a ``Position``, or the sentinel ``"now"``.

    ``None`` and ``-1`` both mean the start of the stream.
    """
    if value is None or value == BEGINNING:
        return START
    if value == NOW:
        return NOW
    return parse_offset(value)


def current_cursor() -> int:
    """The interval number of the present moment."""
    return int((time.time() - CURSOR_EPOCH) // CURSOR_INTERVAL)


def next_cursor(client_cursor: str | None) -> str:
    """The cursor for a live response; strictly greater than a client's cursor that is not behind.

    When the client already holds the current interval (or a later one), a random jitter of
    1 to 3600 seconds, in whole intervals, moves the cursor past it so that caches never loop.
    """
    now = current_cursor()
    if client_cursor is not None and client_cursor.isdigit():
        theirs = int(client_cursor)
        if theirs >= now:
            jitter = math.ceil(random.uniform(1, 3600) / CURSOR_INTERVAL)
            return str(theirs + max(1, jitter))
    return str(now)
