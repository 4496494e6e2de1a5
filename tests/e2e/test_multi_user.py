"""Many users, many devices, one session: real HTTP and real websockets on a real daphne process.

Alice (the owner) on two devices and Bob (a member) on one follow the session's stream over
websockets (``/ws/v1/stream/sessions/<id>``, ``Authorization: Token``), and so does Carol, a
viewer. They all post at once through ``POST /v1/sessions/<id>/messages``; every socket then
materializes (``state.SessionState``) the same messages in the same order as
``GET .../messages``. The viewer's writes are 403; nobody acts as someone else (a forged
``actorId`` or ``X-Actor-Id`` changes nothing; websocket appends and HTTP POSTs to the session
stream are refused for everyone, the owner included); an outsider and an anonymous client get
403 and 401 on every route of the OpenAPI schema, so routes added later are covered too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from durable_sessions import state
from tests.e2e.routes import Route, routes
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)

PER_DEVICE = 12  # messages each device posts
# Routes a viewer may call with a method other than GET: PUT of an existing session confirms it.
VIEWER_MAY = {
    ("PUT", "/v1/sessions/{id}"),
    # viewers are present too (docs/presence.md): their own device, nothing else
    ("POST", "/v1/sessions/{id}/login"),
    ("POST", "/v1/sessions/{id}/logout"),
    ("POST", "/v1/sessions/{id}/heartbeat"),
}
# Routes anonymous clients may call (the schema says so with ``{}`` in their security).
PUBLIC = {"GET /v1/schema/"}


@dataclass
class World:
    """The server, the session, and who is who."""

    url: str
    sid: str
    tokens: dict[str, dict[str, str]]  # username -> Authorization header

    @property
    def ws_url(self) -> str:
        return f"{self.url.replace('http://', 'ws://')}/ws/v1/stream/sessions/{self.sid}"


def token(user: User) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


@pytest.fixture
def world(private_server) -> World:
    """Alice owns a session, Bob is a member, Carol a viewer; Dave is in no session."""
    tokens = {name: token(User.objects.create_user(name)) for name in ("alice", "bob", "carol")}
    tokens["dave"] = token(User.objects.create_user("dave"))
    with httpx.Client(base_url=f"{private_server.url}/v1/", timeout=10) as api:
        created = api.post("sessions/", json={"title": "Team"}, headers=tokens["alice"])
        assert created.status_code == 201, created.text
        sid = created.json()["sessionId"]
        for name, role in (("bob", "member"), ("carol", "viewer")):
            invited = api.post(
                f"sessions/{sid}/members",
                json={"username": name, "role": role},
                headers=tokens["alice"],
            )
            assert invited.status_code == 201, invited.text
    return World(private_server.url, sid, tokens)


@dataclass
class Follower:
    """One websocket on the session stream: the events of every batch whose control frame has
    arrived, the offset after them, and every other frame."""

    socket: ClientConnection
    events: list[dict] = field(default_factory=list)
    offset: str | None = None
    others: list[dict] = field(default_factory=list)
    closed: int | None = None

    async def run(self) -> None:
        pending: list[dict] = []
        try:
            async for text in self.socket:
                frame = json.loads(text)
                if frame["event"] == "data":
                    pending = frame["data"]
                elif frame["event"] == "control":
                    self.events += pending  # a batch counts once its control frame is in
                    pending = []
                    self.offset = frame["data"]["streamNextOffset"]
                else:
                    self.others.append(frame)
        except ConnectionClosed:
            pass  # a refusal: its close code is kept
        finally:
            self.closed = self.socket.close_code

    def materialized(self) -> list[dict]:
        session = state.SessionState()
        session.apply_all(self.events)
        return [m.as_dict() for m in session.messages()]


@contextlib.asynccontextmanager
async def following(world: World, who: str, offset: str = "-1") -> AsyncIterator[Follower]:
    """A socket of ``who`` (a username, or None: anonymous) following the session."""
    headers = world.tokens.get(who, {})
    async with connect(
        f"{world.ws_url}?offset={offset}", additional_headers=headers, max_size=None
    ) as socket:
        follower = Follower(socket)
        task = asyncio.create_task(follower.run())
        try:
            yield follower
        finally:
            await socket.close()
            await task


async def post_all(
    api: httpx.AsyncClient, world: World, who: str, device: str, n: int
) -> list[tuple[int, str]]:
    """``who`` posts ``n`` messages from ``device``, one after the other; (status, messageId)."""
    answers = []
    for k in range(n):
        answer = await api.post(
            f"sessions/{world.sid}/messages",
            json={"content": f"{who}/{device} #{k}", "txid": str(uuid.uuid4())},
            headers=world.tokens[who],
        )
        answers.append((answer.status_code, answer.json().get("messageId", "")))
    return answers


async def test_everyone_sees_the_same_messages_in_the_same_order(world):
    async with (
        httpx.AsyncClient(base_url=f"{world.url}/v1/", timeout=20) as api,
        following(world, "alice") as laptop,
        following(world, "alice") as phone,
        following(world, "bob") as desktop,
        following(world, "carol") as viewer,
    ):
        sockets = [laptop, phone, desktop, viewer]
        await until(lambda: all(s.offset for s in sockets), what="every socket's first read")
        posted = await asyncio.gather(
            post_all(api, world, "alice", "laptop", PER_DEVICE),
            post_all(api, world, "alice", "phone", PER_DEVICE),
            post_all(api, world, "bob", "desktop", PER_DEVICE),
            post_all(api, world, "carol", "tablet", 4),
        )
        *writers, refused = posted
        assert all(code == 200 for answers in writers for code, _ in answers), writers
        assert [code for code, _ in refused] == [403] * 4
        page = await api.get(
            f"sessions/{world.sid}/messages", params={"limit": 500}, headers=world.tokens["bob"]
        )
        assert page.status_code == 200, page.text
        body = page.json()
        await until(
            lambda: all(s.offset == body["offset"] for s in sockets),
            what="every socket at the offset of the materialized read",
        )
    expected = body["messages"]
    assert len(expected) == 3 * PER_DEVICE and body["hasMore"] is False
    for socket in sockets:
        assert socket.materialized() == expected
        assert socket.others == []
    authors = {m["id"]: m["actorId"] for m in expected}
    for who, answers in zip(("alice", "alice", "bob"), writers, strict=True):
        assert {authors[mid] for _, mid in answers} == {who}
    # Each device's messages in the order it posted them, and createdAt never decreasing.
    order = [m["id"] for m in expected]
    for answers in writers:
        ids = [mid for _, mid in answers]
        assert sorted(ids, key=order.index) == ids
    stamps = [e["value"]["createdAt"] for e in laptop.events]
    assert stamps == sorted(stamps)


async def test_nobody_can_act_as_someone_else(world):
    async with httpx.AsyncClient(base_url=f"{world.url}/v1/", timeout=10) as api:
        forged = await api.post(
            f"sessions/{world.sid}/messages",
            json={"content": "I am alice", "actorId": "alice", "actorType": "agent"},
            headers={**world.tokens["bob"], "X-Actor-Id": "alice"},
        )
        assert forged.status_code == 200, forged.text
        as_assistant = await api.post(
            f"sessions/{world.sid}/messages",
            json={"content": "I am the agent", "role": "assistant"},
            headers=world.tokens["bob"],
        )
        assert as_assistant.status_code == 403, as_assistant.text
        events = await api.get(f"sessions/{world.sid}/events", headers=world.tokens["alice"])
    (event,) = events.json()["events"]
    assert event["key"] == f"{forged.json()['messageId']}:0"
    assert event["value"]["actorId"] == "bob"
    assert json.loads(event["value"]["chunk"])["message"]["role"] == "user"


def forged_chunk(actor: str) -> dict[str, Any]:
    """A ``chunk`` insert in ``actor``'s name, as a client would forge it."""
    created = "2030-01-01T00:00:00.000Z"
    body = {"type": "whole-message", "message": {"id": "m", "role": "user", "parts": []}}
    value = {
        "messageId": "forged",
        "actorId": actor,
        "role": "user",
        "chunk": json.dumps(body),
        "seq": 0,
        "createdAt": created,
    }
    return {"type": "chunk", "key": "forged:0", "value": value, "headers": {"operation": "insert"}}


