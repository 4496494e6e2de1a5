"""The relay's receive against a channel layer that swallows a cancellation mid-read."""

import asyncio
import contextlib
import time

from durable_sessions.streams import relay


class SwallowingLayer:
    """A layer whose receive, like a redis client caught mid-read, eats one cancellation."""

    def __init__(self):
        self.entered = asyncio.Event()

    async def receive(self, channel):
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()  # swallowed: the caller goes on as if nothing happened
        await asyncio.Event().wait()  # the next cancellation (a timeout's) ends it


async def test_a_cancelled_receive_ends_within_one_slice_even_when_the_layer_swallows_it():
    layer = SwallowingLayer()
    task = asyncio.create_task(relay.receive(layer, "c", timeout=relay.ANNOUNCE_INTERVAL))
    await layer.entered.wait()
    started = time.monotonic()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("receive returned instead of being cancelled")
    assert time.monotonic() - started < relay.ANNOUNCE_INTERVAL / 2


class QuietLayer:
    """A layer with nothing to deliver, that records whether it was asked."""

    def __init__(self):
        self.entered = asyncio.Event()

    async def receive(self, channel):
        self.entered.set()
        await asyncio.Event().wait()


async def test_a_receive_in_a_task_already_being_cancelled_does_not_start():
    layer = QuietLayer()

    async def cancelled_then_receive():
        asyncio.current_task().cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)  # swallowed once, as the redis client might
        return await relay.receive(layer, "c", timeout=2)

    task = asyncio.create_task(cancelled_then_receive())
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("receive ran in a task that was being cancelled")
    assert not layer.entered.is_set()
