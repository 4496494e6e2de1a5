"""The HTTP protocol against a real daphne process: bad input, limits, races, auth, CORS."""

from __future__ import annotations

import concurrent.futures
import socket
import time
import uuid

import httpx
import pytest
from django.contrib.auth.models import User
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token

from durable_sessions import streams
from durable_sessions.streams.models import Stream
from durable_sessions.streams.offsets import parse_offset
from tests.servers import ServerProcess
from tests.streams.asgi import request

pytestmark = pytest.mark.django_db(transaction=True)


def name() -> str:
    return f"http-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(public_server):
    with httpx.Client(base_url=f"{public_server.url}/v1/stream/", timeout=10) as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    body = response.json()["error"]
    assert body["message"]
    if code is not None:
        assert body["code"] == code


@pytest.mark.parametrize(
    "offset",
    [
        "",
        "0,1",
        "0 1",
        "abc",
        "../x",
        "1_2",
        "0000000000000000-0000000000000000",
        "00000000000000000_0000000000000000",
        "now ",
        "-2",
        "%00",
        "0000000000000000_000000000000000a",
    ],
)
def test_malformed_offsets_are_400(client, offset):
    path = name()
    client.put(path, headers={"content-type": "text/plain"}, content="x")
    assert_error(client.get(path, params={"offset": offset}), 400)


def test_repeated_offset_and_unknown_live_mode_are_400(client):
    path = name()
    client.put(path, headers={"content-type": "text/plain"})
    assert_error(client.get(f"{path}?offset=-1&offset=-1"), 400, "invalid_query")
    assert_error(client.get(path, params={"offset": "-1", "live": "websocket"}), 400)
    assert_error(client.get(path, params={"live": "sse"}), 400)


def test_offset_beyond_the_tail_is_400(client):
    path = name()
    client.put(path, headers={"content-type": "text/plain"}, content="abc")
    response = client.get(path, params={"offset": "0000000000000009_0000000000000009"})
    assert_error(response, 400, "offset_beyond_tail")


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"stream-ttl": "01"}, "invalid_ttl"),
        ({"stream-ttl": "1.5"}, "invalid_ttl"),
        ({"stream-ttl": "99999999999999"}, "invalid_ttl"),
        ({"stream-expires-at": "2030-01-01"}, "invalid_expires_at"),
        ({"stream-expires-at": "2030-02-30T00:00:00Z"}, "invalid_expires_at"),
        ({"stream-ttl": "5", "stream-expires-at": "2030-01-01T00:00:00Z"}, "invalid_ttl"),
        ({"stream-fork-offset": "-1"}, "invalid_fork"),
        ({"content-type": "text/plain\x7f"}, "invalid_content_type"),
    ],
)
def test_malformed_create_headers_are_400(client, headers, code):
    assert_error(client.put(name(), headers=headers), 400, code)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"producer-id": "p"}, "invalid_producer"),
        ({"producer-id": "p", "producer-epoch": "0", "producer-seq": "x"}, "invalid_producer"),
        (
            {"producer-id": "p", "producer-epoch": str(2**53), "producer-seq": "0"},
            "invalid_producer",
        ),
        ({"producer-id": "", "producer-epoch": "0", "producer-seq": "0"}, "invalid_producer"),
    ],
)
def test_malformed_append_headers_are_400(client, headers, code):
    path = name()
    client.put(path, headers={"content-type": "text/plain"})
    response = client.post(path, headers={"content-type": "text/plain", **headers}, content="x")
    assert_error(response, 400, code)
    assert client.get(path).content == b""


def test_daphne_itself_refuses_a_garbled_content_length(client, public_server):
    """Daphne's parser answers 400 before our application is called (the application's own
    check is tested in process: test_a_garbled_content_length_is_400_before_any_read)."""
    path = name()
    client.put(path, headers={"content-type": "text/plain"})
    raw = (
        f"POST /v1/stream/{path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        "Content-Length: abc\r\n\r\nhello"
    ).encode()
    with socket.create_connection(("127.0.0.1", public_server.port), timeout=5) as sock:
        sock.sendall(raw)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"400"
    assert client.get(path).content == b""


