"""The ``__ds`` routes in process (durable_sessions/streams/subscriptions/routes.py): bodies,
answers, error codes, escapes in paths, and what the permission policy is asked."""

from __future__ import annotations

import json

import pytest

from durable_sessions import streams
from durable_sessions.streams.permissions import BasePermission
from tests.streams.asgi import request

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = {"PERMISSION_POLICY": "durable_sessions.streams.permissions.AllowAny"}
JSON = [("content-type", "application/json")]


@pytest.fixture
def public(settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, **PUBLIC}


async def put(subscription_id: str, body, **options):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await request(
        "PUT", f"__ds/subscriptions/{subscription_id}", headers=JSON, body=data, **options
    )


def pull_wake(**extra):
    return {"type": "pull-wake", "streams": ["jobs/a"], "wake_stream": "wake/w", **extra}


async def test_create_confirm_read_and_delete(public):
    created = await put("r1", pull_wake(description="mine"))
    assert created.status == 201
    body = created.json()
    assert body["id"] == body["subscription_id"] == "r1"
    assert body["type"] == "pull-wake" and body["wake_stream"] == "wake/w"
    assert body["streams"] == [
        {
            "path": "jobs/a",
            "link_type": "explicit",
            "acked_offset": "0000000000000000_0000000000000000",
        }
    ]
    assert body["created_at"].endswith("Z") and body["status"] == "active"
    assert body["webhook"] is None and body["lease_ttl_ms"] == 30000
    again = await put("r1", pull_wake(description="mine"))
    assert again.status == 200 and again.json() == body
    other = await put("r1", pull_wake(description="yours"))
    assert (other.status, other.code) == (409, "SUBSCRIPTION_ALREADY_EXISTS")
    got = await request("GET", "__ds/subscriptions/r1")
    assert got.status == 200 and got.json() == body
    gone = await request("DELETE", "__ds/subscriptions/r1")
    assert gone.status == 204
    assert (await request("DELETE", "__ds/subscriptions/r1")).status == 204  # idempotent
    missing = await request("GET", "__ds/subscriptions/r1")
    assert (missing.status, missing.code) == (404, "SUBSCRIPTION_NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        b"{nope",
        b"[]",
        b'"text"',
        {"type": "push"},
        {"type": "pull-wake", "wake_stream": "wake/w"},  # neither pattern nor streams
        pull_wake(wake_stream=None),
        pull_wake(lease_ttl_ms=999),
        pull_wake(lease_ttl_ms=600_001),
        pull_wake(lease_ttl_ms="30000"),
        pull_wake(lease_ttl_ms=True),
        pull_wake(streams=[]),
        pull_wake(streams="jobs/a"),
        pull_wake(streams=[1]),
        pull_wake(streams=["a//b"]),
        pull_wake(streams=["__ds/x"]),
        pull_wake(pattern="events/a*"),
        pull_wake(pattern=""),
        pull_wake(pattern=5),
        pull_wake(description=7),
        pull_wake(webhook={"url": "http://127.0.0.1/x"}),
        pull_wake(surprise=True),
        {"type": "webhook", "streams": ["a"]},  # no webhook.url
        {"type": "webhook", "streams": ["a"], "webhook": {"url": 5}},
        {"type": "webhook", "streams": ["a"], "webhook": {"url": "https://x.test", "x": 1}},
        {
            "type": "webhook",
            "streams": ["a"],
            "webhook": {"url": "https://x.test"},
            "wake_stream": "w",
        },
        b"[" * 100_000,
    ],
)
async def test_bad_create_bodies_are_400_and_create_nothing(public, body):
    response = await put("bad", body)
    assert response.status == 400, response.body
    assert response.code == "INVALID_REQUEST"
    assert (await request("GET", "__ds/subscriptions/bad")).status == 404


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/hook", "https://169.254.169.254/latest", "ftp://x.test/", "http://[::1]/"],
)
async def test_unsafe_webhook_urls_are_refused(public, url):
    body = {"type": "webhook", "streams": ["a"], "webhook": {"url": url}}
    response = await put("hook", body)
    assert (response.status, response.code) == (400, "WEBHOOK_URL_REJECTED")


