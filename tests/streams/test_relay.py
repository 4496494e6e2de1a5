"""The relay: its receive against a channel layer that swallows a cancellation mid-read, and
its sending on a real Redis of the test's own: one message per destination hub for a batch of
many streams, one group message per stream for a hub that names no channel."""

import asyncio
import contextlib
import time

import pytest

from durable_sessions.streams import relay
from durable_sessions.streams.offsets import Position
from durable_sessions.streams.records import Notice, StoredEntry
from tests.streams.test_fanout import TIMEOUT, PrivateRedis


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


# -- one message per destination --------------------------------------------------------------


def entry(seq: int, size: int) -> StoredEntry:
    return StoredEntry(seq, seq * size, 1, b"x" * size)


def notice(stream_id: int, *entries: StoredEntry, closed: bool = False) -> Notice:
    last = entries[-1] if entries else None
    next_ = Position(last.seq + 1, last.end_bytes) if last else Position(7, 70)
    return Notice(stream_id, next_, closed, False, list(entries))


def test_batches_carry_each_stream_whole_and_start_another_message_past_the_limit():
    fit = relay.BATCH_LIMIT // relay.PAYLOAD_LIMIT  # streams of the most bytes carried, at once
    full = [relay.encode(s, [notice(s, entry(0, relay.PAYLOAD_LIMIT))]) for s in range(2, fit + 3)]
    messages = [
        relay.encode(1, [notice(1, closed=True)]),  # no entries: weighs nothing
        *full,  # the last of them would pass the limit: it starts the next message
        relay.encode(99, [notice(99, entry(0, 5)), notice(99, entry(1, 5))]),
    ]
    found = relay.batches(messages)
    assert [[m["s"] for m in batch["b"]] for batch in found] == [
        [1, *range(2, fit + 2)],
        [fit + 2, 99],
    ]
    assert all(batch["type"] == relay.NOTICES and batch["o"] == relay.ORIGIN for batch in found)
    assert [len(x.entries) for x in relay.decode_all(found[1])] == [1, 2]
    assert relay.batches([]) == []
    [alone] = relay.batches([relay.encode(9, [notice(9, closed=True)])])
    [decoded] = relay.decode_all(alone)
    assert decoded.stream_id == 9 and decoded.closed and decoded.entries == []


@pytest.fixture
def private_layer(settings):
    """A Redis of the test's own, as the channel layer alias ``relay-test``."""
    redis = PrivateRedis()
    redis.start()
    backend = {"BACKEND": "channels_redis.core.RedisChannelLayer"}
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        "relay-test": {**backend, "CONFIG": {"hosts": [redis.url]}},
    }
    yield "relay-test"
    redis.remove()


async def next_message(layer, channel: str) -> dict:
    found = await relay.receive(layer, channel, timeout=relay.RECEIVE_SLICE)
    for _ in range(int(TIMEOUT / relay.RECEIVE_SLICE)):
        if found is not None:
            return found
        found = await relay.receive(layer, channel, timeout=relay.RECEIVE_SLICE)
    raise AssertionError("no message came")


async def announce(layer, interests: list[dict], sender: relay.Relay, count: int) -> None:
    """Send ``interests`` until the relay knows ``count`` streams (it may not have joined the
    control group yet when the first ones go out)."""
    deadline = time.monotonic() + TIMEOUT
    while len(sender.remote) < count:
        assert time.monotonic() < deadline, "the interests never reached the relay"
        for interest in interests:
            await layer.group_send(relay.CONTROL_GROUP, interest)
        await asyncio.sleep(0.1)


async def test_a_batch_of_many_streams_is_one_message_to_each_hub_that_follows_them(
    private_layer,
):
    sender = relay.Relay(private_layer)
    hubs = [relay.make_layer(private_layer) for _ in range(2)]
    channels = [await layer.new_channel() for layer in hubs]
    followed = {0: range(1, 51), 1: range(26, 76)}  # the two hubs share 26..50
    try:
        interests = [
            {"type": relay.INTEREST, "o": f"hub{n}", "s": list(followed[n]), "ch": channel}
            for n, channel in enumerate(channels)
        ]
        await announce(hubs[0], interests, sender, 75)
        sender.publish([notice(s, entry(0, 20), entry(1, 20)) for s in range(1, 101)])
        for n, channel in enumerate(channels):
            message = await next_message(hubs[n], channel)
            assert message["type"] == relay.NOTICES
            notices = relay.decode_all(message)
            assert [x.stream_id for x in notices] == list(followed[n])  # nothing unfollowed
            assert all([e.seq for e in x.entries] == [0, 1] for x in notices)
        sender.publish([notice(60, entry(2, 20))])  # the next message is the next batch
        message = await next_message(hubs[1], channels[1])
        assert [(x.stream_id, x.next.seq) for x in relay.decode_all(message)] == [(60, 3)]
    finally:
        sender.stop()


async def test_a_hub_that_names_no_channel_gets_one_group_message_per_stream(private_layer):
    sender = relay.Relay(private_layer)
    hub = relay.make_layer(private_layer)
    channel = await hub.new_channel()
    try:
        for stream_id in (1, 2):
            await hub.group_add(relay.stream_group(stream_id), channel)
        await announce(hub, [{"type": relay.INTEREST, "o": "old-hub", "s": [1, 2]}], sender, 2)
        sender.publish([notice(1, entry(0, 5)), notice(2, entry(0, 5))])
        found = [await next_message(hub, channel) for _ in range(2)]
        assert {m["type"] for m in found} == {relay.NOTICE}
        assert sorted(relay.decode(m).stream_id for m in found) == [1, 2]
    finally:
        sender.stop()