async def test_the_session_stream_is_written_by_nobody_but_the_service(world):
    stream = f"{world.url}/v1/stream/sessions/{world.sid}"
    async with httpx.AsyncClient(timeout=10) as http:
        before = (await http.head(stream, headers=world.tokens["alice"])).headers
        for who in ("alice", "bob", "carol"):
            async with following(world, who) as socket:
                await socket.socket.send(
                    json.dumps({"op": "append", "id": 1, "data": [forged_chunk("alice")]})
                )
                await until(lambda s=socket: s.others, what=f"the answer to {who}'s append")
                (answer,) = socket.others
                assert answer["event"] == "error" and answer["id"] == 1, answer
                assert answer["status"] == 403, answer
            for method in ("POST", "PUT", "DELETE"):
                direct = await http.request(
                    method,
                    stream,
                    json=[forged_chunk(who)],
                    headers={**world.tokens[who], "Content-Type": "application/json"},
                )
                assert direct.status_code == 403, (who, method, direct.text)
        elsewhere = f"{world.url}/v1/stream/sessions/{uuid.uuid4()}"
        created = await http.put(
            elsewhere, headers={**world.tokens["alice"], "Content-Type": "application/json"}
        )
        assert created.status_code == 403, created.text
        after = (await http.head(stream, headers=world.tokens["alice"])).headers
    assert after["stream-next-offset"] == before["stream-next-offset"]


