"""Following a stream live: database catch-up first, then the hub's notices, never a gap.

A ``Follower`` is what long-poll, SSE, websockets and ``subscribe()`` share. It keeps a position
and answers ``next()`` with the next batch of entries after it:

- while behind, from the database (one page per call);
- once caught up, from the notices the hub pushes: if they continue exactly at the position and
  carry their bytes, the batch is built from them without touching the database;
- on a gap, an overflowed queue, a notice without bytes, or a quiet period of
  ``LIVE_RECHECK_INTERVAL``, from the database again.

It subscribes before reading, so nothing committed after a read can be missed, and it skips what
it has already delivered by sequence number, so nothing is delivered twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import overload

from durable_sessions.streams.api import aread, position
from durable_sessions.streams.content import is_json
from durable_sessions.streams.errors import BadRequest, StreamNotFound
from durable_sessions.streams.hub import Subscription, get_hub
from durable_sessions.streams.offsets import NOW, Position
from durable_sessions.streams.records import Notice, ReadResult, StoredEntry, StreamInfo

_stream_ids: dict[str, int] = {}  # path -> last known stream id (a hint, checked on every read)


class Follower:
    """Reads ``path`` from ``start`` (None: from the tail) and keeps following it."""

    # The last batch made by advance(): (the notices, the start position, the batch).
    _last_advance: tuple[list[Notice], Position, ReadResult] | None = None

    def __init__(
        self,
        path: str,
        start: Position | None,
        direct: Callable[[list[Notice]], bool] | None = None,
    ) -> None:
        self.path = path
        self.position = start
        self.direct = direct  # see Subscription.direct: takes notices while next() waits
        self.info: StreamInfo | None = None
        self._subscription: Subscription | None = None
        self._from_db = True
        self._first = True
        self._separator = b""
        self.finished = False

    async def __aenter__(self) -> Follower:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop following (unsubscribe from the hub)."""
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    def _subscribe(self, stream_id: int) -> None:
        if self._subscription is not None and self._subscription.stream_id == stream_id:
            return
        self.close()
        self._subscription = get_hub().subscribe(stream_id)
        self._subscription.direct = self.direct
        if len(_stream_ids) > 100_000:
            _stream_ids.clear()
        _stream_ids[self.path] = stream_id

    async def _read(self) -> ReadResult:
        known = _stream_ids.get(self.path)
        if known is not None:
            self._subscribe(known)
        offset = NOW if self.position is None else self.position
        try:
            result = await aread(self.path, offset)
        except BadRequest as exc:
            if self.info is None or exc.code not in {"offset_beyond_tail", "invalid_offset"}:
                raise
            # Our position was real on the stream we followed: this path names another now.
            raise StreamNotFound(f"stream {self.path!r} was deleted (and created again)") from None
        if self._subscription is None or self._subscription.stream_id != result.info.id:
            self._subscribe(result.info.id)  # the path names a new stream: read it again
            result = await aread(self.path, offset)
        if self.info is not None and result.info.id != self.info.id:
            # Deleted and created again while we followed it: not the stream we were reading.
            raise StreamNotFound(f"stream {self.path!r} was deleted (and created again)")
        self.info = result.info
        self._separator = b"," if is_json(result.info.content_type) else b""
        self.position = result.next
        self._from_db = not result.up_to_date
        self.finished = result.closed
        return result

    @overload
    async def next(self, timeout: None) -> ReadResult: ...

    @overload
    async def next(self, timeout: float) -> ReadResult | None: ...

    async def next(self, timeout: float | None) -> ReadResult | None:
        """The next batch after the position; None when ``timeout`` seconds pass without one.

        The first call always returns the first database read, even when it is empty, so that the
        caller learns the tail and whether it is up to date. A returned batch with ``closed``
        ends the stream.
        """
        if self._first:
            self._first = False
            return await self._read()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._from_db:
                result = await self._read()
                if result.count or result.closed:
                    return result
            subscription = self._subscription
            assert subscription is not None
            if deadline is None:
                await subscription.wait(None)
            else:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await subscription.wait(remaining):
                    return None
            notices, reread = subscription.take()  # (a quiet hub also asks for a reread)
            batch = None if reread else self.advance(notices)
            if batch is None:
                self._from_db = True
            elif batch.count or batch.closed:
                return batch

    @property
    def live(self) -> bool:
        """Whether the position is the tail as last known (the next batch comes from notices)."""
        return not self._from_db and not self._first

    def advance_live(self, notices: list[Notice]) -> ReadResult | None:
        """``advance`` for a reader handed notices from the hub's pass (``Subscription.direct``):
        the batch when the follower is live and the notices are plain data continuing at its
        position; None for anything ``next()`` must see (a gap, the end of the stream, a
        deletion), which leaves the position where it was."""
        if not self.live:
            return None
        for notice in notices:
            if notice.closed or notice.deleted:
                return None
        return self.advance(notices)

    def advance(self, notices: list[Notice]) -> ReadResult | None:
        """The batch ``notices`` make, continuing exactly at the position, which moves past it;
        None when the database must say instead (a gap, bytes not carried, a deletion).

        The hub hands one list of notices to every reader of a stream in one pass, and the
        readers that are caught up all stand at the same position: the batch made for the
        first is the batch of the others (same stream, same start, same list), and is reused.
        """
        position = self.position
        assert position is not None and self.info is not None
        last = Follower._last_advance
        result: ReadResult | None
        if last is not None and last[0] is notices and last[1] == position:
            result = last[2]
            if result.info.id == self.info.id:
                self.position, self.finished = result.next, result.closed
                return result
        result = self._advance(notices, position)
        if result is not None:
            Follower._last_advance = (notices, position, result)
        return result

    def _advance(self, notices: list[Notice], position: Position) -> ReadResult | None:
        assert self.info is not None
        entries: list[StoredEntry] = []
        closed = False
        for notice in notices:
            if notice.deleted:
                return None  # the next read reports 404/410
            for entry in notice.entries:
                if entry.seq < position.seq:
                    continue
                if entry.seq != position.seq or entry.data is None:
                    return None
                entries.append(entry)
                position = entry.next
            if notice.next.seq < position.seq:
                continue
            if notice.next.seq > position.seq:
                return None
            closed = closed or notice.closed
        start = self.position
        assert start is not None
        self.position = position
        self.finished = closed
        data = self._separator.join(entry.data for entry in entries)
        count = sum(entry.count for entry in entries)
        return ReadResult(self.info, start, data, count, position, True, closed)


async def subscribe(path: str, offset: str | Position | None = "-1") -> AsyncIterator[ReadResult]:
    """Follow ``path`` from ``offset``: catch up, then yield each new batch as it commits.

    Ends after the batch that reaches the end of a closed stream; raises ``StreamNotFound`` or
    ``StreamGone`` when the stream is deleted. Waiting costs no thread: it waits on the hub.
    """
    async with Follower(path, position(offset)) as follower:
        while True:
            batch = await follower.next(None)
            if batch is None:
                continue
            if batch.count or batch.closed:
                yield batch
            if batch.closed:
                return