def test_invalid_json_is_400_and_writes_nothing(client):
    path = name()
    client.put(path, headers={"content-type": "application/json"}, content='[{"a": 1}]')
    for body in ('{"a": ', "[]", "NaN", '"\\ud800', "[1,]"):
        response = client.post(path, headers={"content-type": "application/json"}, content=body)
        assert response.status_code == 400, body
    assert client.get(path).json() == [{"a": 1}]


def test_invalid_json_on_create_creates_nothing(client):
    path = name()
    response = client.put(path, headers={"content-type": "application/json"}, content="{oops")
    assert_error(response, 400, "invalid_json")
    assert client.head(path).status_code == 404


def test_oversize_bodies_are_413_and_write_nothing(client, settings):
    path = name()
    client.put(path, headers={"content-type": "application/octet-stream"})
    big = b"\0" * (8 * 1024 * 1024 + 1)
    response = client.post(path, headers={"content-type": "application/octet-stream"}, content=big)
    assert_error(response, 413, "payload_too_large")

    def chunks():
        for _ in range(9):
            yield b"\1" * (1024 * 1024)

    streamed = client.post(
        path, headers={"content-type": "application/octet-stream"}, content=chunks()
    )
    assert streamed.status_code == 413
    assert client.get(path).content == b""
    assert_error(client.put(name(), content=big), 413)


def test_unknown_streams_are_404_for_every_method(client):
    path = name()
    for response in (
        client.get(path),
        client.get(path, params={"offset": "-1", "live": "long-poll"}),
        client.get(path, params={"offset": "-1", "live": "sse"}),
        client.post(path, headers={"content-type": "text/plain"}, content="x"),
        client.delete(path),
    ):
        assert_error(response, 404, "stream_not_found")
    assert client.head(path).status_code == 404


def test_content_type_mismatch_is_409_and_missing_type_400(client):
    path = name()
    client.put(path, headers={"content-type": "text/plain"})
    assert_error(
        client.post(path, headers={"content-type": "application/json"}, content="{}"),
        409,
        "content_type_mismatch",
    )
    assert_error(client.post(path, content=b"raw"), 400, "missing_content_type")


def test_invalid_paths_are_400(client):
    for path in ("a//b", "a/%2E/b", "a/%2E%2E/b", "__ds/subscriptions/x", "x%00y"):
        assert client.put(path).status_code == 400, path
    assert client.request("PATCH", name()).status_code == 405


@pytest.fixture
def two_servers(django_db_setup, django_db_blocker):
    """Two daphne processes on the test database, each with two writer threads on Postgres."""
    with django_db_blocker.unblock():
        servers = [ServerProcess(env={"DS_WRITER_THREADS": "2"}) for _ in range(2)]
        try:
            for server in servers:
                server.start()
            yield servers
        finally:
            for server in servers:
                server.stop()


