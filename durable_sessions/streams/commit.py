"""Group commit: a batch of appends, to any number of streams, in one transaction.

The writer thread calls ``apply_appends`` inside an open transaction. It locks the rows of the
streams involved (in id order, the log's one lock order, so concurrent writers in other
processes cannot deadlock with it),
checks every append against the stream as the earlier appends of the batch left it, assigns
consecutive sequence numbers from the locked tail, and writes all entries, producer states and
new tails with one statement each. An append that fails its checks changes nothing and gets its
own error; the others go ahead.

Check order for one append (the protocol's precedence): stream exists and is live; closed (a
retry of the producer write that closed the stream is a duplicate); content type; body; producer
epoch/seq; ``Stream-Seq``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from durable_sessions.streams import lifecycle, reads
from durable_sessions.streams.content import Payload, body_payload, same_media_type
from durable_sessions.streams.db import ENTRY, PRODUCER, STREAM, STREAM_COLUMNS, Database
from durable_sessions.streams.errors import (
    BadRequest,
    Conflict,
    StaleProducerEpoch,
    StreamClosed,
    StreamError,
    StreamGone,
    StreamNotFound,
)
from durable_sessions.streams.offsets import Position
from durable_sessions.streams.records import Appended, Notice, StoredEntry, StreamRow

ProducerKey = tuple[str, int, int]  # (producer id, epoch, seq)


@dataclass(slots=True)
class AppendOp:
    """One append (or close) as the writer receives it.

    ``error`` carries a problem found while parsing a non-empty body (invalid JSON, no type);
    it is reported only after the checks that take precedence over it.
    """

    path: str
    payload: Payload | None
    content_type: str | None = None
    close: bool = False
    stream_seq: str | None = None
    producer: ProducerKey | None = None
    error: StreamError | None = None
    raw: bytes | None = None  # a body to parse once the stream's content type is known
    expect_tail: Position | None = None  # refused (409 tail_moved) unless the tail is there

    @property
    def size(self) -> int:
        """The bytes this append adds (what ``MAX_APPEND_BYTES`` limits)."""
        if self.payload is not None:
            return len(self.payload.data)
        return len(self.raw) if self.raw is not None else 0


class _Batch:
    """The mutable state of one group commit."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, int, int, bytes]] = []
        self.producers: dict[tuple[int, str], list[int]] = {}
        self.dirty_producers: set[tuple[int, str]] = set()
        self.touched: dict[int, StreamRow] = {}
        self.notices: dict[int, Notice] = {}

    def notice(self, row: StreamRow) -> Notice:
        notice = self.notices.get(row.id)
        if notice is None:
            notice = self.notices[row.id] = Notice(row.id, row.tail)
        return notice


def lock_streams(db: Database, cur: Any, paths: list[str]) -> dict[str, StreamRow]:
    """Lock and return the rows of ``paths`` that exist, in id order."""
    cur.execute(
        db.sql(
            f"SELECT {STREAM_COLUMNS} FROM {STREAM} WHERE path IN ({db.placeholders(len(paths))})"
            f" ORDER BY id{db.lock_clause()}"
        ),
        paths,
    )
    return {row.path: row for row in map(StreamRow.from_db, cur.fetchall())}


def _load_producers(
    db: Database, cur: Any, ops: list[AppendOp], rows: dict[str, StreamRow], batch: _Batch
) -> None:
    stream_ids = sorted({rows[op.path].id for op in ops if op.producer and op.path in rows})
    producer_ids = sorted({op.producer[0] for op in ops if op.producer and op.path in rows})
    if not stream_ids:
        return
    cur.execute(
        db.sql(
            f"SELECT stream_id, producer_id, epoch, last_seq FROM {PRODUCER}"
            f" WHERE stream_id IN ({db.placeholders(len(stream_ids))})"
            f" AND producer_id IN ({db.placeholders(len(producer_ids))})"
        ),
        [*stream_ids, *producer_ids],
    )
    for stream_id, producer_id, epoch, last_seq in cur.fetchall():
        batch.producers[(stream_id, producer_id)] = [epoch, last_seq]


