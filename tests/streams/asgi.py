"""HTTP requests to the stream protocol's ASGI application in process, without a server.

For tests that need a setting a server process would not see (``override_settings``), or that
watch what the application asks of the server: ``Response.receive_calls`` counts the calls the
application made to ``receive()``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tests.streams.apps import APP


@dataclass
class Response:
    """What the application sent: status, headers (lowercase names), body."""

    status: int
    headers: dict[str, str]
    body: bytes
    receive_calls: int
    header_list: list[tuple[str, str]]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The error code of a JSON error body, else None."""
        try:
            return self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None


async def request(
    method: str,
    path: str,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    chunks: list[bytes] | None = None,
    query: str = "",
    host: str | None = "localhost",
    timeout: float = 30,
    raw_path: str | None = None,
) -> Response:
    """One request to ``/v1/stream/<path>``; the body as one message, or as ``chunks``.

    ``path`` is sent as the decoded ``scope["path"]``, as ASGI servers do (``raw_path``, the
    path after ``/v1/stream/`` as the client sent it, escapes included, defaults to ``path``
    quoted). Once the body is consumed, ``receive()`` waits, as a server's does until the
    client disconnects.
    """
    parts = [body] if chunks is None else chunks
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(parts) - 1}
        for i, chunk in enumerate(parts)
    ]
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client is still there; nothing more comes
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw_headers = [] if host is None else [(b"host", host.encode())]
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": f"/v1/stream/{path}",
        "raw_path": f"/v1/stream/{raw_path if raw_path is not None else quote(path)}".encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    await asyncio.wait_for(APP(scope, receive, send), timeout)
    start = next(m for m in sent if m["type"] == "http.response.start")
    header_list = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
    joined: dict[str, str] = {}
    for name, value in header_list:
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Response(start["status"], joined, body_out, calls, header_list)
