"""Live fan-out end to end: real daphne processes, real websockets, a real Redis.

Every test ends with every reader holding the whole stream: each message exactly once, in order.
Each runs on the suite's database (SQLite in one pass, Postgres in the other); the multi-process
ones get a Redis of their own so that they can restart it and flush it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from tests.servers import ServerProcess

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 60


class PrivateRedis:
    """A redis-server of the test's own, on a unix socket in a private directory, which it may
    stop, start and flush (no port that another process could take between runs)."""

    def __init__(self) -> None:
        assert shutil.which("redis-server"), "redis-server is needed for the fan-out tests"
        self.directory = tempfile.mkdtemp(prefix="ds-redis-")
        self.path = os.path.join(self.directory, "redis.sock")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.path}?db=0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                "0",
                "--unixsocket",
                self.path,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for line in self.process.stdout:  # wait for its own word that it is ready
            if b"ready to accept connections" in line.lower():
                # Keep draining its output so that it never blocks on a full pipe.
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)

    def flush(self) -> None:
        subprocess.run(["redis-cli", "-s", self.path, "FLUSHALL"], check=True, capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def redis_server():
    server = PrivateRedis()
    server.start()
    yield server
    server.remove()


def cluster(count: int, redis: PrivateRedis | None) -> list[ServerProcess]:
    env = {"REDIS_URL": redis.url} if redis else {}
    servers = [ServerProcess(public=True, env=env) for _ in range(count)]
    if not redis:
        for server in servers:
            server.env.pop("REDIS_URL", None)
    return [server.start() for server in servers]


class Reader:
    """A websocket reader that remembers its messages and its last offset, and can resume."""

    def __init__(self, base: str, path: str) -> None:
        self.base = base.replace("http://", "ws://")
        self.path = path
        self.offset = "-1"
        self.messages: list[int] = []
        self.done = asyncio.Event()

    async def frames(self) -> AsyncIterator[dict]:
        url = f"{self.base}/ws/v1/stream/{self.path}?offset={self.offset}"
        async with websockets.connect(url, max_size=None) as socket:
            async for text in socket:
                yield json.loads(text)

    async def read(self, stop_after: int | None = None) -> None:
        """Read (from the current offset) until the end of the stream, or ``stop_after``."""
        pending: list[int] = []
        async for frame in self.frames():
            if frame["event"] == "data":
                pending = [message["i"] for message in frame["data"]]
            elif frame["event"] == "control":
                # Data counts once its control frame (with the offset after it) has arrived.
                self.messages.extend(pending)
                pending = []
                self.offset = frame["data"]["streamNextOffset"]
                if frame["data"].get("streamClosed"):
                    self.done.set()
                    return
                if stop_after is not None and len(self.messages) >= stop_after:
                    return


async def write(base: str, path: str, count: int, progress: dict[int, asyncio.Event]) -> None:
    async with httpx.AsyncClient(base_url=f"{base}/v1/stream/", timeout=30) as client:
        for i in range(count):
            response = await client.post(path, json={"i": i})
            assert response.status_code == 204, response.text
            if i in progress:
                progress[i].set()
        response = await client.post(path, headers={"stream-closed": "true"})
        assert response.status_code == 204


async def create(base: str, path: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.put(
            f"{base}/v1/stream/{path}", headers={"content-type": "application/json"}
        )
        assert response.status_code == 201


def assert_complete(readers: list[Reader], count: int) -> None:
    for reader in readers:
        assert reader.messages == list(range(count)), (
            f"reader got {len(reader.messages)} messages; first problem at "
            f"{next(i for i, m in enumerate(reader.messages) if m != i) if reader.messages else 0}"
        )


@pytest.mark.parametrize("topology", ["one process, in-memory layer", "two processes, Redis"])
async def test_fifty_readers_get_every_message_once_in_order(topology, request):
    redis = None
    if topology.startswith("two"):
        redis = PrivateRedis()
        redis.start()
        request.addfinalizer(redis.remove)
    servers = cluster(2 if redis else 1, redis)
    try:
        a, b = servers[0], servers[-1]
        path = f"fanout-{uuid.uuid4().hex[:8]}"
        count = 300
        await create(a.url, path)
        progress = {count // 3: asyncio.Event(), 2 * count // 3: asyncio.Event()}
        early = [Reader((a, b)[n % 2].url, path) for n in range(30)]
        late = [Reader((a, b)[n % 2].url, path) for n in range(10)]
        resuming = [Reader((a, b)[n % 2].url, path) for n in range(10)]

        async def join_late(reader: Reader) -> None:
            await progress[count // 3].wait()
            await reader.read()

        async def read_with_a_break(reader: Reader, n: int) -> None:
            await reader.read(stop_after=10 + n * 7)  # disconnect mid-stream...
            await reader.read()  # ...and resume from the last offset

        tasks = [asyncio.ensure_future(r.read()) for r in early]
        tasks += [asyncio.ensure_future(join_late(r)) for r in late]
        tasks += [asyncio.ensure_future(read_with_a_break(r, n)) for n, r in enumerate(resuming)]
        await asyncio.wait_for(write(a.url, path, count, progress), TIMEOUT)
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        assert_complete(early + late + resuming, count)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def two_processes(redis_server):
    """Two daphne processes sharing the test database and a private Redis."""
    servers = cluster(2, redis_server)
    yield servers
    for server in servers:
        server.stop()


async def follow_through(
    writer: ServerProcess,
    readers: list[Reader],
    count: int,
    progress: dict[int, asyncio.Event],
    fault,
) -> None:
    """Write ``count`` messages while ``fault`` runs, then check every reader got them all."""
    tasks = [asyncio.ensure_future(r.read()) for r in readers]
    writing = asyncio.ensure_future(write(writer.url, readers[0].path, count, progress))
    await fault()
    await asyncio.wait_for(writing, TIMEOUT)
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert_complete(readers, count)


async def test_a_redis_restart_mid_stream_costs_no_message(two_processes, redis_server):
    a, b = two_processes
    path = f"restart-{uuid.uuid4().hex[:8]}"
    await create(a.url, path)
    progress = {50: asyncio.Event(), 120: asyncio.Event()}

    async def restart() -> None:
        await progress[50].wait()
        redis_server.stop()  # Redis goes away while the writer goes on...
        await progress[120].wait()
        redis_server.start()  # ...and comes back empty

    readers = [Reader(b.url, path) for _ in range(10)] + [Reader(a.url, path)]
    await follow_through(a, readers, 200, progress, restart)


async def test_dropped_notifications_cost_latency_not_data(two_processes, redis_server):
    a, b = two_processes
    path = f"dropped-{uuid.uuid4().hex[:8]}"
    await create(a.url, path)
    count = 150
    progress = {i: asyncio.Event() for i in range(0, count, 10)}

    async def flush_repeatedly() -> None:  # throw away queued notices and subscriptions
        for i in sorted(progress):
            await progress[i].wait()
            redis_server.flush()

    readers = [Reader(b.url, path) for _ in range(10)]
    await follow_through(a, readers, count, progress, flush_repeatedly)


class RawSocketReader:
    """A websocket client on a bare socket that reads nothing until told to.

    Client libraries keep reading into memory whatever the application does; this one really
    leaves the bytes in the kernel, with a small receive buffer, so the server sees a full socket.
    """

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /ws/v1/stream/{path}?offset=-1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(1)  # the handshake answer, and not one byte more
        assert self.buffer.startswith(b"HTTP/1.1 101"), self.buffer
        self.buffer = b""

    def frames(self):
        """Server frames (opcode, payload) until the connection ends."""
        self.sock.settimeout(TIMEOUT)
        while True:
            while len(self.buffer) < 2 or len(self.buffer) < self._frame_size():
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    return
                self.buffer += chunk
            size, start = self._frame_size(), self._header_size()
            opcode, payload = self.buffer[0] & 0x0F, self.buffer[start:size]
            self.buffer = self.buffer[size:]
            yield opcode, payload
            if opcode == 8:  # close
                return

    def _header_size(self) -> int:
        length = self.buffer[1] & 0x7F
        return 2 + {126: 2, 127: 8}.get(length, 0)

    def _frame_size(self) -> int:
        if len(self.buffer) < self._header_size():
            return 1 << 62
        length = self.buffer[1] & 0x7F
        if length == 126:
            length = int.from_bytes(self.buffer[2:4], "big")
        elif length == 127:
            length = int.from_bytes(self.buffer[2:10], "big")
        return self._header_size() + length


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
async def test_a_reader_that_stops_reading_slows_nobody(server, redis_server):
    """daphne buffers for the slow reader; uvicorn blocks its socket, so it is cut off (after
    WEBSOCKET_SEND_TIMEOUT, 2 s here) and resumes from its last control frame."""
    env = {"REDIS_URL": redis_server.url, "DS_WEBSOCKET_SEND_TIMEOUT": "2"}
    a = ServerProcess(server=server, public=True, env=env).start()
    b = ServerProcess(server=server, public=True, env=env).start()
    try:
        path = f"slow-{uuid.uuid4().hex[:8]}"
        count = 400
        await create(a.url, path)
        slow = RawSocketReader(b.port, path)
        readers = [Reader(b.url, path) for _ in range(5)] + [Reader(a.url, path)]
        tasks = [asyncio.ensure_future(r.read()) for r in readers]
        padding = "x" * 40_000  # 16 MB: more than the kernel buffers of both ends hold

        async def write_big() -> None:
            async with httpx.AsyncClient(base_url=f"{a.url}/v1/stream/", timeout=30) as client:
                for i in range(count):
                    response = await client.post(path, json={"i": i, "pad": padding})
                    assert response.status_code == 204
                await client.post(path, headers={"stream-closed": "true"})

        await asyncio.wait_for(write_big(), TIMEOUT)  # the writer is never held back...
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)  # ...nor the other readers
        assert_complete(readers, count)
        if server == "uvicorn":  # long enough for the watchdog to see the blocked send
            await asyncio.sleep(3)
        # The slow one reads at last: what the server held for it, then (uvicorn) the end.
        received, pending, offset, closed = [], [], "-1", False
        for opcode, payload in await asyncio.to_thread(lambda: list(slow.frames())):
            if opcode == 8:  # a close frame: the end (1000), or 4008 and where to resume
                code, reason = int.from_bytes(payload[:2], "big"), payload[2:].decode()
                if closed:
                    assert code == 1000
                elif code == 4008:
                    assert reason == offset
                else:  # the close frame queued behind the data may be the server's ping timeout
                    assert code == 1011, (code, reason)
                continue
            if opcode != 1:  # pings
                continue
            frame = json.loads(payload)
            if frame["event"] == "data":
                pending = [m["i"] for m in frame["data"]]
            elif frame["event"] == "control":
                received.extend(pending)
                pending, offset = [], frame["data"]["streamNextOffset"]
                closed = bool(frame["data"].get("streamClosed"))
        assert closed == (server == "daphne"), "daphne buffers without limit; uvicorn cuts off"
        if not closed:
            resumed = Reader(b.url, path)
            resumed.offset = offset
            await asyncio.wait_for(resumed.read(), TIMEOUT)
            received.extend(resumed.messages)
        assert received == list(range(count))
    finally:
        a.stop()
        b.stop()