async def test_explicit_streams_are_added_and_removed_with_escaped_slashes(public):
    assert (await put("links", pull_wake(pattern="jobs/*"))).status == 201
    add = await request(
        "POST", "__ds/subscriptions/links/streams", headers=JSON, body=b'{"streams": ["x/y/z"]}'
    )
    assert add.status == 204
    paths = {
        s["path"]: s["link_type"]
        for s in (await request("GET", "__ds/subscriptions/links")).json()["streams"]
    }
    assert paths == {"jobs/a": "explicit", "x/y/z": "explicit"}
    removed = await request(
        "DELETE",
        "__ds/subscriptions/links/streams/x/y/z",
        raw_path="__ds/subscriptions/links/streams/x%2Fy%2Fz",
    )
    assert removed.status == 204
    again = await request(
        "DELETE",
        "__ds/subscriptions/links/streams/x/y/z",
        raw_path="__ds/subscriptions/links/streams/x%2Fy%2Fz",
    )
    assert again.status == 204  # idempotent
    paths = [
        s["path"] for s in (await request("GET", "__ds/subscriptions/links")).json()["streams"]
    ]
    assert paths == ["jobs/a"]
    for body in (b"{}", b'{"streams": []}', b'{"streams": ["ok"], "x": 1}', b'{"streams": [null]}'):
        bad = await request("POST", "__ds/subscriptions/links/streams", headers=JSON, body=body)
        assert (bad.status, bad.code) == (400, "INVALID_REQUEST"), body
    missing = await request(
        "POST", "__ds/subscriptions/none/streams", headers=JSON, body=b'{"streams": ["a"]}'
    )
    assert (missing.status, missing.code) == (404, "SUBSCRIPTION_NOT_FOUND")


async def test_claim_ack_release_over_http(public):
    await streams.acreate("wake/w", content_type="application/json")
    await streams.acreate("jobs/a", content_type="text/plain")
    await put("lease", pull_wake(lease_ttl_ms=60000))
    nothing = await request(
        "POST", "__ds/subscriptions/lease/claim", headers=JSON, body=b'{"worker": "w1"}'
    )
    assert (nothing.status, nothing.code) == (409, "NO_PENDING_WORK")
    tail = str((await streams.aappend("jobs/a", "x")).next)
    claim = await request(
        "POST", "__ds/subscriptions/lease/claim", headers=JSON, body=b'{"worker": "w1"}'
    )
    assert claim.status == 200
    claimed = claim.json()
    assert set(claimed) == {"wake_id", "generation", "token", "streams", "lease_ttl_ms"}
    assert claimed["streams"][0]["tail_offset"] == tail and claimed["streams"][0]["has_pending"]
    busy = await request(
        "POST", "__ds/subscriptions/lease/claim", headers=JSON, body=b'{"worker": "w2"}'
    )
    assert busy.status == 409 and busy.json()["error"]["current_holder"] == "w1"
    assert busy.json()["error"]["generation"] == claimed["generation"]
    ack_body = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
    bearer = [*JSON, ("authorization", f"Bearer {claimed['token']}")]
    for headers, status, code in (
        (JSON, 401, "TOKEN_INVALID"),
        ([*JSON, ("authorization", "Bearer nonsense")], 401, "TOKEN_INVALID"),
        ([*JSON, ("authorization", f"Token {claimed['token']}")], 401, "TOKEN_INVALID"),
    ):
        refused = await request(
            "POST",
            "__ds/subscriptions/lease/ack",
            headers=headers,
            body=json.dumps(ack_body).encode(),
        )
        assert (refused.status, refused.code) == (status, code)
    for body, status, code in (
        ({**ack_body, "generation": claimed["generation"] + 1}, 409, "FENCED"),
        ({**ack_body, "wake_id": "w_other"}, 409, "FENCED"),
        ({**ack_body, "generation": "1"}, 400, "INVALID_REQUEST"),
        ({**ack_body, "acks": [{"stream": "jobs/a", "offset": "zz"}]}, 400, "INVALID_REQUEST"),
        ({**ack_body, "acks": [{"stream": "jobs/a", "offset": "-1"}]}, 409, "INVALID_OFFSET"),
        ({**ack_body, "acks": [{"stream": "jobs/b", "offset": tail}]}, 409, "INVALID_OFFSET"),
        ({**ack_body, "done": "yes"}, 400, "INVALID_REQUEST"),
        ({**ack_body, "extra": 1}, 400, "INVALID_REQUEST"),
    ):
        refused = await request(
            "POST", "__ds/subscriptions/lease/ack", headers=bearer, body=json.dumps(body).encode()
        )
        assert (refused.status, refused.code) == (status, code), body
    heartbeat = await request(
        "POST", "__ds/subscriptions/lease/ack", headers=bearer, body=json.dumps(ack_body).encode()
    )
    assert heartbeat.status == 200 and heartbeat.json() == {"ok": True, "next_wake": False}
    acked = await request(
        "POST",
        "__ds/subscriptions/lease/ack",
        headers=bearer,
        body=json.dumps(
            {**ack_body, "acks": [{"stream": "jobs/a", "offset": tail}], "done": True}
        ).encode(),
    )
    assert acked.status == 200 and acked.json() == {"ok": True, "next_wake": False}
    stale = await request(
        "POST",
        "__ds/subscriptions/lease/release",
        headers=bearer,
        body=json.dumps(ack_body).encode(),
    )
    assert (stale.status, stale.code) == (409, "FENCED")
    got = (await request("GET", "__ds/subscriptions/lease")).json()
    assert got["streams"][0]["acked_offset"] == tail


