"""The log's Python API: what HTTP, websockets, the upper layers and the agents call.

Every function exists twice, the Django way: ``append()`` for synchronous code and ``aappend()``
for async code. Writes go through the process's group-commit writer (``writer.py``); reads run on
a small pool of reader threads with their own connections. Nothing here holds a thread while it
waits for new data: ``subscribe()`` waits on the hub.

    from durable_sessions import streams

    await streams.acreate("chat/1", content_type="application/json")
    await streams.aappend_json("chat/1", [{"text": "hi"}])
    result = await streams.aread("chat/1", "-1")
    async for batch in streams.subscribe("chat/1", result.next):
        ...
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import connections

from durable_sessions.conf import ds_settings
from durable_sessions.streams import reads
from durable_sessions.streams.commit import AppendOp, ProducerKey
from durable_sessions.streams.content import Payload, json_payload
from durable_sessions.streams.db import ConnectionLost, Database, ThreadConnections
from durable_sessions.streams.errors import PayloadTooLarge, Unavailable
from durable_sessions.streams.hub import LocalPublisher
from durable_sessions.streams.lifecycle import CreateOp, DeleteOp, RenewOp
from durable_sessions.streams.offsets import NOW, Position, parse_read_offset
from durable_sessions.streams.protocol import parse_stream_path
from durable_sessions.streams.records import Appended, Created, ReadResult, StreamInfo
from durable_sessions.streams.writer import Writer

T = TypeVar("T")


class Store:
    """One process's access to the log: its writer thread and its reader threads."""

    def __init__(self, alias: str | None = None) -> None:
        self.database = Database(alias)
        # SQLite takes one writer at a time anyway; on Postgres, writers for disjoint sets of
        # streams overlap one batch's commit with the next batch's work.
        count = ds_settings.WRITER_THREADS if self.database.is_postgres else 1
        publisher = LocalPublisher()
        self.writers = [
            Writer(
                self.database,
                publisher,
                max_batch=ds_settings.WRITER_MAX_BATCH,
                sweep_interval=ds_settings.EXPIRY_SWEEP_INTERVAL if i == 0 else None,
                name=f"durable-sessions-writer-{i}",
            )
            for i in range(max(1, count))
        ]
        self._readers = ThreadConnections(self.database)
        self._executor = ThreadPoolExecutor(
            max_workers=ds_settings.READER_THREADS, thread_name_prefix="durable-sessions-reader"
        )
        self._renewing: set[int] = set()  # streams with a TTL renewal queued on their writer
        self._renewing_lock = threading.Lock()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writers (after what they have queued, for up to ``timeout`` seconds each:
        see ``Writer.stop``) and the readers, and close their connections."""
        for writer in self.writers:
            writer.stop(timeout)
        self._executor.shutdown(wait=True)
        self._readers.close_all()

    # -- plumbing ------------------------------------------------------------------------------

    def _run_read(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            with self._readers.cursor() as cur:
                return fn(self.database, cur, *args)
        except ConnectionLost:  # (a database restart): once more, on a new connection
            with self._readers.cursor() as cur:
                return fn(self.database, cur, *args)

    async def run_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(database, cursor, *args)`` on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_read, fn, *args)

    def run_read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(database, cursor, *args)`` on a reader thread and wait for it."""
        return self._executor.submit(self._run_read, fn, *args).result()

    def _read(
        self, database: Database, cur: Any, path: str, start: Position | None, max_bytes: int
    ) -> ReadResult:
        now = time.time()
        result, renew = reads.read(database, cur, path, start, max_bytes, now)
        if renew:
            self.renew(result.info, now)
        return result

    async def read(self, path: str, start: Position | None, max_bytes: int) -> ReadResult:
        """One catch-up read on a reader thread; a sliding TTL is renewed through the writer."""
        return await self.run_read(self._read, path, start, max_bytes)

    def read_sync(self, path: str, start: Position | None, max_bytes: int) -> ReadResult:
        """``read`` from synchronous code."""
        return self.run_read_sync(self._read, path, start, max_bytes)

    def renew(self, info: StreamInfo, at: float) -> None:
        """Have the writer renew the sliding TTL of ``info``'s stream for a read made ``at``.

        Fire and forget, and coalesced: while one renewal of a stream is queued, reads of it
        queue no other (and once it has committed, ``reads.renewal_due`` spaces them a second
        apart). Readers never write, so a read never waits for a lock.
        """
        with self._renewing_lock:
            if info.id in self._renewing:
                return
            self._renewing.add(info.id)
        try:
            waiter = self.writer_for(info.path).submit(RenewOp(info.path, info.id, at))
        except Unavailable:  # shutting down: the stream's next write renews it anyway
            self._renewed(info.id)
            return
        waiter.add_done_callback(lambda _waiter: self._renewed(info.id))

    def _renewed(self, stream_id: int) -> None:
        with self._renewing_lock:
            self._renewing.discard(stream_id)

    def writer_for(self, path: str) -> Writer:
        """The writer of ``path``: every change to one stream goes through the same writer."""
        writers = self.writers
        return writers[zlib.crc32(path.encode()) % len(writers)] if len(writers) > 1 else writers[0]

    async def write(self, op: Any) -> Any:
        """Queue ``op`` on its stream's writer and wait for the commit."""
        check_op(op)
        return await self.writer_for(op.path).submit(op, asyncio.get_running_loop())

    def write_sync(self, op: Any) -> Any:
        """Queue ``op`` and block until its commit (from synchronous code)."""
        check_op(op)
        if not self.database.is_postgres and connections[self.database.alias].in_atomic_block:
            # Django holds SQLite's write lock for the whole atomic block: the writer would wait
            # for it until the block ends, and the block waits for the writer.
            raise RuntimeError(
                "durable_sessions cannot write to a SQLite stream inside transaction.atomic(): "
                "the log commits on its own connection, which would wait for your transaction"
            )
        return self.writer_for(op.path).submit(op).result()


