"""Server-Sent Events: the stream as ``data``/``control`` event pairs, live.

Each batch (a catch-up page or a live batch) is one ``event: data`` followed by its own
``event: control`` with the position after it, sent together in one write. Text and JSON streams
carry their bytes as text, every line behind its own ``data:`` so no payload can forge an event
boundary; other streams carry base64. The response ends after the control event that reports
the end of a closed stream, or after ``SSE_RECONNECT_INTERVAL`` seconds (the client reconnects
from the last ``streamNextOffset``). A comment line is sent after a quiet spell so that proxies
keep the connection open.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from typing import Any

from durable_sessions.conf import ds_settings
from durable_sessions.streams.content import is_text
from durable_sessions.streams.errors import StreamError
from durable_sessions.streams.httpio import Request
from durable_sessions.streams.live import Follower
from durable_sessions.streams.offsets import NOW, current_cursor, next_cursor
from durable_sessions.streams.records import ReadResult
from durable_sessions.streams.render import RenderCache, batch_key

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
    """Serve ``GET ...?live=sse``."""
    follower = Follower(request.path, None if start == NOW else start)
    try:
        first = await follower.next(None)
    except BaseException:
        follower.close()
        raise
    text = is_text(first.info.content_type)
    headers = [
        *extra,
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
        ("x-accel-buffering", "no"),
    ]
    if not text:
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
    streaming = asyncio.ensure_future(_pump(request, follower, first, text))
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


async def _pump(request: Request, follower: Follower, first: ReadResult, text: bool) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ds_settings.SSE_RECONNECT_INTERVAL
    # One jittered cursor for the response (when the client's is not behind), then the clock's
    # whenever that passes it: the cursors of one response never go down.
    cursor = int(next_cursor(request.param("cursor")))
    result: ReadResult | None = first
    while True:
        if result is not None:
            cursor = max(cursor, current_cursor())
            chunk = _chunks.get(
                (*batch_key(result), text, cursor),
                lambda r=result, c=cursor: render_chunk(r, text, str(c)),
                len(result.data),
            )
            await request.send({"type": "http.response.body", "body": chunk, "more_body": True})
            if result.closed:
                return
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            result = await follower.next(min(remaining, HEARTBEAT_SECONDS))
        except StreamError:
            return  # deleted while we followed it: end the response, the reconnect reports it
        if result is None:
            await request.send({"type": "http.response.body", "body": b": \n\n", "more_body": True})
