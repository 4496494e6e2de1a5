"""Live fan-out end to end: real daphne processes, real websockets, a real Redis.

Every test ends with every reader holding the whole stream: each message exactly once, in order.
Each runs on the suite's database (SQLite in one pass, Postgres in the other); the multi-process
ones get a Redis of their own so that they can restart it and flush it.

A live reader also re-reads the database after ``LIVE_RECHECK_INTERVAL`` without a notice, which
would deliver every message in the end even with no relay at all. So the tests of delivery run
their servers with a recheck far longer than the test (``NO_RECHECK``) and measure how long each
message took from its writer's acknowledgement to each reader; the tests of recovery from lost
notices run with a short one (``RECOVERY_RECHECK``) and check that the loss happened and that the
re-read, not something slower, made up for it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import websockets

from tests.servers import ServerProcess

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 60
NO_RECHECK = 3600.0  # seconds: no reader re-reads the database on its own during a test
RECOVERY_RECHECK = 3.0  # seconds: the re-read that makes up for lost notices
# Seconds from a write's acknowledgement to its arrival at a reader, on a relay that works: far
# below any recheck; generous, for a shared 2-core machine.
LATENCY_BOUND = 2.0


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

    def queued(self) -> int:
        """Messages waiting in the channel layer for any process's channel (channels_redis
        keeps each channel's messages in a sorted set under ``asgi<channel>``)."""
        cli = ["redis-cli", "-s", self.path]
        keys = subprocess.run(
            [*cli, "--scan", "--pattern", "asgispecific.*"], check=True, capture_output=True
        ).stdout.split()
        total = 0
        for key in keys:
            found = subprocess.run([*cli, "ZCARD", key], check=True, capture_output=True)
            total += int(found.stdout.strip() or 0)
        return total

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def redis_server():
    server = PrivateRedis()
    server.start()
    yield server
    server.remove()


def cluster(count: int, redis: PrivateRedis | None, recheck: float) -> list[ServerProcess]:
    env = {"DS_LIVE_RECHECK_INTERVAL": str(recheck)}
    if redis:
        env["REDIS_URL"] = redis.url
    servers = [ServerProcess(public=True, env=env) for _ in range(count)]
    if not redis:
        for server in servers:
            server.env.pop("REDIS_URL", None)
    return [server.start() for server in servers]


class Reader:
    """A websocket reader that remembers its messages, when each arrived, and its last offset,
    and can resume."""

    def __init__(self, base: str, path: str) -> None:
        self.base = base.replace("http://", "ws://")
        self.path = path
        self.offset = "-1"
        self.messages: list[int] = []
        self.arrived: dict[int, float] = {}  # message -> time.monotonic() of its control frame
        self.caught_up = asyncio.Event()  # the first control frame came: it follows live now
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
                now = time.monotonic()
                self.messages.extend(pending)
                self.arrived.update((i, now) for i in pending)
                pending = []
                self.offset = frame["data"]["streamNextOffset"]
                self.caught_up.set()
                if frame["data"].get("streamClosed"):
                    self.done.set()
                    return
                if stop_after is not None and len(self.messages) >= stop_after:
                    return


class Writer:
    """Appends ``{"i": n}`` messages over HTTP, one at a time, and notes when each was
    acknowledged."""

    def __init__(self, base: str, path: str) -> None:
        self.client = httpx.AsyncClient(base_url=f"{base}/v1/stream/", timeout=30)
        self.path = path
        self.acked: dict[int, float] = {}  # message -> time.monotonic() of its 204
        self.padding = ""  # sent along with each message, when set

    async def send(self, i: int) -> None:
        message = {"i": i, "pad": self.padding} if self.padding else {"i": i}
        response = await self.client.post(self.path, json=message)
        assert response.status_code == 204, response.text
        self.acked[i] = time.monotonic()

    async def close(self) -> None:
        response = await self.client.post(self.path, headers={"stream-closed": "true"})
        assert response.status_code == 204
        await self.client.aclose()

    async def write(self, count: int, progress: dict[int, asyncio.Event]) -> None:
        """Send messages 0 to ``count - 1``, setting ``progress[i]`` after each ack."""
        for i in range(count):
            await self.send(i)
            if i in progress:
                progress[i].set()


async def write(base: str, path: str, count: int, progress: dict[int, asyncio.Event]) -> Writer:
    """Write ``count`` messages, then close the stream."""
    writer = Writer(base, path)
    await writer.write(count, progress)
    await writer.close()
    return writer