def test_concurrent_create_delete_and_append_races_never_fail_the_server(two_servers):
    """PUT, DELETE and POST race on a few streams through two processes sharing the database
    (on Postgres each with two writers, the streams spread over both). No request fails the
    server, and every stream ends consistent, the same from both processes: gap-free and
    holding only acknowledged appends, each once, and accepting appends; or deleted, 404."""
    paths = [name() for _ in range(4)]
    bases = [f"{server.url}/v1/stream/" for server in two_servers]
    text = {"content-type": "text/plain"}

    def hammer(i: int) -> tuple[int, str, int, str]:
        server, kind, path = i % 2, (i // 2) % 3, paths[(i // 6) % len(paths)]
        with httpx.Client(base_url=bases[server], timeout=30) as own:
            if kind == 0:
                response = own.put(path, headers=text)
            elif kind == 1:
                response = own.delete(path)
            else:
                response = own.post(path, headers=text, content=f"m{i}.")
        return i, path, response.status_code, response.text

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(hammer, range(360)))
    failures = [o for o in outcomes if o[2] not in (200, 201, 204, 404)]
    assert not failures, failures[:5]
    acknowledged = {i for i, _path, status, _text in outcomes if status == 204 and i % 6 >= 4}
    with httpx.Client(timeout=10) as client:
        for path in paths:
            finals = [client.get(f"{base}{path}", params={"offset": "-1"}) for base in bases]
            assert finals[0].status_code == finals[1].status_code, path
            if finals[0].status_code == 404:  # deleted: gone for every method, on both
                for base in bases:
                    assert client.head(f"{base}{path}").status_code == 404
                    response = client.post(f"{base}{path}", headers=text, content="z")
                    assert response.status_code == 404, response.text
                continue
            assert finals[0].status_code == 200, finals[0].text
            body = finals[0].content
            assert finals[1].content == body
            tail = parse_offset(finals[0].headers["stream-next-offset"])
            entries = [int(part[1:]) for part in body.decode().split(".")[:-1]]
            assert len(set(entries)) == len(entries), "an append stored twice"
            assert set(entries) <= acknowledged, "a stored append was never acknowledged"
            assert (tail.seq, tail.bytes) == (len(entries), len(body)), "a gap in the offsets"
            for base in bases:  # alive: it takes appends from both processes
                response = client.post(f"{base}{path}", headers=text, content="z.")
                assert response.status_code == 204, response.text
            after = [client.get(f"{base}{path}", params={"offset": "-1"}) for base in bases]
            assert after[0].content == after[1].content == body + b"z.z."


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.sampled_from(
        [
            "stream-ttl",
            "stream-expires-at",
            "stream-closed",
            "stream-seq",
            "producer-epoch",
            "stream-forked-from",
            "stream-fork-offset",
            "stream-fork-sub-offset",
            "content-type",
        ]
    ),
    value=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
        str.strip
    ),
    method=st.sampled_from(["PUT", "POST"]),
)
def test_arbitrary_header_values_never_cause_a_server_error(client, header, value, method):
    path = name()
    if method == "POST":
        client.put(path, headers={"content-type": "text/plain"})
    headers = {"content-type": "text/plain", header: value}
    response = client.request(method, path, headers=headers, content="x")
    assert response.status_code < 500, response.text


