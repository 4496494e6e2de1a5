"""The websocket endpoint (durable_sessions/streams/ws.py), in process through Channels."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from durable_sessions import streams
from durable_sessions.streams.permissions import IsAuthenticated
from tests.streams.apps import APP

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = {"PERMISSION_POLICY": "durable_sessions.streams.permissions.AllowAny"}


def socket(path: str, offset: str = "-1", headers: list | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        APP,
        f"/ws/v1/stream/{path}?offset={offset}",
        headers=[(b"host", b"localhost"), *(headers or [])],
    )


async def frames_until(ws: WebsocketCommunicator, predicate, timeout: float = 5) -> list[dict]:
    seen = []
    while True:
        frame = json.loads(await ws.receive_from(timeout))
        seen.append(frame)
        if predicate(frame):
            return seen


@pytest.fixture
def public(settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, **PUBLIC}


async def test_catch_up_then_live_frames(public):
    await streams.acreate("ws/a", content_type="application/json", data="[1, 2]")
    ws = socket("ws/a")
    connected, _ = await ws.connect()
    assert connected
    assert json.loads(await ws.receive_from()) == {"event": "data", "data": [1, 2]}
    control = json.loads(await ws.receive_from())
    assert control["event"] == "control" and control["data"]["upToDate"] is True
    await streams.aappend_json("ws/a", [3])
    assert json.loads(await ws.receive_from()) == {"event": "data", "data": [3]}
    assert json.loads(await ws.receive_from())["event"] == "control"
    await streams.aclose("ws/a")
    final = json.loads(await ws.receive_from())
    assert final["data"] == {
        "streamNextOffset": final["data"]["streamNextOffset"],
        "upToDate": True,
        "streamClosed": True,
    }
    assert (await ws.receive_output(5))["code"] == 1000


async def test_many_appends_in_flight_are_acked_in_order(public):
    await streams.acreate("ws/b", content_type="application/json")
    ws = socket("ws/b", "now")
    await ws.connect()
    await ws.receive_from()  # the first control frame
    for i in range(100):
        await ws.send_to(text_data=json.dumps({"op": "append", "id": i, "data": {"i": i}}))
    acks = [
        f
        for f in await frames_until(ws, lambda f: f.get("id") == 99 and f["event"] == "ack")
        if f["event"] == "ack"
    ]
    assert [ack["id"] for ack in acks] == list(range(100))
    offsets = [ack["streamNextOffset"] for ack in acks]
    assert offsets == sorted(offsets) and len(set(offsets)) == 100
    assert [m["i"] for m in (await streams.aread("ws/b")).messages()] == list(range(100))
    await ws.disconnect()


async def test_text_and_binary_streams_and_producers(public):
    await streams.acreate("ws/text", content_type="text/plain", data="hé")
    ws = socket("ws/text")
    await ws.connect()
    assert json.loads(await ws.receive_from()) == {"event": "data", "data": "hé"}
    await ws.receive_from()
    frame = {"op": "append", "id": "p", "data": "!", "producer": {"id": "w", "epoch": 0, "seq": 0}}
    await ws.send_to(text_data=json.dumps(frame))
    await ws.send_to(text_data=json.dumps(frame))  # a retry: deduplicated
    events = await frames_until(ws, lambda f: f.get("duplicate"))
    acks = [f for f in events if f["event"] == "ack"]
    assert acks[0]["producerSeq"] == 0 and acks[1]["duplicate"] is True
    assert (await streams.aread("ws/text")).body == "hé!".encode()
    await ws.disconnect()

    await streams.acreate("ws/bin", content_type="application/octet-stream", data=b"\x00\xff")
    ws = socket("ws/bin")
    await ws.connect()
    assert json.loads(await ws.receive_from()) == {
        "event": "data",
        "data": "AP8=",
        "encoding": "base64",
    }
    await ws.receive_from()
    await ws.send_to(
        text_data=json.dumps({"op": "append", "id": 1, "data": "AQ==", "encoding": "base64"})
    )
    await frames_until(ws, lambda f: f["event"] == "ack")
    assert (await streams.aread("ws/bin")).body == b"\x00\xff\x01"
    await ws.disconnect()


@pytest.mark.parametrize(
    ("frame", "status", "code"),
    [
        ("not json", 400, "invalid_frame"),
        ("[1, 2]", 400, "invalid_frame"),
        ('{"op": "fly", "id": 7}', 400, "unknown_op"),
        ('{"op": "append", "id": 7}', 400, "empty_body"),
        ('{"op": "append", "id": 7, "data": []}', 400, "empty_array"),
        ('{"op": "append", "id": 7, "data": NaN}', 400, "invalid_json"),
        ('{"op": "append", "id": 7, "data": 1, "seq": 5}', 400, "invalid_stream_seq"),
        (
            '{"op": "append", "id": 7, "data": 1, "producer": {"id": "p", "epoch": "0", "seq": 0}}',
            400,
            "invalid_producer",
        ),
        (
            '{"op": "append", "id": 7, "data": 1, "producer": {"id": "p", "epoch": -1, "seq": 0}}',
            400,
            "invalid_producer",
        ),
        (
            '{"op": "append", "id": 7, "data": 1, "producer": {"id": "p", "epoch": 0, "seq": 0,'
            ' "sequence": 1}}',
            400,
            "invalid_producer",
        ),
        # Options of a wrong type or an unknown value are refused, never ignored:
        ('{"op": "append", "id": 7, "data": 1, "close": "yes"}', 400, "invalid_frame"),
        ('{"op": "append", "id": 7, "data": 1, "close": 1}', 400, "invalid_frame"),
        ('{"op": "append", "id": 7, "close": "true"}', 400, "invalid_frame"),
        ('{"op": "append", "id": 7, "data": 1, "encoding": "base64"}', 400, "invalid_frame"),
        ('{"op": "append", "id": 7, "data": "AQ==", "encoding": "hex"}', 400, "invalid_frame"),
        ('{"op": "append", "id": 7, "data": 1, "clsoe": true}', 400, "unknown_field"),
        ('{"op": "append", "id": 7, "data": 1, "Close": true}', 400, "unknown_field"),
        ('{"op": "append", "id": 7, "data": 1, "seq": ["1"]}', 400, "invalid_stream_seq"),
        ('{"op": "append", "id": 7, "data": 1, "producer": "p"}', 400, "invalid_producer"),
        ('{"op": "append", "id": 7, "data": [1, NaN]}', 400, "invalid_json"),
        # Text no column can hold (Postgres refuses NUL; lone surrogates are not UTF-8):
        ('{"op": "append", "id": 7, "data": 1, "seq": "a\\u0000"}', 400, "invalid_stream_seq"),
        ('{"op": "append", "id": 7, "data": 1, "seq": "\\ud800"}', 400, "invalid_stream_seq"),
        (
            '{"op": "append", "id": 7, "data": 1, "producer": {"id": "\\udfff", "epoch": 0,'
            ' "seq": 0}}',
            400,
            "invalid_producer",
        ),
        (
            '{"op": "append", "id": 7, "data": 1, "producer": {"id": "p\\u0000", "epoch": 0,'
            ' "seq": 0}}',
            400,
            "invalid_producer",
        ),
    ],
)
async def test_bad_frames_get_error_frames_and_write_nothing(public, frame, status, code):
    await streams.acreate("ws/bad", content_type="application/json", data="[0]")
    ws = socket("ws/bad")
    await ws.connect()
    await ws.receive_from()
    await ws.receive_from()
    await ws.send_to(text_data=frame)
    error = json.loads(await ws.receive_from())
    assert error["event"] == "error" and error["status"] == status and error["code"] == code
    if code not in ("invalid_frame", "unknown_op") or frame.startswith('{"op": "append"'):
        assert error["id"] == 7
    await ws.send_to(bytes_data=b"\x00")
    assert json.loads(await ws.receive_from())["code"] == "invalid_frame"
    await ws.send_to(text_data=json.dumps({"op": "ping", "id": 1}))  # still alive
    assert json.loads(await ws.receive_from()) == {"event": "pong", "id": 1}
    assert (await streams.aread("ws/bad")).messages() == [0]
    await ws.disconnect()


async def test_a_lone_surrogate_in_text_data_is_an_error_frame_and_writes_nothing(public):
    """On a text stream ``data`` is written as UTF-8: a lone surrogate cannot be (found by
    test_fuzz: the socket died on a UnicodeEncodeError)."""
    await streams.acreate("ws/text", content_type="text/plain", data=b"a")
    ws = socket("ws/text")
    await ws.connect()
    await ws.receive_from()
    await ws.receive_from()
    await ws.send_to(text_data='{"op": "append", "id": 7, "data": "\\ud806"}')
    error = json.loads(await ws.receive_from())
    assert (error["event"], error["status"], error["code"], error["id"]) == (
        "error",
        400,
        "invalid_frame",
        7,
    )
    await ws.send_to(text_data=json.dumps({"op": "ping", "id": 1}))  # still alive
    assert json.loads(await ws.receive_from()) == {"event": "pong", "id": 1}
    assert (await streams.aread("ws/text")).data == b"a"
    await ws.disconnect()


@pytest.mark.parametrize(
    ("ref", "echoed"),
    [
        ('"a"', "a"),
        ("7", 7),
        ("1.5", 1.5),
        ("true", True),
        ("null", None),
        ('{"a": 1}', "refused"),
        ("[1]", "refused"),
        ("1e400", "refused"),  # Python reads it as infinite: it could not be echoed as JSON
        ("NaN", "refused"),
    ],
)
async def test_a_frame_id_is_echoed_only_when_it_is_a_json_scalar(public, ref, echoed):
    """An object or array id is refused: the error's id is null and nothing is written."""
    await streams.acreate("ws/ids", content_type="application/json", data="[0]")
    ws = socket("ws/ids", "now")
    await ws.connect()
    await ws.receive_from()
    await ws.send_to(text_data=f'{{"op": "ping", "id": {ref}}}')
    pong = json.loads(await ws.receive_from())
    await ws.send_to(text_data=f'{{"op": "append", "id": {ref}, "data": 1}}')
    answers = await frames_until(ws, lambda f: f["event"] in ("ack", "error"))
    answer = answers[-1]
    if echoed == "refused":
        assert pong["event"] == "error" and pong["id"] is None
        assert answer["event"] == "error" and answer["id"] is None and answer["status"] == 400
        assert (await streams.aread("ws/ids")).messages() == [0]
    else:
        assert pong == {"event": "pong", "id": echoed}
        assert answer["event"] == "ack" and answer["id"] == echoed
        assert (await streams.aread("ws/ids")).messages() == [0, 1]
    await ws.disconnect()


