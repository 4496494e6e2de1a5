"""Every size limit at its edge, and CORS with an explicit origin list.

In process (the ASGI application and ``WebsocketCommunicator``), so that settings overridden
here apply: the path length, the header lengths (Producer-Id, Stream-Seq, Content-Type), the
per-read entry cap, the websocket's in-flight appends; CORS with ``CORS_ALLOWED_ORIGINS``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connection

from durable_sessions import streams
from durable_sessions.streams import reads, ws
from tests.streams.apps import APP
from tests.streams.asgi import request

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = {"PERMISSION_POLICY": "durable_sessions.streams.permissions.AllowAny"}
TEXT = ("content-type", "text/plain")


def name() -> str:
    return f"limits-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def public(settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, **PUBLIC}


def socket(path: str, offset: str = "now") -> WebsocketCommunicator:
    return WebsocketCommunicator(
        APP, f"/ws/v1/stream/{path}?offset={offset}", headers=[(b"host", b"localhost")]
    )


# -- paths and header values ----------------------------------------------------------------


async def test_a_path_may_have_max_path_length_characters(public, settings):
    longest = "p/" + "x" * 1022
    assert (await request("PUT", longest, headers=[TEXT])).status == 201
    refused = await request("PUT", longest + "x", headers=[TEXT])
    assert (refused.status, refused.code) == (400, "invalid_path")
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "MAX_PATH_LENGTH": 10}
    assert (await request("PUT", "a" * 10, headers=[TEXT])).status == 201
    assert (await request("GET", "a" * 11)).code == "invalid_path"
    assert (await request("HEAD", longest)).status == 400
    sock = socket("b" * 11)
    await sock.connect()
    assert json.loads(await sock.receive_from())["code"] == "invalid_path"
    assert (await sock.receive_output())["code"] == 4400


def test_a_path_with_a_lone_surrogate_is_refused_by_the_python_api():
    """No URL decodes to one (servers replace invalid UTF-8), but Python callers can pass it."""
    from durable_sessions.streams.errors import BadRequest

    for call in (lambda: streams.create("a/\ud800"), lambda: streams.info("a/\udfff")):
        with pytest.raises(BadRequest) as refused:
            call()
        assert refused.value.code == "invalid_path"


@pytest.mark.parametrize(
    ("header", "longest", "code"),
    [
        ("producer-id", 255, "invalid_producer"),
        ("stream-seq", 1024, "invalid_stream_seq"),
        ("content-type", 255, "invalid_content_type"),
    ],
)
async def test_header_values_at_their_length_limit(public, header, longest, code):
    path = name()
    await streams.acreate(path, content_type="text/plain")

    def headers(length: int) -> list[tuple[str, str]]:
        value = ("text/" + "x" * (length - 5)) if header == "content-type" else "s" * length
        extra = [("producer-epoch", "0"), ("producer-seq", "0")] if header == "producer-id" else []
        return [TEXT, (header, value), *extra] if header != "content-type" else [(header, value)]

    refused = await request("POST", path, headers=headers(longest + 1), body=b"x")
    assert (refused.status, refused.code) == (400, code)
    if header == "content-type":  # the longest type is valid, but not this stream's
        accepted = await request("PUT", name(), headers=headers(longest))
        assert accepted.status == 201
        assert (await request("HEAD", path)).headers["content-type"] == "text/plain"
    else:
        accepted = await request("POST", path, headers=headers(longest), body=b"x")
        assert accepted.status in (200, 204)
    assert (await streams.aread(path)).body == (b"" if header == "content-type" else b"x")


async def test_websocket_seq_and_producer_id_at_their_length_limit(public):
    path = name()
    await streams.acreate(path, content_type="text/plain")
    sock = socket(path)
    await sock.connect()
    await sock.receive_from()
    frames = [
        ({"seq": "s" * 1025}, "invalid_stream_seq"),
        ({"producer": {"id": "p" * 256, "epoch": 0, "seq": 0}}, "invalid_producer"),
        ({"seq": "s" * 1024, "producer": {"id": "p" * 255, "epoch": 0, "seq": 0}}, None),
    ]
    for ref, (options, code) in enumerate(frames):
        frame = {"op": "append", "id": ref, "data": "x", **options}
        await sock.send_to(text_data=json.dumps(frame))
        while True:
            answer = json.loads(await sock.receive_from())
            if answer.get("id") == ref:
                break
        assert answer["event"] == ("ack" if code is None else "error")
        assert answer.get("code") == code
    assert (await streams.aread(path)).body == b"x"
    await sock.disconnect()


# -- the per-read entry cap -----------------------------------------------------------------


async def test_a_read_returns_at_most_max_read_entries(public, monkeypatch):
    monkeypatch.setattr(reads, "MAX_READ_ENTRIES", 3)
    path = name()
    await streams.acreate(path, content_type="application/json")
    for i in range(10):
        await streams.aappend_json(path, [i, i])  # 10 tiny entries of 2 messages
    first = await request("GET", path, query="offset=-1")
    assert first.json() == [0, 0, 1, 1, 2, 2]
    assert "stream-up-to-date" not in first.headers
    seen, offset = [], "-1"
    while True:
        page = await request("GET", path, query=f"offset={offset}")
        assert len(page.json()) <= 6
        seen += page.json()
        offset = page.headers["stream-next-offset"]
        if "stream-up-to-date" in page.headers:
            break
    assert seen == [i for i in range(10) for _ in range(2)]
    result = await streams.aread(path, "-1")
    assert result.count == 6 and not result.up_to_date


# -- the websocket's appends in flight ------------------------------------------------------


class HeldWrites:
    """Another connection holds what the log's writer needs to commit an append to ``path``:
    the stream's row (Postgres) or the database's write lock (SQLite)."""

    def __init__(self, path: str) -> None:
        settings = connection.settings_dict
        if connection.vendor == "postgresql":
            import psycopg

            self.conn = psycopg.connect(
                host=settings["HOST"] or "127.0.0.1",
                port=settings["PORT"] or 5432,
                user=settings["USER"] or "postgres",
                password=settings["PASSWORD"] or None,
                dbname=settings["NAME"],
            )
            self.conn.execute(
                "SELECT id FROM durable_sessions_stream WHERE path = %s FOR UPDATE", [path]
            )
        else:
            self.conn = sqlite3.connect(settings["NAME"], isolation_level=None, timeout=30)
            self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.rollback() if hasattr(self.conn, "pgconn") else self.conn.execute("ROLLBACK")
        self.conn.close()


async def until(predicate, timeout: float = 10) -> None:
    """Poll ``predicate`` until it holds, failing after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_frames_stop_being_read_while_max_in_flight_appends_wait(public):
    path = name()
    await streams.acreate(path, content_type="application/json")
    sock = socket(path)
    await sock.connect()
    await sock.receive_from()  # the first control frame
    held = HeldWrites(path)
    try:
        limit = ws.MAX_IN_FLIGHT
        for i in range(limit - 1):
            await sock.send_to(text_data=json.dumps({"op": "append", "id": i, "data": i}))
        await sock.send_to(text_data='{"op": "ping", "id": "below"}')
        # One slot left: frames are still read, so the ping is answered while nothing commits.
        assert json.loads(await sock.receive_from(10)) == {"event": "pong", "id": "below"}
        for i in (limit - 1, limit):  # the last slot, then one append too many
            await sock.send_to(text_data=json.dumps({"op": "append", "id": i, "data": i}))
        await sock.send_to(text_data='{"op": "ping", "id": "above"}')
        await until(lambda: sock.input_queue.qsize() == 1)  # everything taken but the ping
        assert await sock.receive_nothing(0.5)  # no pong, no ack: the socket stopped reading
        assert sock.input_queue.qsize() == 1
    finally:
        held.release()
    answers = []
    while len([a for a in answers if a["event"] in ("ack", "pong")]) < limit + 2:
        frame = json.loads(await sock.receive_from(10))
        if frame["event"] in ("ack", "pong", "error"):
            answers.append(frame)
    acks = [a["id"] for a in answers if a["event"] == "ack"]
    assert acks == list(range(limit + 1))
    pong = answers.index({"event": "pong", "id": "above"})
    assert any(a["event"] == "ack" for a in answers[:pong])  # read only once an ack freed a slot
    assert (await streams.aread(path)).messages() == list(range(limit + 1))
    await sock.disconnect()


