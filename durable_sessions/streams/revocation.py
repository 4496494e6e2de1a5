"""Live revocation: ``revoke(path)`` has every live reader of ``path``, in every process,
authorize its user again now, and stop at once if it may no longer read.

A permission policy decides at the handshake of a websocket and at the start of an SSE response
or a long-poll; a layer above that takes a user's access away (the sessions remove a member)
calls ``revoke(path)`` after its change is committed. In this process, every hub hears it at once;
the other processes hear it through the channel layer (``relay.py``), within one round trip.
Then:

- a **websocket** checks its user again (``SocketAuth.revoked``): refused, it gets an error
  frame and is closed with 4401/4403;
- an **SSE response** asks the policy again: refused, the response ends (the client's reconnect
  is answered 401/403);
- a **long-poll** asks the policy again: refused, it is answered 401/403 instead of waiting.

Users who may still read notice nothing. The layer delivers at most once: a lost revocation is
caught by the websocket's periodic re-check (``AUTH_RECHECK_INTERVAL``), the end of the SSE
response (``SSE_RECONNECT_INTERVAL``) or of the long-poll (``LONG_POLL_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from durable_sessions.conf import ds_settings
from durable_sessions.streams import hub, relay
from durable_sessions.streams.errors import StreamError, Unavailable
from durable_sessions.streams.permissions import READ, Caller
from durable_sessions.streams.store import check_path

logger = logging.getLogger("durable_sessions.streams.revocation")


def revoke(path: str) -> None:
    """Have every live reader of ``path`` (websocket, SSE, long-poll), in every process,
    authorize its user again now; those that may no longer read are cut off.

    Call it after the change that takes access away is committed. Safe from any thread;
    returns at once.
    """
    path = check_path(path)
    hub.revoke_local(path)
    relay.get_relay().send_revoke(path)


class Recheck:
    """What an HTTP live reader (SSE, long-poll) does when its path is revoked: authorize its
    user again, and call ``on_refused(error)`` if they may no longer read.

    Use it on the reader's loop, as a context manager around the wait.
    """

    def __init__(
        self, caller: Caller, path: str, on_refused: Callable[[StreamError], None]
    ) -> None:
        self.caller = caller
        self.path = path
        self.on_refused = on_refused
        self.refused: StreamError | None = None
        self._task: asyncio.Task | None = None
        self._again = False
        self._forget: Callable[[], None] | None = None

    def __enter__(self) -> Recheck:
        self._forget = hub.get_hub().on_revoke(self.path, self._revoked)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._forget is not None:
            self._forget()
            self._forget = None
        if self._task is not None:
            self._task.cancel()

    def _revoked(self) -> None:
        if self._task is not None:  # a check under way may have read the old permissions
            self._again = True
            return
        self._task = asyncio.ensure_future(self._check())
        self._task.add_done_callback(self._checked)

    def _checked(self, task: asyncio.Task) -> None:
        self._task = None
        if self._again and self.refused is None and self._forget is not None:
            self._again = False
            self._revoked()

    async def _check(self) -> None:
        error: StreamError | None = None
        try:
            await self.caller.authenticate_again(ds_settings.AUTH_RECHECK_INTERVAL)
            await self.caller.authorize(READ, self.path)
        except StreamError as exc:
            error = exc
        except Exception:  # the user cannot be confirmed: the reader does not go on unchecked
            logger.exception("checking the user of a live read of %s again failed", self.path)
            error = Unavailable("could not check the user again")
        if error is not None:
            self.refused = error
            self.on_refused(error)


def watch(path: str, callback: Callable[[], None]) -> Callable[[], None]:
    """Have ``callback()`` called on this loop when ``path`` is revoked (a websocket's hook);
    returns the function that stops it."""
    return hub.get_hub().on_revoke(path, callback)
