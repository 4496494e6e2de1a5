"""Who may do what (durable_sessions/streams/permissions.py), asked by every route and frame.

The default policy lets any logged-in user do everything, so a route that asked for the wrong
action would pass every other test. Here a policy that allows one action at a time (``Only``)
shows which action each HTTP route and websocket frame asks for, on which path, and that a
refused request is answered before its body is read. The ASGI app runs in process.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token

from durable_sessions import streams
from durable_sessions.streams.errors import NotAuthenticated, PermissionDenied, StreamNotFound
from durable_sessions.streams.permissions import (
    ACTIONS,
    APPEND,
    CREATE,
    DELETE,
    READ,
    Access,
    BasePermission,
    Caller,
)
from tests.streams.apps import APP

pytestmark = pytest.mark.django_db(transaction=True)

WWW_AUTHENTICATE = 'Token realm="streams"'


class Only(BasePermission):
    """Allows what ``rules`` lists, as (action, path prefix) pairs; records every question."""

    rules: ClassVar[set[tuple[str, str]]] = set()
    asked: ClassVar[list[Access]] = []

    def has_permission(self, access: Access) -> bool:
        self.asked.append(access)
        return any(access.action == a and access.path.startswith(p) for a, p in self.rules)

    @classmethod
    def allow(cls, *actions: str, prefix: str = "") -> None:
        cls.rules = {(action, prefix) for action in actions}
        cls.asked = []


class InGroup(BasePermission):
    """An async policy: members of the group named by a path's first segment, from the ORM."""

    async def has_permission(self, access: Access) -> bool:
        if not access.user.is_authenticated:
            return False
        team = access.path.split("/", 1)[0]
        return await User.objects.filter(pk=access.user.pk, groups__name=team).aexists()


def policy_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.fixture
def only(settings):
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "PERMISSION_POLICY": policy_path(Only),
    }
    Only.allow()
    return Only


def fresh(prefix: str = "perm") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}"


async def token_header(username: str, **fields: Any) -> tuple[bytes, bytes]:
    user = await User.objects.acreate_user(username, password="pw", **fields)
    token = await Token.objects.acreate(user=user)
    return (b"authorization", f"Token {token.key}".encode())


# -- in-process HTTP ---------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    received: int  # how many times the app called receive()

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    method: str, path: str, headers: list | tuple = (), body: bytes = b"", query: str = ""
) -> Response:
    """One request to the router in process; the client sends ``body`` and stays connected."""
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        if received == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the response ends the exchange
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": f"/v1/stream/{path}",
        "raw_path": f"/v1/stream/{path}".encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"localhost"), *headers],
        "server": ("localhost", 80),
        "client": ("127.0.0.1", 50000),
    }
    await asyncio.wait_for(APP(scope, receive, send), 10)
    start = sent[0]
    return Response(
        start["status"],
        {k.decode(): v.decode() for k, v in start["headers"]},
        b"".join(m.get("body", b"") for m in sent[1:]),
        received,
    )


@dataclass
class Route:
    """A request whose success needs ``needs`` on the request's path (and ``source``'s)."""

    method: str
    needs: str
    ok: int
    setup: str | None = "open"  # the stream made first: "open", "closed" or none
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    query: str = ""

    async def prepare(self) -> str:
        path = fresh()
        if self.setup is not None:
            await streams.acreate(path, content_type="text/plain", data="x")
            if self.setup == "closed":
                await streams.aclose(path)
        return path

    async def send(self, path: str, auth: list) -> Response:
        return await call(self.method, path, [*auth, *self.headers], self.body, self.query)


TEXT = [(b"content-type", b"text/plain")]
ROUTES = {
    "put": Route("PUT", CREATE, 201, setup=None, headers=TEXT, body=b"hello"),
    "post": Route("POST", APPEND, 204, headers=TEXT, body=b"more"),
    "post close-only": Route("POST", APPEND, 204, headers=[(b"stream-closed", b"true")]),
    "get": Route("GET", READ, 200, query="offset=-1"),
    "long-poll": Route("GET", READ, 200, query="offset=-1&live=long-poll"),
    "sse": Route("GET", READ, 200, setup="closed", query="offset=-1&live=sse"),
    "head": Route("HEAD", READ, 200),
    "delete": Route("DELETE", DELETE, 204),
}
WRITES = ("put", "post", "post close-only")


