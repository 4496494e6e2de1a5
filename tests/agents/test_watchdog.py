"""The watchdog that times an agent's reads: one deadline per wait, one timer for all of them.

The sleeps here are the slow upstream being timed, not synchronization."""

from __future__ import annotations

import asyncio

import pytest

from durable_sessions.agents.watchdog import Watchdog


async def test_a_wait_past_its_deadline_is_a_timeout():
    loop = asyncio.get_running_loop()
    watchdog = Watchdog()
    started = loop.time()
    with pytest.raises(TimeoutError), watchdog.until(started + 0.05):
        await asyncio.sleep(5)
    assert watchdog.timed_out
    assert 0.04 < loop.time() - started < 1.0
    watchdog.close()


async def test_waits_whose_deadlines_move_on_outlast_the_first_deadline():
    # 30 waits of 10 ms, each allowed 60 ms: 300 ms in all, five times the first deadline, which
    # the one timer passes by setting itself again for the wait under way
    loop = asyncio.get_running_loop()
    watchdog = Watchdog()
    started = loop.time()
    for _ in range(30):
        with watchdog.until(loop.time() + 0.06):
            await asyncio.sleep(0.01)
        assert not watchdog.timed_out
    assert loop.time() - started > 0.25
    watchdog.close()


async def test_the_time_between_waits_is_not_timed():
    loop = asyncio.get_running_loop()
    watchdog = Watchdog()
    with watchdog.until(loop.time() + 0.05):
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)  # the caller's own work, after the wait: past the deadline
    with watchdog.until(loop.time() + 0.05):
        await asyncio.sleep(0.01)
    assert not watchdog.timed_out
    watchdog.close()


async def test_a_stop_during_a_wait_is_a_cancellation_and_the_timer_then_does_nothing():
    loop = asyncio.get_running_loop()
    watchdog = Watchdog()
    entered = asyncio.Event()
    after: list[str] = []

    async def reads() -> None:
        try:
            with watchdog.until(loop.time() + 0.05):
                entered.set()
                await asyncio.sleep(5)
        except asyncio.CancelledError:
            after.append("cancelled")
            await asyncio.sleep(0.1)  # past the deadline, outside any wait: not cancelled
            after.append("went on")
            raise

    task = asyncio.ensure_future(reads())
    await entered.wait()
    task.cancel()  # a stop, before the deadline
    with pytest.raises(asyncio.CancelledError):
        await task
    assert after == ["cancelled", "went on"] and not watchdog.timed_out
    watchdog.close()


async def test_a_stop_at_the_deadline_itself_stays_a_stop():
    loop = asyncio.get_running_loop()
    watchdog = Watchdog()
    deadline = loop.time() + 0.05

    async def wait() -> None:
        with watchdog.until(deadline):
            loop.call_at(deadline, task.cancel)  # in the same turn of the loop as the timer's
            await asyncio.sleep(5)

    task = asyncio.ensure_future(wait())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not watchdog.timed_out
    watchdog.close()


async def test_a_timeout_error_of_the_awaited_itself_is_not_the_watchdogs():
    loop = asyncio.get_running_loop()
    watchdog = Watchdog()

    async def fails() -> None:
        raise TimeoutError("the upstream's own")

    with pytest.raises(TimeoutError, match="the upstream's own"), watchdog.until(loop.time() + 5):
        await fails()
    assert not watchdog.timed_out
    watchdog.close()
