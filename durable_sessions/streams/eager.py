"""Running a coroutine now, from plain code, and only paying for a task if it has to wait.

Fan-out to a thousand websockets sends the same two frames to each. A send almost never waits (it
writes to the socket's buffer and returns), so a task per socket per batch would cost more than
the send itself. ``start(coro)`` runs ``coro`` at once, in the caller, up to its first real
suspension; only a coroutine that does suspend (a client not reading: flow control holds its
send) continues in a task of its own, so it holds up nobody else. Python 3.12's eager tasks do
the same; this works on 3.11 too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def start(coro: Coroutine[Any, Any, Any]) -> asyncio.Task | None:
    """Run ``coro`` now. None if it finished; else the task that continues it.

    An exception ``coro`` raises before it suspends propagates to the caller.
    """
    try:
        awaited = coro.send(None)
    except StopIteration:
        return None
    resumed = _resume(coro, awaited)
    # Run the task's coroutine up to its first pause (``_Resumed``'s handshake) before the task
    # exists: a task cancelled before its first step throws into a coroutine that has not
    # begun, which would never reach ``coro``.
    resumed.send(None)
    return asyncio.ensure_future(resumed)


async def _resume(coro: Coroutine[Any, Any, Any], awaited: Any) -> Any:
    return await _Resumed(coro, awaited)


class _Resumed:
    """Hands the future ``coro`` is waiting on to the task, then drives ``coro`` to its end.

    The task wakes on that future and sends its result (or throws its exception, a
    cancellation included) into ``coro`` exactly as if the task had run it from the start. A
    cancellation that comes before the task's first step reaches ``coro`` too.
    """

    __slots__ = ("awaited", "coro")

    def __init__(self, coro: Coroutine[Any, Any, Any], awaited: Any) -> None:
        self.coro = coro
        self.awaited = awaited

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, awaited = self.coro, self.awaited
        try:
            yield  # the handshake: start() stops here; the task's first step goes on from here
        except BaseException as exc:  # cancelled before its first step
            # As Task.cancel() does for a task that waits: cancel what ``coro`` waits on, so
            # that it wakes with the cancellation; throw it in if there is nothing to cancel.
            if not (asyncio.isfuture(awaited) and awaited.cancel()):
                try:
                    awaited = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
        while True:
            try:
                value = yield awaited
            except BaseException as exc:  # every throw (a cancellation too) goes on into coro
                try:
                    awaited = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    awaited = coro.send(value)
                except StopIteration as stop:
                    return stop.value
