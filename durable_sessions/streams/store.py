"""One process's access to the log: its group-commit writers and its reader threads.

``get_store()`` gives the process's ``Store``, made on first use: writes go to the writer of
their stream (``writer.py``), catch-up reads run on a small pool of reader threads with
connections of their own. The Python API (``api.py``) and the HTTP and websocket front ends
call it; ``reset_store()`` stops it (at shutdown, and between tests).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from django.db import connections

from durable_sessions.conf import ds_settings
from durable_sessions.streams import reads
from durable_sessions.streams.commit import AppendOp
from durable_sessions.streams.db import ConnectionLost, Database, ThreadConnections
from durable_sessions.streams.errors import PayloadTooLarge, Unavailable
from durable_sessions.streams.hub import LocalPublisher
from durable_sessions.streams.lifecycle import CreateOp, RenewOp
from durable_sessions.streams.offsets import Position
from durable_sessions.streams.protocol import check_options, parse_stream_path
from durable_sessions.streams.records import Change, ReadResult, StreamInfo
from durable_sessions.streams.writer import Writer

T = TypeVar("T")


class Extension(Protocol):
    """Something that runs beside a process's store and hears of its commits (subscriptions:
    ``subscriptions/worker.py``); made by a factory given to ``register_extension``."""

    def committed(self, changes: list[Change]) -> None:
        """From a writer thread, after a commit: must return at once (hand the work over)."""

    def stop(self) -> None:
        """The store is closing: stop, before its writers do."""


_extensions: list[Callable[[Store], Extension]] = []


def register_extension(factory: Callable[[Store], Extension]) -> None:
    """Have every ``Store`` made from now on run ``factory(store)`` beside it (once per
    factory; the app does it for subscriptions when Django starts)."""
    if factory not in _extensions:
        _extensions.append(factory)


class Store:
    """One process's access to the log: its writer thread and its reader threads."""

    def __init__(self, alias: str | None = None) -> None:
        self.database = Database(alias)
        self.extensions: list[Extension] = []
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
                on_commit=self._committed,
            )
            for i in range(max(1, count))
        ]
        self._readers = ThreadConnections(self.database)
        self._executor = ThreadPoolExecutor(
            max_workers=ds_settings.READER_THREADS, thread_name_prefix="durable-sessions-reader"
        )
        self._renewing: set[int] = set()  # streams with a TTL renewal queued on their writer
        self._renewing_lock = threading.Lock()
        self.extensions = [factory(self) for factory in _extensions]

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writers (after what they have queued, for up to ``timeout`` seconds each:
        see ``Writer.stop``) and the readers, and close their connections."""
        for extension in self.extensions:
            extension.stop()
        for writer in self.writers:
            writer.stop(timeout)
        self._executor.shutdown(wait=True)
        self._readers.close_all()

    def _committed(self, changes: list[Change]) -> None:
        for extension in self.extensions:
            extension.committed(changes)

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
        return self.submit_sync(op).result()

    def submit_sync(self, op: Any) -> concurrent.futures.Future[Any]:
        """Queue ``op`` and return a future of its commit's result (from synchronous code)."""
        check_op(op)
        if not self.database.is_postgres and connections[self.database.alias].in_atomic_block:
            # Django holds SQLite's write lock for the whole atomic block: the writer would wait
            # for it until the block ends, and the block waits for the writer.
            raise RuntimeError(
                "durable_sessions cannot write to a SQLite stream inside transaction.atomic(): "
                "the log commits on its own connection, which would wait for your transaction"
            )
        return self.writer_for(op.path).submit(op)


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
    """Validate what every front end must: the paths, the options (as their headers would be),
    and the size of the data."""
    check_path(op.path)
    if getattr(op, "fork_from", None) is not None:
        check_path(op.fork_from)
    if isinstance(op, AppendOp):
        check_options(content_type=op.content_type, stream_seq=op.stream_seq, producer=op.producer)
    elif isinstance(op, CreateOp):
        check_options(content_type=op.content_type, ttl=op.ttl_seconds, expires_at=op.expires_at)
        for pid, epoch, seq in op.producers:
            check_options(producer=(pid, epoch, seq))
    size = op.size if isinstance(op, AppendOp) else len(getattr(op, "body", b""))
    if size > ds_settings.MAX_APPEND_BYTES:
        raise PayloadTooLarge(f"the data exceeds {ds_settings.MAX_APPEND_BYTES} bytes")