async def test_null_options_are_absent_and_false_close_leaves_the_stream_open(public):
    await streams.acreate("ws/nulls", content_type="text/plain")
    ws = socket("ws/nulls", "now")
    await ws.connect()
    await ws.receive_from()
    frame = {"op": "append", "id": 1, "data": "a", "close": False, "seq": None, "producer": None}
    await ws.send_to(text_data=json.dumps({**frame, "encoding": None}))
    assert (await frames_until(ws, lambda f: f["event"] in ("ack", "error")))[-1]["event"] == "ack"
    info = await streams.ainfo("ws/nulls")
    assert not info.closed and (await streams.aread("ws/nulls")).body == b"a"
    await ws.disconnect()


async def test_oversize_frames_and_wrong_types_on_a_text_stream(public, settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "MAX_APPEND_BYTES": 1000}
    await streams.acreate("ws/small", content_type="text/plain")
    ws = socket("ws/small")
    await ws.connect()
    await ws.receive_from()
    await ws.send_to(text_data=json.dumps({"op": "append", "id": 1, "data": "x" * 70_000}))
    assert json.loads(await ws.receive_from())["status"] == 413
    await ws.send_to(text_data=json.dumps({"op": "append", "id": 2, "data": "y" * 1001}))
    assert json.loads(await ws.receive_from())["status"] == 413
    await ws.send_to(text_data=json.dumps({"op": "append", "id": 3, "data": {"not": "text"}}))
    assert json.loads(await ws.receive_from())["code"] == "invalid_frame"
    await ws.send_to(
        text_data=json.dumps({"op": "append", "id": 4, "data": "%%", "encoding": "base64"})
    )
    assert json.loads(await ws.receive_from())["code"] == "invalid_frame"
    assert (await streams.aread("ws/small")).body == b""
    await ws.disconnect()


