"""The relay: committed changes travel between server processes over the channel layer.

Every process that serves live readers keeps, per event loop, one channel on the layer
(``HubLink``) and announces the streams it has live readers of on the group ``ds.hub``, with its
channel's name: when it starts following one, and again every ``ANNOUNCE_INTERVAL``. The
process's ``Relay`` remembers who follows what for ``INTEREST_TTL`` (a relay that starts asks
everyone to announce), and sends only for streams that some other process follows: each batch
of commits becomes one message per destination channel, carrying the notices of every stream
of the batch that channel follows, with the entries' bytes when they are small. A hundred
streams written at once cost one message per following process, not a hundred.

A hub also joins the group ``ds.stream.<id>`` of each stream it follows, for writers that know
no channel for it (an interest announced without one): those get one group message per stream.

Revocations (``revocation.py``) travel on ``ds.hub`` too: every hub re-authorizes the live
readers of the path named.

The channel layer delivers at most once: a lost, late or dropped message costs latency, never
data. Readers notice gaps by sequence number and re-read the database; when the layer fails (a
Redis restart), every local reader re-reads the database and the link re-subscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Protocol

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer, channel_layers

try:  # channels_redis with redis-py 8 raises this from a receive that waited 5 s for nothing
    from redis.exceptions import TimeoutError as RedisTimeout
except ImportError:  # pragma: no cover
    RedisTimeout = TimeoutError  # type: ignore[assignment,misc]

from durable_sessions.streams.offsets import Position
from durable_sessions.streams.records import Notice, StoredEntry

logger = logging.getLogger("durable_sessions.streams.relay")

CONTROL_GROUP = "ds.hub"
NOTICE = "ds.notice"  # one stream's notices (to a stream's group)
NOTICES = "ds.notices"  # {"b": [the NOTICE message of each stream]} (to one hub's channel)
INTEREST = "ds.interest"
QUERY = "ds.query"
REVOKE = "ds.revoke"  # {"p": path}: every hub re-authorizes the live readers of that path
ANNOUNCE_INTERVAL = 20.0
RECEIVE_SLICE = 1.0
INTEREST_TTL = 60.0
PAYLOAD_LIMIT = 64 * 1024  # bytes of entries carried for one stream; larger: readers re-read
BATCH_LIMIT = 256 * 1024  # bytes of entries in one message to a channel; more: another message
RETRY_DELAY = 0.5
INTEREST_SETTLE = 0.25  # seconds after announcing an interest when local readers reread once

ORIGIN = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _cancelled() -> bool:
    """Whether the current task is being cancelled (the redis client may have turned the
    cancellation into an error of its own, which must not be mistaken for a network fault)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def receive(layer: Any, channel: str, timeout: float) -> dict[str, Any] | None:
    """The next message on ``channel``, or None when none came within ``timeout`` seconds
    (at most ``RECEIVE_SLICE``: the redis client can swallow a cancellation that lands in
    the middle of its read, and a short wait bounds how long such a task lingers)."""
    if _cancelled():
        raise asyncio.CancelledError()
    try:
        async with asyncio.timeout(min(timeout, RECEIVE_SLICE)):
            return await layer.receive(channel)
    except (TimeoutError, RedisTimeout):
        if _cancelled():
            raise asyncio.CancelledError() from None
        return None


def stream_group(stream_id: int) -> str:
    """The channel-layer group of the processes that follow ``stream_id``."""
    return f"ds.stream.{stream_id}"


def make_layer(alias: str = "default") -> Any | None:
    """A private instance of the channel layer, or None when it cannot reach other processes."""
    try:
        layer = channel_layers.make_backend(alias)
    except Exception:  # no CHANNEL_LAYERS, or misconfigured: this process stays on its own
        return None
    if isinstance(layer, InMemoryChannelLayer):
        return None
    if hasattr(layer, "brpop_timeout"):
        # channels_redis blocks in Redis up to this long per receive. Short waits let a receive
        # be cancelled promptly and stay below redis-py's own 5 s read timeout.
        layer.brpop_timeout = 1
    return layer