async def state(path: str) -> tuple[bytes, bool] | None:
    """What a route may have changed: the stream's bytes and closed flag (None: no stream)."""
    try:
        result = await streams.aread(path)
    except StreamNotFound:
        return None
    return result.body, result.closed


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
async def test_each_route_asks_for_its_action_on_its_path(only, route, action):
    auth = [await token_header("ann")]
    path = await route.prepare()
    before = await state(path)
    only.allow(action)
    response = await route.send(path, auth)
    assert [(a.action, a.path) for a in only.asked] == [(route.needs, path)]
    asked = only.asked[0]
    assert asked.user.username == "ann" and asked.scope["path"] == f"/v1/stream/{path}"
    if action == route.needs:
        assert response.status == route.ok, response.body
        return
    assert response.status == 403
    if route.method != "HEAD":
        assert response.json()["error"]["code"] == "permission_denied"
    assert "www-authenticate" not in response.headers
    assert await state(path) == before  # nothing written, nothing deleted
    if route.method in ("PUT", "POST"):
        assert response.received == 0, "a refused request must not read its body"


@pytest.mark.parametrize("route", ROUTES.values(), ids=ROUTES.keys())
async def test_anonymous_clients_get_401_with_www_authenticate(only, route):
    only.allow(*ACTIONS, prefix="nowhere/")
    path = await route.prepare()
    before = await state(path)
    response = await route.send(path, [])
    assert response.status == 401
    assert response.headers["www-authenticate"] == WWW_AUTHENTICATE
    if route.method != "HEAD":
        assert response.json()["error"]["code"] == "not_authenticated"
    assert await state(path) == before
    if route.method in ("PUT", "POST"):
        assert response.received == 0


@pytest.mark.parametrize("route", WRITES)
@pytest.mark.parametrize("user", ["anonymous", "ann"])
async def test_a_refused_write_reads_no_body_even_a_large_one(only, route, user):
    """The Content-Length an anonymous client declares costs nothing before its 401."""
    auth = [] if user == "anonymous" else [await token_header(user)]
    only.allow(READ)
    spec = ROUTES[route]
    path = await spec.prepare()
    big = b"y" * 4_000_000
    headers = [*auth, *TEXT, (b"content-length", str(len(big)).encode())]
    response = await call(spec.method, path, headers, big)
    assert response.status == (401 if user == "anonymous" else 403)
    assert response.received == 0


async def test_options_needs_no_authentication_and_asks_nothing(only):
    response = await call("OPTIONS", fresh(), [(b"origin", b"https://app.example")])
    assert response.status == 204
    assert "access-control-allow-methods" in response.headers
    assert only.asked == []


async def test_a_fork_needs_create_on_itself_and_read_on_its_source(only):
    """Read is asked on the source's path: reading the fork's own prefix does not count."""
    auth = [await token_header("ann")]
    for source in ("pub/src", "secret/src"):
        await streams.acreate(source, content_type="text/plain", data="s")
    Only.rules = {(CREATE, "mine/"), (READ, "mine/"), (READ, "pub/")}
    allowed = await call("PUT", "mine/a", [*auth, *TEXT, (b"stream-forked-from", b"pub/src")])
    assert allowed.status == 201, allowed.body
    assert [(a.action, a.path) for a in only.asked] == [(CREATE, "mine/a"), (READ, "pub/src")]
    assert (await streams.aread("mine/a")).body == b"s"

    only.asked.clear()
    url = b"http://localhost/v1/stream/secret/src"
    refused = await call("PUT", "mine/b", [*auth, *TEXT, (b"stream-forked-from", url)], b"tail")
    assert refused.status == 403 and refused.received == 0
    assert [(a.action, a.path) for a in only.asked] == [(CREATE, "mine/b"), (READ, "secret/src")]
    assert await state("mine/b") is None

    Only.rules = {(READ, "")}  # reading everything, creating nothing
    only.asked.clear()
    refused = await call("PUT", "pub/c", [*auth, *TEXT, (b"stream-forked-from", b"pub/src")])
    assert refused.status == 403
    assert await state("pub/c") is None


# -- the shipped policies ----------------------------------------------------------------------

SHIPPED = {
    # policy: who may do each action (a = anonymous, u = user, s = staff)
    "AllowAny": {READ: "aus", CREATE: "aus", APPEND: "aus", DELETE: "aus"},
    "IsAuthenticated": {READ: "us", CREATE: "us", APPEND: "us", DELETE: "us"},
    "IsStaff": {READ: "s", CREATE: "s", APPEND: "s", DELETE: "s"},
    "ReadAuthenticatedWriteStaff": {READ: "us", CREATE: "s", APPEND: "s", DELETE: "s"},
}


@pytest.mark.parametrize("name", SHIPPED)
async def test_each_shipped_policy_for_anonymous_users_and_staff(settings, name):
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "PERMISSION_POLICY": f"durable_sessions.streams.permissions.{name}",
    }
    callers = {
        "a": [],
        "u": [await token_header("user")],
        "s": [await token_header("staff", is_staff=True)],
    }
    for action, who in SHIPPED[name].items():
        for kind, headers in callers.items():
            caller = Caller({"type": "http", "headers": headers})
            if kind in who:
                await caller.authorize(action, "any/path")
                continue
            error = NotAuthenticated if kind == "a" else PermissionDenied
            with pytest.raises(error) as raised:
                await caller.authorize(action, "any/path")
            has_challenge = "WWW-Authenticate" in raised.value.headers
            assert has_challenge == (kind == "a"), (name, action, kind)