def test_security_and_cors_headers_on_every_response(client):
    path = name()
    origin = {"origin": "https://example.com"}
    created = client.put(path, headers={"content-type": "text/plain", **origin})
    missing = client.get(name(), headers=origin)
    for response in (created, missing):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cross-origin-resource-policy"] == "cross-origin"
        assert response.headers["access-control-allow-origin"] == "*"
        assert "Stream-Next-Offset" in response.headers["access-control-expose-headers"]
    preflight = client.options(
        path,
        headers={
            **origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "producer-id",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-headers"] == "producer-id"
    assert "PUT" in preflight.headers["access-control-allow-methods"]


def test_etag_changes_when_the_stream_closes(client):
    path = name()
    client.put(path, headers={"content-type": "text/plain"}, content="x")
    first = client.get(path)
    assert client.get(path, headers={"if-none-match": first.headers["etag"]}).status_code == 304
    client.post(path, headers={"stream-closed": "true"})
    after = client.get(path)
    assert after.headers["etag"] != first.headers["etag"]
    assert after.headers["stream-closed"] == "true"


# -- access control (the default policy: authenticated users only) -------------------------


@pytest.fixture
def private(private_server):
    with httpx.Client(base_url=f"{private_server.url}/v1/stream/", timeout=10) as client:
        yield client


def test_anonymous_clients_get_401_with_a_json_error(private):
    for response in (
        private.put(name()),
        private.get(name()),
        private.head(name()),
        private.post(name(), content="x"),
        private.delete(name()),
    ):
        assert response.status_code == 401
        if response.request.method != "HEAD":
            assert response.json()["error"]["code"] == "not_authenticated"
    assert private.options(name()).status_code == 204


def test_a_bad_token_is_anonymous_and_a_good_one_is_allowed(private):
    user = User.objects.create_user("alice", password="pw")
    token = Token.objects.create(user=user)
    assert private.put(name(), headers={"authorization": "Token nope"}).status_code == 401
    path = name()
    good = {"authorization": f"Token {token.key}", "content-type": "text/plain"}
    assert private.put(path, headers=good, content="hi").status_code == 201
    assert private.get(path, headers={"authorization": f"Bearer {token.key}"}).text == "hi"


def test_session_cookie_authenticates(private, private_server):
    User.objects.create_user("bob", password="pw")
    from django.test import Client

    django_client = Client()
    assert django_client.login(username="bob", password="pw")
    cookie = django_client.cookies["sessionid"].value
    path = name()
    response = private.put(path, headers={"cookie": f"sessionid={cookie}"})
    assert response.status_code == 201
    forged = private.post(
        path,
        content="x",
        headers={
            "cookie": f"sessionid={cookie}",
            "origin": "https://evil.example",
            "content-type": "text/plain",
        },
    )
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_origin"
    same_site = private.post(
        path,
        content="x",
        headers={
            "cookie": f"sessionid={cookie}",
            "origin": private_server.url,
            "content-type": "application/octet-stream",
        },
    )
    assert same_site.status_code == 204
    inactive = User.objects.get(username="bob")
    inactive.is_active = False
    inactive.save()
    assert private.get(path, headers={"cookie": f"sessionid={cookie}"}).status_code == 401


def test_a_host_outside_allowed_hosts_is_refused(client):
    response = client.put(name(), headers={"host": "evil.example"})
    assert_error(response, 400, "disallowed_host")


def test_fork_sources_must_be_on_this_server(client, public_server):
    source = name()
    client.put(source, headers={"content-type": "text/plain"}, content="s")
    foreign = client.put(
        name(), headers={"stream-forked-from": f"http://elsewhere.example/v1/stream/{source}"}
    )
    assert_error(foreign, 400, "invalid_fork")
    local = client.put(
        name(),
        headers={"stream-forked-from": f"http://127.0.0.1:{public_server.port}/v1/stream/{source}"},
    )
    assert local.status_code == 201


def test_tail_responses_must_be_revalidated_and_closed_or_inner_ranges_may_be_cached(client):
    path = name()
    client.put(path, headers={"content-type": "text/plain"}, content="a")
    first = client.get(path)
    assert first.headers["cache-control"] == "no-cache"
    big = "b" * (700 * 1024)  # two of these exceed one read's budget (1 MiB)
    client.post(path, headers={"content-type": "text/plain"}, content=big)
    client.post(path, headers={"content-type": "text/plain"}, content=big)
    inner = client.get(path)
    assert "stream-up-to-date" not in inner.headers
    assert inner.headers["cache-control"].startswith("public, max-age=60")
    client.post(path, headers={"stream-closed": "true"})
    closed = client.get(path)
    assert closed.headers["cache-control"].startswith("public, max-age=60")


def test_if_none_match_accepts_lists_weak_tags_and_star(client):
    path = name()
    client.put(path, headers={"content-type": "text/plain"}, content="x")
    tag = client.get(path).headers["etag"]
    for header in (f'"other", {tag}', f"W/{tag}", "*"):
        assert client.get(path, headers={"if-none-match": header}).status_code == 304, header
    assert client.get(path, headers={"if-none-match": '"nope"'}).status_code == 200


def test_sse_control_events_carry_ids_and_last_event_id_resumes(client):
    path = name()
    client.put(path, headers={"content-type": "text/plain"}, content="one")
    with client.stream("GET", path, params={"offset": "-1", "live": "sse"}) as response:
        text = ""
        for chunk in response.iter_text():
            text += chunk
            if "id:" in text:
                break
    resume = text.split("id:", 1)[1].split("\n", 1)[0]
    client.post(path, headers={"content-type": "text/plain"}, content="two", params={})
    client.post(path, headers={"stream-closed": "true"})
    later = client.get(
        path, params={"offset": "-1", "live": "sse"}, headers={"last-event-id": resume}
    )
    assert "data:two" in later.text and "data:one" not in later.text
    assert '"streamClosed":true' in later.text


def test_a_bad_token_beside_a_good_session_cookie_is_anonymous(private):
    User.objects.create_user("carol", password="pw")
    from django.test import Client

    django_client = Client()
    django_client.login(username="carol", password="pw")
    cookie = django_client.cookies["sessionid"].value
    response = private.put(
        name(), headers={"cookie": f"sessionid={cookie}", "authorization": "Token wrong"}
    )
    assert response.status_code == 401


@pytest.fixture(scope="module")
def private_uvicorn(django_db_setup, django_db_blocker):
    """uvicorn with the default policy: it hands the app the body as it arrives (daphne waits
    for the whole body before it calls the app, so there the body is spent before any check)."""
    with django_db_blocker.unblock():
        server = ServerProcess(server="uvicorn", public=False).start()
    yield server
    server.stop()


@pytest.mark.parametrize("method", ["PUT", "POST"])
def test_an_anonymous_write_gets_its_401_before_sending_its_body(private_uvicorn, method):
    """It declares 8 MB and sends 5 bytes: the answer comes without the rest."""
    raw = (
        f"{method} /v1/stream/{name()} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: text/plain\r\nContent-Length: 8000000\r\n\r\nhello"
    ).encode()
    with socket.create_connection(("127.0.0.1", private_uvicorn.port), timeout=5) as sock:
        sock.sendall(raw)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)  # a server waiting for the body times out here (5 s)
            assert chunk, "the server closed the connection without an answer"
            head += chunk
    status, *lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    assert status.split()[1] == "401"
    headers = dict(line.lower().split(": ", 1) for line in lines)
    assert headers["www-authenticate"] == 'token realm="streams"'
    assert headers["connection"] == "close"  # the body it declared stays unread


# -- times that must stay dates (TTL, Expires-At) ------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"stream-ttl": "999999999999"}, 400),  # 12 digits: ~31,700 years, beyond year 9999
        ({"stream-ttl": "10000000000"}, 400),
        ({"stream-ttl": "9999999999"}, 201),
        ({"stream-expires-at": "9999-12-31T23:59:59-23:59"}, 400),  # year 10000 in UTC
        ({"stream-expires-at": "9999-12-31T23:59:59.9999999Z"}, 400),
        ({"stream-expires-at": "0001-01-01T00:00:00+01:00"}, 400),  # year 0 in UTC
        ({"stream-expires-at": "9999-12-31T12:00:00Z"}, 201),
    ],
)
def test_ttls_and_expiry_times_must_stay_dates(client, headers, status):
    path = name()
    response = client.put(path, headers=headers)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["code"] in ("invalid_ttl", "invalid_expires_at")
        assert client.head(path).status_code == 404
    else:
        head = client.head(path)
        assert head.status_code == 200
        assert head.headers.get("stream-ttl") == headers.get("stream-ttl")
        assert head.headers.get("stream-expires-at", "").startswith(
            headers.get("stream-expires-at", "")[:10]
        )


