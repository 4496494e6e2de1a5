"""Retention: dropping the entries of a stream before an offset (``streams.truncate``).

A truncated stream keeps its offsets: the entries before the new first retained position are
deleted, and that position is recorded on the stream row (``first_seq``/``first_bytes``). From
then on a read from the start (``-1``) begins there, a read from an offset before it is 410
(the protocol's "before retained data"), and a fork of it starts there. Producer states stay as
they are, so an idempotent producer's sequence numbers are never accepted again.

Forks read their source's entries below their fork offset: a truncation that would delete an
entry a fork (or a fork of a fork) still reads is refused (409). A fork that was itself
truncated past its fork offset reads nothing from its source any more and pins nothing.
Truncating a fork below its fork offset deletes nothing (those entries are its source's): it
only moves the fork's first retained position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from durable_sessions.streams import reads
from durable_sessions.streams.db import ENTRY, STREAM, Database
from durable_sessions.streams.errors import BadRequest, Conflict, StreamNotFound
from durable_sessions.streams.lifecycle import gone_error, lock_chain, relocked
from durable_sessions.streams.offsets import START, Position
from durable_sessions.streams.records import Notice, StreamRow


@dataclass(slots=True)
class TruncateOp:
    """Drop the entries of ``path`` before ``before``."""

    path: str
    before: Position


@dataclass(frozen=True, slots=True)
class Retention:
    """What a stream retains: its first retained position, its tail, and ``pinned``, the
    lowest entry a fork still reads from it (None: none; truncating past it is refused)."""

    path: str
    first: Position
    tail: Position
    pinned: int | None


def pinned(db: Database, cur: Any, row: StreamRow) -> int | None:
    """The lowest sequence number of ``row``'s own entries that a fork (at any depth) still
    reads, or None.

    A descendant ``d`` reads ``row``'s log below ``reach`` (the smallest fork offset on the way
    down) from its own first retained position on; it needs ``row``'s own entries (from
    ``row.fork_seq``) in ``[max(d.first_seq, row.fork_seq), reach)``.
    """
    lowest: int | None = None
    frontier = [(row.id, row.tail_seq)]
    while frontier:
        stream_id, reach = frontier.pop()
        cur.execute(
            db.sql(f"SELECT id, fork_seq, first_seq FROM {STREAM} WHERE source_id = %s"),
            [stream_id],
        )
        for fork_id, fork_seq, first_seq in cur.fetchall():
            seen = min(reach, fork_seq)
            if seen <= row.fork_seq:
                continue  # it sees none of row's own entries (nor do its forks)
            low = max(first_seq, row.fork_seq)
            if low < seen:
                lowest = low if lowest is None else min(lowest, low)
            frontier.append((fork_id, seen))
    return lowest


def _row(db: Database, cur: Any, path: str, now: float) -> StreamRow:
    unlocked = reads.load_row(db, cur, path)
    row = relocked(lock_chain(db, cur, unlocked), unlocked)
    if row is None or (not row.deleted and row.expired(now)):
        raise StreamNotFound(f"no stream at {path!r}")
    if row.deleted:
        raise gone_error(path, True)
    return row


def _not_a_position(offset: Position) -> BadRequest:
    return BadRequest(f"offset {offset} is not a position of this stream", code="invalid_offset")


def truncate(db: Database, cur: Any, op: TruncateOp, now: float) -> tuple[Position, list[Notice]]:
    """Drop the entries of ``op.path`` before ``op.before``; the new first retained position.

    ``BadRequest`` for an offset that is not a position of the stream (beyond its tail, a
    made-up byte count); ``Conflict`` when a fork still reads an entry it would drop. An offset
    at or before the first retained position changes nothing (a retry is harmless).
    """
    row = _row(db, cur, op.path, now)
    before = row.first if op.before == START else op.before
    if before.seq > row.tail_seq:
        raise BadRequest("offset is beyond the end of the stream", code="offset_beyond_tail")
    if before.seq <= row.first_seq:
        if before.seq == row.first_seq and before.bytes != row.first_bytes:
            raise _not_a_position(before)
        return row.first, []
    if reads.position_bytes(db, cur, row, before.seq) != before.bytes:
        raise _not_a_position(before)
    limit = pinned(db, cur, row)
    if limit is not None and before.seq > limit:
        raise Conflict(
            f"a fork still reads entries of {op.path!r} from {limit}: truncate that fork first",
            code="fork_reads_entries",
        )
    cur.execute(
        db.sql(f"DELETE FROM {ENTRY} WHERE stream_id = %s AND seq < %s"), [row.id, before.seq]
    )
    cur.execute(
        db.sql(f"UPDATE {STREAM} SET first_seq = %s, first_bytes = %s WHERE id = %s"),
        [before.seq, before.bytes, row.id],
    )
    return before, []


def retention_info(db: Database, cur: Any, path: str, now: float) -> Retention:
    """What ``path`` retains (``Retention``), without changing anything."""
    row = reads.live_row(db, cur, path, now)
    return Retention(path, row.first, row.tail, pinned(db, cur, row))
