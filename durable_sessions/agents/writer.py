"""Writing a generation's chunks onto the session, under the worker's claim.

``Writer.write`` appends one chunk as the next seq of its message, with the producer
``chunk:<messageId>`` under the claim's generation as epoch (``writes.append_chunk``): once a
worker that took the session over has written to that message, this one is refused. Before
each append the writer also checks its ``Lease``: when the last heartbeat is too old for the
lease to surely hold, it writes nothing more (``LeaseLost``), so a worker frozen past its lease
stops by itself. ORM and log calls run on ``db()``'s threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from durable_sessions import dbthreads
from durable_sessions.sessions import errors, writes
from durable_sessions.sessions.models import Session

logger = logging.getLogger("durable_sessions.agents")

T = TypeVar("T")
# Few threads: every database call releases and takes the GIL back, and the event loop waits
# for it behind each busy thread (the agents benchmark: 8 threads doubled the p99 of 3).
DB_THREADS = 3
LEASE_THREADS = 2
UNAVAILABLE_RETRIES = 5


class _Threads:
    """A pool of database threads started at its first call, whose threads keep their
    connections until ``close()``."""

    def __init__(self, size: int, name: str) -> None:
        self.size, self.name = size, name
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
        loop = asyncio.get_running_loop()
        call = functools.partial(_call, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def close(self) -> None:
        """Close each thread's connection and let the threads end; what is queued runs first."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        barrier = threading.Barrier(self.size)

        def close() -> None:
            dbthreads.close()
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=30)  # (one each: no thread takes two)

        for _ in range(self.size):
            executor.submit(close)
        executor.shutdown(wait=True)


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    finally:
        dbthreads.tidy()  # (the thread's connection is kept for its next call)


_db_threads = _Threads(DB_THREADS, "durable-sessions-agents-db")
_lease_threads = _Threads(LEASE_THREADS, "durable-sessions-leases")
_chunk_threads = _Threads(1, "durable-sessions-chunks")


async def db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on one of the runtime's database threads."""
    return await _db_threads.run(fn, *args, **kwargs)


async def chunk_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` on the thread kept for the batches of chunks (``_Batcher``): never queued behind
    a claim's start or a job's update, so that the tokens of running generations keep flowing
    while new ones start."""
    return await _chunk_threads.run(fn, *args, **kwargs)


async def lease_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` on the threads kept for claims, heartbeats and acks: never queued behind the
    generations' writes, so that a busy worker's leases do not lapse while it works."""
    return await _lease_threads.run(fn, *args, **kwargs)


def close_pools() -> None:
    """Close the connections of the database threads and let the threads end (a worker
    stopped). What is queued on them runs first; the next ``db()`` call starts new ones."""
    for threads in (_db_threads, _lease_threads, _chunk_threads):
        threads.close()


class _Batcher:
    """The chunks the generations of one event loop submit, queued in batches: while one
    batch is on its database thread (``chunk_db``, ``writes.submit_chunks``: the clocks of all
    its sessions in one commit), the next one gathers."""

    def __init__(self) -> None:
        self.pending: list[tuple[writes.ChunkWrite, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Future[None] | None = None

    async def submit(self, write: writes.ChunkWrite) -> Any:
        """The future of ``write``'s append (``writes.submit_chunks``); raises what kept it
        from being queued."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append((write, waiter))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.ensure_future(self._drain())
        outcome = await asyncio.shield(waiter)  # (a cancelled generation: the batch goes on)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                outcomes = await chunk_db(writes.submit_chunks, [write for write, _ in batch])
            except Exception as exc:  # the database: every chunk of the batch says so
                outcomes = [exc] * len(batch)
            for (_write, waiter), outcome in zip(batch, outcomes, strict=True):
                if not waiter.done():
                    waiter.set_result(outcome)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
    weakref.WeakKeyDictionary()
)


def _batcher() -> _Batcher:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _Batcher()
    return batcher


class LeaseLost(Exception):
    """The claim may no longer hold (no recent heartbeat) or was taken over: write nothing."""


class Lease:
    """The worker's view of its claim: valid until ``deadline`` (monotonic seconds), which each
    successful heartbeat moves; a margin keeps the worker's view inside the server's lease."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.deadline = time.monotonic() + ttl * 0.75
        self.lost = False

    def renewed(self, started: float) -> None:
        """A heartbeat sent at ``started`` (monotonic) succeeded."""
        self.deadline = max(self.deadline, started + self.ttl * 0.75)

    def valid(self) -> bool:
        """Whether the claim surely still holds."""
        return not self.lost and time.monotonic() < self.deadline


class Writer:
    """The chunks of one message, written in order from ``first_seq``."""

    def __init__(
        self,
        session: Session,
        message_id: str,
        *,
        actor_id: str,
        lease: Lease,
        epoch: int,
        first_seq: int = 0,
        on_written: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.session = session
        self.message_id = message_id
        self.actor_id = actor_id
        self.lease = lease
        self.epoch = epoch
        self.seq = first_seq
        self.producer_seq = 0
        self.on_written = on_written

    def _chunk_write(self, chunk: dict[str, Any], expect_tail: str | None) -> writes.ChunkWrite:
        return writes.ChunkWrite(
            self.session,
            message_id=self.message_id,
            seq=self.seq,
            actor_id=self.actor_id,
            role="assistant",
            chunk=chunk,
            epoch=self.epoch,
            producer_seq=self.producer_seq,
            expect_tail=expect_tail,
        )

    async def write(self, chunk: dict[str, Any], *, expect_tail: str | None = None) -> None:
        """Append ``chunk`` as the next seq. ``LeaseLost`` when the claim may not hold; with
        ``expect_tail``, ``errors.Conflict`` (``tail_moved``) when the stream moved on."""
        for attempt in range(UNAVAILABLE_RETRIES):
            if not self.lease.valid():
                raise LeaseLost(f"the claim may have lapsed: {self.message_id} not written")
            try:
                # The clock and the queueing in a batch with the other generations' chunks,
                # on a database thread; the commit is waited for here, on the loop.
                future = await _batcher().submit(self._chunk_write(chunk, expect_tail))
                with contextlib.suppress(Exception):  # (its error is read just below)
                    # shielded: a cancelled generation must not cancel the log's own future
                    await asyncio.shield(asyncio.wrap_future(future))
                writes.chunk_appended(future, message_id=self.message_id, seq=self.seq)
            except errors.Fenced as exc:
                self.lease.lost = True
                raise LeaseLost(str(exc)) from exc
            except errors.Unavailable:
                if attempt == UNAVAILABLE_RETRIES - 1:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)  # the log is down: wait, then again
                continue
            except errors.Conflict as exc:
                if getattr(exc, "duplicate", False):  # written before an unknown commit
                    break
                raise
            break
        self.seq += 1
        self.producer_seq += 1
        if self.on_written is not None:
            self.on_written(chunk)
