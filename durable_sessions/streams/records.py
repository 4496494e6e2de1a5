"""What the log's SQL reads and returns: stream rows, append results, change notices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from durable_sessions import jsontext
from durable_sessions.streams.content import is_json
from durable_sessions.streams.offsets import Position


@dataclass(slots=True)
class StreamRow:
    """A stream row as selected with ``db.STREAM_COLUMNS`` (mutable inside a transaction)."""

    id: int
    path: str
    content_type: str
    tail_seq: int
    tail_bytes: int
    last_stream_seq: str | None
    closed: bool
    closed_by_producer: str | None
    closed_by_epoch: int | None
    closed_by_seq: int | None
    ttl_seconds: int | None
    expires_at: float | None
    touched_at: float
    deleted: bool
    source_id: int | None
    fork_seq: int
    fork_offset: str
    fork_sub_offset: int
    created_at: float
    first_seq: int = 0
    first_bytes: int = 0

    @classmethod
    def from_db(cls, row: tuple) -> StreamRow:
        """A row of ``SELECT db.STREAM_COLUMNS`` (booleans normalized from SQLite's 0/1)."""
        values = list(row)
        values[6] = bool(values[6])  # closed (SQLite returns 0/1)
        values[13] = bool(values[13])  # deleted
        return cls(*values)

    @property
    def tail(self) -> Position:
        """The position after the last entry."""
        return Position(self.tail_seq, self.tail_bytes)

    @property
    def first(self) -> Position:
        """The first retained position (the start, unless entries before it were dropped)."""
        return Position(self.first_seq, self.first_bytes)

    def expired(self, now: float) -> bool:
        """Whether the TTL or the absolute expiry has passed."""
        if self.ttl_seconds is not None and self.touched_at + self.ttl_seconds <= now:
            return True
        return self.expires_at is not None and self.expires_at <= now

    def closed_by(self) -> tuple[str, int, int] | None:
        """The producer ``(id, epoch, seq)`` whose write closed the stream, if one did."""
        if (
            self.closed_by_producer is None
            or self.closed_by_epoch is None
            or self.closed_by_seq is None
        ):
            return None
        return (self.closed_by_producer, int(self.closed_by_epoch), int(self.closed_by_seq))


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's metadata as the API reports it (HEAD)."""

    id: int
    path: str
    content_type: str
    tail: Position
    closed: bool
    ttl_seconds: int | None
    expires_at: float | None

    @classmethod
    def of(cls, row: StreamRow) -> StreamInfo:
        """The public metadata of a stream row."""
        return cls(
            row.id,
            row.path,
            row.content_type,
            row.tail,
            row.closed,
            row.ttl_seconds,
            row.expires_at,
        )


@dataclass(frozen=True, slots=True)
class Created:
    """Result of create/fork: the stream and whether this call created it (201) or not (200)."""

    info: StreamInfo
    created: bool


@dataclass(frozen=True, slots=True)
class Appended:
    """Result of an append or close.

    ``status`` is what HTTP answers: 200 when an idempotent producer's data was written, 204
    otherwise (plain appends, closes, and duplicates that were already written).
    """

    stream_id: int
    next: Position
    closed: bool
    status: int
    duplicate: bool = False
    producer_epoch: int | None = None
    producer_seq: int | None = None


class StoredEntry(NamedTuple):
    """One entry as read back: its sequence number, end position, messages and bytes.

    A named tuple: reads build thousands of these per request, straight from database rows.
    """

    seq: int
    end_bytes: int
    count: int  # type: ignore[assignment]  # a field over tuple.count: its messages
    data: bytes

    @property
    def next(self) -> Position:
        """The position after this entry."""
        return Position(self.seq + 1, self.end_bytes)


@dataclass(slots=True)
class ReadResult:
    """A batch of a stream from ``start`` to ``next``: ``count`` messages in ``data``.

    ``data`` is the stored bytes of the entries, concatenated (JSON mode: the message texts
    joined by commas, without the brackets). ``up_to_date`` means the batch reached the tail;
    ``closed`` means it reached the tail of a closed stream (end of stream).
    """

    info: StreamInfo
    start: Position
    data: bytes
    count: int
    next: Position
    up_to_date: bool
    closed: bool

    @property
    def json_mode(self) -> bool:
        """Whether the stream is a JSON stream (``data`` holds message texts)."""
        return is_json(self.info.content_type)

    @property
    def body(self) -> bytes:
        """The batch as the protocol returns it (one JSON array in JSON mode)."""
        return b"[" + self.data + b"]" if self.json_mode else self.data

    def messages(self) -> list[Any]:
        """JSON mode: the messages as Python values."""
        return jsontext.loads(self.body) if self.count else []


@dataclass(frozen=True, slots=True)
class Change:
    """What a commit did to a stream, for what follows commits (subscriptions).

    ``kind`` is ``append`` (data or a close), ``create`` or ``delete``; ``start`` is, for a
    create, where the stream's new data begins (the start of a new stream, a fork's tail).
    """

    path: str
    stream_id: int | None
    kind: str
    start: Position | None = None


@dataclass(slots=True)
class Notice:
    """What a committed transaction changed on one stream, for live readers.

    ``entries`` are the new entries in order (empty for a close without data); ``next`` is the
    position after them. ``deleted`` means the stream is gone.
    """

    stream_id: int
    next: Position
    closed: bool = False
    deleted: bool = False
    entries: list[StoredEntry] = field(default_factory=list)

    @property
    def first_seq(self) -> int:
        """The sequence number of the first new entry (or of the tail, without entries)."""
        return self.entries[0].seq if self.entries else self.next.seq
