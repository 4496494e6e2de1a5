"""A deadline for each of many waits in a row, on one timer.

An agent's reply is read one event at a time, each read with its own deadline (the first event,
the next one, the whole reply). ``asyncio.timeout`` around each read makes and cancels a timer
per event: thousands a second on a busy worker's event loop. ``Watchdog`` keeps one timer
instead: a wait only notes its deadline, and the timer, when it fires before the deadline of
the wait under way (the deadlines move on with every event), sets itself again for it. It
fires about once per deadline's length, however many events come meanwhile.

    watchdog = Watchdog()
    try:
        with watchdog.until(deadline):
            item = await anext(source)      # TimeoutError past the deadline
    finally:
        watchdog.close()
"""

from __future__ import annotations

import asyncio
from types import TracebackType

EARLY = 0.001  # seconds: a timer this close to the deadline counts as on time


class Watchdog:
    """Cancels the task waiting in ``until(...)`` once that wait's deadline has passed (as
    ``TimeoutError`` out of the ``with``, like ``asyncio.timeout``); between waits it does
    nothing."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._deadline = 0.0
        self._cancelling = 0
        self._waiting = False
        self._expired = False
        self.timed_out = False  # (the last wait's TimeoutError was this watchdog's)

    def until(self, deadline: float) -> Watchdog:
        """The next wait's deadline (``loop.time()``), for ``with``."""
        self._deadline = deadline
        return self

    def __enter__(self) -> Watchdog:
        task = asyncio.current_task()
        assert task is not None, "a watchdog guards a task's waits"
        self._task, self._cancelling = task, task.cancelling()
        self._waiting, self._expired, self.timed_out = True, False, False
        if self._handle is None or self._handle.when() > self._deadline:
            if self._handle is not None:
                self._handle.cancel()
            self._handle = self._loop.call_at(self._deadline, self._fire)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._waiting = False
        if kind is asyncio.CancelledError and self._expired and self._task is not None:
            self._expired = False
            if self._task.uncancel() <= self._cancelling:  # (ours alone: not a stop as well)
                self.timed_out = True
                raise TimeoutError from exc

    def close(self) -> None:
        """Drop the timer (the reads are over)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        if not self._waiting or self._task is None:
            return  # (set again by the next wait)
        if self._deadline - self._loop.time() > EARLY:  # the wait under way has a later one
            self._handle = self._loop.call_at(self._deadline, self._fire)
            return
        self._expired = True
        self._task.cancel()
