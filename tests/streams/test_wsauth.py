"""A websocket's user checked again while it is open (durable_sessions/streams/wsauth.py).

A user deactivated, a token deleted or a session ended after the handshake: the socket is
closed (4401/4403) and its appends refused within ``AUTH_RECHECK_INTERVAL`` (and the watchdog's
one-second tick), through Channels in process.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import ClassVar

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.authtoken.models import Token

from durable_sessions import streams
from durable_sessions.streams.permissions import Access, IsAuthenticated
from tests.streams.apps import APP

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5.0  # the watchdog ticks once a second: a re-check is due well within this


class Recording(IsAuthenticated):
    """The default policy, remembering every question."""

    asked: ClassVar[list[Access]] = []

    def has_permission(self, access: Access) -> bool:
        self.asked.append(access)
        return super().has_permission(access)


class BreaksLater(IsAuthenticated):
    """Allows the handshake, then fails with an unexpected exception."""

    calls: ClassVar[int] = 0

    def has_permission(self, access: Access) -> bool:
        type(self).calls += 1
        if self.calls > 1:
            raise RuntimeError("the policy's backend is down")
        return super().has_permission(access)


def configure(settings, policy: str, interval: float) -> None:
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "PERMISSION_POLICY": policy,
        "AUTH_RECHECK_INTERVAL": interval,
    }


@pytest.fixture
def rechecked(settings):
    """The default policy, users checked again every 0.2 s."""
    configure(settings, "durable_sessions.streams.permissions.IsAuthenticated", 0.2)


def socket(path: str, headers: list) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        APP, f"/ws/v1/stream/{path}?offset=-1", headers=[(b"host", b"localhost"), *headers]
    )


async def stream() -> str:
    path = f"wsauth/{uuid.uuid4().hex[:10]}"
    await streams.acreate(path, content_type="text/plain", data="a")
    return path


async def with_token(username: str, **fields) -> tuple[User, Token, tuple[bytes, bytes]]:
    user = await User.objects.acreate_user(username, password="pw", **fields)
    token = await Token.objects.acreate(user=user)
    return user, token, (b"authorization", f"Token {token.key}".encode())


async def opened(ws: WebsocketCommunicator) -> None:
    """Connect and read up to the first control frame."""
    connected, _ = await ws.connect()
    assert connected
    while json.loads(await ws.receive_from(TIMEOUT))["event"] != "control":
        pass


async def frames_until_close(ws: WebsocketCommunicator, code: int) -> list[dict]:
    """The frames the socket sends before it closes, which it must, with ``code``; then the
    client answers the close, as a real one does."""
    frames = []
    while True:
        message = await ws.receive_output(TIMEOUT)
        if message["type"] == "websocket.close":
            assert message["code"] == code, frames
            await ws.disconnect(code)
            return frames
        frames.append(json.loads(message["text"]))


def refusal(frames: list[dict]) -> dict:
    [error] = [frame for frame in frames if frame["event"] == "error"]
    return error


@pytest.mark.parametrize("revoke", ["deactivate the user", "delete the token"])
async def test_a_reading_socket_closes_when_its_token_no_longer_authenticates(rechecked, revoke):
    user, token, header = await with_token("tom")
    path = await stream()
    ws = socket(path, [header])
    await opened(ws)
    if revoke == "deactivate the user":
        await User.objects.filter(pk=user.pk).aupdate(is_active=False)
    else:
        await token.adelete()
    error = refusal(await frames_until_close(ws, 4401))
    assert (error["status"], error["code"], error["id"]) == (401, "not_authenticated", None)


@pytest.mark.parametrize("revoke", ["log out", "deactivate the user"])
async def test_a_reading_socket_closes_when_its_session_ends(rechecked, async_client, revoke):
    user = await User.objects.acreate_user("sue", password="pw")
    assert await async_client.alogin(username="sue", password="pw")
    cookie = async_client.cookies["sessionid"].value.encode()
    path = await stream()
    ws = socket(path, [(b"cookie", b"sessionid=" + cookie)])
    await opened(ws)
    if revoke == "log out":
        await async_client.alogout()  # flushes the session from the database
    else:
        await User.objects.filter(pk=user.pk).aupdate(is_active=False)
    error = refusal(await frames_until_close(ws, 4401))
    assert error["status"] == 401


async def test_a_policy_that_stops_allowing_reads_closes_with_4403(settings):
    configure(settings, "durable_sessions.streams.permissions.IsStaff", 0.2)
    user, _token, header = await with_token("sam", is_staff=True)
    path = await stream()
    ws = socket(path, [header])
    await opened(ws)
    await User.objects.filter(pk=user.pk).aupdate(is_staff=False)
    error = refusal(await frames_until_close(ws, 4403))
    assert (error["status"], error["code"]) == (403, "permission_denied")


async def test_appends_are_refused_once_the_user_is_deactivated(settings):
    """With a check due at every frame, the next append frame finds the user gone."""
    configure(settings, "durable_sessions.streams.permissions.IsAuthenticated", 1e-6)
    user, _token, header = await with_token("ada")
    path = await stream()
    ws = socket(path, [header])
    await opened(ws)
    await ws.send_to(json.dumps({"op": "append", "id": 1, "data": "b"}))
    frames = []
    while not any(frame.get("event") == "ack" for frame in frames):
        frames.append(json.loads(await ws.receive_from(TIMEOUT)))
    await User.objects.filter(pk=user.pk).aupdate(is_active=False)
    await ws.send_to(json.dumps({"op": "append", "id": 2, "data": "c"}))
    error = refusal(await frames_until_close(ws, 4401))
    # The frame's own check answers it, unless the watchdog's tick came first (then id null).
    assert error["status"] == 401 and error["id"] in (2, None)
    assert (await streams.aread(path)).body == b"ab"


async def test_an_append_refused_after_a_recheck_leaves_the_socket_reading(settings):
    """Demoted from staff: appends get 403 error frames, reads go on; promoted, it may again."""
    configure(settings, "durable_sessions.streams.permissions.ReadAuthenticatedWriteStaff", 1e-6)
    user, _token, header = await with_token("ed", is_staff=True)
    path = await stream()
    ws = socket(path, [header])
    await opened(ws)

    async def answer(ref: int, data: str) -> dict:
        await ws.send_to(json.dumps({"op": "append", "id": ref, "data": data}))
        while True:
            frame = json.loads(await ws.receive_from(TIMEOUT))
            if frame.get("id") == ref:
                return frame

    assert (await answer(1, "b"))["event"] == "ack"
    await User.objects.filter(pk=user.pk).aupdate(is_staff=False)
    refused = await answer(2, "c")
    assert (refused["event"], refused["status"]) == ("error", 403)
    await streams.aappend(path, b"d")  # still reading
    while json.loads(await ws.receive_from(TIMEOUT)) != {"event": "data", "data": "d"}:
        pass
    await User.objects.filter(pk=user.pk).aupdate(is_staff=True)
    assert (await answer(3, "e"))["event"] == "ack"
    assert (await streams.aread(path)).body == b"abde"
    await ws.disconnect()


class TokenQueries:
    """Counts queries on the token table (installed on the ORM thread's connection)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        if "authtoken_token" in sql:
            self.count += 1
        return execute(sql, params, many, context)


async def test_sockets_of_one_token_share_one_lookup_and_stay_open_while_it_holds(settings):
    configure(settings, f"{Recording.__module__}.Recording", 0.3)
    _user, _token, header = await with_token("kim")
    path = await stream()
    sockets = [socket(path, [header]) for _ in range(5)]
    for ws in sockets:
        await opened(ws)
    queries = TokenQueries()
    # The async ORM runs its queries on one thread: count them on that thread's connection.
    await sync_to_async(lambda: connection.execute_wrappers.append(queries))()
    try:
        Recording.asked.clear()
        deadline = asyncio.get_running_loop().time() + 3 * TIMEOUT
        while len(Recording.asked) < 10:  # two re-checks of each socket
            assert asyncio.get_running_loop().time() < deadline, len(Recording.asked)
            await asyncio.sleep(0.05)  # polling a condition with a deadline
    finally:
        await sync_to_async(lambda: connection.execute_wrappers.remove(queries))()
    assert {access.action for access in Recording.asked} == {"read"}
    assert 1 <= queries.count <= 4, queries.count  # one per tick, not one per socket (10)
    await streams.aappend(path, b"b")
    for ws in sockets:  # all still open and reading
        while json.loads(await ws.receive_from(TIMEOUT)) != {"event": "data", "data": "b"}:
            pass
        await ws.disconnect()


async def test_a_check_that_fails_closes_the_socket_rather_than_trusting_it(settings, caplog):
    configure(settings, f"{BreaksLater.__module__}.BreaksLater", 0.2)
    BreaksLater.calls = 0
    _user, _token, header = await with_token("bo")
    path = await stream()
    ws = socket(path, [header])
    await opened(ws)
    error = refusal(await frames_until_close(ws, 1011))
    assert (error["status"], error["code"]) == (503, "unavailable")
    assert any("again failed" in record.getMessage() for record in caplog.records)
