"""Creating, forking, deleting and expiring streams (each inside the writer's transaction).

A fork records its source and the sequence number where it diverges; reads stitch the source's
entries below that point (``reads.segments``). With a sub-offset, the fork keeps only a prefix of
the source's entry at the fork offset: that prefix is copied into the fork as its first own entry.
A fork starts at its source's first retained position, and may start with producer states (it
continues the source's producers where its data stops).

Deleting a stream that forks still read from only marks it deleted (410 from then on, its path
blocked); it is removed with its data when its last fork goes, and that removal cascades up the
chain through sources that were themselves deleted. Expiry (TTL, Expires-At) is a deletion.

Lock order: every transaction of the log locks stream rows in ascending id order (the group
commit locks the rows of a batch that way). A source always has a smaller id than its forks, so
an operation that may cascade to a stream's sources locks the whole chain, sources first, before
it changes anything (``lock_chain``). A sliding TTL is renewed through the writer too
(``RenewOp``): readers never write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from durable_sessions.streams import reads
from durable_sessions.streams.content import (
    DEFAULT_CONTENT_TYPE,
    Payload,
    body_payload,
    is_json,
    same_media_type,
    split_messages,
)
from durable_sessions.streams.db import (
    ENTRY,
    PRODUCER,
    STREAM,
    STREAM_COLUMNS,
    Database,
    RetryTransaction,
)
from durable_sessions.streams.errors import (
    BadRequest,
    Conflict,
    StreamError,
    StreamGone,
    StreamNotFound,
)
from durable_sessions.streams.offsets import START, Position
from durable_sessions.streams.records import Created, Notice, StreamInfo, StreamRow


@dataclass(slots=True)
class CreateOp:
    """A create (PUT), possibly of a fork. The body is parsed once the content type is known."""

    path: str
    content_type: str | None = None
    ttl_seconds: int | None = None
    expires_at: float | None = None
    closed: bool = False
    body: bytes = b""
    fork_from: str | None = None
    fork_offset: Position | None = None
    fork_sub_offset: int = 0
    producers: tuple[tuple[str, int, int], ...] = ()  # (id, epoch, last seq) a fork starts with


@dataclass(slots=True)
class DeleteOp:
    """A delete (DELETE)."""

    path: str


@dataclass(slots=True)
class RenewOp:
    """Renew the sliding TTL of stream ``stream_id`` (at ``path``) for a read made at ``at``."""

    path: str
    stream_id: int
    at: float


def renew(db: Database, cur: Any, ops: list[RenewOp], now: float) -> tuple[None, list[Notice]]:
    """Move ``touched_at`` forward for reads (never back, never on a deleted stream)."""
    rows = sorted({op.stream_id: op.at for op in ops}.items())  # ascending ids: the lock order
    cur.executemany(
        db.sql(
            f"UPDATE {STREAM} SET touched_at = %s WHERE id = %s AND touched_at < %s"
            " AND deleted = %s"
        ),
        [(at, stream_id, at, False) for stream_id, at in rows],
    )
    return None, []


def chain_ids(db: Database, cur: Any, row: StreamRow) -> list[int]:
    """``row``'s id and the ids of its sources, up the fork chain (no locks: it never changes)."""
    ids = [row.id]
    source_id = row.source_id
    try:
        while source_id is not None:
            ids.append(source_id)
            source_id = reads.ancestor(db, cur, source_id)[0]
    except LookupError as exc:  # the chain went while we read it: start again
        raise RetryTransaction(str(exc)) from None
    return ids


def lock_chain(db: Database, cur: Any, *rows: StreamRow | None) -> dict[int, StreamRow]:
    """Lock ``rows`` and all their sources in ascending id order; the locked rows by id.

    The rows were read without a lock: the caller checks that what it locked is still what it
    read (``relocked``).
    """
    ids = sorted({i for row in rows if row is not None for i in chain_ids(db, cur, row)})
    if not ids:
        return {}
    cur.execute(
        db.sql(
            f"SELECT {STREAM_COLUMNS} FROM {STREAM} WHERE id IN ({db.placeholders(len(ids))})"
            f" ORDER BY id{db.lock_clause()}"
        ),
        ids,
    )
    return {row.id: row for row in map(StreamRow.from_db, cur.fetchall())}


