"""Where a subscription stands on each of its streams: cursor, tail, pending or not.

A link's cursor is a position of the stream it was acked on (``SubscriptionLink.stream_id``);
when the path names another stream now (created again), or none yet, the cursor is that
stream's start. Pending work is a tail past the cursor: nothing is recorded beside an append
to remember it, the log is the queue. Streams are read here without locks (their tails only
grow); subscription rows are locked by the callers, always the subscription first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from durable_sessions.conf import ds_settings
from durable_sessions.streams.models import Stream
from durable_sessions.streams.offsets import START, Position
from durable_sessions.streams.subscriptions.models import SubscriptionLink


def alias() -> str:
    """The database that holds the log and its subscriptions."""
    return str(ds_settings.DATABASE_ALIAS)


@dataclass(frozen=True, slots=True)
class Tail:
    """A live stream's id and tail."""

    stream_id: int
    position: Position


@dataclass(frozen=True, slots=True)
class LinkState:
    """One linked stream of a subscription: its cursor and the stream's tail."""

    path: str
    link_type: str  # "explicit" (also when it matches the pattern too) or "glob"
    acked: Position
    tail: Position | None  # None: no stream at that path now
    stream_id: int | None

    @property
    def has_pending(self) -> bool:
        """Whether the stream has entries past the cursor."""
        return self.tail is not None and self.tail.seq > self.acked.seq

    def as_json(self, *, tail: bool = True) -> dict[str, object]:
        """The link as the protocol shows it (with ``tail_offset``/``has_pending`` in wakes)."""
        shown: dict[str, object] = {
            "path": self.path,
            "link_type": self.link_type,
            "acked_offset": str(self.acked),
        }
        if tail:
            shown["tail_offset"] = str(self.tail or START)
            shown["has_pending"] = self.has_pending
        return shown


def tails(paths: Iterable[str], now: float | None = None) -> dict[str, Tail]:
    """The live (not deleted, not expired) streams among ``paths``."""
    now = time.time() if now is None else now
    rows = Stream.objects.using(alias()).filter(path__in=list(paths), deleted=False)
    found = {}
    for path, stream_id, seq, size, ttl, touched, expires in rows.values_list(
        "path", "id", "tail_seq", "tail_bytes", "ttl_seconds", "touched_at", "expires_at"
    ):
        if (ttl is not None and touched + ttl <= now) or (expires is not None and expires <= now):
            continue
        found[path] = Tail(stream_id, Position(seq, size))
    return found


def cursor(link: SubscriptionLink, tail: Tail | None) -> Position:
    """The link's cursor on the stream that is at its path now."""
    if tail is None or link.stream_id != tail.stream_id:
        return START
    return Position(link.acked_seq, link.acked_bytes)


def states(links: Iterable[SubscriptionLink], now: float | None = None) -> list[LinkState]:
    """The state of each link, by path."""
    links = sorted(links, key=lambda link: link.path)
    found = tails([link.path for link in links], now)
    result = []
    for link in links:
        tail = found.get(link.path)
        result.append(
            LinkState(
                link.path,
                "explicit" if link.explicit else "glob",
                cursor(link, tail),
                tail.position if tail else None,
                tail.stream_id if tail else None,
            )
        )
    return result