def test_head_survives_an_expiry_that_is_no_date(client):
    """The Python API refuses an expiry that is no date; one stored before that check (written
    here through the ORM) is left out of HEAD, which cannot state it as RFC 3339."""
    path = name()
    with pytest.raises(streams.BadRequest):
        streams.create(path, content_type="text/plain", expires_at=1e300)
    streams.create(path, content_type="text/plain")
    Stream.objects.filter(path=path).update(expires_at=1e300)
    head = client.head(path)
    assert head.status_code == 200
    assert "stream-expires-at" not in head.headers


# -- Content-Length: refused from the header, before the body is read ----------------------

PUBLIC = {"PERMISSION_POLICY": "durable_sessions.streams.permissions.AllowAny"}
TEXT = ("content-type", "text/plain")


@pytest.fixture
def in_process(settings):
    """The application in process, public, with a 1000-byte append limit."""
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, **PUBLIC, "MAX_APPEND_BYTES": 1000}


@pytest.mark.parametrize("method", ["PUT", "POST"])
async def test_an_oversize_content_length_is_413_without_a_receive(in_process, method):
    path = name()
    if method == "POST":
        await streams.acreate(path, content_type="text/plain")
    for declared in ("1001", "9" * 5000, "00000000000000000000001001"):
        response = await request(
            method, path, headers=[TEXT, ("content-length", declared)], body=b"x" * 1001
        )
        assert (response.status, response.code) == (413, "payload_too_large"), declared[:20]
        assert response.receive_calls == 0  # answered from the header alone
        assert response.headers["vary"] == "Origin"
        assert response.headers["connection"] == "close"  # the body stays unread
    fits = await request(
        method, path, headers=[TEXT, ("content-length", "0001000")], body=b"y" * 1000
    )
    assert fits.status in (201, 204) and fits.receive_calls == 1
    assert (await streams.aread(path)).body == b"y" * 1000


