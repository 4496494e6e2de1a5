"""The group-commit writer: one thread per process that writes every change to the log.

Callers queue operations and wait. The thread takes everything queued, runs consecutive appends
as one transaction (``commit.apply_appends``) and every other operation in a transaction of its
own, in queue order, and only after the commit hands the results back. TTL renewals that reads
asked for (``lifecycle.RenewOp``) go in one transaction after the rest of the batch. Results and
change notices for callers on an asyncio loop are delivered with one ``call_soon_threadsafe`` per
loop and batch, notices first, so a live reader on that loop sees a change no later than its
writer's ack.

A transaction that fails on a deadlock or a busy database is run again. When a batch of appends
fails for another reason, each append is retried alone, so one bad append cannot fail the rest.

Stopping (``stop``) finishes what is queued. If the thread is still busy when the wait is over
(a commit held up by the database), the operations it has not started are failed with
``Unavailable`` at once, and the connection stays with the thread, which closes it when it is
done: a connection is never closed under a running commit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, overload

from durable_sessions.streams import commit, lifecycle, retention
from durable_sessions.streams.db import Database, ThreadConnections, connection_lost, retryable
from durable_sessions.streams.errors import CommitUnknown, StreamError, Unavailable
from durable_sessions.streams.offsets import START
from durable_sessions.streams.records import Appended, Change, Created, Notice

logger = logging.getLogger("durable_sessions.streams.writer")

MAX_BATCH_BYTES = 32 * 1024 * 1024
MAX_ATTEMPTS = 6

Waiter = asyncio.Future | concurrent.futures.Future


class Publisher(Protocol):
    """Where committed changes go: the live readers of this process (and others)."""

    def publish(self, notices: list[Notice], skip: set[asyncio.AbstractEventLoop]) -> None:
        """From the writer thread: hand ``notices`` to every loop not in ``skip``."""

    def deliver(self, loop: asyncio.AbstractEventLoop, notices: list[Notice]) -> None:
        """On ``loop``: hand ``notices`` to that loop's live readers now."""