def relocked(locked: dict[int, StreamRow], row: StreamRow | None) -> StreamRow | None:
    """``row`` as locked, or RetryTransaction when it changed hands in between."""
    if row is None:
        return None
    current = locked.get(row.id)
    if current is None or current.path != row.path:
        raise RetryTransaction(f"stream {row.path!r} was deleted concurrently")
    return current


def gone_error(path: str, soft_deleted: bool) -> StreamError:
    """The error for a stream that is no longer there (410 while forks keep it, else 404)."""
    if soft_deleted:
        return StreamGone(f"stream {path!r} was deleted")
    return StreamNotFound(f"no stream at {path!r}")


def _hard_delete(db: Database, cur: Any, stream_id: int) -> None:
    for table, column in ((ENTRY, "stream_id"), (PRODUCER, "stream_id"), (STREAM, "id")):
        cur.execute(db.sql(f"DELETE FROM {table} WHERE {column} = %s"), [stream_id])


def remove(db: Database, cur: Any, row: StreamRow) -> tuple[list[Notice], bool]:
    """Delete ``row``: soft when forks read from it, else for good, cascading upwards.

    The caller holds the locks of ``row`` and of its sources (``lock_chain``). Returns the
    notices for live readers and whether the stream stays as soft-deleted.
    """
    notices = [Notice(row.id, row.tail, closed=row.closed, deleted=True)]
    if reads.has_forks(db, cur, row.id):
        cur.execute(db.sql(f"UPDATE {STREAM} SET deleted = %s WHERE id = %s"), [True, row.id])
        return notices, True
    _hard_delete(db, cur, row.id)
    source_id = row.source_id
    while source_id is not None:
        source = reads.load_row_by_id(db, cur, source_id, lock=True)
        if source is None or not source.deleted or reads.has_forks(db, cur, source.id):
            break
        _hard_delete(db, cur, source.id)
        source_id = source.source_id
    return notices, False


def delete(
    db: Database, cur: Any, op: DeleteOp, now: float
) -> tuple[StreamError | None, list[Notice]]:
    """Delete the stream at ``op.path``; 404 when absent, 410 when already soft-deleted.

    A stream found expired is removed as expired and reported as already gone: the result is
    then an error to report *after* the transaction commits.
    """
    unlocked = reads.load_row(db, cur, op.path)
    row = relocked(lock_chain(db, cur, unlocked), unlocked)
    if row is None:
        raise StreamNotFound(f"no stream at {op.path!r}")
    if row.deleted:
        raise StreamGone(f"stream {op.path!r} was deleted")
    notices, soft = remove(db, cur, row)
    if row.expired(now):
        return gone_error(op.path, soft), notices
    return None, notices


def _fork_ttl(op: CreateOp, source: StreamRow | None) -> tuple[int | None, float | None]:
    if op.ttl_seconds is not None or op.expires_at is not None or source is None:
        return op.ttl_seconds, op.expires_at
    return source.ttl_seconds, source.expires_at


def _same_config(
    db: Database, cur: Any, op: CreateOp, row: StreamRow, source: StreamRow | None
) -> bool:
    content_type = op.content_type or (source.content_type if source else DEFAULT_CONTENT_TYPE)
    if not same_media_type(content_type, row.content_type) or op.closed != row.closed:
        return False
    if _fork_ttl(op, source) != (row.ttl_seconds, row.expires_at):
        return False
    if source is None:
        return row.source_id is None
    if row.source_id != source.id or row.fork_sub_offset != op.fork_sub_offset:
        return False
    # Without Stream-Fork-Offset the fork was made at whatever the source's tail was then: a
    # retry after the source grew is the same request, not a different configuration.
    return op.fork_offset is None or row.fork_offset == str(op.fork_offset)


