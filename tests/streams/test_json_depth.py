"""The JSON nesting limit (MAX_JSON_DEPTH) wherever a message enters: HTTP bodies on a real
server and in process, websocket frames, and the Python API. Bad JSON of any shape is a 400 or
an error frame, never a 500, a dead socket or a stored message that readers cannot parse."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from channels.testing import WebsocketCommunicator

from durable_sessions import streams
from durable_sessions.streams.errors import BadRequest, StreamNotFound
from tests.streams.apps import APP
from tests.streams.asgi import request

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = {"PERMISSION_POLICY": "durable_sessions.streams.permissions.AllowAny"}
JSON = {"content-type": "application/json"}
DEEP = "[" * 100_000 + "]" * 100_000  # 200 KB of brackets: RecursionError for Python's json
DEEP_OBJECTS = '{"a":' * 40_000 + "1" + "}" * 40_000


def name() -> str:
    return f"depth-{uuid.uuid4().hex[:12]}"


def nested(levels: int, inner: str = "1") -> str:
    return "[" * levels + inner + "]" * levels


def nested_value(levels: int):
    value = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.fixture
def public(settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, **PUBLIC}


def test_deep_bodies_are_400_on_a_real_server_and_write_nothing(public_server):
    with httpx.Client(base_url=f"{public_server.url}/v1/stream/", timeout=30) as client:
        path = name()
        assert client.put(path, headers=JSON, content="[1]").status_code == 201
        for body in (DEEP, DEEP_OBJECTS, nested(130)):
            response = client.post(path, headers=JSON, content=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["code"] == "json_too_deep"
        fresh = name()
        refused = client.put(fresh, headers=JSON, content=DEEP)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "json_too_deep"
        assert client.head(fresh).status_code == 404
        assert client.post(path, headers=JSON, content=nested(129)).status_code == 204
        assert client.get(path).json() == [1, nested_value(128)]


async def test_the_http_limit_follows_the_setting(public, settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "MAX_JSON_DEPTH": 3}
    path = name()
    created = await request("PUT", path, headers=JSON.items(), body=nested(4).encode())
    assert created.status == 201
    for body in (nested(5), '{"a":[[[1]]]}', '[{"a":[[[1]]]}]'):
        response = await request("POST", path, headers=JSON.items(), body=body.encode())
        assert (response.status, response.code) == (400, "json_too_deep"), body
    ok = await request("POST", path, headers=JSON.items(), body=b'[{"a":[[1]]}, "[[[[[["]')
    assert ok.status == 204
    assert (await streams.aread(path)).messages() == [nested_value(3), {"a": [[1]]}, "[[[[[["]


def test_the_python_api_refuses_values_and_texts_past_the_limit():
    path = name()
    streams.create(path, content_type="application/json")
    for data in (DEEP, nested(130)):
        with pytest.raises(BadRequest) as refused:
            streams.append(path, data)
        assert refused.value.code == "json_too_deep"
    for value in (nested_value(129), nested_value(50_000)):
        with pytest.raises(BadRequest) as refused:
            streams.append_json(path, [value])
        assert refused.value.code == "json_too_deep"
    with pytest.raises(BadRequest):
        streams.create(name(), content_type="application/json", data=DEEP)
    streams.append_json(path, [nested_value(128)])
    streams.append(path, nested(129))
    assert streams.read(path).messages() == [nested_value(128), nested_value(128)]
    with pytest.raises(StreamNotFound):
        streams.info("never-created")


async def test_deep_frames_get_error_frames_and_the_socket_lives(public):
    path = name()
    await streams.acreate(path, content_type="application/json", data="[0]")
    ws = WebsocketCommunicator(
        APP, f"/ws/v1/stream/{path}?offset=now", headers=[(b"host", b"localhost")]
    )
    await ws.connect()
    await ws.receive_from()  # the first control frame
    frames = [
        ('{"op":"append","id":1,"data":' + DEEP + "}", None),  # refused before parsing
        ('{"op":"append","id":2,"data":' + DEEP_OBJECTS + "}", None),
        ('{"op":"append","id":3,"data":{"a":' + nested(128) + "}}", 3),  # the message: 129
        ('{"op":"append","id":4,"data":[' + nested(129) + "]}", None),  # the frame: 131
    ]
    for text, ref in frames:
        await ws.send_to(text_data=text)
        error = json.loads(await ws.receive_from())
        assert (error["event"], error["code"], error["id"]) == ("error", "json_too_deep", ref)
    await ws.send_to(text_data='{"op":"append","id":5,"data":[' + nested(128) + "]}")
    ack = [f for f in [json.loads(await ws.receive_from()) for _ in range(3)] if f.get("id") == 5]
    assert ack and ack[0]["event"] == "ack"
    await ws.send_to(text_data='{"op":"ping","id":"alive"}')
    assert json.loads(await ws.receive_from()) == {"event": "pong", "id": "alive"}
    assert (await streams.aread(path)).messages() == [0, nested_value(128)]
    await ws.disconnect()