async def test_appending_to_a_closed_stream_is_an_error_frame(public):
    await streams.acreate("ws/closed", content_type="application/json", data="[1]")
    ws = socket("ws/closed", "now")
    await ws.connect()
    await ws.receive_from()
    last = {"op": "append", "id": "last", "data": 2, "close": True}
    late = {"op": "append", "id": "late", "data": 3}
    await ws.send_to(text_data=json.dumps(last))
    await ws.send_to(text_data=json.dumps(late))
    frames = []
    while True:  # the acks of appends in flight go out before the socket closes
        output = await ws.receive_output(5)
        if output["type"] == "websocket.close":
            break
        frames.append(json.loads(output["text"]))
    assert output["code"] == 1000
    assert frames[-1]["event"] != "control" or frames[-1]["data"].get("streamClosed")
    by_id = {f["id"]: f for f in frames if f["event"] in ("ack", "error")}
    assert by_id["last"]["event"] == "ack" and by_id["last"]["streamClosed"] is True
    assert by_id["late"]["status"] == 409 and by_id["late"]["code"] == "stream_closed"
    assert (await streams.aread("ws/closed")).messages() == [1, 2]


@pytest.mark.parametrize(
    ("path", "code"), [("ws/none", 4404), ("a//b", 4400), ("ws/x?offset=zz", 4400)]
)
async def test_refused_connections_close_with_documented_codes(public, path, code):
    ws = WebsocketCommunicator(APP, f"/ws/v1/stream/{path}", headers=[(b"host", b"localhost")])
    await ws.connect()
    if path == "ws/x?offset=zz":
        await streams.acreate("ws/x", content_type="text/plain")
    error = json.loads(await ws.receive_from())
    assert error["event"] == "error"
    assert (await ws.receive_output())["code"] == code