def _unless_expired(
    db: Database, cur: Any, row: StreamRow | None, now: float, notices: list[Notice]
) -> StreamRow | None:
    """``row`` (locked with its chain) after applying a due expiry (None when it is gone)."""
    if row is not None and not row.deleted and row.expired(now):
        expired, soft = remove(db, cur, row)
        notices.extend(expired)
        return reads.load_row_by_id(db, cur, row.id) if soft else None
    return row


def _fork_point(
    db: Database, cur: Any, op: CreateOp, source: StreamRow
) -> tuple[Position, Payload | None]:
    """Where the fork diverges, and the prefix of the source's entry it keeps (sub-offset)."""
    if op.fork_offset is None:
        if op.fork_sub_offset:
            raise BadRequest("Stream-Fork-Sub-Offset needs Stream-Fork-Offset", code="invalid_fork")
        return source.tail, None
    point = source.first if op.fork_offset == START else op.fork_offset
    if point.seq < source.first_seq:
        raise BadRequest(
            "Stream-Fork-Offset is before the source's retained data", code="invalid_fork"
        )
    if point.seq > source.tail_seq:
        raise BadRequest("Stream-Fork-Offset is beyond the source's tail", code="invalid_fork")
    if reads.position_bytes(db, cur, source, point.seq) != point.bytes:
        raise BadRequest("Stream-Fork-Offset is not a position of the source", code="invalid_fork")
    if not op.fork_sub_offset:
        return point, None
    entry = reads.entry_at(db, cur, source, point.seq)
    if entry is None:
        raise BadRequest(
            "Stream-Fork-Sub-Offset points past the source's data", code="invalid_fork"
        )
    if is_json(source.content_type):
        messages = split_messages(entry.data)
        if op.fork_sub_offset > len(messages):
            raise BadRequest(
                "Stream-Fork-Sub-Offset exceeds the messages there", code="invalid_fork"
            )
        kept = messages[: op.fork_sub_offset]
        return point, Payload(b",".join(kept), len(kept))
    if op.fork_sub_offset > len(entry.data):
        raise BadRequest("Stream-Fork-Sub-Offset exceeds the bytes there", code="invalid_fork")
    return point, Payload(entry.data[: op.fork_sub_offset], 1)