_store: Store | None = None
_store_lock = threading.Lock()


def get_store() -> Store:
    """The process's ``Store``, created on first use."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = Store()
                atexit.register(reset_store)  # commit what is queued before the process exits
    return _store


def reset_store() -> None:
    """Close the process's ``Store``; the next call creates a new one (tests, shutdown)."""
    global _store
    with _store_lock:
        store, _store = _store, None
    if store is not None:
        store.close()


# -- operations (built once, run sync or async) ---------------------------------------------


def check_path(path: str) -> str:
    """``path`` if it is a valid stream path (the same rules as over HTTP), else BadRequest."""
    return parse_stream_path(path, ds_settings.MAX_PATH_LENGTH)


def check_op(op: Any) -> None:
    """Validate what every front end must: the paths and the size of the data."""
    check_path(op.path)
    if getattr(op, "fork_from", None) is not None:
        check_path(op.fork_from)
    size = op.size if isinstance(op, AppendOp) else len(getattr(op, "body", b""))
    if size > ds_settings.MAX_APPEND_BYTES:
        raise PayloadTooLarge(f"the data exceeds {ds_settings.MAX_APPEND_BYTES} bytes")


def _position(offset: str | Position | None) -> Position | None:
    if isinstance(offset, Position):
        return offset
    parsed = parse_read_offset(offset)
    return None if parsed == NOW else parsed  # type: ignore[return-value]


def _create_op(
    path: str,
    *,
    content_type: str | None = None,
    data: bytes | str = b"",
    ttl: int | None = None,
    expires_at: float | None = None,
    closed: bool = False,
    fork_from: str | None = None,
    fork_offset: str | Position | None = None,
    fork_sub_offset: int = 0,
) -> CreateOp:
    offset = None
    if fork_offset is not None:
        offset = fork_offset if isinstance(fork_offset, Position) else _position(fork_offset)
    return CreateOp(
        path,
        content_type,
        ttl,
        expires_at,
        closed,
        data.encode() if isinstance(data, str) else bytes(data),
        fork_from,
        offset,
        fork_sub_offset,
    )


def _append_op(
    path: str,
    data: bytes | str | Payload | None,
    *,
    content_type: str | None = None,
    close: bool = False,
    seq: str | None = None,
    producer: ProducerKey | None = None,
) -> AppendOp:
    if isinstance(data, Payload) or data is None:
        return AppendOp(path, data, content_type, close, seq, producer)
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return AppendOp(path, None, content_type, close, seq, producer, raw=raw or None)


def create(path: str, **options: Any) -> Created:
    """Create a stream (or confirm an identical one). See ``acreate``."""
    return get_store().write_sync(_create_op(path, **options))


