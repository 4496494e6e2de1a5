"""The floor under the websocket fan-out benchmark: a bare ASGI application, not a server of ours.

It speaks just enough of our wire format for ``load.mjs ws-fanout``: ``PUT /v1/stream/<path>``
answers 201; a websocket on ``/ws/v1/stream/<path>`` is accepted and sent one control frame;
``POST /v1/stream/<path>`` with a JSON message queues it and answers 204. One task per path sends
what is queued to every websocket of the path, one socket after the other, as the same two
frames as ours (data with every queued message, then control): like our hub, it coalesces the
messages that arrive while it is sending. Nothing is stored, checked or authenticated: no
database, no hub, no Django. Run under the same uvicorn as ours (``run.py`` starts it as the
server ``floor``) or the same daphne (``floor-daphne``), it shows what one Python process on
this machine needs just to frame and write the fan-out's frames under that server, so that our
figure can be read as a ratio to it, from the same run.
"""

from __future__ import annotations

import asyncio
import json

STREAM = "/v1/stream/"
SOCKETS = "/ws/v1/stream/"
followers: dict[str, set] = {}  # path -> the send callables of its websockets
offsets: dict[str, int] = {}  # path -> messages appended so far
queued: dict[str, list] = {}  # path -> messages not yet sent to its websockets
wakers: dict[str, asyncio.Event] = {}  # path -> set when messages are queued


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def control(path: str) -> str:
    """A control frame like ours: same keys, an offset of the same length."""
    offset = f"{offsets.get(path, 0):016d}_{offsets.get(path, 0) * 9:016d}"
    return compact({"event": "control", "data": {"streamNextOffset": offset, "upToDate": True}})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await websocket(scope["path"].removeprefix(SOCKETS), receive, send)
    else:
        await http(scope["method"], scope["path"].removeprefix(STREAM), receive, send)


async def websocket(path: str, receive, send) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": control(path)})
    followers.setdefault(path, set()).add(send)
    try:
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        followers[path].discard(send)


async def http(method: str, path: str, receive, send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    status = 201 if method == "PUT" else 204
    if method == "POST":
        offsets[path] = offsets.get(path, 0) + 1
        queued.setdefault(path, []).append(json.loads(body))
        if path not in wakers:
            wakers[path] = asyncio.Event()
            asyncio.get_running_loop().create_task(broadcast(path))
        wakers[path].set()
    elif method != "PUT":
        status = 405
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def broadcast(path: str) -> None:
    """Forever: wait for queued messages, send them all in one data frame and one control."""
    while True:
        await wakers[path].wait()
        wakers[path].clear()
        messages, queued[path] = queued[path], []
        data = compact({"event": "data", "data": messages})
        frames = [{"type": "websocket.send", "text": text} for text in (data, control(path))]
        for follower in list(followers.get(path, ())):
            for frame in frames:
                await follower(frame)
