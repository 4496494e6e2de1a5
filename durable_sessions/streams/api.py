"""The log's Python API: what the upper layers, the agents and your code call.

Every function exists twice, the Django way: ``append()`` for synchronous code and ``aappend()``
for async code. Writes go through the process's group-commit writer and return once durable;
reads run on the store's reader threads. ``subscribe()`` (in ``live.py``) follows a stream live
without holding a thread.

    from durable_sessions import streams

    await streams.acreate("chat/1", content_type="application/json")
    await streams.aappend_json("chat/1", [{"text": "hi"}])
    result = await streams.aread("chat/1", "-1")

The same rules as over HTTP apply (paths, sizes, content types, producers), with the same errors
(``durable_sessions.streams.errors``), each carrying its HTTP status.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterable, Mapping
from typing import Any

from durable_sessions.conf import ds_settings
from durable_sessions.streams import reads
from durable_sessions.streams.commit import AppendOp, ProducerKey
from durable_sessions.streams.content import Payload, json_payload
from durable_sessions.streams.errors import BadRequest
from durable_sessions.streams.lifecycle import CreateOp, DeleteOp
from durable_sessions.streams.offsets import NOW, Position, parse_read_offset
from durable_sessions.streams.records import Appended, Created, ReadResult, StreamInfo
from durable_sessions.streams.retention import Retention, TruncateOp, retention_info
from durable_sessions.streams.store import check_path, get_store

Data = bytes | str


def position(offset: str | Position | None) -> Position | None:
    """An offset given as text (``-1``, ``now``, ``<seq>_<bytes>``) or a ``Position``, decoded;
    None for ``now`` (the tail). ``BadRequest`` when it is malformed."""
    if isinstance(offset, Position):
        return offset
    parsed = parse_read_offset(offset)
    return None if parsed == NOW else parsed  # type: ignore[return-value]


def _bytes(data: Data) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def _create_op(
    path: str,
    content_type: str | None,
    data: Data,
    ttl: int | None,
    expires_at: float | None,
    closed: bool,
    fork_from: str | None = None,
    fork_offset: str | Position | None = None,
    fork_sub_offset: int = 0,
    producers: Mapping[str, tuple[int, int]] | None = None,
) -> CreateOp:
    offset = None if fork_offset is None else position(fork_offset)
    states = tuple((pid, *state) for pid, state in (producers or {}).items())
    return CreateOp(
        path,
        content_type,
        ttl,
        expires_at,
        closed,
        _bytes(data),
        fork_from,
        offset,
        fork_sub_offset,
        states,
    )


def _append_op(
    path: str,
    data: Data | Payload,
    content_type: str | None,
    close: bool,
    seq: str | None,
    producer: ProducerKey | None,
    expect_tail: str | Position | None = None,
) -> AppendOp:
    if isinstance(data, Payload):
        tail = None if expect_tail is None else position(expect_tail)
        return AppendOp(path, data, content_type, close, seq, producer, expect_tail=tail)
    raw = _bytes(data)
    return AppendOp(path, None, content_type, close, seq, producer, raw=raw or None)


def _messages(messages: Iterable[Any]) -> Payload:
    payload = json_payload(messages)
    if payload is None:
        raise ValueError("append_json needs at least one message")
    return payload


# -- create and fork ---------------------------------------------------------------------------


def create(
    path: str,
    *,
    content_type: str | None = None,
    data: Data = b"",
    ttl: int | None = None,
    expires_at: float | None = None,
    closed: bool = False,
) -> Created:
    """Create a stream (or confirm an identical one). See ``acreate``."""
    op = _create_op(path, content_type, data, ttl, expires_at, closed)
    return get_store().write_sync(op)


async def acreate(
    path: str,
    *,
    content_type: str | None = None,
    data: Data = b"",
    ttl: int | None = None,
    expires_at: float | None = None,
    closed: bool = False,
) -> Created:
    """Create the stream at ``path``; ``Created.created`` is False when it already existed
    with the same settings (``Conflict`` when they differ).

    ``content_type`` defaults to ``application/octet-stream``; ``data`` is the initial body (a
    JSON stream's ``[...]`` is flattened as over HTTP); ``ttl`` is a sliding time to live in
    seconds, ``expires_at`` an absolute expiry in epoch seconds (not both); ``closed`` creates
    it closed.
    """
    op = _create_op(path, content_type, data, ttl, expires_at, closed)
    return await get_store().write(op)


def fork(
    path: str,
    source: str,
    *,
    offset: str | Position | None = None,
    sub_offset: int = 0,
    content_type: str | None = None,
    data: Data = b"",
    ttl: int | None = None,
    expires_at: float | None = None,
    closed: bool = False,
    producers: Mapping[str, tuple[int, int]] | None = None,
) -> Created:
    """Fork ``source`` into a new stream at ``path``. See ``afork``."""
    op = _create_op(
        path, content_type, data, ttl, expires_at, closed, source, offset, sub_offset, producers
    )
    return get_store().write_sync(op)


async def afork(
    path: str,
    source: str,
    *,
    offset: str | Position | None = None,
    sub_offset: int = 0,
    content_type: str | None = None,
    data: Data = b"",
    ttl: int | None = None,
    expires_at: float | None = None,
    closed: bool = False,
    producers: Mapping[str, tuple[int, int]] | None = None,
) -> Created:
    """Create ``path`` as a fork of ``source``: it reads ``source`` up to ``offset`` (default:
    its tail; ``-1``: its first retained position), then its own entries.

    ``sub_offset`` keeps only the first messages (JSON) or bytes of the entry at ``offset``.
    ``producers`` (``{producer id: (epoch, last seq)}``) are idempotent producer states the
    fork starts with, so a producer of the source continues in the fork where its data there
    stops. The other options are ``acreate``'s; the content type must be the source's, and the
    TTL defaults to the source's.
    """
    op = _create_op(
        path, content_type, data, ttl, expires_at, closed, source, offset, sub_offset, producers
    )
    return await get_store().write(op)


# -- append and close --------------------------------------------------------------------------


def append(
    path: str,
    data: Data,
    *,
    content_type: str | None = None,
    close: bool = False,
    seq: str | None = None,
    producer: ProducerKey | None = None,
) -> Appended:
    """Append ``data`` to ``path``. See ``aappend``."""
    return get_store().write_sync(_append_op(path, data, content_type, close, seq, producer))


async def aappend(
    path: str,
    data: Data,
    *,
    content_type: str | None = None,
    close: bool = False,
    seq: str | None = None,
    producer: ProducerKey | None = None,
) -> Appended:
    """Append ``data`` (the body of one POST) and return once it is durable.

    ``content_type`` is checked against the stream's when given (a JSON stream parses ``data``
    as JSON either way); ``close`` closes the stream with this append; ``seq`` is the
    ``Stream-Seq`` (strictly increasing, byte-wise); ``producer`` is ``(id, epoch, seq)`` of an
    idempotent producer (a duplicate is acknowledged with ``Appended.duplicate``).
    """
    return await get_store().write(_append_op(path, data, content_type, close, seq, producer))


def append_json(
    path: str,
    messages: Iterable[Any],
    *,
    close: bool = False,
    seq: str | None = None,
    producer: ProducerKey | None = None,
    expect_tail: str | Position | None = None,
) -> Appended:
    """Append JSON messages to a JSON stream. See ``aappend_json``."""
    op = _append_op(
        path, _messages(messages), "application/json", close, seq, producer, expect_tail
    )
    return get_store().write_sync(op)


async def aappend_json(
    path: str,
    messages: Iterable[Any],
    *,
    close: bool = False,
    seq: str | None = None,
    producer: ProducerKey | None = None,
    expect_tail: str | Position | None = None,
) -> Appended:
    """Append ``messages`` (Python values, one message each, in one entry) to a JSON stream.

    ``ValueError`` when there are none; ``BadRequest`` for a value JSON cannot hold.
    ``expect_tail`` makes the append conditional: it is refused (``Conflict``, code
    ``tail_moved``) unless the stream's tail is that offset, so the entry lands exactly there.
    The other options are ``aappend``'s.
    """
    op = _append_op(
        path, _messages(messages), "application/json", close, seq, producer, expect_tail
    )
    return await get_store().write(op)


def submit_json(
    path: str,
    messages: Iterable[Any],
    *,
    producer: ProducerKey | None = None,
    expect_tail: str | Position | None = None,
) -> concurrent.futures.Future[Appended]:
    """Queue an append of JSON ``messages`` and return at once, with a future of its result.

    For callers that must fix the order of their appends without waiting for each commit:
    appends queued to one stream from one process commit in the order they were queued (a
    stream always has the same writer), and consecutive ones share a commit. The checks of
    ``append_json`` run before anything is queued, and raise here.
    """
    op = _append_op(
        path, _messages(messages), "application/json", False, None, producer, expect_tail
    )
    return get_store().submit_sync(op)


def close(path: str, *, producer: ProducerKey | None = None) -> Appended:
    """Close ``path``. See ``aclose``."""
    return get_store().write_sync(AppendOp(path, None, close=True, producer=producer))


async def aclose(path: str, *, producer: ProducerKey | None = None) -> Appended:
    """Close ``path`` (idempotent): no append is accepted afterwards."""
    return await get_store().write(AppendOp(path, None, close=True, producer=producer))


# -- delete, read, info ------------------------------------------------------------------------


def delete(path: str) -> None:
    """Delete ``path``. See ``adelete``."""
    get_store().write_sync(DeleteOp(path))


async def adelete(path: str) -> None:
    """Delete ``path`` and its data (kept, as 410, while forks read from it)."""
    await get_store().write(DeleteOp(path))


def read(
    path: str, offset: str | Position | None = "-1", *, max_bytes: int | None = None
) -> ReadResult:
    """Read ``path`` from ``offset``. See ``aread``."""
    limit = max_bytes or ds_settings.MAX_READ_BYTES
    return get_store().read_sync(check_path(path), position(offset), limit)


async def aread(
    path: str, offset: str | Position | None = "-1", *, max_bytes: int | None = None
) -> ReadResult:
    """One catch-up read from ``offset`` (``-1``: start, ``now``: tail), about ``max_bytes``
    (default ``MAX_READ_BYTES``; at least one entry when there is one)."""
    limit = max_bytes or ds_settings.MAX_READ_BYTES
    return await get_store().read(check_path(path), position(offset), limit)


def info(path: str) -> StreamInfo:
    """The metadata of ``path``. See ``ainfo``."""
    return get_store().run_read_sync(reads.info, check_path(path), time.time())


async def ainfo(path: str) -> StreamInfo:
    """The metadata of ``path``: content type, tail, closed, TTL (does not renew the TTL)."""
    return await get_store().run_read(reads.info, check_path(path), time.time())


def producer_state(path: str, producer_id: str) -> tuple[int, int] | None:
    """``(epoch, last seq)`` of the idempotent producer ``producer_id`` on ``path`` as the log
    has it, or None when it never wrote there: for a writer that continues another's producer
    session (the session API appending to a message the agent runtime wrote)."""
    from durable_sessions.streams.models import Producer

    row = (
        Producer.objects.using(ds_settings.DATABASE_ALIAS)
        .filter(stream__path=check_path(path), producer_id=producer_id)
        .values_list("epoch", "last_seq")
        .first()
    )
    return (int(row[0]), int(row[1])) if row is not None else None


# -- retention ---------------------------------------------------------------------------------


def _before(before: str | Position) -> Position:
    at = position(before)
    if at is None:
        raise BadRequest("truncate needs an offset, not now", code="invalid_offset")
    return at


def truncate(path: str, *, before: str | Position) -> Position:
    """Drop the entries of ``path`` before ``before``. See ``atruncate``."""
    return get_store().write_sync(TruncateOp(path, _before(before)))


async def atruncate(path: str, *, before: str | Position) -> Position:
    """Drop the entries of ``path`` before the offset ``before``, and return the first retained
    position (``retention.py``).

    Offsets do not move: a read from ``-1`` then starts at ``before``, a read from an earlier
    offset is ``StreamGone`` (410). ``BadRequest`` for an offset that is not a position of the
    stream (malformed, beyond its tail); ``Conflict`` when a fork still reads an entry before
    it. An offset at or before the first retained position changes nothing.
    """
    return await get_store().write(TruncateOp(path, _before(before)))


def retention(path: str) -> Retention:
    """What ``path`` retains. See ``aretention``."""
    return get_store().run_read_sync(retention_info, check_path(path), time.time())


async def aretention(path: str) -> Retention:
    """What ``path`` retains: its first retained position, its tail, and the lowest entry a
    fork still reads from it (``Retention.pinned``; truncating past it is refused)."""
    return await get_store().run_read(retention_info, check_path(path), time.time())
