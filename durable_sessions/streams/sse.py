"""Server-Sent Events: the stream as ``data``/``control`` event pairs, live.

Each batch (a catch-up page or a live batch) is one ``event: data`` followed by its own
``event: control`` with the position after it, sent together in one write. Text and JSON streams
carry their bytes as text, every line behind its own ``data:`` so no payload can forge an event
boundary; other streams carry base64. The response ends after the control event that reports
the end of a closed stream, or after ``SSE_RECONNECT_INTERVAL`` seconds (the client reconnects
from the last ``streamNextOffset``). A comment line is sent after a quiet spell so that proxies
keep the connection open. A revocation of the path (``revocation.py``) that the user no longer
passes ends the response at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from typing import Any

from durable_sessions.conf import ds_settings
from durable_sessions.streams import eager
from durable_sessions.streams.content import is_text
from durable_sessions.streams.errors import StreamError
from durable_sessions.streams.httpio import Request
from durable_sessions.streams.live import Follower
from durable_sessions.streams.offsets import NOW, current_cursor, next_cursor
from durable_sessions.streams.records import Notice, ReadResult
from durable_sessions.streams.render import RenderCache, batch_key
from durable_sessions.streams.revocation import Recheck

logger = logging.getLogger("durable_sessions.streams.sse")

HEARTBEAT_SECONDS = 15.0
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def data_event(body: bytes, text: bool) -> bytes:
    """An ``event: data`` block for ``body``."""
    if not text:
        return b"event: data\ndata:" + base64.b64encode(body) + b"\n\n"
    lines = _LINE_BREAK.split(body)
    return b"event: data\n" + b"".join(b"data:" + line + b"\n" for line in lines) + b"\n"


def control_event(result: ReadResult, cursor: str) -> bytes:
    """The ``event: control`` block after a batch.

    Its ``id:`` is the next offset, so a browser's ``EventSource`` that reconnects on its own
    sends it back as ``Last-Event-ID`` and resumes where it stopped (``event_stream``).
    """
    control: dict[str, Any] = {"streamNextOffset": str(result.next)}
    if result.closed:
        control["streamClosed"] = True
        control["upToDate"] = True
    else:
        control["streamCursor"] = cursor
        if result.up_to_date:
            control["upToDate"] = True
    data = json.dumps(control, separators=(",", ":")).encode()
    return b"event: control\ndata:" + data + b"\nid:" + str(result.next).encode() + b"\n\n"


_chunks = RenderCache()


def render_chunk(result: ReadResult, text: bool, cursor: str) -> bytes:
    """A batch's data event (if it has data) and control event, as one write."""
    chunk = data_event(result.body, text) if result.count else b""
    return chunk + control_event(result, cursor)


async def _watch_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def event_stream(request: Request, extra: list[tuple[str, str]], start: Any) -> None:
    """Serve ``GET ...?live=sse`` (ended at once if the path is revoked for the user)."""
    response = _EventStream(request, start)
    with Recheck(request.caller, request.path, response.refused):
        await _serve(response, extra)


async def _serve(response: _EventStream, extra: list[tuple[str, str]]) -> None:
    request = response.request
    follower = response.follower
    try:
        first = await follower.next(None)
        if response.refusal is not None:  # revoked during the first read: nothing was sent
            raise response.refusal
    except BaseException:
        follower.close()
        raise
    response.text = is_text(first.info.content_type)
    headers = [
        *extra,
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
        ("x-accel-buffering", "no"),
    ]
    if not response.text:
        headers.append(("stream-sse-data-encoding", "base64"))
    send = request.send
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    watcher = asyncio.ensure_future(_watch_disconnect(request))
    streaming = response.task = asyncio.ensure_future(response.pump(first))
    if response.refusal is not None:
        streaming.cancel()
    try:
        await asyncio.wait({watcher, streaming}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watcher, streaming):
            task.cancel()
        for task in (watcher, streaming):
            with contextlib.suppress(BaseException):
                await task
        follower.close()
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _EventStream:
    """One SSE response: its follower, and what it has sent.

    ``pump`` sends each batch as the follower produces it. While it waits for the next one with
    nothing queued, the hub may hand new data to ``send_now`` instead (see
    ``Subscription.direct``), which sends it from the hub's pass without waking the pump; a send
    that has to wait goes on in a task (``sending``) that the pump waits for before it sends
    again, so chunks never overtake each other.
    """

    def __init__(self, request: Request, start: Any) -> None:
        self.request = request
        self.follower = Follower(request.path, None if start == NOW else start, self.send_now)
        self.text = True
        # One jittered cursor for the response (when the client's is not behind), then the
        # clock's whenever that passes it: the cursors of one response never go down.
        self.cursor = 0
        self.sent_at = 0.0  # the loop's time of the last chunk, for the heartbeat
        self.sending: asyncio.Task | None = None
        self.task: asyncio.Task | None = None  # the pump's
        self.refusal: StreamError | None = None

    def refused(self, error: StreamError) -> None:
        """The user may no longer read (``revocation.Recheck``): end the response."""
        self.refusal = error
        if self.task is not None:
            self.task.cancel()

    async def pump(self, first: ReadResult) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ds_settings.SSE_RECONNECT_INTERVAL
        self.cursor = int(next_cursor(self.request.param("cursor")))
        result: ReadResult | None = first
        try:
            while True:
                if self.sending is not None:
                    await self.sending
                if result is not None:
                    await self.send_batch(result)
                    if result.closed:
                        return
                now = loop.time()
                if now >= deadline:
                    return
                if result is None and now - self.sent_at >= HEARTBEAT_SECONDS:
                    await self.send(b": \n\n")
                quiet = max(self.sent_at + HEARTBEAT_SECONDS - now, 0.001)
                try:
                    result = await self.follower.next(min(deadline - now, quiet))
                except StreamError:
                    return  # deleted while we followed it: end the response, the reconnect says so
        except asyncio.CancelledError:
            if self.sending is not None:  # the client left: a held-up send is not waited for
                self.sending.cancel()
            raise
        finally:
            if self.sending is not None:  # a direct send under way ends before the response
                with contextlib.suppress(BaseException):
                    await self.sending

    async def send_batch(self, result: ReadResult) -> None:
        self.cursor = cursor = max(self.cursor, current_cursor())
        text = self.text
        chunk = _chunks.get(
            (*batch_key(result), text, cursor),
            lambda: render_chunk(result, text, str(cursor)),
            len(result.data),
        )
        await self.send(chunk)

    async def send(self, body: bytes) -> None:
        self.sent_at = asyncio.get_running_loop().time()
        await self.request.send({"type": "http.response.body", "body": body, "more_body": True})

    def send_now(self, notices: list[Notice]) -> bool:
        """Send the data of new notices from the hub's pass; False leaves them to ``pump``."""
        if self.sending is not None:
            return False
        result = self.follower.advance_live(notices)
        if result is None:
            return False
        if result.count:
            self.sending = eager.start(self.send_direct(result))
            if self.sending is not None:
                self.sending.add_done_callback(self._sent)
        return True

    async def send_direct(self, result: ReadResult) -> None:
        try:
            await self.send_batch(result)
        except Exception:  # the server refused the send: end the response, the client resumes
            logger.exception("SSE direct send on %s failed", self.request.path)
            if self.task is not None:
                self.task.cancel()

    def _sent(self, task: asyncio.Task) -> None:
        self.sending = None