def _check_producer(row: StreamRow, producer: ProducerKey, batch: _Batch) -> tuple[bool, int]:
    """Validate an idempotent producer write; returns (duplicate, highest accepted seq)."""
    producer_id, epoch, seq = producer
    state = batch.producers.get((row.id, producer_id))
    if state is None:
        if seq != 0:
            raise Conflict(
                f"producer {producer_id!r} is new on this stream: its first seq must be 0",
                code="producer_seq_gap",
                headers={"Producer-Expected-Seq": "0", "Producer-Received-Seq": str(seq)},
            )
        return False, seq
    current_epoch, last_seq = state
    if epoch < current_epoch:
        raise StaleProducerEpoch(
            f"producer epoch {epoch} is stale: the stream has seen epoch {current_epoch}",
            headers={"Producer-Epoch": str(current_epoch)},
        )
    if epoch > current_epoch:
        if seq != 0:
            raise BadRequest(
                f"a new producer epoch must start at seq 0, not {seq}", code="invalid_producer_seq"
            )
        return False, seq
    if seq <= last_seq:
        return True, last_seq
    if seq != last_seq + 1:
        raise Conflict(
            f"producer seq {seq} leaves a gap: expected {last_seq + 1}",
            code="producer_seq_gap",
            headers={"Producer-Expected-Seq": str(last_seq + 1), "Producer-Received-Seq": str(seq)},
        )
    return False, seq


def _closed_headers(row: StreamRow) -> dict[str, str]:
    return {"Stream-Closed": "true", "Stream-Next-Offset": str(row.tail)}


def _apply_one(op: AppendOp, row: StreamRow | None, batch: _Batch, now: float) -> Appended:
    if row is None:
        raise StreamNotFound(f"no stream at {op.path!r}")
    if row.deleted:
        raise StreamGone(f"stream {op.path!r} was deleted")
    producer = op.producer
    if row.closed:
        if producer is not None and row.closed_by() == producer:
            return Appended(row.id, row.tail, True, 204, True, producer[1], producer[2])
        if op.close and op.payload is None and op.error is None and op.raw is None:
            return Appended(row.id, row.tail, True, 204)
        raise StreamClosed(f"stream {op.path!r} is closed", headers=_closed_headers(row))
    has_body = op.payload is not None or op.error is not None or op.raw is not None
    if has_body and op.content_type and not same_media_type(op.content_type, row.content_type):
        raise Conflict(
            f"content type {op.content_type!r} does not match the stream's {row.content_type!r}",
            code="content_type_mismatch",
        )
    if op.error is not None:
        raise op.error
    if op.raw is not None:
        op.payload, op.raw = body_payload(op.raw, row.content_type, creating=False), None
    if op.payload is None and not op.close:
        raise BadRequest("empty append body", code="empty_body")
    if op.expect_tail is not None and row.tail != op.expect_tail:
        raise Conflict(f"the stream's tail is {row.tail}, not {op.expect_tail}", code="tail_moved")
    duplicate, accepted_seq = (False, 0)
    if producer is not None:
        duplicate, accepted_seq = _check_producer(row, producer, batch)
        if duplicate:
            return Appended(row.id, row.tail, row.closed, 204, True, producer[1], accepted_seq)
    if op.stream_seq is not None:
        if row.last_stream_seq is not None and op.stream_seq <= row.last_stream_seq:
            raise Conflict(
                f"Stream-Seq {op.stream_seq!r} is not greater than {row.last_stream_seq!r}",
                code="stream_seq_regression",
            )
        row.last_stream_seq = op.stream_seq
    notice = batch.notice(row)
    if op.payload is not None:
        end = row.tail_bytes + len(op.payload.data)
        batch.entries.append((row.id, row.tail_seq, end, op.payload.count, op.payload.data))
        notice.entries.append(StoredEntry(row.tail_seq, end, op.payload.count, op.payload.data))
        row.tail_seq += 1
        row.tail_bytes = end
    if op.close:
        row.closed = True
        if producer is not None:
            row.closed_by_producer, row.closed_by_epoch, row.closed_by_seq = producer
        notice.closed = True
    if producer is not None:
        key = (row.id, producer[0])
        batch.producers[key] = [producer[1], producer[2]]
        batch.dirty_producers.add(key)
    row.touched_at = now
    batch.touched[row.id] = row
    notice.next = row.tail
    status = 200 if producer is not None and op.payload is not None else 204
    return Appended(
        row.id,
        row.tail,
        row.closed,
        status,
        False,
        producer[1] if producer else None,
        producer[2] if producer else None,
    )