# -- CORS with an explicit origin list ------------------------------------------------------

APP_ORIGIN = "https://app.example"


@pytest.fixture
def listed_origin(settings):
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        **PUBLIC,
        "CORS_ALLOWED_ORIGINS": [APP_ORIGIN],
        "MAX_APPEND_BYTES": 1000,
    }


async def responses_for(origin: str | None) -> dict[str, object]:
    """One response of each kind, successes, errors and a preflight, from ``origin``."""
    sent = [] if origin is None else [("origin", origin)]
    path, closed = name(), name()
    await streams.acreate(closed, content_type="text/plain", data="x", closed=True)
    return {
        "create": await request("PUT", path, headers=[*sent, TEXT]),
        "append": await request("POST", path, headers=[*sent, TEXT], body=b"a"),
        "read": await request("GET", path, headers=sent, query="offset=-1"),
        "head": await request("HEAD", path, headers=sent),
        "long-poll 204": await request(
            "GET", path, headers=sent, query="offset=now&live=long-poll"
        ),
        "sse of a closed stream": await request(
            "GET", closed, headers=sent, query="offset=-1&live=sse"
        ),
        "404": await request("GET", name(), headers=sent),
        "400": await request("GET", path, headers=sent, query="offset=zz"),
        "405": await request("PATCH", path, headers=sent),
        "413": await request("POST", path, headers=[*sent, TEXT, ("content-length", "1001")]),
        "delete": await request("DELETE", path, headers=sent),
        "preflight": await request(
            "OPTIONS",
            path,
            headers=[
                *sent,
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "producer-id"),
            ],
        ),
    }


async def test_a_listed_origin_gets_its_own_origin_and_credentials(listed_origin):
    for kind, response in (await responses_for(APP_ORIGIN)).items():
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN, kind
        assert response.headers["access-control-allow-credentials"] == "true", kind
        assert "Stream-Next-Offset" in response.headers["access-control-expose-headers"], kind
        assert response.headers["vary"] == "Origin", kind
    preflight = (await responses_for(APP_ORIGIN))["preflight"]
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-headers"] == "producer-id"
    assert "POST" in preflight.headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "https://app.example.evil", "null", None]
)
async def test_a_refused_or_missing_origin_gets_no_cors_header_but_vary(listed_origin, origin):
    for kind, response in (await responses_for(origin)).items():
        cors = [name for name, _ in response.header_list if name.startswith("access-control-")]
        assert cors == [], (kind, cors)
        assert [v for k, v in response.header_list if k == "vary"] == ["Origin"], kind
    assert (await responses_for(origin))["preflight"].status == 204


async def test_a_wildcard_allows_any_origin_without_credentials(public, settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "CORS_ALLOWED_ORIGINS": ["*"]}
    response = await request("GET", name(), headers=[("origin", "https://any.example")])
    assert response.status == 404
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers
