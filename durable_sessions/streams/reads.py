"""Reading entries: one range query per stream of a fork chain, stored bytes as they are.

A fork owns the entries from its ``fork_seq`` on and reads the ones below from its source, which
may itself be a fork: ``segments()`` turns a stream into the list of ``(stream id, first seq,
end seq)`` ranges that make up its log. The ancestry of a stream id never changes, so it is
cached for the life of the process.
"""

from __future__ import annotations

from typing import Any

from durable_sessions.streams.content import is_json
from durable_sessions.streams.db import ENTRY, STREAM, STREAM_COLUMNS, Database
from durable_sessions.streams.errors import BadRequest, StreamGone, StreamNotFound
from durable_sessions.streams.offsets import START, Position
from durable_sessions.streams.records import ReadResult, StoredEntry, StreamInfo, StreamRow

# Most entries one read returns, whatever their size (bounds memory for tiny entries).
MAX_READ_ENTRIES = 20_000

_ancestry: dict[int, tuple[int | None, int]] = {}  # stream id -> (source id, fork seq)
_ANCESTRY_LIMIT = 100_000


def load_row(db: Database, cur: Any, path: str, *, lock: bool = False) -> StreamRow | None:
    """The stream row at ``path`` (locked for update when ``lock``), or None."""
    suffix = db.lock_clause() if lock else ""
    cur.execute(db.sql(f"SELECT {STREAM_COLUMNS} FROM {STREAM} WHERE path = %s{suffix}"), [path])
    row = cur.fetchone()
    return StreamRow.from_db(row) if row else None


def load_row_by_id(
    db: Database, cur: Any, stream_id: int, *, lock: bool = False
) -> StreamRow | None:
    """The stream row with ``stream_id`` (locked for update when ``lock``), or None."""
    suffix = db.lock_clause() if lock else ""
    cur.execute(db.sql(f"SELECT {STREAM_COLUMNS} FROM {STREAM} WHERE id = %s{suffix}"), [stream_id])
    row = cur.fetchone()
    return StreamRow.from_db(row) if row else None


def has_forks(db: Database, cur: Any, stream_id: int) -> bool:
    """Whether any stream (live or soft-deleted) still reads from ``stream_id``."""
    cur.execute(db.sql(f"SELECT 1 FROM {STREAM} WHERE source_id = %s LIMIT 1"), [stream_id])
    return cur.fetchone() is not None


def ancestor(db: Database, cur: Any, stream_id: int) -> tuple[int | None, int]:
    """``(source id, fork seq)`` of ``stream_id``: what it forks from, cached (never changes)."""
    known = _ancestry.get(stream_id)
    if known is None:
        cur.execute(db.sql(f"SELECT source_id, fork_seq FROM {STREAM} WHERE id = %s"), [stream_id])
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"stream {stream_id} vanished from a fork chain")
        known = (row[0], row[1])
        if len(_ancestry) >= _ANCESTRY_LIMIT:
            _ancestry.clear()
        _ancestry[stream_id] = known
    return known


def segments(
    db: Database, cur: Any, row: StreamRow, end_seq: int | None = None
) -> list[tuple[int, int, int]]:
    """``(stream id, first seq, end seq)`` ranges covering ``[0, end_seq)`` of ``row``'s log."""
    hi = row.tail_seq if end_seq is None else end_seq
    result = [(row.id, row.fork_seq, hi)]
    source_id, low = row.source_id, row.fork_seq
    while source_id is not None:
        parent_source, parent_low = ancestor(db, cur, source_id)
        result.append((source_id, parent_low, low))
        source_id, low = parent_source, parent_low
    result.reverse()
    return [(sid, lo, min(hi_, hi)) for sid, lo, hi_ in result if min(hi_, hi) > lo]


def _page(
    db: Database,
    cur: Any,
    stream_id: int,
    start: int,
    end: int,
    first: int,
    limit: int,
    max_entries: int,
    separator: bytes,
) -> tuple[bytes, int, int, Position | None]:
    """One range query: (joined bytes, messages, entries, position after the last entry)."""
    page = (
        f"SELECT seq, end_bytes, count, data FROM {ENTRY} WHERE stream_id = %s AND seq >= %s"
        " AND seq < %s AND (seq = %s OR end_bytes <= %s) ORDER BY seq LIMIT %s"
    )
    params = [stream_id, start, end, first, limit, max_entries]
    if db.is_postgres:  # let Postgres concatenate: one value back instead of a row per entry
        cur.execute(
            "SELECT count(*), max(page.seq), max(page.end_bytes), coalesce(sum(page.count), 0),"
            f" string_agg(page.data, %s ORDER BY page.seq) FROM ({page}) page",
            [separator, *params],
        )
        entries, last_seq, last_end, messages, data = cur.fetchone()
        if not entries:
            return b"", 0, 0, None
        return bytes(data), messages, entries, Position(last_seq + 1, last_end)
    cur.execute(db.sql(page), params)
    rows = cur.fetchall()
    if not rows:
        return b"", 0, 0, None
    data = separator.join(row[3] for row in rows)
    return data, sum(row[2] for row in rows), len(rows), Position(rows[-1][0] + 1, rows[-1][1])


