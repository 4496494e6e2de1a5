"""The stream protocol's ASGI router in process, for tests that drive it without a server."""

from __future__ import annotations

from durable_sessions.asgi import DurableSessionsRouter


async def not_found(scope, receive, send):  # the wrapped application: nothing else is served
    raise AssertionError(f"unexpected {scope['type']} {scope['path']}")


APP = DurableSessionsRouter(not_found)
