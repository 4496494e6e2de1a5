"""Who is on a websocket, and what they may still do: checked at the handshake and again later.

An HTTP request is authorized once and ends; a websocket may stay open for days, outliving the
credentials it opened with. ``SocketAuth`` asks the policy for ``read`` when the socket opens,
for ``append`` at the first append frame after each check, and, every
``AUTH_RECHECK_INTERVAL`` seconds, authenticates the user again and asks for ``read`` again:
at the next append frame, or, for a socket that only reads, when the websocket watchdog (one
timer per event loop, ``ws.py``) finds the check stale and starts it in a task. A user who may
no longer read (a token deleted, a session ended, a user deactivated, a policy that changed its
mind) is handed to the socket's ``on_refused``, which closes it. A revocation of the path
(``streams.revoke``, ``revocation.py``) starts that check at once.

The lookup goes through Django's async ORM, never blocking the loop, and sockets showing the
same credentials share one (``auth.authenticate_again``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from durable_sessions.conf import ds_settings
from durable_sessions.streams.errors import StreamError, Unavailable
from durable_sessions.streams.permissions import APPEND, READ, AllowAny, Caller, policy_for

logger = logging.getLogger("durable_sessions.streams.ws")


def rechecks_needed(path: str) -> bool:
    """Whether the policy of ``path`` looks at users at all (``AllowAny`` does not)."""
    return not isinstance(policy_for(path), AllowAny)


class SocketAuth:
    """The authorization of one websocket on one stream path."""

    def __init__(
        self, scope: dict[str, Any], on_refused: Callable[[StreamError, Any], Awaitable[None]]
    ) -> None:
        # No CORS protects what a websocket receives: a session cookie needs a trusted Origin
        # even to read.
        self.caller = Caller(scope, cross_site_reads=False)
        self.on_refused = on_refused
        self.path = ""
        self.checked_at: float | None = None  # loop time of the last authentication
        self.may_append = False
        self.refused: StreamError | None = None  # why the user may no longer read
        self.rechecking: asyncio.Task | None = None
        self.again = False  # revoked while a check was under way: check once more after it

    async def admit(self, path: str) -> None:
        """Authorize reading ``path`` at the handshake; raises 401/403 (``StreamError``)."""
        self.path = path
        self.checked_at = asyncio.get_running_loop().time()
        await self.caller.authorize(READ, path)

    async def authorize_append(self, ref: Any) -> bool:
        """Before the append frame ``ref``: check the user again if due. False when the socket
        is closing (the refusal answers the frame); raises 401/403 when the policy refuses
        the append (the socket stays open for reading)."""
        if self.due(asyncio.get_running_loop().time()):
            await self.start_recheck(ref)
        if self.refused is not None:
            return False
        if not self.may_append:  # asked once per check of the user, until it allows
            await self.caller.authorize(APPEND, self.path)
            self.may_append = True
        return True

    def due(self, now: float) -> bool:
        """Whether the user was last authenticated ``AUTH_RECHECK_INTERVAL`` ago or more."""
        return (
            self.checked_at is not None
            and self.refused is None
            and now - self.checked_at >= ds_settings.AUTH_RECHECK_INTERVAL
            and rechecks_needed(self.path)
        )

    def start_recheck(self, ref: Any = None) -> asyncio.Task:
        """The re-check under way, or a new one for the frame ``ref`` (None: the watchdog's)."""
        if self.rechecking is None:
            self.rechecking = asyncio.ensure_future(self.recheck(ref))
            self.rechecking.add_done_callback(self._rechecked)
        return self.rechecking

    def _rechecked(self, task: asyncio.Task) -> None:
        self.rechecking = None
        if self.again and self.refused is None and not task.cancelled():
            self.again = False
            self.start_recheck()

    def revoked(self) -> None:
        """The path was revoked (``revocation.py``): check the user now, whatever the interval
        (and once more after a check under way, which may have read the old permissions)."""
        if self.refused is not None or not self.path:
            return
        if self.rechecking is not None:
            self.again = True
            return
        self.start_recheck()

    async def recheck(self, ref: Any = None) -> None:
        """Authenticate the user again and ask again whether they may read; if not, refuse
        (the error frame carries ``ref``, the frame that started the check, if any).

        Permission to append is asked again at the next append frame.
        """
        try:
            started = await self.caller.authenticate_again(ds_settings.AUTH_RECHECK_INTERVAL)
            self.may_append = False
            await self.caller.authorize(READ, self.path)
        except StreamError as exc:
            await self.refuse(exc, ref)
            return
        except Exception:  # the user cannot be confirmed: the socket does not go on unchecked
            logger.exception("checking the user of a websocket on %s again failed", self.path)
            await self.refuse(Unavailable("could not check the user again"), ref)
            return
        self.checked_at = started

    async def refuse(self, exc: StreamError, ref: Any) -> None:
        """Remember that the user may no longer read, and have the socket closed."""
        self.refused = exc
        await self.on_refused(exc, ref)

    def close(self) -> None:
        """Cancel a re-check under way (the socket is gone)."""
        if self.rechecking is not None:
            self.rechecking.cancel()