async def test_unknown_routes_and_methods(public):
    for method, path, status in (
        ("GET", "__ds", 404),
        ("GET", "__ds/other", 404),
        ("GET", "__ds/subscriptions", 404),
        ("GET", "__ds/subscriptions/x/what", 404),
        ("POST", "__ds/subscriptions/x", 405),
        ("GET", "__ds/subscriptions/x/claim", 405),
        ("PUT", "__ds/subscriptions/x/streams", 405),
        ("POST", "__ds/jwks.json", 405),
    ):
        response = await request(method, path)
        assert response.status == status, (method, path, response.body)
        assert response.headers["content-type"] == "application/json"


async def test_the_jwks_is_public_and_cacheable(settings):
    keys = await request("GET", "__ds/jwks.json")  # the default policy: no user needed
    assert keys.status == 200
    assert keys.headers["content-type"] == "application/jwk-set+json"
    assert keys.headers["cache-control"] == "public, max-age=300"
    [key] = keys.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["kid"].startswith("ds_")


class Allow(BasePermission):
    """Allows exactly the (action, path) pairs in ``allowed``, and records what it was asked."""

    allowed: set = set()
    asked: list = []

    def has_permission(self, access) -> bool:
        Allow.asked.append((access.action, access.path))
        return (access.action, access.path) in Allow.allowed


@pytest.fixture
def only(settings):
    settings.DURABLE_SESSIONS = {
        **settings.DURABLE_SESSIONS,
        "PERMISSION_POLICY": f"{__name__}.Allow",
    }
    Allow.asked = []

    def allow(*pairs):
        Allow.allowed = set(pairs)

    return allow


async def test_managing_asks_subscribe_and_read_and_append_on_what_it_names(only):
    body = pull_wake(pattern="events/*")
    needed = [
        ("subscribe", "__ds/subscriptions/p"),
        ("read", "jobs/a"),
        ("read", "events/*"),
        ("append", "wake/w"),
    ]
    for missing in needed:
        only(*[pair for pair in needed if pair != missing])
        refused = await put("p", body)
        assert refused.status == 401, missing  # anonymous: 401
        assert (await request("GET", "__ds/subscriptions/p")).status in (401, 404)
    only(*needed)
    assert (await put("p", body)).status == 201
    only(("subscribe", "__ds/subscriptions/p"))
    assert (await request("GET", "__ds/subscriptions/p")).status == 200
    only()
    assert (await request("DELETE", "__ds/subscriptions/p")).status == 401
    claim = await request(
        "POST", "__ds/subscriptions/p/claim", headers=JSON, body=b'{"worker": "w"}'
    )
    assert claim.status == 401 and ("claim", "__ds/subscriptions/p") in Allow.asked
    # Acks, releases and callbacks carry their own token: the policy is not asked for them.
    Allow.asked = []
    body = json.dumps({"wake_id": "w_x", "generation": 1}).encode()
    refused = await request(
        "POST",
        "__ds/subscriptions/p/ack",
        headers=[*JSON, ("authorization", "Bearer x")],
        body=body,
    )
    assert refused.code == "TOKEN_INVALID" and Allow.asked == []