def encode(stream_id: int, notices: list[Notice]) -> dict[str, Any]:
    """One layer message for the notices of one stream (oldest first)."""
    entries: list[list[Any]] = []
    size = 0
    for notice in notices:
        for entry in notice.entries:
            size += len(entry.data)
            entries.append([entry.seq, entry.end_bytes, entry.count, entry.data])
    last = notices[-1]
    return {
        "type": NOTICE,
        "o": ORIGIN,
        "s": stream_id,
        "n": [last.next.seq, last.next.bytes],
        "c": any(n.closed for n in notices),
        "d": any(n.deleted for n in notices),
        # Too big to carry: send the position only; readers see the gap and read the database.
        "e": entries if size <= PAYLOAD_LIMIT else [],
    }


def batches(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``NOTICES`` messages that carry ``messages`` (``encode``'s) to one channel: as few
    as ``BATCH_LIMIT`` allows, each stream's notices whole in one of them."""
    found: list[dict[str, Any]] = []
    size = 0
    for message in messages:
        weight = sum(len(entry[3]) for entry in message["e"])
        if not found or (found[-1]["b"] and size + weight > BATCH_LIMIT):
            found.append({"type": NOTICES, "o": ORIGIN, "b": []})
            size = 0
        found[-1]["b"].append(message)
        size += weight
    return found


def decode_all(message: dict[str, Any]) -> list[Notice]:
    """The notices a ``NOTICE`` or ``NOTICES`` message carries."""
    if message.get("type") == NOTICES:
        return [decode(item) for item in message["b"]]
    return [decode(message)]


def decode(message: dict[str, Any]) -> Notice:
    """The notice a layer message from ``encode`` carries."""
    entries = [StoredEntry(seq, end, count, bytes(data)) for seq, end, count, data in message["e"]]
    return Notice(message["s"], Position(*message["n"]), message["c"], message["d"], entries)


class Relay:
    """The process's sending side: notices out to the processes that follow their streams."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        # stream id -> {the channel of a process that follows it (None: its group): until when}
        self.remote: dict[int, dict[str | None, float]] = {}
        self._pending: list[Notice] = []
        self._controls: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self.enabled = make_layer(alias) is not None
        if self.enabled:
            threading.Thread(target=self._run, name="durable-sessions-relay", daemon=True).start()
            self._ready.wait(10)

    def publish(self, notices: list[Notice]) -> None:
        """Queue ``notices`` for the processes that follow their streams (any thread)."""
        if not self.enabled or self._loop is None:
            return
        wanted = [n for n in notices if n.stream_id in self.remote]
        if not wanted:
            return
        with self._lock:
            self._pending.extend(wanted)
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)  # type: ignore[union-attr]

    def send_revoke(self, path: str) -> None:
        """Ask every other process to re-authorize the live readers of ``path`` (any thread).
        At most once, like every message on the layer (see ``revocation.py``)."""
        if not self.enabled or self._loop is None:
            return
        with self._lock:
            self._controls.append({"type": REVOKE, "o": ORIGIN, "p": path})
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)  # type: ignore[union-attr]

    # -- the relay thread ----------------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._wake = asyncio.Event()
        self._main = asyncio.gather(self._send_loop(), self._listen_loop())
        self._loop = loop
        self._ready.set()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(self._main)
        loop.close()

    def stop(self) -> None:
        """End the relay's thread (the process's relay runs for as long as the process)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._main.cancel)

    async def _send_loop(self) -> None:
        layer = make_layer(self.alias)
        assert layer is not None and self._wake is not None  # (enabled: a layer exists)
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                pending, self._pending = self._pending, []
                controls, self._controls = self._controls, []
            try:
                await self._send(layer, pending, controls)
            except Exception:  # (lost notices cost latency: the readers re-read)
                logger.exception("could not relay %d notices", len(pending))

    async def _send(self, layer: Any, pending: list[Notice], controls: list[dict]) -> None:
        sends = [layer.group_send(CONTROL_GROUP, message) for message in controls]
        for channel, messages in self._destinations(pending).items():
            if channel is None:
                sends += [layer.group_send(stream_group(m["s"]), m) for m in messages]
            else:
                sends += [layer.send(channel, batch) for batch in batches(messages)]
        for outcome in await asyncio.gather(*sends, return_exceptions=True):
            if isinstance(outcome, ChannelFull):  # (a hub that is gone, or far behind)
                logger.info("a hub's channel is full: its readers will re-read")
            elif isinstance(outcome, BaseException):
                logger.warning("could not relay a notice: %r", outcome)

    def _destinations(self, pending: list[Notice]) -> dict[str | None, list[dict[str, Any]]]:
        """Each destination's messages (one per stream) for ``pending``; None is the groups."""
        by_stream: dict[int, list[Notice]] = {}
        for notice in pending:
            by_stream.setdefault(notice.stream_id, []).append(notice)
        now = time.monotonic()
        found: dict[str | None, list[dict[str, Any]]] = {}
        for stream_id, notices in by_stream.items():
            channels = [c for c, until in self.remote.get(stream_id, {}).items() if until > now]
            if channels:
                message = encode(stream_id, notices)
                for channel in channels:
                    found.setdefault(channel, []).append(message)
        return found

    async def _listen_loop(self) -> None:
        layer = make_layer(self.alias)
        assert layer is not None  # (enabled: a layer exists)
        channel = None
        while True:
            try:
                if channel is None:
                    channel = await layer.new_channel()
                await layer.group_add(CONTROL_GROUP, channel)
                await layer.group_send(CONTROL_GROUP, {"type": QUERY, "o": ORIGIN})
                next_refresh = time.monotonic() + ANNOUNCE_INTERVAL
                while True:
                    timeout = max(0.1, next_refresh - time.monotonic())
                    message = await receive(layer, channel, timeout)
                    if message is None:
                        if time.monotonic() >= next_refresh:
                            await layer.group_add(CONTROL_GROUP, channel)
                            next_refresh = time.monotonic() + ANNOUNCE_INTERVAL
                        continue
                    if message.get("type") == INTEREST and message.get("o") != ORIGIN:
                        self._interest(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _cancelled():
                    raise asyncio.CancelledError() from exc
                logger.warning("relay lost the channel layer (%r); retrying", exc)
                await asyncio.sleep(RETRY_DELAY)

    def _interest(self, message: dict[str, Any]) -> None:
        """Another process follows the streams ``message`` names, on its channel ``ch``."""
        now = time.monotonic()
        channel = message.get("ch")
        if not isinstance(channel, str):
            channel = None
        for stream_id in message["s"]:
            followers = self.remote.get(stream_id)
            if followers is None:
                followers = self.remote[stream_id] = {}
            followers[channel] = now + INTEREST_TTL
            if len(followers) > 1:  # a channel not announced again within the TTL is gone
                for gone in [c for c, until in followers.items() if until <= now]:
                    del followers[gone]
        if len(self.remote) > 10_000:
            for stream_id, followers in list(self.remote.items()):
                if all(until <= now for until in followers.values()):
                    del self.remote[stream_id]


_relay: Relay | None = None
_relay_lock = threading.Lock()


def get_relay() -> Relay:
    """The process's relay (started on first use)."""
    global _relay
    if _relay is None:
        with _relay_lock:
            if _relay is None:
                _relay = Relay()
    return _relay


class LocalReaders(Protocol):
    """What a ``HubLink`` needs of the live readers it receives for (the hub, ``hub.py``)."""

    loop: asyncio.AbstractEventLoop

    def deliver(self, notices: list[Notice]) -> None:
        """Hand notices from another process to the local readers of their streams."""

    def following(self, stream_id: int) -> bool:
        """Whether ``stream_id`` has local readers."""

    def reread(self, stream_id: int) -> None:
        """Make the local readers of ``stream_id`` read the database once."""

    def resync(self) -> None:
        """Make every local reader read the database (notices may have been lost)."""

    def revoke(self, path: str) -> None:
        """Make the local readers of ``path`` authorize their users again."""


class HubLink:
    """A hub's receiving side: its channel, its stream groups, its announcements."""

    def __init__(self, hub: LocalReaders, layer: Any) -> None:
        self.hub = hub
        self.layer = layer
        self.channel: str | None = None
        self._joined: set[int] = set()
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Future] = set()
        self.spawn(self._run())

    def spawn(self, coroutine: Any) -> None:
        """Run ``coroutine`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Stop the link's tasks (the loop is going away)."""
        for task in list(self._tasks):
            task.cancel()

    async def follow(self, stream_id: int) -> None:
        """Join ``stream_id``'s group and tell the writers (first local reader of the stream)."""
        await self._ready.wait()
        if stream_id in self._joined or not self.hub.following(stream_id):
            return
        self._joined.add(stream_id)
        try:
            await self.layer.group_add(stream_group(stream_id), self.channel)
            await self.layer.group_send(CONTROL_GROUP, self._interest([stream_id]))
            # Writers learn of this interest a moment after it is sent: whatever they committed
            # meanwhile was not relayed. One reread shortly after closes that gap quickly.
            self.hub.loop.call_later(INTEREST_SETTLE, self.hub.reread, stream_id)
        except Exception as exc:
            logger.warning("could not follow stream %s on the channel layer: %r", stream_id, exc)

    async def unfollow(self, stream_id: int) -> None:
        """Leave ``stream_id``'s group (its last local reader left)."""
        if stream_id not in self._joined or self.hub.following(stream_id):
            return
        self._joined.discard(stream_id)
        with contextlib.suppress(Exception):
            await self.layer.group_discard(stream_group(stream_id), self.channel)

    async def _announce(self) -> None:
        streams = sorted(self._joined)
        for stream_id in streams:
            await self.layer.group_add(stream_group(stream_id), self.channel)
        await self.layer.group_add(CONTROL_GROUP, self.channel)
        if streams:
            await self.layer.group_send(CONTROL_GROUP, self._interest(streams))

    def _interest(self, streams: list[int]) -> dict[str, Any]:
        return {"type": INTEREST, "o": ORIGIN, "s": streams, "ch": self.channel}

    async def _run(self) -> None:
        broken = False
        while True:
            try:
                if self.channel is None:
                    self.channel = await self.layer.new_channel()
                await self._announce()
                self._ready.set()
                if broken:
                    self.hub.resync()  # what was sent while we were away is lost: re-read
                    broken = False
                next_announce = time.monotonic() + ANNOUNCE_INTERVAL
                while True:
                    timeout = max(0.1, next_announce - time.monotonic())
                    message = await receive(self.layer, self.channel, timeout)
                    if message is None:
                        if time.monotonic() >= next_announce:
                            await self._announce()
                            next_announce = time.monotonic() + ANNOUNCE_INTERVAL
                        continue
                    kind = message.get("type")
                    if kind in (NOTICE, NOTICES) and message.get("o") != ORIGIN:
                        self.hub.deliver(decode_all(message))
                    elif kind == REVOKE and message.get("o") != ORIGIN:
                        self.hub.revoke(str(message.get("p")))
                    elif kind == QUERY and message.get("o") != ORIGIN and self._joined:
                        await self.layer.group_send(
                            CONTROL_GROUP, self._interest(sorted(self._joined))
                        )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _cancelled():
                    raise asyncio.CancelledError() from exc
                if not broken:
                    logger.warning("hub lost the channel layer (%r); readers re-read", exc)
                    self.hub.resync()
                broken = True
                await asyncio.sleep(RETRY_DELAY)