async def acreate(path: str, **options: Any) -> Created:
    """Create the stream at ``path``; ``Created.created`` is False when it already existed.

    Options: ``content_type`` (default ``application/octet-stream``), ``data`` (initial body),
    ``ttl`` (seconds, sliding), ``expires_at`` (epoch seconds), ``closed``.
    """
    return await get_store().write(_create_op(path, **options))


def fork(path: str, source: str, **options: Any) -> Created:
    """Fork ``source`` into a new stream at ``path``. See ``afork``."""
    return get_store().write_sync(_fork_op(path, source, **options))


async def afork(path: str, source: str, **options: Any) -> Created:
    """Create ``path`` as a fork of ``source`` at ``offset`` (default: the source's tail).

    Options: ``offset``, ``sub_offset``, and the options of ``acreate``.
    """
    return await get_store().write(_fork_op(path, source, **options))


def _fork_op(
    path: str,
    source: str,
    *,
    offset: str | Position | None = None,
    sub_offset: int = 0,
    **options: Any,
) -> CreateOp:
    return _create_op(
        path, fork_from=source, fork_offset=offset, fork_sub_offset=sub_offset, **options
    )


def append(path: str, data: bytes | str, **options: Any) -> Appended:
    """Append ``data`` to ``path``. See ``aappend``."""
    return get_store().write_sync(_append_op(path, data, **options))


async def aappend(path: str, data: bytes | str, **options: Any) -> Appended:
    """Append ``data`` (the body of one POST) and wait until it is durable.

    Options: ``content_type`` (checked against the stream's when given), ``close``, ``seq``
    (``Stream-Seq``), ``producer`` (``(id, epoch, seq)`` of an idempotent producer).
    """
    return await get_store().write(_append_op(path, data, **options))


def append_json(path: str, messages: list[Any], **options: Any) -> Appended:
    """Append JSON messages to a JSON stream. See ``aappend_json``."""
    return get_store().write_sync(_append_op(path, _messages(messages), **_json(options)))


async def aappend_json(path: str, messages: list[Any], **options: Any) -> Appended:
    """Append ``messages`` (Python values, one message each) to a JSON stream."""
    return await get_store().write(_append_op(path, _messages(messages), **_json(options)))


def _messages(messages: list[Any]) -> Payload:
    payload = json_payload(messages)
    if payload is None:
        raise ValueError("append_json needs at least one message")
    return payload


def _json(options: dict[str, Any]) -> dict[str, Any]:
    return {"content_type": "application/json", **options}


def close(path: str, *, producer: ProducerKey | None = None) -> Appended:
    """Close ``path``. See ``aclose``."""
    return get_store().write_sync(AppendOp(path, None, close=True, producer=producer))


async def aclose(path: str, *, producer: ProducerKey | None = None) -> Appended:
    """Close ``path`` (idempotent): no append is accepted afterwards."""
    return await get_store().write(AppendOp(path, None, close=True, producer=producer))


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
    return get_store().read_sync(
        check_path(path), _position(offset), max_bytes or ds_settings.MAX_READ_BYTES
    )


async def aread(
    path: str, offset: str | Position | None = "-1", *, max_bytes: int | None = None
) -> ReadResult:
    """One catch-up read from ``offset`` (``-1``: start, ``now``: tail), about ``max_bytes``."""
    return await get_store().read(
        check_path(path), _position(offset), max_bytes or ds_settings.MAX_READ_BYTES
    )


def info(path: str) -> StreamInfo:
    """The metadata of ``path``. See ``ainfo``."""
    return get_store().run_read_sync(reads.info, check_path(path), time.time())


async def ainfo(path: str) -> StreamInfo:
    """The metadata of ``path``: content type, tail, closed, TTL (does not renew the TTL)."""
    return await get_store().run_read(reads.info, check_path(path), time.time())


async def subscribe(path: str, offset: str | Position | None = "-1") -> AsyncIterator[ReadResult]:
    """Follow ``path`` from ``offset``: catch up, then yield each new batch as it commits.

    Ends after the batch that reaches the end of a closed stream; raises ``StreamNotFound`` or
    ``StreamGone`` when the stream is deleted.
    """
    from durable_sessions.streams.live import Follower

    async with Follower(path, _position(offset)) as follower:
        while True:
            batch = await follower.next(None)
            if batch is None:
                continue
            if batch.count or batch.closed:
                yield batch
            if batch.closed:
                return
