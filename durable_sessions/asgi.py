"""The ASGI entry point: the stream protocol in front of the host project's application.

    # project/asgi.py
    django_asgi_app = get_asgi_application()
    application = DurableSessionsRouter(ProtocolTypeRouter({"http": django_asgi_app}))

Requests under ``/v1/stream/`` go straight to ``StreamsApp``, websockets under
``/ws/v1/stream/`` to the ``StreamSocket`` consumer; everything else goes to the wrapped
application. On its first call it starts the agent runtime in this process when that is
configured (``agents/embedded.py``). The router also answers the ASGI lifespan protocol
(uvicorn): at shutdown the log's writer finishes what it has queued before the process exits.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async

from durable_sessions.agents import embedded
from durable_sessions.streams.http import StreamsApp
from durable_sessions.streams.httpio import ASGIReceive, ASGISend
from durable_sessions.streams.store import reset_store
from durable_sessions.streams.ws import StreamSocket


class DurableSessionsRouter:
    """Routes the stream protocol to ``StreamsApp`` and the rest to ``app``."""

    def __init__(self, app: Any, *, stream_prefix: str = "/v1/stream/") -> None:
        self.app = app
        self.stream_prefix = stream_prefix
        self.socket_prefix = "/ws" + stream_prefix
        self.streams = StreamsApp(stream_prefix)
        self.sockets = StreamSocket.as_asgi()

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        embedded.ensure_started()  # the agent runtime, when this process runs it (once)
        kind = scope["type"]
        if kind == "http":
            path = scope["path"][len(scope.get("root_path", "")) :]
            if path.startswith(self.stream_prefix):
                await self.streams(scope, receive, send)
                return
        elif kind == "websocket":
            path = scope["path"][len(scope.get("root_path", "")) :]
            if path.startswith(self.socket_prefix):
                scope = {**scope, "ds_stream_path": path[len(self.socket_prefix) :]}
                await self.sockets(scope, receive, send)
                return
        elif kind == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await sync_to_async(reset_store, thread_sensitive=False)()
                await send({"type": "lifespan.shutdown.complete"})
                return
