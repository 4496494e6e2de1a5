"""The Durable Streams HTTP protocol as a lean ASGI application.

Mounted in front of Django (see ``durable_sessions.asgi``) at ``/v1/stream/``: it authenticates
through Django (``durable_sessions.auth``) and asks the permission policy, but skips Django's
view and middleware stack, which would cost more than the append itself. The request and
response plumbing, CORS and browser headers are in ``httpio.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from durable_sessions.auth import host_allowed
from durable_sessions.conf import ds_settings
from durable_sessions.streams import protocol
from durable_sessions.streams.api import ainfo, aread
from durable_sessions.streams.commit import AppendOp
from durable_sessions.streams.content import Payload, is_json, parse_json_body
from durable_sessions.streams.errors import BadRequest, StreamError
from durable_sessions.streams.httpio import (
    CATCH_UP_CACHE,
    ASGIReceive,
    ASGISend,
    ClientGone,
    MethodNotAllowed,
    Request,
    cors_headers,
    preflight_headers,
    respond,
    respond_error,
    rfc3339,
)
from durable_sessions.streams.lifecycle import CreateOp, DeleteOp
from durable_sessions.streams.live import Follower
from durable_sessions.streams.offsets import NOW, next_cursor, parse_read_offset
from durable_sessions.streams.permissions import (
    APPEND,
    CREATE,
    DELETE,
    READ,
    AllowAny,
    policy_for,
)
from durable_sessions.streams.records import ReadResult, StreamInfo
from durable_sessions.streams.revocation import Recheck
from durable_sessions.streams.sse import event_stream
from durable_sessions.streams.store import get_store
from durable_sessions.streams.subscriptions import routes

logger = logging.getLogger("durable_sessions.streams.http")


class StreamsApp:
    """ASGI application serving the protocol for the paths below ``prefix``."""

    def __init__(self, prefix: str = "/v1/stream/") -> None:
        self.prefix = prefix

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        raw = scope["path"][len(scope.get("root_path", "")) :]
        scope["ds_prefix"] = self.prefix
        request = Request(scope, receive, send, raw[len(self.prefix) :])
        extra = cors_headers(request)
        try:
            if not host_allowed(scope):
                raise BadRequest("the Host header names no allowed host", code="disallowed_host")
            if request.method == "OPTIONS":
                await respond(send, 204, preflight_headers(request) + extra)
                return
            if request.path == "__ds" or request.path.startswith("__ds/"):
                await routes.handle(request, extra)  # reserved: before any stream path
                return
            request.path = protocol.parse_stream_path(request.path, ds_settings.MAX_PATH_LENGTH)
            handler = HANDLERS.get(request.method)
            if handler is None:
                raise MethodNotAllowed(f"{request.method} is not supported on streams")
            await handler(request, extra)
        except ClientGone:
            return
        except StreamError as exc:
            extra = extra + request.unread_body_headers()
            await respond_error(send, exc, extra, head=request.method == "HEAD")
        except Exception:
            logger.exception("error serving %s %s", request.method, scope.get("path"))
            await respond_error(send, StreamError("internal error"), extra)


async def check(request: Request, action: str, path: str | None = None) -> None:
    """Ask the permission policy about ``action`` on ``path`` (default: this request's)."""
    await request.caller.authorize(action, path or request.path)


def stream_headers(info: StreamInfo) -> list[tuple[str, str]]:
    """The headers that describe a stream: content type, tail, closed."""
    headers = [("content-type", info.content_type), ("stream-next-offset", str(info.tail))]
    if info.closed:
        headers.append(("stream-closed", "true"))
    return headers


def cache_control(result: ReadResult) -> str:
    """Ranges below the tail, or ending a closed stream, never change: caches may keep them.

    A response that reaches the tail of an open stream must be revalidated (its ETag makes that
    cheap): the next append will extend what the same request returns.
    """
    if result.up_to_date and not result.closed:
        return "no-cache"
    public = isinstance(policy_for(result.info.path), AllowAny)
    return f"{'public' if public else 'private'}, {CATCH_UP_CACHE}"


def etag_matches(header: str | None, tag: str) -> bool:
    """``If-None-Match`` semantics: a list of (weak or strong) tags, or ``*``."""
    if not header:
        return False
    tags = [candidate.strip().removeprefix("W/") for candidate in header.split(",")]
    return "*" in tags or tag in tags


def read_headers(result: ReadResult) -> list[tuple[str, str]]:
    """The headers of a response carrying a read (catch-up or long-poll 200)."""
    headers = [("content-type", result.info.content_type), ("stream-next-offset", str(result.next))]
    if result.up_to_date:
        headers.append(("stream-up-to-date", "true"))
    if result.closed:
        headers.append(("stream-closed", "true"))
    return headers


def etag(result: ReadResult) -> str:
    """The ETag of a read: the stream, the range, and whether it ends the stream."""
    closed = ":c" if result.closed else ""
    return f'"{result.info.id}:{result.start}:{result.next}{closed}"'


async def handle_put(request: Request, extra: list[tuple[str, str]]) -> None:
    """PUT: create a stream (or a fork), authorized from the headers before the body."""
    header = request.header
    ttl = protocol.parse_ttl(header("stream-ttl"))
    expires_at = protocol.parse_expires_at(header("stream-expires-at"))
    if ttl is not None and expires_at is not None:
        raise BadRequest("Stream-TTL and Stream-Expires-At exclude each other", code="invalid_ttl")
    fork_from = header("stream-forked-from")
    if fork_from is None and (
        header("stream-fork-offset") is not None or header("stream-fork-sub-offset") is not None
    ):
        raise BadRequest("fork headers need Stream-Forked-From", code="invalid_fork")
    op = CreateOp(
        request.path,
        protocol.parse_content_type(header("content-type")),
        ttl,
        expires_at,
        protocol.parse_flag(header("stream-closed")),
        fork_from=None if fork_from is None else source_path(request, fork_from),
        fork_offset=protocol.parse_fork_offset(header("stream-fork-offset")),
        fork_sub_offset=protocol.parse_sub_offset(header("stream-fork-sub-offset")),
    )
    # Authorized from the headers alone: a refused client is answered before it sends its body.
    await check(request, CREATE)
    if op.fork_from is not None:
        await check(request, READ, op.fork_from)
    op.body = await request.body(ds_settings.MAX_APPEND_BYTES)
    created = await get_store().write(op)
    headers = [*extra, *stream_headers(created.info)]
    if created.created:
        headers.append(("location", request.url()))
    await respond(request.send, 201 if created.created else 200, headers)


def source_path(request: Request, value: str) -> str:
    """The stream path named by ``Stream-Forked-From`` (a URL path on this server, or a path)."""
    value = value.strip()
    prefix = request.scope.get("root_path", "") + request.scope["ds_prefix"]
    if value.startswith(("http://", "https://")):
        host, _, rest = value.split("://", 1)[1].partition("/")
        if host != request.header("host"):
            raise BadRequest(
                "Stream-Forked-From must name a stream on this server", code="invalid_fork"
            )
        value = "/" + rest
    if value.startswith("/"):
        if not value.startswith(prefix):
            raise BadRequest(
                "Stream-Forked-From must name a stream on this server", code="invalid_fork"
            )
        value = value[len(prefix) :]
    return protocol.parse_stream_path(value, ds_settings.MAX_PATH_LENGTH)


async def handle_post(request: Request, extra: list[tuple[str, str]]) -> None:
    """POST: append (or close), authorized from the headers before the body."""
    header = request.header
    close = protocol.parse_flag(header("stream-closed"))
    producer = protocol.parse_producer(
        header("producer-id"), header("producer-epoch"), header("producer-seq")
    )
    stream_seq = protocol.parse_stream_seq(header("stream-seq"))
    content_type = protocol.parse_content_type(header("content-type"))
    await check(request, APPEND)  # before the body, as for PUT
    body = await request.body(ds_settings.MAX_APPEND_BYTES)
    payload = error = None
    if body:
        if content_type is None:
            error = BadRequest("Content-Type is required on an append", code="missing_content_type")
        elif is_json(content_type):
            try:
                payload = parse_json_body(body, allow_empty_array=False)
            except BadRequest as exc:
                error = exc
        else:
            payload = Payload(body, 1)
    op = AppendOp(request.path, payload, content_type, close, stream_seq, producer, error)
    result = await get_store().write(op)
    headers = [*extra, ("stream-next-offset", str(result.next))]
    if result.closed:
        headers.append(("stream-closed", "true"))
    if result.producer_epoch is not None:
        headers += [
            ("producer-epoch", str(result.producer_epoch)),
            ("producer-seq", str(result.producer_seq)),
        ]
    await respond(request.send, result.status, headers)


async def handle_head(request: Request, extra: list[tuple[str, str]]) -> None:
    """HEAD: the stream's metadata, without renewing its TTL."""
    await check(request, READ)
    info = await ainfo(request.path)
    headers = [*extra, *stream_headers(info), ("cache-control", "no-store")]
    if info.ttl_seconds is not None:
        headers.append(("stream-ttl", str(info.ttl_seconds)))
    stamp = None if info.expires_at is None else rfc3339(info.expires_at)
    if stamp is not None:
        headers.append(("stream-expires-at", stamp))
    await respond(request.send, 200, headers, head=True)


async def handle_delete(request: Request, extra: list[tuple[str, str]]) -> None:
    """DELETE: delete the stream (soft while forks read from it)."""
    await check(request, DELETE)
    await get_store().write(DeleteOp(request.path))
    await respond(request.send, 204, extra)


async def handle_get(request: Request, extra: list[tuple[str, str]]) -> None:
    """GET: a catch-up read, a long-poll or an SSE response, by the ``live`` parameter."""
    offset = request.param("offset")
    live = request.param("live")
    if live is not None and live not in ("long-poll", "sse"):
        raise BadRequest(f"unknown live mode {live!r}", code="invalid_query")
    if live is not None and offset is None:
        raise BadRequest("live reads need an offset", code="invalid_query")
    start = parse_read_offset(offset)
    resume = request.header("last-event-id")
    if live == "sse" and resume:
        start = parse_read_offset(resume)  # an EventSource reconnecting: our control event ids
    await check(request, READ)
    if live == "long-poll":
        await long_poll(request, extra, start)
    elif live == "sse":
        await event_stream(request, extra, start)
    else:
        await catch_up(request, extra, start)


async def catch_up(request: Request, extra: list[tuple[str, str]], start: Any) -> None:
    """Answer one catch-up read (304 when the client's ETag still matches)."""
    result = await aread(request.path, start)
    headers = [*extra, *read_headers(result)]
    if start == NOW:
        headers.append(("cache-control", "no-store"))
        await respond(request.send, 200, headers, result.body)
        return
    tag = etag(result)
    headers += [("etag", tag), ("cache-control", cache_control(result))]
    if etag_matches(request.header("if-none-match"), tag):
        await respond(request.send, 304, headers)
        return
    await respond(request.send, 200, headers, result.body)


async def long_poll(request: Request, extra: list[tuple[str, str]], start: Any) -> None:
    """Answer with data as soon as there is some after ``start``, or 204 after the timeout."""
    async with Follower(request.path, None if start == NOW else start) as follower:
        result = await follower.next(None)
        if not result.count and not result.closed:
            result = await _wait(request, follower) or result
        cursor = next_cursor(request.param("cursor"))
        if result.count:
            headers = [
                *extra,
                *read_headers(result),
                ("etag", etag(result)),
                ("cache-control", cache_control(result)),
            ]
            if not result.closed:  # no cursor once the stream has ended: nothing to poll for
                headers.append(("stream-cursor", cursor))
            await respond(request.send, 200, headers, result.body)
            return
        headers = [
            *extra,
            ("stream-next-offset", str(follower.position)),
            ("stream-up-to-date", "true"),
            ("cache-control", "no-store"),
        ]
        headers.append(("stream-closed", "true") if result.closed else ("stream-cursor", cursor))
        await respond(request.send, 204, headers)


async def _wait(request: Request, follower: Follower) -> ReadResult | None:
    """The long-poll's wait for data; 401/403 at once if the path is revoked for the user."""
    waiting = asyncio.ensure_future(follower.next(ds_settings.LONG_POLL_TIMEOUT))
    refusals: list[StreamError] = []

    def refused(error: StreamError) -> None:
        refusals.append(error)
        waiting.cancel()

    with Recheck(request.caller, request.path, refused):
        try:
            return await waiting
        except asyncio.CancelledError:
            if refusals:
                raise refusals[0] from None
            raise


HANDLERS = {
    "PUT": handle_put,
    "POST": handle_post,
    "GET": handle_get,
    "HEAD": handle_head,
    "DELETE": handle_delete,
}
