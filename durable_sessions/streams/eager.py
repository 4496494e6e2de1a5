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
    return asyncio.ensure_future(_resume(coro, awaited))


async def _resume(coro: Coroutine[Any, Any, Any], awaited: Any) -> Any:
    return await _Resumed(coro, awaited)


class _Resumed:
    """Hands the future ``coro`` is waiting on to the task, then drives ``coro`` to its end.

    The task wakes on that future and sends its result (or throws its exception, a
    cancellation included) into ``coro`` exactly as if the task had run it from the start.
    """

    __slots__ = ("awaited", "coro")

    def __init__(self, coro: Coroutine[Any, Any, Any], awaited: Any) -> None:
        self.coro = coro
        self.awaited = awaited

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, awaited = self.coro, self.awaited
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
