"""The hub: hands committed changes to the live readers of this process.

There is one hub per event loop. A live reader (long-poll, SSE, websocket, ``subscribe()``)
registers a ``Subscription`` for its stream *before* it reads the database, so a change committed
after that read is never missed; changes it already read are skipped by sequence number. The
writer publishes each commit's ``Notice``s once per loop, not once per reader, and the hub fans
them out in memory. Changes committed by other processes arrive through the channel layer
(``relay.py``): the hub follows each stream that has local readers there, once.

A subscription's queue is bounded. A reader that falls behind is not allowed to hold memory or
slow anyone down: its queue is dropped and it re-reads the database. A reader that heard
nothing for ``LIVE_RECHECK_INTERVAL`` re-reads it too (one timer per hub wakes them).

A live reader that authorized its user may also register for revocations of its path
(``on_revoke``): ``streams.revoke(path)`` (``revocation.py``) reaches every hub of every process,
and each calls its readers back to authorize the user again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from durable_sessions.conf import ds_settings
from durable_sessions.streams import relay
from durable_sessions.streams.records import Notice

logger = logging.getLogger("durable_sessions.streams.hub")

# Notices a subscription keeps before it gives up on them and re-reads the database.
SUBSCRIPTION_QUEUE_LIMIT = 256
# Seconds a hub keeps following a stream on the channel layer after its last local reader left
# (long-poll clients leave and come back with every request).
UNFOLLOW_DELAY = 30.0


class Subscription:
    """One live reader's registration for one stream.

    A reader may also set ``direct``: a function the hub calls with a stream's new notices
    instead of queueing them, while the reader is waiting with nothing queued. It returns True
    when it has handled them (a websocket or an SSE response sends them then and there, see
    ``ws.py`` and ``sse.py``), False to have them queued as usual. A thousand readers of one
    stream then cost one pass over them per commit, not a thousand task wake-ups.
    """

    __slots__ = ("_event", "_hub", "_notices", "direct", "heard", "reread", "stream_id", "waiting")

    def __init__(self, hub: Hub, stream_id: int) -> None:
        self._hub = hub
        self.stream_id = stream_id
        self._notices: deque[Notice] = deque()
        self._event = asyncio.Event()
        self.reread = False  # notices were dropped or may have been missed: read the database
        self.heard = hub.loop.time()
        self.waiting = False  # the reader is in wait(), nothing queued
        self.direct: Callable[[list[Notice]], bool] | None = None

    def offer(self, notices: list[Notice], now: float) -> None:
        """Hand this stream's new notices to the reader: directly if it can take them now
        (``now``: the loop's time)."""
        self.heard = now
        if self.direct is not None and self.waiting and not self.pending() and self.direct(notices):
            return
        for notice in notices:
            self.push(notice)

    def push(self, notice: Notice) -> None:
        """Queue a notice (called by ``offer``, on the loop)."""
        if len(self._notices) >= SUBSCRIPTION_QUEUE_LIMIT:
            self._notices.clear()
            self.reread = True
        else:
            self._notices.append(notice)
        self._event.set()

    def wake_to_reread(self) -> None:
        """Make the reader read the database (a quiet period, or the layer failed)."""
        self.heard = self._hub.loop.time()
        self.reread = True
        self._event.set()

    def pending(self) -> bool:
        """Whether the reader has notices to take, or must read the database."""
        return bool(self._notices) or self.reread

    async def wait(self, timeout: float | None) -> bool:
        """Wait until a notice is queued; False when ``timeout`` seconds pass first."""
        if self.pending():
            return True
        self._event.clear()
        self.waiting = True
        try:
            if timeout is None:
                await self._event.wait()
                return True
            # A plain timer, not asyncio.timeout(): readers wait on every batch.
            timer = self._hub.loop.call_later(timeout, self._event.set)
            try:
                await self._event.wait()
            finally:
                timer.cancel()
            return self.pending()
        finally:
            self.waiting = False

    def take(self) -> tuple[list[Notice], bool]:
        """The queued notices, and whether the reader must read the database instead."""
        notices = list(self._notices)
        self._notices.clear()
        reread, self.reread = self.reread, False
        return notices, reread

    def close(self) -> None:
        """Stop receiving notices."""
        self._hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
    """The live readers of one event loop, by stream id."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._subscriptions: dict[int, set[Subscription]] = {}
        self._link: relay.HubLink | None = None
        self._link_checked = False
        self._ticking = False
        self._revocable: dict[str, set[Callable[[], None]]] = {}

    def _linked(self) -> relay.HubLink | None:
        if not self._link_checked:
            self._link_checked = True
            layer = relay.make_layer()
            if layer is not None:
                self._link = relay.HubLink(self, layer)
        return self._link

    def subscribe(self, stream_id: int) -> Subscription:
        """Register a live reader of ``stream_id`` (and follow it on the channel layer)."""
        subscription = Subscription(self, stream_id)
        subscriptions = self._subscriptions.setdefault(stream_id, set())
        subscriptions.add(subscription)
        link = self._linked()
        if link is not None and len(subscriptions) == 1:
            link.spawn(link.follow(stream_id))
        if not self._ticking:
            self._ticking = True
            self.loop.call_later(self._tick_interval(), self._recheck_quiet)
        return subscription

    @staticmethod
    def _tick_interval() -> float:
        return ds_settings.LIVE_RECHECK_INTERVAL / 2

    def _recheck_quiet(self) -> None:
        """Wake the readers that heard nothing for LIVE_RECHECK_INTERVAL: one timer for all.

        Notices travel at most once; a reader that has been quiet that long reads the database
        in case one was lost.
        """
        if not self._subscriptions or self.loop.is_closed():
            self._ticking = False
            return
        quiet = self.loop.time() - ds_settings.LIVE_RECHECK_INTERVAL
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                if subscription.heard <= quiet:
                    subscription.wake_to_reread()
        self.loop.call_later(self._tick_interval(), self._recheck_quiet)

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a reader; the stream is unfollowed a while after its last reader left."""
        stream_id = subscription.stream_id
        subscriptions = self._subscriptions.get(stream_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscriptions[stream_id]
                if self._link is not None and not self.loop.is_closed():
                    link = self._link
                    self.loop.call_later(
                        UNFOLLOW_DELAY, lambda: link.spawn(link.unfollow(stream_id))
                    )

    def following(self, stream_id: int) -> bool:
        """Whether this loop has live readers of ``stream_id``."""
        return stream_id in self._subscriptions

    def reread(self, stream_id: int) -> None:
        """Make the live readers of ``stream_id`` read the database once."""
        for subscription in tuple(self._subscriptions.get(stream_id, ())):
            subscription.wake_to_reread()

    def resync(self) -> None:
        """Make every live reader re-read the database (notices may have been lost)."""
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.wake_to_reread()

    def wants(self, notices: list[Notice]) -> bool:
        """Whether any notice concerns a stream with a reader here (safe from any thread)."""
        subscriptions = self._subscriptions
        return any(notice.stream_id in subscriptions for notice in notices)

    def deliver(self, notices: list[Notice]) -> None:
        """Hand ``notices`` to the subscriptions of their streams (on the loop)."""
        by_stream: dict[int, list[Notice]] = {}
        for notice in notices:
            if notice.stream_id in self._subscriptions:
                by_stream.setdefault(notice.stream_id, []).append(notice)
        now = self.loop.time()
        for stream_id, stream_notices in by_stream.items():
            for subscription in tuple(self._subscriptions.get(stream_id, ())):
                subscription.offer(stream_notices, now)

    def on_revoke(self, path: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Have ``callback()`` called (on the loop) when ``path`` is revoked (``revocation.py``):
        a live reader re-authorizes its user then. Returns the function that unregisters it."""
        callbacks = self._revocable.setdefault(path, set())
        callbacks.add(callback)

        def forget() -> None:
            callbacks.discard(callback)
            if not callbacks and self._revocable.get(path) is callbacks:
                del self._revocable[path]

        return forget

    def revoke(self, path: str) -> None:
        """Make every live reader of ``path`` on this loop re-authorize its user now."""
        for callback in tuple(self._revocable.get(path, ())):
            try:
                callback()
            except Exception:  # one reader's failure must not spare the others
                logger.exception("re-authorizing a reader of %s failed", path)

    def subscriber_count(self) -> int:
        """How many live readers this loop has, over all streams."""
        return sum(len(subscriptions) for subscriptions in self._subscriptions.values())


_hubs: dict[asyncio.AbstractEventLoop, Hub] = {}


def get_hub() -> Hub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for stale in [other for other in _hubs if other.is_closed()]:
            del _hubs[stale]
        hub = _hubs[loop] = Hub(loop)
    return hub


def revoke_local(path: str) -> None:
    """From any thread: every hub of this process re-authorizes the live readers of ``path``."""
    for loop, hub in list(_hubs.items()):
        try:
            loop.call_soon_threadsafe(hub.revoke, path)
        except RuntimeError:  # closed loop
            _hubs.pop(loop, None)


class LocalPublisher:
    """Publishes the writer's notices to the hubs of this process and, through the relay, to
    the other processes (see ``writer.Publisher``)."""

    def publish(self, notices: list[Notice], skip: set[asyncio.AbstractEventLoop]) -> None:
        """From the writer thread: relay ``notices`` and hand them to every loop not in ``skip``."""
        relay.get_relay().publish(notices)
        for loop, hub in list(_hubs.items()):
            if loop in skip or not hub.wants(notices):
                continue
            try:
                loop.call_soon_threadsafe(hub.deliver, notices)
            except RuntimeError:  # closed loop
                _hubs.pop(loop, None)

    def deliver(self, loop: asyncio.AbstractEventLoop, notices: list[Notice]) -> None:
        """On ``loop``: hand ``notices`` to its hub now (the writer's callers are on this loop)."""
        hub = _hubs.get(loop)
        if hub is not None:
            hub.deliver(notices)