async def test_outsiders_and_anonymous_clients_read_nothing_over_the_stream(world):
    stream = f"{world.url}/v1/stream/sessions/{world.sid}"
    async with httpx.AsyncClient(timeout=10) as http:
        for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
            outsider = await http.request(method, stream, headers=world.tokens["dave"])
            assert outsider.status_code == 403, (method, outsider.text)
            anonymous = await http.request(method, stream)
            assert anonymous.status_code == 401, (method, anonymous.text)
        live = await http.get(f"{stream}?offset=-1&live=sse", headers=world.tokens["dave"])
        assert live.status_code == 403
    for who, status, code in (("dave", 403, 4403), (None, 401, 4401)):
        async with following(world, who) as socket:  # type: ignore[arg-type]
            await until(lambda s=socket: s.closed is not None, what="the refusal")
        assert socket.events == [] and socket.offset is None
        (error,) = socket.others
        assert error["event"] == "error" and error["status"] == status and error["id"] is None
        assert socket.closed == code


@pytest.fixture
def schema(world) -> dict[str, Any]:
    answer = httpx.get(f"{world.url}/v1/schema/?format=json", headers=world.tokens["alice"])
    assert answer.status_code == 200, answer.text
    return answer.json()


def session_routes(schema: dict[str, Any]) -> list[Route]:
    found = routes(schema, overrides={"username": "alice"})
    assert len(found) >= 10, found  # the schema lists the session API
    return found


async def call(api: httpx.AsyncClient, route: Route, world: World, who: str | None) -> int:
    path = route.session_path(world.sid, {"username": "alice"})
    answer = await api.request(
        route.method,
        path,
        json=route.body,
        headers={**world.tokens.get(who or "", {}), "Content-Type": "application/json"},
    )
    return answer.status_code


async def test_an_outsider_gets_403_and_an_anonymous_client_401_on_every_route(world, schema):
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as api:
        before = await api.get(f"/v1/sessions/{world.sid}/events", headers=world.tokens["alice"])
        found = session_routes(schema)
        assert {str(r) for r in found if r.public} == PUBLIC
        for route in found:
            if not route.public:
                assert await call(api, route, world, None) == 401, route
            if route.in_session:
                assert await call(api, route, world, "dave") == 403, route
        # The routes that are not about one session are the outsider's own.
        mine = await api.get("/v1/sessions/", headers=world.tokens["dave"])
        assert world.sid not in [s["sessionId"] for s in mine.json()]
        after = await api.get(f"/v1/sessions/{world.sid}/events", headers=world.tokens["alice"])
        members = await api.get(f"/v1/sessions/{world.sid}/members", headers=world.tokens["alice"])
    assert after.json() == before.json()
    roles = {m["username"]: m["role"] for m in members.json()["members"]}
    assert roles == {"alice": "owner", "bob": "member", "carol": "viewer"}


async def test_a_viewer_reads_and_every_write_is_403(world, schema):
    async with httpx.AsyncClient(base_url=world.url, timeout=10) as api:
        found = [route for route in session_routes(schema) if route.in_session]
        assert len(found) >= 10, found
        for route in found:
            code = await call(api, route, world, "carol")
            if route.method == "GET" or (route.method, route.template) in VIEWER_MAY:
                assert code == 200, route
            else:
                assert code == 403, route
        events = await api.get(f"/v1/sessions/{world.sid}/events", headers=world.tokens["alice"])
        alive = await api.get(f"/v1/sessions/{world.sid}", headers=world.tokens["alice"])
    written = events.json()["events"]
    assert alive.status_code == 200
    assert {e["type"] for e in written} <= {"presence"}  # only carol's own device, if anything
    assert all(e["value"]["actorId"] == "carol" for e in written)
