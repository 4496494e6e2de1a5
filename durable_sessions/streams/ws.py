"""The stream over a websocket: ``ws://host/ws/v1/stream/<path>?offset=X`` (a Channels consumer).

A connection follows one stream from an offset and may append to it; its frames are in
``wsframes.py``. Appends are queued on the writer in the order their frames arrive and
acknowledged after their commit, many in flight at once. Frames go out as their data is
committed: a socket that is caught up is sent new data straight from the hub's pass over the
stream's readers (``send_now``), without a task wake-up per socket; a reader that falls behind
reads from the database in pages, and one whose socket stays blocked for
``WEBSOCKET_SEND_TIMEOUT`` is closed with 4008 and the offset to resume from. Who may read
and append is checked at the handshake, again later, and at once when the path is revoked
(``wsauth.py``, ``revocation.py``); a layer above may observe the sockets of its paths
(``sockets.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import Any
from urllib.parse import parse_qsl

from channels.consumer import get_handler_name
from channels.db import aclose_old_connections
from channels.generic.websocket import AsyncWebsocketConsumer

from durable_sessions.auth import host_allowed
from durable_sessions.conf import ds_settings
from durable_sessions.streams import eager, protocol, revocation, sockets, wsframes
from durable_sessions.streams.errors import BadRequest, StreamError
from durable_sessions.streams.live import Follower
from durable_sessions.streams.offsets import parse_read_offset
from durable_sessions.streams.records import Notice, ReadResult
from durable_sessions.streams.store import check_op, get_store
from durable_sessions.streams.wsauth import SocketAuth

try:  # what daphne (autobahn) raises for a send to a client that has left
    from autobahn.exception import Disconnected
except ImportError:  # pragma: no cover  (daphne is a dependency, but uvicorn needs no autobahn)

    class Disconnected(Exception):  # type: ignore[no-redef]
        """Stands in for autobahn's, which nothing raises without it."""


logger = logging.getLogger("durable_sessions.streams.ws")

CLOSED_GRACE = 1.0  # seconds a socket stays open after the end of its stream
MAX_IN_FLIGHT = 256  # unacknowledged appends per connection before we stop reading frames


_watched: dict[asyncio.AbstractEventLoop, weakref.WeakSet] = {}


def client_gone(exc: BaseException) -> bool:
    """Whether a failed send only means that the client has left: uvicorn raises an OSError
    (``ClientDisconnected``), daphne autobahn's ``Disconnected``; the disconnect follows."""
    return isinstance(exc, OSError | Disconnected)


def watch(socket: StreamSocket) -> None:
    """Put ``socket`` under its loop's watchdog (started with the first socket)."""
    loop = asyncio.get_running_loop()
    sockets = _watched.get(loop)
    if sockets is None:
        sockets = _watched[loop] = weakref.WeakSet()
        loop.call_later(1.0, _check_stalls, loop, sockets)
    sockets.add(socket)


def _check_stalls(loop: asyncio.AbstractEventLoop, sockets: weakref.WeakSet) -> None:
    """Once a second: stop the follower of any socket whose send has been blocked too long,
    and start checking again the user of any socket checked ``AUTH_RECHECK_INTERVAL`` ago.

    One timer for all sockets, instead of a timeout around each of a thousand sends a batch.
    """
    now = loop.time()
    limit = now - ds_settings.WEBSOCKET_SEND_TIMEOUT
    for socket in list(sockets):
        if socket.auth.due(now):
            socket.auth.start_recheck()  # in a task: the lookup goes through the async ORM
        since = socket.sending_since
        if since is not None and since < limit and socket.pump is not None:
            logger.info("websocket reader of %s stopped reading; closing it", socket.path)
            socket.stalled = True
            socket.sending_since = None
            socket.pump.cancel()  # it cancels the held-up send, wherever that is
    if not sockets or loop.is_closed():  # the next socket starts the timer again
        _watched.pop(loop, None)
        return
    loop.call_later(1.0, _check_stalls, loop, sockets)