@pytest.mark.parametrize(
    "value", ["abc", "12x", "-1", "+5", "1e3", "0x10", "", "5, 5", "\xb2", "1\xb9", "\xbd"]
)
async def test_a_garbled_content_length_is_400_before_any_read(in_process, value):
    """Non-ASCII digits too: "\xb2" (superscript two) is a digit to str.isdigit() but not to
    int(). (Daphne and uvicorn refuse such headers themselves; other servers may not.)"""
    path = name()
    await streams.acreate(path, content_type="text/plain")
    response = await request("POST", path, headers=[TEXT, ("content-length", value)], body=b"hello")
    assert (response.status, response.code) == (400, "invalid_content_length")
    assert response.receive_calls == 0 and response.headers["connection"] == "close"
    assert (await streams.aread(path)).body == b""


def read_response_head(sock: socket.socket) -> bytes:
    """The status line and headers of the response arriving on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def declared_but_not_sent(port: int, path: str, declared: int, extra: str = "") -> bytes:
    """POST headers declaring ``declared`` bytes, then only 5 of them; the response head, which
    must come within the socket's timeout (nothing else is sent), and the connection closed."""
    head = (
        f"POST /v1/stream/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {declared}\r\n{extra}\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"hello")
        response = read_response_head(sock)
        while sock.recv(65536):  # then the server closes the connection (within the timeout)
            pass
        return response


@pytest.fixture(scope="module")
def uvicorn_servers(django_db_setup, django_db_blocker):
    """A public and a private uvicorn process on the test database."""
    with django_db_blocker.unblock():
        public = ServerProcess(server="uvicorn").start()
        try:
            private = ServerProcess(server="uvicorn", public=False).start()
        except Exception:
            public.stop()
            raise
    yield public, private
    public.stop()
    private.stop()


def test_uvicorn_answers_an_oversize_declared_body_at_once(uvicorn_servers):
    """Uvicorn calls the application as soon as the headers are in: the 413 comes while the
    client has sent 5 of the 100 MB it declared, and the connection is closed at once
    (``Connection: close``), not after uvicorn's 5-second keep-alive timeout."""
    public, private = uvicorn_servers
    path = name()
    with httpx.Client(base_url=f"{public.url}/v1/stream/", timeout=10) as http:
        assert http.put(path, headers={"content-type": "text/plain"}).status_code == 201
        started = time.monotonic()
        head = declared_but_not_sent(public.port, path, 100_000_000)
        assert head.split(b"\r\n", 1)[0].split()[1] == b"413", head
        assert b"connection: close" in head.lower()
        assert time.monotonic() - started < 4
        assert http.get(path).content == b""
    # Anonymous on the private server: refused too without the body being read (401 or 413,
    # whichever check the application makes first).
    head = declared_but_not_sent(private.port, name(), 100_000_000)
    assert head.split(b"\r\n", 1)[0].split()[1] in (b"401", b"413"), head


def test_daphne_reads_the_whole_body_before_the_413(client, public_server):
    """Daphne (Twisted) buffers a request's body before it calls the application
    (docs/deployment.md): with 5 of 9 MiB sent, no answer comes; once the rest is sent, the
    application answers 413 from Content-Length, without reading the body, and writes nothing."""
    path = name()
    client.put(path, headers={"content-type": "text/plain"})
    declared = 9 * 1024 * 1024
    head = (
        f"POST /v1/stream/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", public_server.port), timeout=10) as sock:
        sock.sendall(head + b"hello")
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):  # still waiting for the body it was promised
            sock.recv(65536)
        sock.settimeout(10)
        sock.sendall(b"\0" * (declared - 5))
        response = read_response_head(sock)
    assert response.split(b"\r\n", 1)[0].split()[1] == b"413", response
    assert b"payload_too_large" in response or b"content-type: application/json" in response.lower()
    assert client.get(path).content == b""
