"""The stream over a websocket: ``ws://host/ws/v1/stream/<path>?offset=X`` (a Channels consumer).

Server to client, the same pairs as SSE, as JSON text frames::

    {"event": "data", "data": [...messages...]}          (text streams: a string;
                                                            binary: base64, "encoding": "base64")
    {"event": "control", "data": {"streamNextOffset": ..., "upToDate": ..., "streamClosed": ...}}

Client to server::

    {"op": "append", "id": <ref>, "data": <message or array>, "producer"?: {"id","epoch","seq"},
     "seq"?: <Stream-Seq>, "close"?: true}
        -> {"event": "ack", "id": <ref>, "streamNextOffset": ..., ...}
        or {"event": "error", "id": <ref>, "status": N, "code": ..., "message": ...}
    {"op": "ping", "id"?: <ref>}  -> {"event": "pong", "id": <ref>}

Appends are queued on the writer in the order their frames arrive and acknowledged after their
commit, many in flight at once. Frames go out as their data is committed; a reader that falls
behind reads from the database in pages, and one whose socket stays blocked for
``WEBSOCKET_SEND_TIMEOUT`` is closed with 4008 and the offset to resume from. Close codes are
in ``CLOSE_CODES`` (and docs/websocket.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import weakref
from typing import Any
from urllib.parse import parse_qsl

from channels.consumer import get_handler_name
from channels.db import aclose_old_connections
from channels.generic.websocket import AsyncWebsocketConsumer

from durable_sessions.auth import host_allowed
from durable_sessions.conf import ds_settings
from durable_sessions.streams import protocol
from durable_sessions.streams.commit import AppendOp
from durable_sessions.streams.content import Payload, dump_message, is_json, is_text
from durable_sessions.streams.errors import BadRequest, PayloadTooLarge, StreamError
from durable_sessions.streams.live import Follower
from durable_sessions.streams.offsets import NOW, parse_read_offset
from durable_sessions.streams.permissions import APPEND, READ, Caller
from durable_sessions.streams.records import ReadResult
from durable_sessions.streams.render import RenderCache, batch_key
from durable_sessions.streams.store import check_op, get_store

logger = logging.getLogger("durable_sessions.streams.ws")

CLOSE_CODES = {
    "done": 1000,  # the stream is closed and everything was sent
    "too_slow": 4008,  # the client did not read for WEBSOCKET_SEND_TIMEOUT: resume from reason
    "bad_request": 4400,  # a bad path or offset in the URL
    "not_authenticated": 4401,
    "permission_denied": 4403,  # the policy, or a foreign Origin with a session cookie
    "stream_not_found": 4404,
    "stream_gone": 4410,  # deleted while followed (or soft-deleted)
    "internal_error": 1011,
}
CLOSED_GRACE = 1.0  # seconds a socket stays open after the end of its stream
MAX_IN_FLIGHT = 256  # unacknowledged appends per connection before we stop reading frames


def compact(value: Any) -> str:
    """A frame's JSON text, without spaces."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def close_code(exc: StreamError) -> int:
    """The close code for an error that ends a connection."""
    by_status = {400: 4400, 401: 4401, 403: 4403, 404: 4404, 410: 4410}
    return by_status.get(exc.status, 1011)


_frames = RenderCache()


def frames(result: ReadResult) -> tuple[str | None, str]:
    """The data and control frames of a batch, rendered once for all readers at that position."""
    return _frames.get(batch_key(result), lambda: _render(result), len(result.data))


def _render(result: ReadResult) -> tuple[str | None, str]:
    data = None
    if result.count:
        if is_json(result.info.content_type):
            payload = result.body.decode()
            data = f'{{"event":"data","data":{payload}}}'
        elif is_text(result.info.content_type):
            text = json.dumps(result.body.decode("utf-8", errors="replace"), ensure_ascii=False)
            data = f'{{"event":"data","data":{text}}}'
        else:
            encoded = base64.b64encode(result.body).decode()
            data = f'{{"event":"data","data":"{encoded}","encoding":"base64"}}'
    control: dict[str, Any] = {"streamNextOffset": str(result.next)}
    if result.up_to_date or result.closed:
        control["upToDate"] = True
    if result.closed:
        control["streamClosed"] = True
    return data, compact({"event": "control", "data": control})