async def test_policy_origin_and_token(settings):
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "PERMISSION_POLICY": "durable_sessions.streams.permissions.IsStaff",
    }
    await streams.acreate("ws/private", content_type="text/plain", data="secret")
    ws = socket("ws/private")
    await ws.connect()
    assert json.loads(await ws.receive_from())["status"] == 401
    assert (await ws.receive_output())["code"] == 4401

    user = await User.objects.acreate_user("ann", password="pw")
    token = await Token.objects.acreate(user=user)
    ws = socket("ws/private", headers=[(b"authorization", f"Token {token.key}".encode())])
    await ws.connect()
    assert json.loads(await ws.receive_from())["status"] == 403  # not staff
    assert (await ws.receive_output())["code"] == 4403

    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "PERMISSION_POLICY": IsAuthenticated.__module__ + ".IsAuthenticated",
    }
    ws = socket(
        "ws/private",
        headers=[
            (b"authorization", f"Token {token.key}".encode()),
            (b"origin", b"https://anywhere.example"),
        ],
    )
    await ws.connect()
    assert json.loads(await ws.receive_from()) == {"event": "data", "data": "secret"}
    await ws.disconnect()


async def test_a_session_cookie_from_a_foreign_origin_cannot_even_read(settings, async_client):
    await User.objects.acreate_user("eve", password="pw")
    assert await async_client.alogin(username="eve", password="pw")
    cookie = async_client.cookies["sessionid"].value.encode()
    await streams.acreate("ws/cookie", content_type="text/plain", data="mine")
    foreign = socket(
        "ws/cookie",
        headers=[(b"cookie", b"sessionid=" + cookie), (b"origin", b"https://evil.example")],
    )
    await foreign.connect()
    assert json.loads(await foreign.receive_from())["code"] == "csrf_origin"
    assert (await foreign.receive_output())["code"] == 4403
    same = socket(
        "ws/cookie", headers=[(b"cookie", b"sessionid=" + cookie), (b"origin", b"http://localhost")]
    )
    await same.connect()
    assert json.loads(await same.receive_from()) == {"event": "data", "data": "mine"}
    await same.disconnect()


async def test_a_daphne_socket_without_scheme_from_its_own_site_may_use_the_session(async_client):
    from durable_sessions.auth import same_origin_or_allowed

    scope = {
        "type": "websocket",
        "headers": [(b"host", b"chat.example"), (b"origin", b"https://chat.example")],
    }
    assert same_origin_or_allowed(scope, [])
    uvicorn_scope = {**scope, "scheme": "wss"}
    assert same_origin_or_allowed(uvicorn_scope, [])
    assert not same_origin_or_allowed({**scope, "scheme": "ws"}, [])  # http page expected
    foreign = {
        "type": "websocket",
        "headers": [(b"host", b"chat.example"), (b"origin", b"https://evil.example")],
    }
    assert not same_origin_or_allowed(foreign, [])


async def test_a_repeated_offset_is_refused(public):
    ws = WebsocketCommunicator(
        APP, "/ws/v1/stream/ws/x?offset=-1&offset=now", headers=[(b"host", b"localhost")]
    )
    await ws.connect()
    assert json.loads(await ws.receive_from())["code"] == "invalid_query"
    assert (await ws.receive_output())["code"] == 4400


