"""HTTP plumbing for the stream protocol: the request, complete responses, browser headers.

Every response the protocol sends, errors included, carries the browser security headers and,
for an allowed ``Origin``, the CORS headers; ``Vary: Origin`` always.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

from durable_sessions.conf import ds_settings
from durable_sessions.streams.errors import BadRequest, PayloadTooLarge, StreamError
from durable_sessions.streams.permissions import Caller

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]

EXPOSED_HEADERS = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    "Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, Content-Type"
)
ALLOWED_HEADERS = (
    "Content-Type, Authorization, If-None-Match, Stream-TTL, Stream-Expires-At, Stream-Closed, "
    "Stream-Seq, Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, Producer-Id, "
    "Producer-Epoch, Producer-Seq, Last-Event-ID"
)
ALLOWED_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
CATCH_UP_CACHE = "max-age=60, stale-while-revalidate=300"
_DIGITS = re.compile(r"\A[0-9]+\Z")


class ClientGone(Exception):
    """The client disconnected before we finished reading its request."""


class Request:
    """The parts of an ASGI HTTP scope the protocol uses."""

    __slots__ = (
        "body_read",
        "caller",
        "headers",
        "method",
        "path",
        "query",
        "receive",
        "scope",
        "send",
    )

    def __init__(
        self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend, path: str
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method: str = scope["method"]
        self.path = path
        self.headers: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            name = key.decode("latin-1").lower()
            text = value.decode("latin-1")
            self.headers[name] = f"{self.headers[name]}, {text}" if name in self.headers else text
        self.query = parse_qsl(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        )
        self.caller = Caller(scope)
        self.body_read = False

    def header(self, name: str) -> str | None:
        """A request header (lowercase name); repeated headers joined by commas."""
        return self.headers.get(name)

    def param(self, name: str) -> str | None:
        """A query parameter that may appear at most once."""
        values = [value for key, value in self.query if key == name]
        if len(values) > 1:
            raise BadRequest(f"the {name!r} parameter appears more than once", code="invalid_query")
        return values[0] if values else None

    async def body(self, limit: int) -> bytes:
        """The request body, at most ``limit`` bytes: a declared ``Content-Length`` above it is
        refused before anything is read (413), as is a body that grows past it.

        A refusal leaves the rest of the body unread, so its response closes the connection
        (HTTP/1, ``unread_body_headers``): the server need not read, or the client keep
        sending, what nobody wants.
        """
        declared = self.header("content-length")
        if declared is not None:
            declared = declared.strip()
            if not _DIGITS.match(declared):  # ASCII digits only: "²".isdigit() is true
                raise BadRequest("invalid Content-Length", code="invalid_content_length")
            digits = declared.lstrip("0") or "0"  # by length first: int() takes 4300 digits
            if len(digits) > len(str(limit)) or int(digits) > limit:
                raise PayloadTooLarge(f"the body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"the body exceeds {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                self.body_read = True
                return b"".join(chunks)

    def unread_body_headers(self) -> list[tuple[str, str]]:
        """Headers for a response given before the request's body was read (a refusal from the
        headers: 400, 401, 403, 413...): ``Connection: close`` over HTTP/1 (HTTP/2 has no such
        header; its stream is reset instead). None when there is no body, or it was read."""
        if self.body_read or self.scope.get("http_version", "1.1") >= "2":
            return []
        declared = self.header("content-length")
        chunked = "chunked" in (self.header("transfer-encoding") or "").lower()
        # Any declared length but zero (a garbled one included: its size is unknown).
        zero = declared is not None and set(declared.strip()) == {"0"}
        if chunked or (declared is not None and not zero):
            return [("connection", "close")]
        return []

    def url(self) -> str:
        """The absolute URL of this stream (for ``Location``)."""
        scheme = self.scope.get("scheme", "http")
        host = self.header("host")
        if not host:
            server = self.scope.get("server") or ("localhost", None)
            host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
        prefix = self.scope.get("root_path", "") + self.scope.get("ds_prefix", "/v1/stream/")
        return f"{scheme}://{host}{prefix}{quote(self.path, safe='/')}"


class MethodNotAllowed(StreamError):
    """A method the protocol does not have (405, with ``Allow``)."""

    status = 405
    default_code = "method_not_allowed"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Allow": ALLOWED_METHODS})


def rfc3339(epoch: float) -> str | None:
    """Epoch seconds as an RFC 3339 UTC time with milliseconds (``Stream-Expires-At``); None
    when it is no such time (stored before the header's value was bounded)."""
    try:
        stamp = datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds")
    except (OverflowError, ValueError, OSError):
        return None
    return stamp.replace("+00:00", "Z")


def security_headers() -> list[tuple[str, str]]:
    """The browser security headers every stream response carries."""
    return [
        ("x-content-type-options", "nosniff"),
        ("cross-origin-resource-policy", ds_settings.CROSS_ORIGIN_RESOURCE_POLICY),
    ]


def cors_headers(request: Request) -> list[tuple[str, str]]:
    """Security headers, plus CORS headers for an allowed ``Origin``.

    Every response says ``Vary: Origin``: with or without ``Origin`` a request gets different
    headers, so a shared cache must not answer one with the other's response.
    """
    headers = [*security_headers(), ("vary", "Origin")]
    allowed = allowed_origin(request)
    if allowed is None:
        return headers
    headers.append(("access-control-allow-origin", allowed))
    if allowed != "*":
        headers.append(("access-control-allow-credentials", "true"))
    headers.append(("access-control-expose-headers", EXPOSED_HEADERS))
    return headers


def allowed_origin(request: Request) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for this request's ``Origin``: the origin
    itself when listed, ``*`` when any is allowed, None when there is none or it is refused."""
    origin = request.header("origin")
    if origin is None:
        return None
    allowed = ds_settings.CORS_ALLOWED_ORIGINS
    if origin in allowed:
        return origin
    return "*" if "*" in allowed else None


def preflight_headers(request: Request) -> list[tuple[str, str]]:
    """The headers that answer a preflight (``OPTIONS``); none for a refused origin, which
    learns nothing about what it may not do."""
    if allowed_origin(request) is None:
        return []
    requested = request.header("access-control-request-headers")
    return [
        ("access-control-allow-methods", ALLOWED_METHODS),
        ("access-control-allow-headers", requested or ALLOWED_HEADERS),
        ("access-control-max-age", "86400"),
    ]


async def respond(
    send: ASGISend,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    head: bool = False,
) -> None:
    """Send a complete response."""
    if status not in (204, 304) and not head:
        headers = [*headers, ("content-length", str(len(body)))]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


async def respond_error(
    send: ASGISend, exc: StreamError, extra: list[tuple[str, str]], *, head: bool = False
) -> None:
    """Send ``exc`` as a JSON error response with its status and protocol headers."""
    headers = [
        ("content-type", "application/json"),
        ("cache-control", "no-store"),
        *extra,
        *((name.lower(), value) for name, value in exc.headers.items()),
    ]
    await respond(send, exc.status, headers, json.dumps(exc.as_json()).encode(), head=head)
