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
    return (result.info.id, result.start, result.next, result.up_to_date, result.closed)


class RenderCache:
    """A small LRU map from batch keys to renderings."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The rendering for ``key``, made with ``make()`` on a miss."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found  # type: ignore[return-value]
        made = make()
        with self._lock:
            self._items[key] = made
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        return made
