"""Rendering a batch once for all its live readers.

Every reader of a stream that is caught up receives the same batches: the same SSE chunk, the
same websocket frames. ``RenderCache`` keeps the last few renderings by batch, so a commit fanned
out to a thousand readers is encoded once, not a thousand times.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from durable_sessions.streams.records import ReadResult

T = TypeVar("T")


def batch_key(result: ReadResult) -> tuple:
    """What identifies a batch's contents: its stream, its range and how it ends."""
    return (result.info.id, result.start.seq, result.next.seq, result.up_to_date, result.closed)


class RenderCache:
    """A small LRU map from batch keys to renderings, bounded in count and in bytes.

    A rendering of more than ``max_item`` bytes (a catch-up page) is made but not kept: those go
    to one reader, not to many. Weights are the stored bytes (renderings run a little larger).
    """

    def __init__(
        self, size: int = 512, max_bytes: int = 16 * 1024 * 1024, max_item: int = 64 * 1024
    ) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.max_item = max_item
        self._bytes = 0
        self._items: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._last: tuple[ReadResult, object] | None = None

    def batch(self, result: ReadResult, make: Callable[[ReadResult], T]) -> T:
        """The rendering of batch ``result``, made with ``make(result)`` on a miss. The batch
        last rendered is checked first, by identity: the readers that are caught up are all
        handed the same batch object in the hub's pass (see ``Follower.advance``)."""
        last = self._last
        if last is not None and last[0] is result:
            return last[1]  # type: ignore[return-value]
        made = self.get(batch_key(result), lambda: make(result), len(result.data))
        self._last = (result, made)
        return made

    def get(self, key: Hashable, make: Callable[[], T], weight: int = 0) -> T:
        """The rendering for ``key``, made with ``make()`` on a miss; ``weight``: its bytes."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found[0]  # type: ignore[return-value]
        made = make()
        if weight > self.max_item:
            return made
        with self._lock:
            if key not in self._items:
                self._items[key] = (made, weight)
                self._bytes += weight
            while len(self._items) > self.size or self._bytes > self.max_bytes:
                _key, (_made, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped
        return made