def apply_appends(
    db: Database, cur: Any, ops: list[AppendOp], now: float
) -> tuple[list[Appended | StreamError], list[Notice]]:
    """Apply ``ops`` in order inside the caller's open transaction."""
    paths = sorted({op.path for op in ops})
    rows = lock_streams(db, cur, paths)
    notices: list[Notice] = []
    expired: dict[str, StreamError] = {}
    for path, row in list(rows.items()):
        if not row.deleted and row.expired(now):
            if row.source_id is None:
                removed, soft = lifecycle.remove(db, cur, row)
                notices.extend(removed)
            else:
                # Removing a fork may cascade to its sources, whose rows come before it in the
                # lock order: the expiry sweep removes it instead, locking the chain first.
                soft = reads.has_forks(db, cur, row.id)
            expired[path] = lifecycle.gone_error(path, soft)
            del rows[path]
    batch = _Batch()
    _load_producers(db, cur, ops, rows, batch)
    results: list[Appended | StreamError] = []
    for op in ops:
        if op.path in expired:
            results.append(expired[op.path])
            continue
        try:
            results.append(_apply_one(op, rows.get(op.path), batch, now))
        except StreamError as exc:
            results.append(exc)
    _write(db, cur, batch, now)
    notices.extend(batch.notices.values())
    return results, notices


ENTRY_COLUMNS = {
    "stream_id": "bigint",
    "seq": "bigint",
    "end_bytes": "bigint",
    "count": "integer",
    "data": "bytea",
}
PRODUCER_COLUMNS = {
    "stream_id": "bigint",
    "producer_id": "text",
    "epoch": "bigint",
    "last_seq": "bigint",
    "updated_at": "double precision",
}
TAIL_COLUMNS = {
    "tail_seq": "bigint",
    "tail_bytes": "bigint",
    "last_stream_seq": "text",
    "closed": "boolean",
    "closed_by_producer": "text",
    "closed_by_epoch": "bigint",
    "closed_by_seq": "bigint",
    "touched_at": "double precision",
}


def _write(db: Database, cur: Any, batch: _Batch, now: float) -> None:
    if batch.entries:
        db.insert_many(cur, ENTRY, ENTRY_COLUMNS, batch.entries)
    if batch.dirty_producers:
        db.insert_many(
            cur,
            PRODUCER,
            PRODUCER_COLUMNS,
            [
                (stream_id, producer_id, *batch.producers[(stream_id, producer_id)], now)
                for stream_id, producer_id in sorted(batch.dirty_producers)
            ],
            suffix="ON CONFLICT (stream_id, producer_id) DO UPDATE SET epoch = excluded.epoch,"
            " last_seq = excluded.last_seq, updated_at = excluded.updated_at",
        )
    if batch.touched:
        db.update_many(
            cur,
            STREAM,
            "id",
            TAIL_COLUMNS,
            [
                (
                    row.tail_seq,
                    row.tail_bytes,
                    row.last_stream_seq,
                    row.closed,
                    row.closed_by_producer,
                    row.closed_by_epoch,
                    row.closed_by_seq,
                    row.touched_at,
                    row.id,
                )
                for row in sorted(batch.touched.values(), key=lambda r: r.id)
            ],
        )
