"""Socket observers: a layer above hears of the websockets opened on the paths it owns.

The streams layer knows nothing of what a websocket means to the layer above (the sessions
count a device online while its socket is open). That layer registers an observer for a prefix
(``observe_sockets``, beside its ``claim_prefix``); every websocket on a path under it, once
admitted and reading, is announced to ``opened`` with who opened it and its query parameters,
and ``closed`` hears of its end, however it ends (the client left, the user was refused, the
server closed it). A ``StreamError`` from ``opened`` refuses the socket (an error frame and its
close code). A process that dies says nothing: an observer must not rely on ``closed`` for
what has to survive that (the sessions' presence expires instead).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("durable_sessions.streams.ws")


@dataclass(frozen=True, slots=True)
class OpenSocket:
    """A websocket admitted on ``path``: its (authenticated) user and its query parameters."""

    path: str
    user: Any
    query: dict[str, str]
    scope: dict[str, Any] = field(default_factory=dict, repr=False)


class SocketObserver:
    """Base class of socket observers."""

    async def opened(self, socket: OpenSocket) -> Any:
        """A socket was admitted; what this returns is handed to ``closed``. Raise a
        ``StreamError`` to refuse the socket."""
        return None

    async def closed(self, socket: OpenSocket, handle: Any) -> None:
        """The socket ended (``handle``: what ``opened`` returned)."""


_observers: dict[str, SocketObserver] = {}
_closing: set[asyncio.Task] = set()


def observe_sockets(prefix: str, observer: SocketObserver) -> None:
    """Announce every websocket on a path that starts with ``prefix`` (ending with ``/``) to
    ``observer``. Observing a prefix again replaces its observer."""
    if not prefix.endswith("/"):
        raise ValueError("an observed prefix ends with '/'")
    _observers[prefix] = observer


def observer_for(path: str) -> SocketObserver | None:
    """The observer of ``path``'s prefix, if any."""
    for prefix, observer in _observers.items():
        if path.startswith(prefix):
            return observer
    return None


class Observed:
    """One socket as its observer saw it: ``open`` at admission, ``close`` at its end."""

    def __init__(self, observer: SocketObserver, socket: OpenSocket) -> None:
        self.observer = observer
        self.socket = socket
        self.handle: Any = None
        self.open = False

    async def start(self) -> None:
        """Announce the socket (a ``StreamError`` refuses it)."""
        self.handle = await self.observer.opened(self.socket)
        self.open = True

    def close(self) -> None:
        """Announce its end, once, in a task of its own (the socket's may be cancelled)."""
        if not self.open:
            return
        self.open = False
        task = asyncio.ensure_future(self._closed())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _closed(self) -> None:
        try:
            await self.observer.closed(self.socket, self.handle)
        except Exception:
            logger.exception("the observer of the websocket on %s failed", self.socket.path)


def observe(path: str, user: Any, query: dict[str, str], scope: dict[str, Any]) -> Observed | None:
    """The ``Observed`` of a socket on ``path``, when an observer wants it."""
    observer = observer_for(path)
    if observer is None:
        return None
    return Observed(observer, OpenSocket(path, user, query, scope))
