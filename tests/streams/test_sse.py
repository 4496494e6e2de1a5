"""Live SSE responses: sends from the hub's pass, held-up sends, heartbeats, many readers.

The first tests drive the ASGI application in process with a ``send`` they control; the last
ones run real server processes with real HTTP clients, one of which stops reading.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import httpx
import pytest

from durable_sessions import streams
from durable_sessions.streams import sse
from durable_sessions.streams.hub import get_hub
from tests.servers import ServerProcess
from tests.streams.apps import APP

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 60


def parse_events(raw: bytes) -> list[tuple[str, str]]:
    """(event, data) for each complete event in ``raw``; comments are ("comment", "")."""
    events = []
    for block in raw.split(b"\n\n")[:-1]:
        lines = block.decode().split("\n")
        if lines[0].startswith(":"):
            events.append(("comment", ""))
            continue
        kind = lines[0].removeprefix("event: ")
        data = "\n".join(line.removeprefix("data:") for line in lines if line.startswith("data:"))
        events.append((kind, data))
    return events


class InProcessResponse:
    """``GET path?offset=...&live=sse`` through the application, with a ``send`` we control.

    Once ``hold`` is given, the next send of a data chunk waits until it is set (a client that
    does not read, as flow control makes it look to the application); later sends go through, so
    a chunk sent out of turn would land before the held one."""

    def __init__(self, path: str, offset: str = "now") -> None:
        self.body = b""
        self.ended = False
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()  # a send is waiting on ``hold``
        self.arrived = asyncio.Event()
        self.disconnect = asyncio.Event()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/v1/stream/{path}",
            "raw_path": f"/v1/stream/{path}".encode(),
            "query_string": f"offset={offset}&live=sse".encode(),
            "headers": [(b"host", b"localhost")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        self.task = asyncio.ensure_future(APP(scope, self.receive, self.send))

    async def receive(self):
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message):
        if message["type"] != "http.response.body":
            assert message["status"] == 200, message
            return
        if self.hold is not None and not self.held.is_set() and b"event: data" in message["body"]:
            self.held.set()
            await self.hold.wait()
        self.body += message["body"]
        self.ended = not message.get("more_body", False)
        self.arrived.set()

    def events(self) -> list[tuple[str, str]]:
        return parse_events(self.body)

    def messages(self) -> list:
        return [m for kind, data in self.events() if kind == "data" for m in json.loads(data)]

    async def until(self, predicate, timeout: float = 10) -> None:
        async def wait():
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), timeout)


async def ended_by_itself(task: asyncio.Task) -> None:
    """(Not wait_for(): on a timeout it cancels the task, which then returns as if it had ended.)"""
    ended, _ = await asyncio.wait([task], timeout=10)
    assert ended, "the response did not end"
    task.result()


@pytest.fixture
def public(settings):
    policy = "durable_sessions.streams.permissions.AllowAny"
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "PERMISSION_POLICY": policy}


async def test_chunks_keep_their_order_while_a_send_is_held_up(public):
    await streams.acreate("sse/held", content_type="application/json")
    response = InProcessResponse("sse/held")
    await response.until(lambda: response.events())
    response.hold = asyncio.Event()
    await streams.aappend_json("sse/held", [0])
    await asyncio.wait_for(response.held.wait(), 10)  # the send of [0] waits for the client
    for i in range(1, 400):  # more than a subscription queues: the rest comes from the database
        await streams.aappend_json("sse/held", [i])
    response.hold.set()
    await response.until(lambda: len(response.messages()) >= 400)
    assert response.messages() == list(range(400))
    controls = [json.loads(data) for kind, data in response.events() if kind == "control"]
    offsets = [control["streamNextOffset"] for control in controls]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    response.disconnect.set()
    await ended_by_itself(response.task)
    assert get_hub().subscriber_count() == 0


async def test_a_client_leaving_during_a_held_up_send_ends_the_response(public):
    await streams.acreate("sse/leaves", content_type="application/json")
    response = InProcessResponse("sse/leaves")
    await response.until(lambda: response.events())
    response.hold = asyncio.Event()  # never set: this client never reads again
    await streams.aappend_json("sse/leaves", [1])
    await asyncio.wait_for(response.held.wait(), 10)
    response.disconnect.set()
    await ended_by_itself(response.task)
    assert get_hub().subscriber_count() == 0


async def test_a_quiet_response_gets_heartbeats_and_still_follows(public, monkeypatch):
    monkeypatch.setattr(sse, "HEARTBEAT_SECONDS", 0.2)
    await streams.acreate("sse/quiet", content_type="application/json")
    response = InProcessResponse("sse/quiet")
    await response.until(lambda: ("comment", "") in response.events())
    await streams.aappend_json("sse/quiet", [7])
    await response.until(lambda: response.messages() == [7])
    kinds = [kind for kind, _ in response.events()]
    assert kinds[0] == "control" and kinds[-2:] == ["data", "control"]
    response.disconnect.set()
    await ended_by_itself(response.task)


async def test_the_response_ends_at_the_reconnect_interval_after_whole_events(public, settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "SSE_RECONNECT_INTERVAL": 0.5}
    await streams.acreate("sse/ends", content_type="application/json")
    response = InProcessResponse("sse/ends")
    await response.until(lambda: response.events())
    count = 0
    while not response.ended:  # appends go on until the response ends by itself
        await streams.aappend_json("sse/ends", [count])
        count += 1
    assert response.body.endswith(b"\n\n")
    assert response.messages() == list(range(len(response.messages())))
    await ended_by_itself(response.task)


# -- real servers -------------------------------------------------------------------------------


async def read_sse(base: str, path: str, offset: str, got: list[int], stop_after=None) -> str:
    """Follow ``path`` from ``offset`` into ``got`` until the stream's end (or ``stop_after``
    messages); returns the offset to resume from."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        url = f"{base}/v1/stream/{path}"
        params = {"offset": offset, "live": "sse"}
        async with client.stream("GET", url, params=params) as response:
            assert response.status_code == 200
            raw, pending = b"", []
            async for chunk in response.aiter_bytes():
                raw += chunk
                cut = raw.rfind(b"\n\n") + 2  # events end with a blank line; the rest waits
                if cut < 2:
                    continue
                events, raw = parse_events(raw[:cut]), raw[cut:]
                for kind, data in events:
                    if kind == "data":
                        pending = [message["i"] for message in json.loads(data)]
                    elif kind == "control":  # data counts once its control event arrived
                        got.extend(pending)
                        pending, control = [], json.loads(data)
                        offset = control["streamNextOffset"]
                        if control.get("streamClosed"):
                            return offset
                        if stop_after is not None and len(got) >= stop_after:
                            return offset
    return offset


