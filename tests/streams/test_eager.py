"""Running a coroutine eagerly (durable_sessions/streams/eager.py)."""

from __future__ import annotations

import asyncio

import pytest

from durable_sessions.streams import eager


async def test_a_coroutine_that_never_waits_finishes_in_the_call_without_a_task():
    steps = []

    async def quick() -> None:
        steps.append("ran")

    assert eager.start(quick()) is None
    assert steps == ["ran"]


async def test_a_coroutine_that_waits_goes_on_in_a_task_with_the_result_it_waited_for():
    gate = asyncio.get_running_loop().create_future()
    steps = []

    async def slow() -> str:
        steps.append("before")
        value = await gate
        steps.append(value)
        return "done"

    task = eager.start(slow())
    assert task is not None and steps == ["before"]
    gate.set_result("after")
    assert await task == "done"
    assert steps == ["before", "after"]


async def test_errors_before_waiting_reach_the_caller_and_after_it_the_task():
    async def broken() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        eager.start(broken())

    gate = asyncio.get_running_loop().create_future()

    async def waits_for_an_error() -> None:
        await gate

    task = eager.start(waits_for_an_error())
    gate.set_exception(KeyError("later"))
    with pytest.raises(KeyError):
        await task


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    loop = asyncio.get_running_loop()
    started, gate = loop.create_future(), loop.create_future()
    waiting = asyncio.Event()
    cleaned = []

    async def held() -> None:
        try:
            await started  # start() returns here; the rest runs in the task
            waiting.set()
            await gate
        finally:
            cleaned.append(True)

    task = eager.start(held())
    assert task is not None
    started.set_result(None)
    await waiting.wait()  # the task runs the coroutine, which waits on the gate now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True] and gate.cancelled()


@pytest.mark.parametrize("waits_on", ["a future", "a bare yield"])
async def test_a_task_cancelled_before_its_first_step_still_cancels_the_coroutine(waits_on):
    """The task start() returns has not run yet: a cancel at once must still reach the
    coroutine where it waits (and cancel what it waits on), as it would for a running task."""
    gate = asyncio.get_running_loop().create_future()
    cleaned = []

    async def held() -> None:
        try:
            if waits_on == "a future":
                await gate
            else:
                await asyncio.sleep(0)
                raise AssertionError("not cancelled")
        finally:
            cleaned.append(True)

    task = eager.start(held())
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True] and task.cancelled()
    assert gate.cancelled() == (waits_on == "a future")


async def test_a_coroutine_may_wait_several_times():
    async def several() -> int:
        total = 0
        for _ in range(3):
            await asyncio.sleep(0)
            total += 1
        return total

    task = eager.start(several())
    assert task is not None and await task == 3