async def test_a_socket_cut_off_for_not_reading_leaves_no_subscription(public, settings):
    """The ASGI server's send blocks (as uvicorn's does for a full socket), close frame too."""
    from durable_sessions.streams.hub import get_hub

    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "WEBSOCKET_SEND_TIMEOUT": 0.1}
    await streams.acreate("ws/stall", content_type="application/json")
    blocked = asyncio.Event()

    async def server(scope, receive, send):
        async def full_socket_send(message):
            if blocked.is_set():
                await asyncio.Event().wait()  # the socket is full: this send never completes
            await send(message)

        await APP(scope, receive, full_socket_send)

    sock = WebsocketCommunicator(
        server, "/ws/v1/stream/ws/stall?offset=now", headers=[(b"host", b"localhost")]
    )
    await sock.connect()
    await sock.receive_from()
    assert get_hub().subscriber_count() == 1
    blocked.set()
    await streams.aappend_json("ws/stall", [1])
    # The application ends by itself: the watchdog cut the connection. (Not sock.wait(): on a
    # timeout it cancels the application and returns as if it had ended.)
    ended, _ = await asyncio.wait([sock.future], timeout=5)
    assert ended, "the stalled socket was not cut off"
    assert get_hub().subscriber_count() == 0


@pytest.mark.parametrize("error", [OSError, RuntimeError])
async def test_a_send_from_the_hubs_pass_that_fails_ends_the_socket(public, error, caplog):
    """A client gone (OSError, as uvicorn's ClientDisconnected) ends it quietly; anything else
    is logged. Either way the socket is closed with 1011 and the hub's pass goes on."""
    await streams.acreate("ws/refused", content_type="application/json")
    refusing = asyncio.Event()

    async def server(scope, receive, send):
        async def refusing_send(message):
            if refusing.is_set() and message["type"] == "websocket.send":
                raise error("the server refuses the frame")
            await send(message)

        await APP(scope, receive, refusing_send)

    refused = WebsocketCommunicator(
        server, "/ws/v1/stream/ws/refused?offset=now", headers=[(b"host", b"localhost")]
    )
    other = socket("ws/refused", "now")
    for ws in (refused, other):
        await ws.connect()
        await ws.receive_from()
    refusing.set()
    await streams.aappend_json("ws/refused", [1])
    closed = await refused.receive_output(5)
    assert closed["type"] == "websocket.close" and closed["code"] == 1011
    assert json.loads(await other.receive_from()) == {"event": "data", "data": [1]}
    logged = [r for r in caplog.records if "direct send" in r.getMessage()]
    assert bool(logged) == (error is RuntimeError)
    await refused.disconnect()
    await other.disconnect()


# -- against a real daphne process ---------------------------------------------------------


def test_a_client_that_leaves_is_not_logged_as_an_error(public_server):
    """Clients close while the server is sending them a catch-up and live appends: daphne then
    refuses sends (autobahn's ``Disconnected``), which is a client gone, not a server error."""
    import threading
    import uuid

    import httpx
    from websockets.sync.client import connect

    path = f"ws-leave-{uuid.uuid4().hex[:12]}"
    base = f"{public_server.url}/v1/stream/{path}"
    page = json.dumps([{"text": "x" * 1000}] * 300)  # ~300 KB per append: a catch-up of pages
    with httpx.Client(timeout=10) as http:
        assert http.put(base, headers={"content-type": "application/json"}).status_code == 201
        for _ in range(12):
            http.post(base, headers={"content-type": "application/json"}, content=page)
    start = len(public_server.output())
    stop = threading.Event()

    def keep_appending() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                http.post(base, headers={"content-type": "application/json"}, content="[1]")

    appender = threading.Thread(target=keep_appending)
    appender.start()
    try:
        url = f"ws://127.0.0.1:{public_server.port}/ws/v1/stream/{path}?offset=-1"
        for _ in range(20):
            with connect(url, max_size=None) as client:
                client.recv(timeout=10)  # the first page; then leave in the middle of the rest
    finally:
        stop.set()
        appender.join()
    # Every follower has ended once its socket is gone: a last socket answers normally.
    with connect(url.replace("offset=-1", "offset=now"), max_size=None) as client:
        assert json.loads(client.recv(timeout=10))["event"] == "control"
    log = public_server.output()[start:]
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
