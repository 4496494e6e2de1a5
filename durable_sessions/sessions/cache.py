"""The materialized state of sessions, kept per process and caught up from a checkpoint.

Reading a session's messages folds its stream into a ``state.SessionState``. A process keeps
the recent ones (``SESSION_CACHE_SIZE``) with the offset they stand at, and on the next use
reads only what was appended since: a catch-up costs the new events, not the whole history.
The stream is the truth; a session dropped from the cache is folded again on its next use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from durable_sessions import state, streams
from durable_sessions.conf import ds_settings
from durable_sessions.sessions import errors

T = TypeVar("T")


class _Entry:
    def __init__(self, path: str) -> None:
        self.lock = threading.Lock()
        self.materializer = state.Materializer(path, state_factory=state.SessionState)


_entries: OrderedDict[str, _Entry] = OrderedDict()
_lock = threading.Lock()


def _entry(path: str) -> _Entry:
    with _lock:
        entry = _entries.get(path)
        if entry is None:
            entry = _entries[path] = _Entry(path)
            while len(_entries) > max(1, int(ds_settings.SESSION_CACHE_SIZE)):
                _entries.popitem(last=False)
        else:
            _entries.move_to_end(path)
        return entry


@contextmanager
def caught_up(path: str) -> Iterator[tuple[state.SessionState, str]]:
    """The session state of ``path`` caught up to its tail, and the offset it stands at,
    held under the session's lock for the block (nothing else folds it meanwhile)."""
    entry = _entry(path)
    with entry.lock:
        try:
            try:
                entry.materializer.catch_up()
            except streams.StreamGone:  # its offset is before retained data (compacted): fold
                entry.materializer = state.Materializer(path, state_factory=state.SessionState)
                entry.materializer.catch_up()  # again from the first retained entry
        except streams.StreamNotFound as exc:
            forget(path)
            raise errors.NotFound("the session's stream is gone") from exc
        except streams.StreamGone as exc:  # compacted again meanwhile, or deleted
            forget(path)
            raise errors.Unavailable("the session's history moved; retry") from exc
        yield entry.materializer.state, str(entry.materializer.offset)


def read(path: str, use: Callable[[Any, str], T]) -> T:
    """``use(state, offset)`` on the caught-up state of ``path``."""
    with caught_up(path) as (session_state, offset):
        return use(session_state, offset)


def forget(path: str) -> None:
    """Drop the cached state of ``path`` (its stream was deleted, reset or compacted)."""
    with _lock:
        _entries.pop(path, None)


def clear() -> None:
    """Drop every cached state (tests)."""
    with _lock:
        _entries.clear()