def create(db: Database, cur: Any, op: CreateOp, now: float) -> tuple[Created, list[Notice]]:
    """Create the stream (or fork) at ``op.path``, or confirm an identical existing one."""
    notices: list[Notice] = []
    source = None if op.fork_from is None else reads.load_row(db, cur, op.fork_from)
    existing = reads.load_row(db, cur, op.path)
    locked = lock_chain(db, cur, source, existing)
    source, existing = relocked(locked, source), relocked(locked, existing)
    if op.fork_from is not None:
        source = _unless_expired(db, cur, source, now, notices)
        if source is None:
            raise StreamNotFound(f"no source stream at {op.fork_from!r}")
        if source.deleted:
            raise Conflict(f"source stream {op.fork_from!r} was deleted", code="source_deleted")
    if existing is not None and source is not None and existing.id == source.id:
        existing = source  # a stream "forked" onto its own path: one row, expired once
    else:
        existing = _unless_expired(db, cur, existing, now, notices)
    if existing is not None:
        if existing.deleted:
            raise Conflict(
                f"stream {op.path!r} was deleted; its path stays taken while forks read from it",
                code="path_blocked",
            )
        if not _same_config(db, cur, op, existing, source):
            raise Conflict(
                f"stream {op.path!r} exists with a different configuration", code="config_mismatch"
            )
        return Created(StreamInfo.of(existing), created=False), notices
    content_type = op.content_type or (source.content_type if source else DEFAULT_CONTENT_TYPE)
    if source is not None and not same_media_type(content_type, source.content_type):
        raise Conflict(
            "a fork's content type must match its source's", code="content_type_mismatch"
        )
    ttl_seconds, expires_at = _fork_ttl(op, source)
    point, prefix = _fork_point(db, cur, op, source) if source else (Position(0, 0), None)
    payload = body_payload(op.body, content_type, creating=True)
    entries: list[tuple[int, int, int, bytes]] = []
    tail = point
    for part in (prefix, payload):
        if part is not None:
            end = tail.bytes + len(part.data)
            entries.append((tail.seq, end, part.count, part.data))
            tail = Position(tail.seq + 1, end)
    cur.execute(
        db.sql(
            f"INSERT INTO {STREAM} (path, content_type, created_at, touched_at, ttl_seconds,"
            " expires_at, tail_seq, tail_bytes, closed, source_id, fork_seq, fork_offset,"
            " fork_sub_offset, deleted, first_seq, first_bytes) VALUES"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (path) DO NOTHING RETURNING id"
        ),
        [
            op.path,
            content_type,
            now,
            now,
            ttl_seconds,
            expires_at,
            tail.seq,
            tail.bytes,
            op.closed,
            source.id if source else None,
            point.seq,
            str(op.fork_offset or point) if source else "",
            op.fork_sub_offset,
            False,
            *((source.first_seq, source.first_bytes) if source else (0, 0)),
        ],
    )
    inserted = cur.fetchone()
    if inserted is None:  # another process created it between our check and insert
        raise RetryTransaction(f"stream {op.path!r} was created concurrently")
    stream_id = inserted[0]
    if entries:
        cur.executemany(
            db.sql(
                f"INSERT INTO {ENTRY} (stream_id, seq, end_bytes, count, data) VALUES"
                " (%s, %s, %s, %s, %s)"
            ),
            [(stream_id, *entry) for entry in entries],
        )
    if op.producers and source is not None:
        cur.executemany(
            db.sql(
                f"INSERT INTO {PRODUCER} (stream_id, producer_id, epoch, last_seq, updated_at)"
                " VALUES (%s, %s, %s, %s, %s)"
            ),
            [(stream_id, pid, epoch, seq, now) for pid, epoch, seq in op.producers],
        )
    info = StreamInfo(stream_id, op.path, content_type, tail, op.closed, ttl_seconds, expires_at)
    return Created(info, created=True), notices


def sweep_expired(db: Database, cur: Any, now: float, limit: int = 100) -> tuple[int, list[Notice]]:
    """Remove up to ``limit`` expired streams, and up to ``limit`` soft-deleted streams that no
    fork reads from any more; returns how many were found, and notices for live readers.

    A soft-deleted stream loses its last fork through ``remove``, which then removes it too;
    the second query only heals rows left behind by a deletion that bypassed the log (an ORM
    ``delete()``), which would otherwise block their path for good.
    """
    cur.execute(
        db.sql(
            f"SELECT id FROM {STREAM} WHERE deleted = %s AND ("
            "(ttl_seconds IS NOT NULL AND touched_at + ttl_seconds <= %s)"
            " OR (expires_at IS NOT NULL AND expires_at <= %s)) ORDER BY id LIMIT %s"
        ),
        [False, now, now, limit],
    )
    expired = [stream_id for (stream_id,) in cur.fetchall()]
    cur.execute(
        db.sql(
            f"SELECT s.id FROM {STREAM} s WHERE s.deleted = %s AND NOT EXISTS"
            f" (SELECT 1 FROM {STREAM} f WHERE f.source_id = s.id) ORDER BY s.id LIMIT %s"
        ),
        [True, limit],
    )
    orphans = [stream_id for (stream_id,) in cur.fetchall()]
    found = [reads.load_row_by_id(db, cur, stream_id) for stream_id in sorted({*expired, *orphans})]
    locked = lock_chain(db, cur, *found)  # every chain at once: one lock order for all
    notices: list[Notice] = []
    for row in found:
        if row is None or row.id not in locked:
            continue  # gone meanwhile
        current = reads.load_row_by_id(db, cur, row.id)  # (locked: fresh after earlier removals)
        if current is None:
            continue  # removed with an earlier one's cascade
        if current.deleted:
            if reads.has_forks(db, cur, current.id):
                continue
        elif not current.expired(now):
            continue
        notices.extend(remove(db, cur, current)[0])
    return max(len(expired), len(orphans)), notices