class StreamSocket(AsyncWebsocketConsumer):
    """One websocket: follows one stream from an offset, and appends to it."""

    # No per-connection channel on the layer: the hub's one subscription per stream serves all.
    channel_layer_alias = "durable_sessions.none"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.main_task = asyncio.current_task()
        self.stalled = False
        self.ending = False
        self.pump: asyncio.Future[None] | None = None
        # A direct send (send_now) that had to wait, continuing in a task.
        self.sending: asyncio.Future[None] | None = None
        self.follower: Follower | None = None
        self.pending: set[asyncio.Future[None]] = set()
        self.sending_since: float | None = None
        self._sending = 0
        self.auth: SocketAuth | None = None
        self.observed: sockets.Observed | None = None
        self.unrevoke: Any = None
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            if not self.ending:
                raise
        finally:  # however the connection ends: no subscription and no task is left behind
            for task in (self.pump, self.sending):
                if task is not None:
                    task.cancel()
            for task in list(self.pending):
                task.cancel()
            if self.auth is not None:
                self.auth.close()
            if self.follower is not None:
                self.follower.close()
            if self.unrevoke is not None:
                self.unrevoke()
            if self.observed is not None:
                self.observed.close()

    async def end(self, code: int, reason: str = "") -> None:
        """Close the socket; if even the close frame cannot be queued, drop the connection
        (the server then sends what it holds and closes)."""
        try:
            async with asyncio.timeout(1):
                await self.close(code=code, reason=reason)
        except Exception:
            self.ending = True
            if self.main_task is not None:
                self.main_task.cancel()

    async def connect(self) -> None:
        """The handshake: accept, check the path, offset and permission, start following."""
        self.content_type = ""
        self.auth = SocketAuth(self.scope, self.close_refused)
        self.delivered: Any = None
        await self.accept()
        try:
            if not host_allowed(self.scope):
                raise BadRequest("the Host header names no allowed host", code="disallowed_host")
            path = protocol.parse_stream_path(
                self.scope["ds_stream_path"], ds_settings.MAX_PATH_LENGTH
            )
            pairs = parse_qsl(
                self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            )
            query = dict(pairs)
            if len(query) != len(pairs):
                raise BadRequest("a query parameter appears more than once", code="invalid_query")
            start = parse_read_offset(query.get("offset"))
            assert self.auth is not None
            await self.auth.admit(path)
            self.unrevoke = revocation.watch(path, self.auth.revoked)
            self.path = path
            self.follower = Follower(path, None if isinstance(start, str) else start, self.send_now)
            first = await self.follower.next(None)
            self.observed = sockets.observe(path, self.auth.caller.user, query, self.scope)
            if self.observed is not None:  # (the layer above's: sessions count devices online)
                await self.observed.start()
        except StreamError as exc:
            await self.send_error(exc)
            await self.end(wsframes.close_code(exc))
            return
        self.content_type = first.info.content_type
        self.delivered = first.start
        self.pump = asyncio.ensure_future(self.follow(first))
        watch(self)

    async def disconnect(self, code: int) -> None:
        """The client left: stop following."""
        if self.pump is not None:
            self.pump.cancel()
        if self.follower is not None:
            self.follower.close()

    # -- reading -------------------------------------------------------------------------------

    async def follow(self, first: ReadResult) -> None:
        """Send every batch after the offset, as it comes; close after the end of the stream.

        While this waits for the next batch, the hub may hand new data to ``send_now`` instead,
        which sends it without waking this task.
        """
        assert self.follower is not None
        result = first
        try:
            while True:
                if self.sending is not None:  # a direct send still under way goes first
                    await self.sending
                await self.send_batch(result)
                if result.closed:
                    # The end of the stream. Frames the client sent before it heard of the end
                    # still get their answer (an append: 409): close after a grace period.
                    await asyncio.sleep(CLOSED_GRACE)
                    if self.pending:
                        await asyncio.wait(self.pending, timeout=CLOSED_GRACE)
                    await self.end(wsframes.CLOSE_CODES["done"])
                    return
                batch = await self.follower.next(None)
                if batch is not None:
                    result = batch
        except asyncio.CancelledError:
            if self.sending is not None:
                self.sending.cancel()
            if not self.stalled:
                raise
            # The client stopped reading: tell it where to resume, if it can still hear it (the
            # offset whose control frame reached the socket, not what the follower read).
            await self.end(wsframes.CLOSE_CODES["too_slow"], str(self.delivered))
        except StreamError as exc:
            await self.send_error(exc)
            await self.end(wsframes.close_code(exc))
        except Exception as exc:
            if not client_gone(exc):
                logger.exception("websocket follower of %s failed", self.path)
            await self.end(wsframes.CLOSE_CODES["internal_error"])

    async def send_batch(self, result: ReadResult) -> None:
        """Send a batch's data and control frames."""
        await self.send_messages(wsframes.messages(result))
        self.delivered = result.next  # handed to the socket, control frame included

    def send_now(self, notices: list[Notice]) -> bool:
        """Send the data of new notices from the hub's own pass (see Subscription.direct).

        Only while ``follow`` is waiting with nothing queued, and only plain data continuing at
        the position: anything else (a gap, the end of the stream, a send still held up) is
        declined, and ``follow`` takes it from the queue as usual. The frames are handed to the
        ASGI server from this plain function, without a task; a send that has to wait goes on in
        a task (``self.sending``) that ``follow`` waits for before its next batch.
        """
        if self.sending is not None or self.follower is None:
            return False
        result = self.follower.advance_live(notices)
        if result is None:
            return False
        if not result.count:
            return True
        messages = wsframes.messages(result)
        send = self.base_send
        for index, message in enumerate(messages):
            try:
                waiting = eager.start(send(message))
            except Exception as exc:
                self.sending = asyncio.ensure_future(self.direct_send_failed(exc))
            else:
                if waiting is None:
                    continue
                rest = messages[index + 1 :]  # the socket is full: the rest follows when it drains
                self.sending = asyncio.ensure_future(self.send_rest(waiting, rest, result.next))
            self.sending.add_done_callback(self._direct_sent)
            return True
        self.delivered = result.next
        return True

    async def send_rest(self, waiting: asyncio.Future, rest: tuple, position: Any) -> None:
        """Finish a direct send that had to wait: watched like any send (``send_messages``)."""
        try:
            await self.send_messages(rest, waiting)
        except Exception as exc:
            await self.direct_send_failed(exc)
        else:
            self.delivered = position

    async def direct_send_failed(self, exc: Exception) -> None:
        """A send from the hub's pass failed: end the socket (logged unless the client left)."""
        if not client_gone(exc):
            logger.error("websocket direct send on %s failed", self.path, exc_info=exc)
        if self.pump is not None:
            self.pump.cancel()
        await self.end(wsframes.CLOSE_CODES["internal_error"])

    def _direct_sent(self, task: asyncio.Task) -> None:
        self.sending = None

    async def send_frames(self, *texts: str) -> None:
        """Send frames of text (see ``send_messages``)."""
        await self.send_messages([wsframes.send_message(text) for text in texts])

    async def send_messages(self, messages: Any, waiting: asyncio.Future | None = None) -> None:
        """Send ASGI messages, after ``waiting`` (a send already under way) if given; the
        watchdog ends a send that stays blocked (a reader not reading)."""
        if not self._sending:
            self.sending_since = asyncio.get_running_loop().time()
        self._sending += 1
        try:
            if waiting is not None:
                await waiting
            for message in messages:
                await self.base_send(message)
        finally:
            self._sending -= 1
            if not self._sending:
                self.sending_since = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route an ASGI message to its handler (closing stale Django connections first)."""
        # Channels closes stale Django connections before every message. Only the handshake
        # touches the database (authentication); frames do not need a thread hop each.
        if message["type"] == "websocket.connect":
            await aclose_old_connections()
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    # -- writing -------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """One frame from the client: a ping, or an append (answered by an ack or an error)."""
        if self.follower is None:
            return  # refused at connect; the close is on its way
        ref = None
        try:
            frame = wsframes.parse_frame(text_data)
            ref = wsframes.frame_id(frame)
            op = frame.get("op")
            if op == "ping":
                with contextlib.suppress(OSError, Disconnected):  # the client may have left
                    await self.send_frames(wsframes.compact({"event": "pong", "id": ref}))
            elif op == "append":
                await self.append(frame, ref)
            else:
                raise BadRequest(f"unknown op {wsframes.shown(op)}", code="unknown_op")
        except StreamError as exc:
            await self.send_error(exc, ref)

    async def append(self, frame: dict[str, Any], ref: Any) -> None:
        """Queue an append frame on the writer (in frame order); its ack follows the commit."""
        assert self.auth is not None  # (set at connect, before any frame is read)
        if not await self.auth.authorize_append(ref):
            return  # the user may no longer read: the socket is closing
        op = wsframes.append_op(frame, self.path, self.content_type)
        check_op(op)
        if len(self.pending) >= MAX_IN_FLIGHT:  # stop reading frames until acks drain
            await asyncio.wait(self.pending, return_when=asyncio.FIRST_COMPLETED)
        # Queued now, in frame order; acknowledged when committed, while later frames arrive.
        waiter = get_store().writer_for(self.path).submit(op, asyncio.get_running_loop())
        task = asyncio.ensure_future(self.acknowledge(waiter, ref))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def close_refused(self, exc: StreamError, ref: Any) -> None:
        """The user may no longer read (``SocketAuth.recheck``): stop sending data, send the
        error, close."""
        for task in (self.pump, self.sending):
            if task is not None:
                task.cancel()
        if self.follower is not None:
            self.follower.close()  # the hub no longer hands it data (send_now)
        await self.send_error(exc, ref)
        await self.end(wsframes.close_code(exc))

    async def acknowledge(self, waiter: asyncio.Future, ref: Any) -> None:
        """Answer an append once it committed (or failed)."""
        try:
            result = await waiter
        except StreamError as exc:
            await self.send_error(exc, ref)
            return
        with contextlib.suppress(Exception):  # the client may be gone; the append stands
            await self.send_frames(wsframes.ack_frame(result, ref))

    async def send_error(self, exc: StreamError, ref: Any = None) -> None:
        """Send an error frame (the client may be gone: then nothing)."""
        with contextlib.suppress(Exception):
            await self.send_frames(wsframes.error_frame(exc, ref))
