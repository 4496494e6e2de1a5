"""Fuzzing what clients send: request bodies of every shape and content type, websocket frames.

In process (the ASGI application, ``WebsocketCommunicator``), so that each example is cheap and
``MAX_APPEND_BYTES`` can be small enough to reach. Properties, whatever arrives:

- no 5xx, as a status or in an error frame;
- a socket stays alive: a ping sent after the frame gets its pong;
- no partial write: a refused write leaves the stream exactly as before (data, tail, closed);
  an accepted append adds exactly one entry, whose data reads back as what was sent (parsed, on
  a JSON stream); an accepted create holds exactly its body.

The header values are fuzzed against a real server in test_http.py.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, event, given, settings  # event: --hypothesis-show-statistics
from hypothesis import strategies as st

from durable_sessions import streams
from durable_sessions.streams.content import is_json
from durable_sessions.streams.errors import StreamNotFound
from tests.streams.apps import APP
from tests.streams.asgi import request

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 4096  # MAX_APPEND_BYTES here, so that oversize bodies are cheap to make
FUZZ = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
STREAM_TYPES = ["application/json", "text/plain", "application/octet-stream"]


def name() -> str:
    return f"fuzz-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def small_public(settings):
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "PERMISSION_POLICY": "durable_sessions.streams.permissions.AllowAny",
        "MAX_APPEND_BYTES": LIMIT,
    }


# -- strategies ---------------------------------------------------------------------------

# Text of every kind: non-ASCII, line separators, NUL, and lone surrogates.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def nested_json(draw: Any) -> str:
    """JSON nested 0 to 300 levels deep, around the limit of 128 and past it."""
    levels = draw(st.integers(0, 300))
    opener = draw(st.sampled_from(["[", '{"k":', "[0,"]))
    closer = {"[": "]", '{"k":': "}", "[0,": "]"}[opener]
    inner = draw(st.sampled_from(["1", '"[[[{"', "[]", "{}", "null"]))
    return opener * levels + inner + closer * levels


def encode(text: str, how: str) -> bytes:
    if how == "utf-8":
        return text.encode("utf-8", "surrogatepass")  # lone surrogates: invalid UTF-8
    return text.encode(how, "surrogatepass")


json_texts = st.one_of(
    st.builds(json.dumps, json_values, ensure_ascii=st.booleans()),
    nested_json(),
    st.builds(lambda v, cut: json.dumps(v)[:cut], json_values, st.integers(0, 30)),  # truncated
    st.sampled_from(["", "[]", "NaN", "[1e400]", "[1,]", '{"a":1,"a":2}', " \n[ 1 ] ", "-0"]),
)
bodies = st.one_of(
    st.builds(encode, json_texts, st.just("utf-8")),
    st.builds(encode, json_texts, st.sampled_from(["utf-16", "utf-32", "utf-8-sig"])),
    st.builds(encode, nested_json(), st.just("utf-8")),
    st.builds(encode, any_text, st.just("utf-8")),  # plain text, perhaps invalid UTF-8
    st.binary(max_size=300),  # mostly invalid UTF-8
    st.builds(lambda size: b"x" * size, st.integers(LIMIT - 2, LIMIT + 2)),  # the size limit
    st.builds(lambda size: json.dumps(["x" * size]).encode(), st.integers(LIMIT - 6, LIMIT - 2)),
    # Deeper than Python's json can parse (about 1000 levels), within the size limit:
    st.builds(lambda levels: ("[" * levels + "]" * levels).encode(), st.integers(900, 2040)),
)
content_types = st.one_of(
    st.sampled_from(
        [
            *STREAM_TYPES,
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "text/plain; charset=latin-1",
            "application/x-weird+json",
            "x/y",
            "text/",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)


# -- HTTP bodies ----------------------------------------------------------------------------


async def snapshot(path: str) -> tuple[bytes, str, bool]:
    """Everything a refused write must leave as it was: the data, the tail, closed."""
    result = await streams.aread(path, "-1", max_bytes=10 * LIMIT)
    return result.body, str(result.next), result.closed


def sent_messages(body: bytes) -> list[Any]:
    """The messages a JSON body appends (a top-level array flattened one level)."""
    value = json.loads(body)
    return value if isinstance(value, list) else [value]


@settings(FUZZ, max_examples=200)
@given(stream_type=st.sampled_from(STREAM_TYPES), data=st.data(), body=bodies)
async def test_any_append_body_is_all_or_nothing_and_never_5xx(
    small_public, stream_type, data, body
):
    # Mostly the stream's own type (or a spelling of it), so that bodies reach the parser.
    same = st.sampled_from([stream_type, stream_type.upper() + "; charset=utf-8"])
    content_type = data.draw(st.one_of(same, same, content_types), label="content_type")
    # A Content-Length as sent, or anything at all: servers usually refuse a malformed one, but
    # the application must too.
    lengths = st.one_of(
        st.none(),
        st.just(str(len(body))),
        st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=6),
    )
    declared = data.draw(lengths, label="content_length")
    path = name()
    await streams.acreate(
        path, content_type=stream_type, data="[0]" if is_json(stream_type) else "0"
    )
    before = await snapshot(path)
    headers = [("content-type", content_type)] if content_type else []
    if declared is not None:
        headers.append(("content-length", declared))
    response = await request("POST", path, headers=headers, body=body)
    event(f"POST {response.status} {response.code}")
    assert response.status < 500, response.body
    if response.status >= 300:
        assert response.code, response.body
        assert await snapshot(path) == before
        return
    added = await streams.aread(path, before[1], max_bytes=10 * LIMIT)
    assert added.next.seq == added.start.seq + 1 and added.up_to_date  # exactly one entry
    if is_json(stream_type):
        assert added.messages() == sent_messages(body)
    else:
        assert added.data == body


@settings(FUZZ, max_examples=150)
@given(content_type=content_types, body=bodies)
async def test_any_create_body_creates_exactly_it_or_nothing(small_public, content_type, body):
    path = name()
    headers = [("content-type", content_type)] if content_type else []
    response = await request("PUT", path, headers=headers, body=body)
    event(f"PUT {response.status} {response.code}")
    assert response.status < 500, response.body
    if response.status >= 300:
        assert response.code, response.body
        with pytest.raises(StreamNotFound):
            await streams.ainfo(path)
        return
    assert response.status == 201
    created = await streams.aread(path, "-1", max_bytes=10 * LIMIT)
    if is_json(created.info.content_type):
        assert created.messages() == ([] if not body else sent_messages(body))
    else:
        assert created.data == body


# -- websocket frames -----------------------------------------------------------------------

option_values = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), any_text, st.lists(st.integers(), max_size=2)
)
append_frames = st.fixed_dictionaries(
    {"op": st.just("append")},
    optional={
        "id": st.one_of(st.none(), st.integers(), any_text, json_values),
        "data": st.one_of(json_values, any_text, st.builds(json.loads, nested_json())),
        "close": option_values,
        "encoding": st.one_of(st.sampled_from(["base64", "hex", "BASE64", ""]), option_values),
        "seq": option_values,
        "producer": st.one_of(
            option_values,
            st.fixed_dictionaries(
                {"id": any_text, "epoch": st.integers(-1, 2), "seq": st.integers(-1, 2)},
                optional={"extra": st.booleans()},
            ),
        ),
        "clsoe": st.booleans(),
    },
)
safe_text = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=8)
plausible_appends = st.fixed_dictionaries(  # options mostly valid: the frame often gets written
    {"op": st.just("append"), "id": st.integers(0, 9)},
    optional={
        "data": st.one_of(json_values, any_text),
        "close": st.one_of(st.booleans(), st.none()),
        "seq": st.one_of(safe_text, st.none()),
        "producer": st.fixed_dictionaries(
            {"id": safe_text, "epoch": st.integers(0, 2), "seq": st.integers(0, 2)}
        ),
    },
)
base64_appends = st.builds(
    lambda raw, close: {
        "op": "append",
        "id": "b64",
        "data": base64.b64encode(raw).decode(),
        "encoding": "base64",
        "close": close,
    },
    st.binary(max_size=50),
    st.booleans(),
)
frames = st.one_of(
    st.text(max_size=200),  # anything at all
    st.builds(json.dumps, json_values),
    st.builds(json.dumps, append_frames),
    st.builds(json.dumps, plausible_appends),
    st.builds(json.dumps, plausible_appends),
    st.builds(json.dumps, base64_appends),
    st.builds(lambda ref: json.dumps({"op": "ping", "id": ref}), json_values),
    st.builds(lambda text: '{"op":"append","id":1,"data":' + text + "}", nested_json()),
    st.builds(  # deeper than Python's json can parse
        lambda levels: '{"op":"append","id":1,"data":' + "[" * levels + "]" * levels + "}",
        st.integers(900, 3000),
    ),
)


def expected_append(frame: Any, content_type: str) -> tuple[str, Any] | None:
    """What an acknowledged append frame must have written: messages, bytes, or nothing."""
    if "data" not in frame:
        return None
    data = frame["data"]
    if is_json(content_type):
        return "messages", data if isinstance(data, list) else [data]
    raw = base64.b64decode(data) if frame.get("encoding") == "base64" else data.encode()
    return ("bytes", raw) if raw else None


async def answer(sock: WebsocketCommunicator) -> dict[str, Any]:
    """The next ack, error or pong (data and control frames of the stream are skipped)."""
    while True:
        frame = json.loads(await sock.receive_from(10))
        if frame["event"] in ("ack", "error", "pong"):
            return frame


@settings(FUZZ, max_examples=250)
@given(stream_type=st.sampled_from(STREAM_TYPES), text=frames)
async def test_any_frame_gets_one_answer_keeps_the_socket_and_writes_all_or_nothing(
    small_public, stream_type, text
):
    path = name()
    await streams.acreate(path, content_type=stream_type)
    before = await snapshot(path)
    sock = WebsocketCommunicator(
        APP, f"/ws/v1/stream/{path}?offset=now", headers=[(b"host", b"localhost")]
    )
    assert (await sock.connect())[0]
    await sock.receive_from()  # the first control frame
    await sock.send_input({"type": "websocket.receive", "text": text})  # "" too
    reply = await answer(sock)
    event(f"frame {reply['event']} {reply.get('code')}")
    assert reply.get("status", 200) < 500, reply
    await sock.send_to(text_data='{"op": "ping", "id": "probe"}')
    assert await answer(sock) == {"event": "pong", "id": "probe"}  # the socket is alive
    await sock.disconnect()
    if reply["event"] != "ack":
        assert await snapshot(path) == before
        return
    frame = json.loads(text)
    after = await streams.aread(path, before[1], max_bytes=10 * LIMIT)
    assert after.closed == (frame.get("close") is True)
    expected = expected_append(frame, stream_type)
    if expected is None:  # a close alone
        assert str(after.next) == before[1]
        return
    assert after.next.seq == after.start.seq + 1 and after.up_to_date  # exactly one entry
    assert (after.messages() if expected[0] == "messages" else after.data) == expected[1]