async def create(base: str, path: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.put(
            f"{base}/v1/stream/{path}", headers={"content-type": "application/json"}
        )
        assert response.status_code == 201


async def until(condition, timeout: float = TIMEOUT, message: str = "") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message or "condition not met in time"
        await asyncio.sleep(0.01)


async def settle(tasks: list[asyncio.Future], timeout: float = TIMEOUT) -> None:
    """Wait for the readers' tasks; after ``timeout`` seconds, cancel those still reading (their
    readers then fail the checks on what arrived)."""
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()  # a reader's own error


def assert_complete(readers: list[Reader], count: int) -> None:
    for reader in readers:
        assert reader.messages == list(range(count)), (
            f"reader got {len(reader.messages)} messages; first problem at "
            f"{next(i for i, m in enumerate(reader.messages) if m != i) if reader.messages else 0}"
        )


def latencies(readers: list[Reader], sent: dict[int, float]) -> list[float]:
    """Seconds from each message's acknowledgement (or time in ``sent``) to its arrival, for
    every reader; a message that never arrived counts as infinitely late."""
    return [
        reader.arrived.get(i, float("inf")) - sent_at
        for reader in readers
        for i, sent_at in sent.items()
    ]


def assert_prompt(readers: list[Reader], sent: dict[int, float], bound: float) -> None:
    delays = sorted(latencies(readers, sent))
    late = [d for d in delays if d > bound]
    never = sum(1 for d in late if d == float("inf"))
    arrived = [d for d in delays if d != float("inf")] or [float("nan")]
    assert not late, (
        f"{len(late)} of {len(delays)} deliveries took longer than {bound}s, {never} never came "
        f"(of those that came: worst {arrived[-1]:.3f}s, median {arrived[len(arrived) // 2]:.3f}s)"
    )


@pytest.mark.parametrize("topology", ["one process, in-memory layer", "two processes, Redis"])
async def test_fifty_readers_get_every_message_once_in_order(topology, request):
    """Every message reaches the readers that were there first within LATENCY_BOUND of its
    acknowledgement: on the writer's process from its hub, on the other through the relay
    (no reader re-reads the database on a timer here)."""
    redis = None
    if topology.startswith("two"):
        redis = PrivateRedis()
        redis.start()
        request.addfinalizer(redis.remove)
    servers = cluster(2 if redis else 1, redis, NO_RECHECK)
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
        await asyncio.wait_for(asyncio.gather(*(r.caught_up.wait() for r in early)), TIMEOUT)
        tasks += [asyncio.ensure_future(join_late(r)) for r in late]
        tasks += [asyncio.ensure_future(read_with_a_break(r, n)) for n, r in enumerate(resuming)]
        writer = await asyncio.wait_for(write(a.url, path, count, progress), TIMEOUT)
        await settle(tasks)
        assert_prompt(early, writer.acked, LATENCY_BOUND)
        assert_complete(early + late + resuming, count)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def two_processes(redis_server):
    """Two daphne processes sharing the test database and a private Redis, whose readers
    re-read the database after RECOVERY_RECHECK seconds without a notice."""
    servers = cluster(2, redis_server, RECOVERY_RECHECK)
    yield servers
    for server in servers:
        server.stop()


def recovery_bound() -> float:
    """Seconds within which a quiet reader re-reads (one and a half intervals: the hub checks
    every half interval), plus the latency allowed to any delivery."""
    return 1.5 * RECOVERY_RECHECK + LATENCY_BOUND


async def test_a_redis_restart_mid_stream_costs_no_message(two_processes, redis_server):
    """What is written while Redis is down reaches the other process's readers by a re-read
    soon after it is back, and the relay carries notices again afterwards."""
    a, b = two_processes
    path = f"restart-{uuid.uuid4().hex[:8]}"
    await create(a.url, path)
    count, paced = 200, 5
    progress = {50: asyncio.Event(), 120: asyncio.Event()}
    outage: dict[str, float] = {}
    readers = [Reader(b.url, path) for _ in range(10)] + [Reader(a.url, path)]
    tasks = [asyncio.ensure_future(r.read()) for r in readers]
    await asyncio.wait_for(asyncio.gather(*(r.caught_up.wait() for r in readers)), TIMEOUT)
    writer = Writer(a.url, path)
    writing = asyncio.ensure_future(writer.write(count, progress))
    await progress[50].wait()
    redis_server.stop()  # Redis goes away while the writer goes on...
    outage["down"] = time.monotonic()
    await progress[120].wait()
    redis_server.start()  # ...and comes back empty
    outage["up"] = time.monotonic()
    await asyncio.wait_for(writing, TIMEOUT)
    during = [i for i, at in writer.acked.items() if outage["down"] < at < outage["up"]]
    assert during, "no message was written while Redis was down"
    await until(lambda: all(len(r.messages) == count for r in readers), message="messages lost")
    # Nothing waited for more than a re-read after Redis was back (or after its ack).
    ready = {i: max(at, outage["up"]) for i, at in writer.acked.items()}
    assert_prompt(readers, ready, recovery_bound())
    # The relay works again: messages written one at a time, each right after the previous one
    # arrived, reach the other process well before a quiet reader would re-read.
    for i in range(count, count + paced):
        await writer.send(i)
        await until(
            lambda i=i: all(i in r.arrived for r in readers),
            recovery_bound(),
            f"message {i} did not arrive even by a re-read",
        )
    relayed = {i: writer.acked[i] for i in range(count, count + paced)}
    assert_prompt(readers, relayed, RECOVERY_RECHECK / 2)
    await writer.close()
    await settle(tasks)
    assert_complete(readers, count + paced)


async def test_dropped_notifications_cost_latency_not_data(two_processes, redis_server):
    """A notice is delivered at most once. The notices queued in Redis for a process that is
    not reading (frozen here) and then thrown away (FLUSHALL) never come: its readers get those
    messages by re-reading after RECOVERY_RECHECK, each once."""
    a, b = two_processes
    path = f"dropped-{uuid.uuid4().hex[:8]}"
    await create(a.url, path)
    before, during = 100, 20
    readers = [Reader(b.url, path) for _ in range(10)]
    tasks = [asyncio.ensure_future(r.read()) for r in readers]
    await asyncio.wait_for(asyncio.gather(*(r.caught_up.wait() for r in readers)), TIMEOUT)
    writer = Writer(a.url, path)
    await writer.write(before, {})  # relayed as usual
    await until(lambda: all(len(r.messages) == before for r in readers), message="relayed")
    os.kill(b.pid, signal.SIGSTOP)
    try:
        for i in range(before, before + during):  # their notices wait in Redis for b...
            await writer.send(i)
        await writer.close()
        await until(lambda: redis_server.queued() > 0, message="no notice queued for b")
        redis_server.flush()  # ...and are gone
    finally:
        os.kill(b.pid, signal.SIGCONT)
    thawed = time.monotonic()
    await settle(tasks)
    assert_complete(readers, before + during)
    ready = {i: max(at, thawed) for i, at in writer.acked.items() if i >= before}
    delays = latencies(readers, ready)
    assert max(delays) > RECOVERY_RECHECK / 2, "no notice was lost: nothing was tested"
    assert_prompt(readers, ready, recovery_bound())


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
    WEBSOCKET_SEND_TIMEOUT, 2 s here) and resumes from its last control frame. The other
    readers, on both processes, get every message within LATENCY_BOUND meanwhile."""
    env = {
        "REDIS_URL": redis_server.url,
        "DS_WEBSOCKET_SEND_TIMEOUT": "2",
        "DS_LIVE_RECHECK_INTERVAL": str(NO_RECHECK),
    }
    a = ServerProcess(server=server, public=True, env=env).start()
    b = ServerProcess(server=server, public=True, env=env).start()
    try:
        path = f"slow-{uuid.uuid4().hex[:8]}"
        count = 400
        await create(a.url, path)
        slow = RawSocketReader(b.port, path)
        readers = [Reader(b.url, path) for _ in range(5)] + [Reader(a.url, path)]
        tasks = [asyncio.ensure_future(r.read()) for r in readers]
        await asyncio.wait_for(asyncio.gather(*(r.caught_up.wait() for r in readers)), TIMEOUT)
        writer = Writer(a.url, path)
        writer.padding = "x" * 40_000  # 16 MB: more than the kernel buffers of both ends hold
        # The writer is never held back...
        await asyncio.wait_for(writer.write(count, {}), TIMEOUT)
        await writer.close()
        await settle(tasks)  # ...nor the other readers
        assert_prompt(readers, writer.acked, LATENCY_BOUND)
        assert_complete(readers, count)
        if server == "uvicorn":  # the watchdog sees the blocked send, and gives up on it
            await until(
                lambda: "stopped reading; closing it" in b.output(),
                message="the watchdog never closed the reader that stopped reading",
            )
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