class Writer:
    """Runs queued operations on its own thread and connection, appends in group commits."""

    def __init__(
        self,
        database: Database,
        publisher: Publisher,
        *,
        max_batch: int = 1000,
        sweep_interval: float | None = 30.0,
        name: str = "durable-sessions-writer",
        on_commit: Callable[[list[Change]], None] | None = None,
    ) -> None:
        self.database = database
        self._publisher = publisher
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._sweep_interval = sweep_interval
        self.name = name
        self._queue: deque[tuple[Any, Waiter]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._conns = ThreadConnections(database)
        self._stopping = False
        self._next_sweep = time.monotonic() + (sweep_interval or 0.0)

    # -- the caller's side ---------------------------------------------------------------------

    @overload
    def submit(self, op: Any, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]: ...

    @overload
    def submit(self, op: Any, loop: None = None) -> concurrent.futures.Future[Any]: ...

    def submit(self, op: Any, loop: asyncio.AbstractEventLoop | None = None) -> Waiter:
        """Queue ``op``; returns an asyncio future on ``loop``, or a concurrent future."""
        waiter: Waiter = loop.create_future() if loop is not None else concurrent.futures.Future()
        with self._cond:
            if self._stopping:
                raise Unavailable("the stream writer is shutting down")
            self._queue.append((op, waiter))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return waiter

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called: the writer takes no new operations."""
        return self._stopping

    @property
    def queued(self) -> int:
        """How many operations wait for the thread (not yet taken into a transaction)."""
        with self._cond:
            return len(self._queue)

    def stop(self, timeout: float = 10.0) -> bool:
        """Finish what is queued, then stop the thread (which closes its connection).

        Returns True when the thread finished within ``timeout`` seconds. Otherwise the
        operations it has not started fail with ``Unavailable`` now, and the one it is running
        keeps its connection until it ends.
        """
        with self._cond:
            self._stopping = True
            thread = self._thread
            self._cond.notify()
        if thread is None:
            self._conns.close_all()
            return True
        thread.join(timeout)
        if not thread.is_alive():
            return True
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
        if left:
            logger.warning(
                "stream writer still busy after %.1f s at shutdown: failing %d queued operations",
                timeout,
                len(left),
            )
            error = Unavailable("the stream writer is shutting down; retry on another server")
            self._deliver([(waiter, error) for _op, waiter in left], [])
        return False

    # -- the thread's side ---------------------------------------------------------------------

    def _take(self) -> list[tuple[Any, Waiter]] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                if self._sweep_interval is None:
                    self._cond.wait()
                    continue
                wait = self._next_sweep - time.monotonic()
                if wait <= 0:
                    return []
                self._cond.wait(wait)
            batch: list[tuple[Any, Waiter]] = []
            size = 0
            while self._queue and len(batch) < self._max_batch and size < MAX_BATCH_BYTES:
                op, waiter = self._queue.popleft()
                batch.append((op, waiter))
                size += getattr(op, "size", 0)
            return batch

    def _run(self) -> None:
        try:
            while True:
                batch = self._take()
                if batch is None:
                    return
                try:
                    self._execute(batch)
                    if self._sweep_interval and time.monotonic() >= self._next_sweep:
                        self._next_sweep = time.monotonic() + self._sweep_interval
                        self._sweep()
                except BaseException as exc:  # never let the thread die with callers waiting
                    logger.exception("stream writer failed")
                    self._deliver(
                        [
                            (waiter, Unavailable(f"stream writer failed: {exc}"))
                            for _op, waiter in batch
                            if not waiter.done()
                        ],
                        [],
                    )
        finally:
            self._conns.close_all()  # the thread's own connection, closed by the thread

    def _sweep(self, limit: int = 100, rounds: int = 20) -> None:
        """Delete expired streams, ``limit`` per transaction, until none is left (or enough)."""
        try:
            for _round in range(rounds):
                removed, notices = self._transaction(
                    lambda cur, now: lifecycle.sweep_expired(self.database, cur, now, limit)
                )
                if notices:
                    self._deliver([], notices)
                if removed < limit:
                    return
        except Exception:
            logger.exception("expiry sweep failed")

    def _execute(self, batch: list[tuple[Any, Waiter]]) -> None:
        run: list[tuple[Any, Waiter]] = []
        renewals: list[tuple[Any, Waiter]] = []
        for item in batch:
            if isinstance(item[0], commit.AppendOp):
                run.append(item)
                continue
            if isinstance(item[0], lifecycle.RenewOp):
                renewals.append(item)
                continue
            if run:
                self._append_run(run)
                run = []
            self._single(*item)
        if run:
            self._append_run(run)
        if renewals:
            self._renew(renewals)

    def _renew(self, items: list[tuple[Any, Waiter]]) -> None:
        ops = [op for op, _waiter in items]
        try:
            self._transaction(lambda cur, now: lifecycle.renew(self.database, cur, ops, now))
        except Exception as exc:  # a renewal is best effort: the next read asks again
            logger.warning("TTL renewal of %d streams failed: %r", len(ops), exc)
            self._deliver([(waiter, _as_stream_error(exc)) for _op, waiter in items], [])
            return
        self._deliver([(waiter, None) for _op, waiter in items], [])

    def _append_run(self, run: list[tuple[Any, Waiter]]) -> None:
        ops = [op for op, _waiter in run]
        try:
            results, notices = self._transaction(
                lambda cur, now: commit.apply_appends(self.database, cur, ops, now)
            )
        except Exception as exc:
            if len(run) == 1 or isinstance(exc, StreamError):
                # A failure of the transaction itself (the database is gone, or the commit's
                # outcome is unknown: appending again one by one could write twice), not of
                # one of its appends: every append gets the same answer.
                error = _as_stream_error(exc)
                self._deliver([(waiter, error) for _op, waiter in run], [])
                return
            logger.warning("group commit of %d appends failed (%s); retrying singly", len(run), exc)
            for item in run:
                self._append_run([item])
            return
        outcomes = [(waiter, result) for (_op, waiter), result in zip(run, results, strict=True)]
        self._deliver(outcomes, notices)
        if self._on_commit is not None:
            self._committed(
                [
                    Change(op.path, result.stream_id, "append")
                    for op, result in zip(ops, results, strict=True)
                    if isinstance(result, Appended) and not result.duplicate
                ]
            )

    def _single(self, op: Any, waiter: Waiter) -> None:
        fn: Callable[[Database, Any, Any, float], tuple[Any, list[Notice]]]
        if isinstance(op, lifecycle.CreateOp):
            fn = lifecycle.create
        elif isinstance(op, lifecycle.DeleteOp):
            fn = lifecycle.delete
        elif isinstance(op, retention.TruncateOp):
            fn = retention.truncate
        else:
            self._deliver([(waiter, TypeError(f"unknown operation {op!r}"))], [])
            return
        try:
            result, notices = self._transaction(lambda cur, now: fn(self.database, cur, op, now))
        except Exception as exc:
            self._deliver([(waiter, _as_stream_error(exc))], [])
            return
        self._deliver([(waiter, result)], notices)
        if self._on_commit is None:
            return
        if isinstance(result, Created) and result.created:
            start = result.info.tail if getattr(op, "fork_from", None) else START
            self._committed([Change(op.path, result.info.id, "create", start)])
        elif isinstance(op, lifecycle.DeleteOp):
            self._committed([Change(op.path, None, "delete")])

    def _committed(self, changes: list[Change]) -> None:
        if not changes or self._on_commit is None:
            return
        try:
            self._on_commit(changes)
        except Exception:  # what follows a commit must never break the writer
            logger.exception("a commit listener failed")

    def _transaction(
        self, fn: Callable[[Any, float], tuple[Any, list[Notice]]]
    ) -> tuple[Any, list[Notice]]:
        """Run ``fn(cursor, now)`` in a transaction, again when it may succeed on a retry."""
        for attempt in range(MAX_ATTEMPTS):
            conn = self._conns.get()
            committing = False
            try:
                # Postgres pipeline: BEGIN travels with the first query, and the writes travel
                # with the COMMIT, so a group commit costs two round trips to the server.
                with self.database.pipeline(conn):
                    cur = conn.cursor()
                    self.database.begin(conn)
                    result = fn(cur, time.time())
                    committing = True
                    conn.execute("COMMIT")
                return result
            except StreamError:
                self._rollback(conn)
                raise
            except Exception as exc:
                lost = connection_lost(exc, conn)
                self._rollback(conn)
                if lost:
                    self._conns.discard()
                    if attempt == 0 and not committing:
                        continue
                    if committing:
                        # The commit may or may not have happened: running the transaction
                        # again could write it twice. Say so instead.
                        raise CommitUnknown(f"connection lost while committing: {exc}") from exc
                    raise Unavailable(f"streams database unavailable: {exc}") from exc
                if retryable(exc) and attempt < MAX_ATTEMPTS - 1:
                    # (The database refused the transaction, a COMMIT included: nothing was
                    # written, and running it again is safe.)
                    time.sleep(0.002 * (2**attempt))
                    continue
                raise
        raise Unavailable("stream transaction kept failing")  # pragma: no cover

    def _rollback(self, conn: Any) -> None:
        try:
            conn.execute("ROLLBACK")
        except Exception:
            self._conns.discard()

    def _deliver(self, outcomes: list[tuple[Waiter, Any]], notices: list[Notice]) -> None:
        """Publish ``notices`` and settle the waiters: one callback per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
        for waiter, outcome in outcomes:
            if isinstance(waiter, concurrent.futures.Future):
                # A waiter its caller cancelled has no result to take (the append stands): the
                # writer must not die on it (InvalidStateError killed the writer thread).
                with contextlib.suppress(concurrent.futures.InvalidStateError):
                    if isinstance(outcome, BaseException):
                        waiter.set_exception(outcome)
                    else:
                        waiter.set_result(outcome)
            else:
                by_loop.setdefault(waiter.get_loop(), []).append((waiter, outcome))
        if notices:
            self._publisher.publish(notices, set(by_loop))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed while its caller waited
                loop.call_soon_threadsafe(_settle, self._publisher, loop, notices, items)


def _settle(
    publisher: Publisher,
    loop: asyncio.AbstractEventLoop,
    notices: list[Notice],
    items: list[tuple[asyncio.Future, Any]],
) -> None:
    if notices:
        publisher.deliver(loop, notices)
    for future, outcome in items:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _as_stream_error(exc: BaseException) -> BaseException:
    if isinstance(exc, StreamError):
        return exc
    logger.error("stream operation failed: %r", exc)
    return Unavailable(f"stream operation failed: {exc}")