_watched: dict[asyncio.AbstractEventLoop, weakref.WeakSet] = {}


def watch(socket: StreamSocket) -> None:
    """Put ``socket`` under its loop's watchdog (started with the first socket)."""
    loop = asyncio.get_running_loop()
    sockets = _watched.get(loop)
    if sockets is None:
        sockets = _watched[loop] = weakref.WeakSet()
        loop.call_later(1.0, _check_stalls, loop, sockets)
    sockets.add(socket)


def _check_stalls(loop: asyncio.AbstractEventLoop, sockets: weakref.WeakSet) -> None:
    """Once a second: stop the follower of any socket whose send has been blocked too long.

    One timer for all sockets, instead of a timeout around each of a thousand sends a batch.
    """
    limit = loop.time() - ds_settings.WEBSOCKET_SEND_TIMEOUT
    for socket in list(sockets):
        since = socket.sending_since
        if since is not None and since < limit and socket.pump is not None:
            logger.info("websocket reader of %s stopped reading; closing it", socket.path)
            socket.stalled = True
            socket.sending_since = None
            socket.pump.cancel()
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
        self.pump = None
        self.follower = None
        self.pending = set()
        self.sending_since = None
        self._sending = 0
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            if not self.ending:
                raise
        finally:  # however the connection ends: no subscription and no task is left behind
            if self.pump is not None:
                self.pump.cancel()
            for task in list(self.pending):
                task.cancel()
            if self.follower is not None:
                self.follower.close()

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
        self.content_type = ""
        self.may_append = False
        self.caller = Caller(self.scope, cross_site_reads=False)
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
            await self.caller.authorize(READ, path)
            self.path = path
            self.follower = Follower(path, None if start == NOW else start)
            first = await self.follower.next(None)
        except StreamError as exc:
            await self.send_error(exc)
            await self.end(close_code(exc))
            return
        self.content_type = first.info.content_type
        self.delivered = first.start
        self.pump = asyncio.ensure_future(self.follow(first))
        watch(self)

    async def disconnect(self, code: int) -> None:
        if self.pump is not None:
            self.pump.cancel()
        if self.follower is not None:
            self.follower.close()

    # -- reading -------------------------------------------------------------------------------

    async def follow(self, first: ReadResult) -> None:
        """Send every batch after the offset, as it comes; close after the end of the stream."""
        assert self.follower is not None
        result = first
        try:
            while True:
                data, control = frames(result)
                if data is not None:
                    await self.send_frame(data)
                await self.send_frame(control)
                self.delivered = result.next  # handed to the socket, control frame included
                if result.closed:
                    # The end of the stream. Frames the client sent before it heard of the end
                    # still get their answer (an append: 409): close after a grace period.
                    await asyncio.sleep(CLOSED_GRACE)
                    if self.pending:
                        await asyncio.wait(self.pending, timeout=CLOSED_GRACE)
                    await self.end(CLOSE_CODES["done"])
                    return
                batch = await self.follower.next(None)
                if batch is not None:
                    result = batch
        except asyncio.CancelledError:
            if not self.stalled:
                raise
            # The client stopped reading: tell it where to resume, if it can still hear it (the
            # offset whose control frame reached the socket, not what the follower read).
            await self.end(CLOSE_CODES["too_slow"], str(self.delivered))
        except StreamError as exc:
            await self.send_error(exc)
            await self.end(close_code(exc))
        except Exception:
            logger.exception("websocket follower of %s failed", self.path)
            await self.end(CLOSE_CODES["internal_error"])

    async def send_frame(self, text: str) -> None:
        """Send a frame; the watchdog ends a send that stays blocked (a reader not reading)."""
        if not self._sending:
            self.sending_since = asyncio.get_running_loop().time()
        self._sending += 1
        try:
            await self.base_send({"type": "websocket.send", "text": text})
        finally:
            self._sending -= 1
            if not self._sending:
                self.sending_since = None

    async def dispatch(self, message: dict[str, Any]) -> None:
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
        if self.follower is None:
            return  # refused at connect; the close is on its way
        ref = None
        try:
            if text_data is None:
                raise BadRequest("frames are JSON text", code="invalid_frame")
            if len(text_data) > ds_settings.MAX_APPEND_BYTES * 2 + 65536:
                raise PayloadTooLarge("frame too large")
            try:
                frame = json.loads(text_data)
            except ValueError:
                raise BadRequest("frames are JSON text", code="invalid_frame") from None
            if not isinstance(frame, dict):
                raise BadRequest("a frame is a JSON object", code="invalid_frame")
            ref = frame.get("id")
            op = frame.get("op")
            if op == "ping":
                await self.send_frame(compact({"event": "pong", "id": ref}))
            elif op == "append":
                await self.append(frame, ref)
            else:
                raise BadRequest(f"unknown op {op!r}", code="unknown_op")
        except StreamError as exc:
            await self.send_error(exc, ref)

    async def append(self, frame: dict[str, Any], ref: Any) -> None:
        if not self.may_append:  # the policy is asked once per connection
            await self.caller.authorize(APPEND, self.path)
            self.may_append = True
        op = AppendOp(
            self.path,
            self.payload(frame),
            None,
            frame.get("close") is True,
            self.stream_seq(frame),
            self.producer(frame),
        )
        if op.payload is None and not op.close:
            raise BadRequest("an append needs data", code="empty_body")
        check_op(op)
        if len(self.pending) >= MAX_IN_FLIGHT:  # stop reading frames until acks drain
            await asyncio.wait(self.pending, return_when=asyncio.FIRST_COMPLETED)
        # Queued now, in frame order; acknowledged when committed, while later frames arrive.
        waiter = get_store().writer_for(self.path).submit(op, asyncio.get_running_loop())
        task = asyncio.ensure_future(self.acknowledge(waiter, ref))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def payload(self, frame: dict[str, Any]) -> Payload | None:
        if "data" not in frame:
            return None
        data = frame["data"]
        if is_json(self.content_type):
            messages = data if isinstance(data, list) else [data]
            if not messages:
                raise BadRequest("empty JSON array: an append needs messages", code="empty_array")
            texts = [dump_message(message) for message in messages]
            return Payload(b",".join(texts), len(texts))
        if not isinstance(data, str):
            raise BadRequest("data must be a string on a non-JSON stream", code="invalid_frame")
        if frame.get("encoding") == "base64":
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("invalid base64 data", code="invalid_frame") from None
        else:
            raw = data.encode()
        return Payload(raw, 1) if raw else None

    @staticmethod
    def stream_seq(frame: dict[str, Any]) -> str | None:
        seq = frame.get("seq")
        if seq is not None and not isinstance(seq, str):
            raise BadRequest("seq must be a string", code="invalid_stream_seq")
        return protocol.parse_stream_seq(seq)

    @staticmethod
    def producer(frame: dict[str, Any]) -> tuple[str, int, int] | None:
        producer = frame.get("producer")
        if producer is None:
            return None
        if not isinstance(producer, dict):
            raise BadRequest("producer is {id, epoch, seq}", code="invalid_producer")
        values = [producer.get(key) for key in ("id", "epoch", "seq")]
        if not isinstance(values[0], str) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values[1:]
        ):
            raise BadRequest(
                "producer is {id: string, epoch: int, seq: int}", code="invalid_producer"
            )
        return protocol.parse_producer(values[0], str(values[1]), str(values[2]))

    async def acknowledge(self, waiter: asyncio.Future, ref: Any) -> None:
        try:
            result = await waiter
        except StreamError as exc:
            await self.send_error(exc, ref)
            return
        ack: dict[str, Any] = {"event": "ack", "id": ref, "streamNextOffset": str(result.next)}
        if result.closed:
            ack["streamClosed"] = True
        if result.duplicate:
            ack["duplicate"] = True
        if result.producer_epoch is not None:
            ack["producerEpoch"] = result.producer_epoch
            ack["producerSeq"] = result.producer_seq
        with contextlib.suppress(Exception):  # the client may be gone; the append stands
            await self.send_frame(compact(ack))

    async def send_error(self, exc: StreamError, ref: Any = None) -> None:
        frame = {
            "event": "error",
            "id": ref,
            "status": exc.status,
            "code": exc.code,
            "message": exc.message,
        }
        if exc.headers:
            frame["headers"] = exc.headers
        with contextlib.suppress(Exception):
            await self.send_frame(compact(frame))
