"""The reserved ``__ds`` routes (PROTOCOL.md sections 6-7), served before any stream path.

    PUT|GET|DELETE  __ds/subscriptions/<id>                 create or confirm, read, delete
    POST            __ds/subscriptions/<id>/streams         link streams explicitly
    DELETE          __ds/subscriptions/<id>/streams/<path>  unlink one (URL-encoded, may hold /)
    POST            __ds/subscriptions/<id>/claim           take a pull-wake lease (policy: claim)
    POST            __ds/subscriptions/<id>/ack             heartbeat or ack (the claim token)
    POST            __ds/subscriptions/<id>/release         give the lease up (the claim token)
    POST            __ds/subscriptions/<id>/callback        a webhook's answer (the callback token)
    GET             __ds/jwks.json                          the webhook signing keys

Managing a subscription asks the permission policy for ``subscribe`` on
``__ds/subscriptions/<id>``, and creating one also for ``read`` on each stream and pattern it
names and ``append`` on its wake stream; claiming asks for ``claim``. Acks, releases and
callbacks are authorized by their bearer token alone (it is what the claim or the webhook
delivery handed out). The work itself runs in the service functions, on a thread
(``database_sync_to_async``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from channels.db import database_sync_to_async

from durable_sessions.conf import ds_settings
from durable_sessions.streams.errors import BadRequest, StreamError
from durable_sessions.streams.httpio import Request, respond
from durable_sessions.streams.permissions import APPEND, CLAIM, READ, SUBSCRIBE
from durable_sessions.streams.store import get_store
from durable_sessions.streams.subscriptions import config, leases, service, signing
from durable_sessions.streams.subscriptions.errors import (
    InvalidRequest,
    SubscriptionNotFound,
    TokenInvalid,
)
from durable_sessions.streams.subscriptions.models import WEBHOOK, Subscription

MAX_BODY = 256 * 1024
ACTIONS = {"claim", "ack", "release", "callback"}
JSON = ("content-type", "application/json")


def base_url(request: Request) -> str:
    """The absolute URL of the stream root, for the URLs a subscription hands out."""
    configured = ds_settings.SUBSCRIPTION_BASE_URL
    if configured:
        return str(configured).rstrip("/") + "/"
    stream_root = request.url()[: -len(request.path)] if request.path else request.url()
    return stream_root


def serialize(subscription: Subscription, states: list[Any], root: str) -> dict[str, Any]:
    """A subscription as ``GET`` shows it (no secret in it)."""
    from datetime import UTC, datetime

    created = datetime.fromtimestamp(subscription.created_at, tz=UTC)
    webhook = None
    if subscription.kind == WEBHOOK:
        key = signing.active_key()
        webhook = {
            "url": subscription.webhook_url,
            "signing": {
                "alg": "ed25519",
                "kid": key.kid,
                "jwks_url": f"{subscription.base_url or root}__ds/jwks.json",
            },
        }
    return {
        "id": subscription.id,
        "subscription_id": subscription.id,
        "type": subscription.kind,
        "pattern": subscription.pattern,
        "streams": [state.as_json(tail=False) for state in states],
        "webhook": webhook,
        "wake_stream": subscription.wake_stream,
        "lease_ttl_ms": subscription.lease_ttl_ms,
        "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "status": subscription.status,
        "description": subscription.description,
    }


def _split(request: Request) -> list[str]:
    """The route's segments after ``__ds/``, percent-decoded one by one (an id or a stream path
    may hold an escaped ``/``)."""
    raw = request.scope.get("raw_path")
    if raw:
        text = raw.decode("latin-1").split("?", 1)[0]
        prefix = request.scope.get("root_path", "") + request.scope["ds_prefix"]
        text = text[len(prefix) :] if text.startswith(prefix) else request.path
    else:
        text = request.path
    parts = text.split("/")[1:]  # (drop "__ds")
    return [unquote(part, errors="strict") for part in parts]


async def _body(request: Request) -> Any:
    data = await request.body(MAX_BODY)
    if not data.strip():
        return {}
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not valid JSON") from None


def _token(request: Request) -> str:
    scheme, _, token = (request.header("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid("an Authorization: Bearer <token> header is required")
    return token.strip()


async def _answer(request: Request, extra: list[tuple[str, str]], status: int, body: Any) -> None:
    if status == 204:
        await respond(request.send, 204, extra)
        return
    await respond(request.send, status, [*extra, JSON], json.dumps(body).encode())


async def handle(request: Request, extra: list[tuple[str, str]]) -> None:
    """Serve one ``__ds`` request (errors are raised as ``StreamError``s)."""
    get_store()  # (the log and, beside it, this process's subscriptions thread, which sweeps)
    try:
        parts = _split(request)
    except UnicodeDecodeError:
        raise BadRequest("the path is not valid UTF-8", code="invalid_path") from None
    method = request.method
    if parts == ["jwks.json"]:
        if method != "GET":
            raise _not_allowed("GET")
        keys = await database_sync_to_async(signing.jwks)()
        headers = [
            *extra,
            ("content-type", "application/jwk-set+json"),
            ("cache-control", "public, max-age=300"),
        ]
        await respond(request.send, 200, headers, json.dumps(keys).encode())
        return
    if len(parts) < 2 or parts[0] != "subscriptions" or not parts[1]:
        raise SubscriptionNotFound("no such control route")
    subscription_id = config.check_id(parts[1])
    scope_path = f"__ds/subscriptions/{subscription_id}"
    rest = parts[2:]
    if not rest:
        await _manage(request, extra, subscription_id, scope_path)
    elif rest == ["streams"]:
        if method != "POST":
            raise _not_allowed("POST")
        await request.caller.authorize(SUBSCRIBE, scope_path)
        body = await _body(request)
        if not isinstance(body, dict) or set(body) != {"streams"}:
            raise InvalidRequest('the body is {"streams": [<path>, ...]}')
        paths = config.stream_paths(body["streams"])
        for path in paths:
            await request.caller.authorize(READ, path)
        await database_sync_to_async(service.add_streams)(subscription_id, paths)
        await _answer(request, extra, 204, None)
    elif rest[0] == "streams":
        if method != "DELETE":
            raise _not_allowed("DELETE")
        await request.caller.authorize(SUBSCRIBE, scope_path)
        path = config.stream_path("/".join(rest[1:]), "stream")
        await database_sync_to_async(service.remove_stream)(subscription_id, path)
        await _answer(request, extra, 204, None)
    elif len(rest) == 1 and rest[0] in ACTIONS:
        if method != "POST":
            raise _not_allowed("POST")
        await _lease(request, extra, subscription_id, scope_path, rest[0])
    else:
        raise SubscriptionNotFound("no such control route")


async def _manage(
    request: Request, extra: list[tuple[str, str]], subscription_id: str, scope_path: str
) -> None:
    method = request.method
    if method not in ("PUT", "GET", "DELETE"):
        raise _not_allowed("PUT, GET, DELETE")
    await request.caller.authorize(SUBSCRIBE, scope_path)
    root = base_url(request)
    if method == "DELETE":
        await database_sync_to_async(service.delete)(subscription_id)
        await _answer(request, extra, 204, None)
        return
    if method == "GET":
        subscription, states = await database_sync_to_async(service.get)(subscription_id)
        body = await database_sync_to_async(serialize)(subscription, states, root)
        await _answer(request, extra, 200, body)
        return
    # (On a thread: a webhook URL's host name is resolved to check where it points.)
    wanted = await database_sync_to_async(config.parse)(await _body(request))
    for path in wanted.streams:
        await request.caller.authorize(READ, path)
    if wanted.pattern is not None:
        await request.caller.authorize(READ, wanted.pattern)
    if wanted.wake_stream is not None:
        await request.caller.authorize(APPEND, wanted.wake_stream)

    def create() -> tuple[bool, dict[str, Any]]:
        subscription, created = service.create_or_confirm(subscription_id, wanted, base_url=root)
        _subscription, states = service.get(subscription_id)
        return created, serialize(subscription, states, root)

    created, body = await database_sync_to_async(create)()
    await _answer(request, extra, 201 if created else 200, body)


async def _lease(
    request: Request,
    extra: list[tuple[str, str]],
    subscription_id: str,
    scope_path: str,
    action: str,
) -> None:
    if action == "claim":
        await request.caller.authorize(CLAIM, scope_path)
        body = await _body(request)
        if not isinstance(body, dict) or set(body) - {"worker"}:
            raise InvalidRequest('the body is {"worker": <name>}')
        claim = await database_sync_to_async(leases.claim)(subscription_id, body.get("worker"))
        await _answer(request, extra, 200, claim.as_json())
        return
    token = _token(request)
    body = await _body(request)
    if action == "release":
        await database_sync_to_async(leases.release)(subscription_id, token, body)
        await _answer(request, extra, 204, None)
        return
    kind = WEBHOOK if action == "callback" else "pull-wake"
    next_wake = await database_sync_to_async(leases.ack)(subscription_id, token, body, kind=kind)
    await _answer(request, extra, 200, {"ok": True, "next_wake": next_wake})


class MethodNotAllowed(StreamError):
    """A method the route does not take (405, with ``Allow``)."""

    status = 405
    default_code = "method_not_allowed"


def _not_allowed(allowed: str) -> StreamError:
    return MethodNotAllowed(f"this route takes {allowed}", headers={"Allow": allowed})