async def test_an_inactive_users_token_is_anonymous(settings):
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "PERMISSION_POLICY": "durable_sessions.streams.permissions.IsAuthenticated",
    }
    header = await token_header("gone", is_active=False)
    response = await call("GET", fresh(), [header], query="offset=-1")
    assert response.status == 401


async def test_an_async_policy_is_awaited_over_http_and_websockets(settings):
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "PERMISSION_POLICY": policy_path(InGroup),
    }
    auth = await token_header("tess")
    team = await Group.objects.acreate(name="team")
    await (await User.objects.aget(username="tess")).groups.aadd(team)
    assert (await call("PUT", "team/a", [auth, *TEXT], b"ours")).status == 201
    assert (await call("PUT", "other/a", [auth, *TEXT], b"theirs")).status == 403
    assert (await call("PUT", "other/b", [*TEXT], b"theirs")).status == 401
    assert await state("other/a") is None

    ws = socket("team/a", [auth])
    await ws.connect()
    assert json.loads(await ws.receive_from()) == {"event": "data", "data": "ours"}
    await ws.disconnect()
    await streams.acreate("other/c", content_type="text/plain")
    ws = socket("other/c", [auth])
    await ws.connect()
    assert json.loads(await ws.receive_from())["status"] == 403
    assert (await ws.receive_output())["code"] == 4403


# -- websockets --------------------------------------------------------------------------------


def socket(path: str, headers: list) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        APP, f"/ws/v1/stream/{path}?offset=-1", headers=[(b"host", b"localhost"), *headers]
    )


async def next_frame(ws: WebsocketCommunicator, event: str) -> dict:
    """The next frame of kind ``event``, skipping data and control frames."""
    while True:
        frame = json.loads(await ws.receive_from(5))
        if frame["event"] == event:
            return frame
        assert frame["event"] in ("data", "control"), frame


@pytest.mark.parametrize("action", ACTIONS)
async def test_a_websocket_asks_read_to_connect(only, action):
    auth = [await token_header("ann")]
    path = await ROUTES["get"].prepare()
    only.allow(action)
    ws = socket(path, auth)
    await ws.connect()
    first = json.loads(await ws.receive_from())
    assert [(a.action, a.path) for a in only.asked] == [(READ, path)]
    if action == READ:
        assert first == {"event": "data", "data": "x"}
        await ws.disconnect()
        return
    assert first["status"] == 403 and first["code"] == "permission_denied"
    assert (await ws.receive_output())["code"] == 4403


@pytest.mark.parametrize("frame", [{"data": "more"}, {"close": True}], ids=["append", "close"])
@pytest.mark.parametrize("action", ACTIONS)
async def test_websocket_append_and_close_frames_ask_append(only, action, frame):
    """A socket must read to open: each frame is tried with read plus one action."""
    auth = [await token_header("ann")]
    path = await ROUTES["post"].prepare()
    Only.rules = {(READ, ""), (action, "")}
    ws = socket(path, auth)
    await ws.connect()
    await next_frame(ws, "control")
    only.asked.clear()
    await ws.send_to(json.dumps({"op": "append", "id": 1, **frame}))
    if action == APPEND:
        assert (await next_frame(ws, "ack"))["id"] == 1
        await ws.disconnect()
        body = b"xmore" if "data" in frame else b"x"
        assert await state(path) == (body, "close" in frame)
        return
    error = await next_frame(ws, "error")
    assert (error["id"], error["status"], error["code"]) == (1, 403, "permission_denied")
    assert [(a.action, a.path) for a in only.asked] == [(APPEND, path)]
    assert await state(path) == (b"x", False)
    await ws.disconnect()


async def test_a_refused_websocket_append_is_asked_again_and_anonymous_is_401(only):
    path = await ROUTES["post"].prepare()
    only.allow(READ)
    ws = socket(path, [])
    await ws.connect()
    await next_frame(ws, "control")
    await ws.send_to(json.dumps({"op": "append", "id": "a", "data": "no"}))
    error = await next_frame(ws, "error")
    assert (error["id"], error["status"], error["headers"]) == (
        "a",
        401,
        {"WWW-Authenticate": WWW_AUTHENTICATE},
    )
    Only.rules = {(READ, ""), (APPEND, "")}  # the policy changes its mind: the next frame asks
    await ws.send_to(json.dumps({"op": "append", "id": "b", "data": "yes"}))
    assert (await next_frame(ws, "ack"))["id"] == "b"
    await ws.disconnect()
    assert await state(path) == (b"xyes", False)