def read_range(
    db: Database, cur: Any, row: StreamRow, start: Position, max_bytes: int, separator: bytes
) -> tuple[bytes, int, Position]:
    """Entries of ``row`` from ``start`` towards its tail, about ``max_bytes`` worth.

    Returns their bytes joined by ``separator``, the number of messages, and the position after
    them. At least one entry comes back when there is one, however large; more are added while
    the stream position stays within ``start.bytes + max_bytes``.
    """
    pieces: list[bytes] = []
    messages = 0
    fetched = 0
    position = start
    limit = start.bytes + max_bytes
    for stream_id, lo, hi in segments(db, cur, row):
        if hi <= position.seq:
            continue
        first = max(position.seq, lo) if not pieces else -1
        data, count, entries, after = _page(
            db,
            cur,
            stream_id,
            max(position.seq, lo),
            hi,
            first,
            limit,
            MAX_READ_ENTRIES - fetched,
            separator,
        )
        if after is None:
            break
        pieces.append(data)
        messages += count
        fetched += entries
        position = after
        if after.seq != hi or fetched >= MAX_READ_ENTRIES:
            break  # the budget is spent
    return separator.join(pieces), messages, position


def entry_at(db: Database, cur: Any, row: StreamRow, seq: int) -> StoredEntry | None:
    """The entry ``seq`` of ``row``'s log (wherever in the fork chain it is stored)."""
    for stream_id, lo, hi in segments(db, cur, row):
        if lo <= seq < hi:
            cur.execute(
                db.sql(
                    f"SELECT seq, end_bytes, count, data FROM {ENTRY}"
                    " WHERE stream_id = %s AND seq = %s"
                ),
                [stream_id, seq],
            )
            found = cur.fetchone()
            return StoredEntry._make(found) if found else None
    return None


def position_bytes(db: Database, cur: Any, row: StreamRow, seq: int) -> int:
    """The byte position before entry ``seq`` of ``row``'s log (at or after its first retained
    position: the entries before that may be gone)."""
    if seq == row.first_seq:
        return row.first_bytes
    if seq == 0:
        return 0
    if seq == row.tail_seq:
        return row.tail_bytes
    previous = entry_at(db, cur, row, seq - 1)
    if previous is None:
        raise LookupError(f"entry {seq - 1} of stream {row.id} is missing")
    return previous.end_bytes


def live_row(db: Database, cur: Any, path: str, now: float) -> StreamRow:
    """The row at ``path`` if the stream is readable; 404 when absent or expired, 410 deleted."""
    row = load_row(db, cur, path)
    if row is None:
        raise StreamNotFound(f"no stream at {path!r}")
    if row.deleted:
        raise StreamGone(f"stream {path!r} was deleted")
    if row.expired(now):
        if has_forks(db, cur, row.id):
            raise StreamGone(f"stream {path!r} expired")
        raise StreamNotFound(f"no stream at {path!r}")
    return row


def renewal_due(row: StreamRow, now: float) -> bool:
    """Whether a read at ``now`` should renew ``row``'s sliding TTL.

    Renewing to within 5% of the TTL, and at most once a second, is enough: a stream read
    continuously costs one renewal a second, whatever the number of readers.
    """
    return row.ttl_seconds is not None and now - row.touched_at >= min(1.0, row.ttl_seconds * 0.05)


def check_start(db: Database, cur: Any, row: StreamRow, start: Position) -> None:
    """Refuse a read offset that names no position of ``row``'s log (400), or one before its
    retained data (410: those entries were dropped, see ``retention.truncate``).

    Both halves of an offset are checked, as for a fork offset: a made-up byte count beside a
    real sequence number is not a position of this stream.
    """
    if start.seq > row.tail_seq:
        raise BadRequest("offset is beyond the end of the stream", code="offset_beyond_tail")
    if start.seq < row.first_seq:
        raise StreamGone(
            f"offset {start} is before the retained data, which starts at {row.first}",
            code="before_retained",
        )
    if position_bytes(db, cur, row, start.seq) != start.bytes:
        raise BadRequest(f"offset {start} is not a position of this stream", code="invalid_offset")


def read(
    db: Database, cur: Any, path: str, start: Position | None, max_bytes: int, now: float
) -> tuple[ReadResult, bool]:
    """A catch-up read of ``path`` from ``start`` (None: from the tail, ``offset=now``; the
    start, ``-1``, is the first retained position).

    Returns the result and whether the read should renew the stream's TTL (``renewal_due``):
    readers never write; the store hands the renewal to the writer.
    """
    row = live_row(db, cur, path, now)
    if start is None:
        start = row.tail
    elif start == START:  # the start of the stream is its first retained position
        start = row.first
    else:
        check_start(db, cur, row, start)
    data, count, position = b"", 0, start
    if start.seq < row.tail_seq:
        separator = b"," if is_json(row.content_type) else b""
        data, count, position = read_range(db, cur, row, start, max_bytes, separator)
    up_to_date = position.seq >= row.tail_seq
    if up_to_date:
        position = row.tail
    closed = up_to_date and row.closed
    result = ReadResult(StreamInfo.of(row), start, data, count, position, up_to_date, closed)
    return result, renewal_due(row, now)


def info(db: Database, cur: Any, path: str, now: float) -> StreamInfo:
    """The metadata of ``path`` (HEAD: does not renew the TTL)."""
    return StreamInfo.of(live_row(db, cur, path, now))