class StalledReader:
    """An SSE request on a bare socket with a small receive buffer, read only when told to."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(
            f"GET /v1/stream/{path}?offset=-1&live=sse HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n\r\n".encode()
        )

    def read_to_end(self) -> bytes:
        """The response's body, de-chunked, up to its last chunk."""
        self.sock.settimeout(TIMEOUT)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += self.sock.recv(65536)
        head, raw = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head
        body = []
        while True:
            while b"\r\n" not in raw:
                raw += self.sock.recv(1 << 20)
            size_line, raw = raw.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(raw) < size + 2:
                raw += self.sock.recv(1 << 20)
            body.append(raw[:size])
            raw = raw[size + 2 :]
            if size == 0:
                return b"".join(body)


@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
async def test_sse_readers_get_every_message_once_in_order_and_a_stalled_one_slows_nobody(server):
    a = ServerProcess(server=server, public=True).start()
    try:
        path = f"sse-{uuid.uuid4().hex[:8]}"
        count = 300
        async with httpx.AsyncClient(base_url=f"{a.url}/v1/stream/", timeout=TIMEOUT) as client:
            response = await client.put(path, headers={"content-type": "application/json"})
            assert response.status_code == 201
        stalled = StalledReader(a.port, path)
        third = asyncio.Event()
        readers: list[list[int]] = [[] for _ in range(12)]

        async def follow(n: int) -> None:
            got = readers[n]
            if n % 3 == 1:
                await third.wait()  # joins mid-stream, from the start
            stop_after = 20 + n if n % 3 == 2 else None
            offset = await read_sse(a.url, path, "-1", got, stop_after)
            if stop_after is not None:
                await read_sse(a.url, path, offset, got)  # resumes where it stopped

        tasks = [asyncio.ensure_future(follow(n)) for n in range(len(readers))]
        padding = "x" * 30_000  # 9 MB in all: more than the kernel buffers of both ends hold
        async with httpx.AsyncClient(base_url=f"{a.url}/v1/stream/", timeout=TIMEOUT) as client:
            for i in range(count):
                response = await client.post(path, json={"i": i, "pad": padding})
                assert response.status_code == 204  # the stalled reader holds nobody back
                if i == count // 3:
                    third.set()
            response = await client.post(path, headers={"stream-closed": "true"})
            assert response.status_code == 204
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        for got in readers:
            assert got == list(range(count))
        # The stalled reader reads at last: what the server held for it, in order, up to the
        # end; or, if its response reached SSE_RECONNECT_INTERVAL first, up to a control event
        # that it resumes from, as a client does.
        body = await asyncio.to_thread(stalled.read_to_end)
        events = parse_events(body)
        got, pending = [], []
        for kind, data in events:
            if kind == "data":
                pending = [message["i"] for message in json.loads(data)]
            elif kind == "control":
                got.extend(pending)
                pending, control = [], json.loads(data)
        assert events[-1][0] == "control" and got == list(range(len(got)))
        if not control.get("streamClosed"):
            await read_sse(a.url, path, control["streamNextOffset"], got)
        assert got == list(range(count))
    finally:
        a.stop()
