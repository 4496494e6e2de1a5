"""Presence and live revocation against real daphne processes, over real websockets and HTTP.

- A device online over a websocket stays online while its server lives (the server renews its
  expiry), and goes offline within ``PRESENCE_TTL`` after that server is killed (SIGKILL: it
  says nothing), swept by another process.
- A member removed from a session stops receiving its stream at once: their websocket is closed
  with 4403, their SSE response ends, their long-poll is answered 403, while the owner's
  websocket keeps receiving; the removal made in this process (Postgres + Redis) reaches the
  server through the channel layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from typing import Any

import httpx
import pytest
from rest_framework.authtoken.models import Token
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from durable_sessions import streams
from durable_sessions.sessions.models import Device
from tests.servers import ServerProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REVOKED_WITHIN = 1.0  # seconds


def token(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def ws_url(server: ServerProcess, session_id: str, query: str = "offset=now") -> str:
    return f"ws://127.0.0.1:{server.port}/ws/v1/stream/sessions/{session_id}?{query}"


def presence_status(session_id: str, key: str) -> str | None:
    status = None
    for event in json.loads(streams.read(f"sessions/{session_id}").body):
        if event.get("type") == "presence" and event["key"] == key:
            status = event["value"]["status"]
    return status


def test_a_device_goes_offline_after_its_server_is_killed(alice, session_id):
    env = {"DS_PRESENCE_TTL": "2", "DS_PRESENCE_SWEEP_INTERVAL": "0.1"}
    first = ServerProcess(public=False, env=env).start()
    second = None
    sockets = contextlib.ExitStack()
    try:
        headers = {"Authorization": f"Token {token(alice)}"}
        url = ws_url(first, session_id, "offset=-1&deviceId=desk")
        sockets.enter_context(connect(url, additional_headers=headers))
        wait_until(
            lambda: Device.objects.filter(device_id="desk", connections=1).exists(),
            what="the socket's device counted",
        )
        wait_until(lambda: presence_status(session_id, "alice:desk") == "online", what="online")
        opened = Device.objects.get(device_id="desk").expires_at
        # The live server keeps renewing the expiry of the device whose socket it holds.
        wait_until(
            lambda: Device.objects.get(device_id="desk").expires_at > opened,
            what="the expiry renewed",
        )
        assert Device.objects.get(device_id="desk").status == "online"
        first.kill()
        sockets.close()
        second = ServerProcess(public=False, env=env).start()
        # Any use of the log starts the process's store and its presence sweep.
        answer = httpx.get(f"{second.url}/v1/sessions/{session_id}/messages", headers=headers)
        assert answer.status_code == 200
        # On Postgres the sweep appends the presence row under the device's row lock, before
        # that row's transaction commits: the stream may say offline a moment before the row.
        wait_until(
            lambda: (
                presence_status(session_id, "alice:desk") == "offline"
                and Device.objects.get(device_id="desk").status == "offline"
            ),
            timeout=10,
            what="the device offline",
        )
        device = Device.objects.get(device_id="desk")
        assert (device.status, device.connections, device.expires_at) == ("offline", 0, None)
    finally:
        sockets.close()
        first.stop()
        if second is not None:
            second.stop()


# -- live revocation ---------------------------------------------------------------------------


class Reader(threading.Thread):
    """Reads a response in a thread; ``ended`` is set (with the time) when it ends."""

    def __init__(self, run: Any) -> None:
        super().__init__(daemon=True)
        self.run_reader = run
        self.ended_at: float | None = None
        self.result: Any = None
        self.lines: list[str] = []
        self.started_reading = threading.Event()

    def run(self) -> None:
        try:
            self.result = self.run_reader(self)
        except Exception as exc:
            self.result = exc
        self.ended_at = time.monotonic()


def sse(url: str, key: str):
    def read(reader: Reader) -> int:
        with httpx.stream("GET", url, headers={"Authorization": f"Token {key}"}, timeout=30) as r:
            for line in r.iter_lines():
                reader.lines.append(line)
                if line.startswith("event: control"):
                    reader.started_reading.set()
            return r.status_code

    return read


def long_poll(url: str, key: str):
    def read(reader: Reader) -> int:
        reader.started_reading.set()
        answer = httpx.get(url, headers={"Authorization": f"Token {key}"}, timeout=30)
        return answer.status_code

    return read


def closed_code(socket: Any, timeout: float = 5.0) -> int:
    """Read frames until the server closes the socket; its close code."""
    try:
        while True:
            socket.recv(timeout=timeout)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code


def recv_data(socket: Any) -> list:
    while True:
        frame = json.loads(socket.recv(timeout=5))
        if frame["event"] == "data" and frame["data"]:
            return frame["data"]


@pytest.mark.parametrize("where", ["on the server", "in another process"])
def test_a_removed_member_stops_receiving_at_once(alice, bob, as_alice, session_id, where):
    if where == "in another process" and not os.environ.get("REDIS_URL"):
        pytest.skip("processes share revocations through a channel layer (Redis)")
    as_alice.post(f"/v1/sessions/{session_id}/members", {"username": "bob", "role": "member"})
    server = ServerProcess(
        public=False, env={"DS_LONG_POLL_TIMEOUT": "30", "DS_AUTH_RECHECK_INTERVAL": "600"}
    ).start()
    alice_key, bob_key = token(alice), token(bob)

    def open_socket(key: str) -> Any:
        url = ws_url(server, session_id)
        return stack.enter_context(
            connect(url, additional_headers={"Authorization": f"Token {key}"})
        )

    stack = contextlib.ExitStack()
    try:
        alice_ws, bob_ws = open_socket(alice_key), open_socket(bob_key)
        for socket in (alice_ws, bob_ws):
            assert json.loads(socket.recv(timeout=5))["event"] == "control"
        stream = f"{server.url}/v1/stream/sessions/{session_id}"
        bob_sse = Reader(sse(f"{stream}?offset=now&live=sse", bob_key))
        alice_sse = Reader(sse(f"{stream}?offset=now&live=sse", alice_key))
        # (the poll from the tail as it is now, not ``now``: a poll that reaches the server
        # after the post would wait for the next message)
        head = httpx.head(stream, headers={"Authorization": f"Token {bob_key}"})
        tail = head.headers["Stream-Next-Offset"]
        bob_poll = Reader(long_poll(f"{stream}?offset={tail}&live=long-poll", bob_key))
        readers = (bob_sse, alice_sse, bob_poll)
        for reader in readers:
            reader.start()
            assert reader.started_reading.wait(5)
        # Both read the session live.
        http = stack.enter_context(
            httpx.Client(base_url=server.url, headers={"Authorization": f"Token {alice_key}"})
        )
        assert (
            http.post(f"/v1/sessions/{session_id}/messages", json={"content": "one"}).status_code
            == 200
        )
        assert recv_data(alice_ws) and recv_data(bob_ws)
        wait_until(lambda: bob_poll.ended_at is not None, what="bob's long-poll answered")
        assert bob_poll.result == 200
        bob_poll = Reader(long_poll(f"{stream}?offset=now&live=long-poll", bob_key))
        bob_poll.start()
        assert bob_poll.started_reading.wait(5)
        # (Whether the poll is already waiting or still at its first check, it must be refused.)
        # Bob is removed.
        if where == "on the server":
            assert http.delete(f"/v1/sessions/{session_id}/members/bob").status_code == 204
        else:
            assert as_alice.delete(f"/v1/sessions/{session_id}/members/bob").status_code == 204
        removed = time.monotonic()
        assert closed_code(bob_ws) == 4403
        assert time.monotonic() - removed < REVOKED_WITHIN
        wait_until(lambda: bob_sse.ended_at is not None, timeout=5, what="bob's SSE ended")
        wait_until(lambda: bob_poll.ended_at is not None, timeout=5, what="bob's poll answered")
        assert bob_sse.ended_at - removed < REVOKED_WITHIN
        assert bob_poll.ended_at - removed < REVOKED_WITHIN and bob_poll.result == 403
        # Alice still reads, on both.
        assert (
            http.post(f"/v1/sessions/{session_id}/messages", json={"content": "two"}).status_code
            == 200
        )
        [chunk] = recv_data(alice_ws)
        assert "two" in chunk["value"]["chunk"]
        wait_until(
            lambda: any("two" in line for line in alice_sse.lines), what="alice's SSE got it"
        )
        assert alice_sse.ended_at is None and not any("two" in line for line in bob_sse.lines)
        # And bob cannot come back.
        assert closed_code(open_socket(bob_key)) == 4403
    finally:
        stack.close()
        server.stop()
