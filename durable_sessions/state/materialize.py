"""Folding a JSON stream of State Protocol events into current rows, from a checkpoint on.

``State`` is the fold: it applies events in stream order (insert, update and upsert set the row
``(type, key)``, delete removes it, ``reset`` clears every row) and remembers the txids it has
seen. ``Materializer`` drives it over a stream: ``catch_up()`` reads from its offset until the
stream is up to date and applies only what it had not read; ``checkpoint()`` is a JSON value
(offset and state) from which ``Materializer.restore()`` continues without reading the stream
from the start again. Events the stream holds that are not valid are skipped and counted.

This layer reads the log only through the public ``durable_sessions.streams`` API.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Generic, TypeVar, overload

from durable_sessions import streams
from durable_sessions.state.events import InvalidEvent, validate

CHECKPOINT_VERSION = 1
S = TypeVar("S", bound="State")


class State:
    """Current rows ``{(type, key): value}`` folded from change and control events.

    Subclasses add views of their own through three hooks: ``check`` (refuse a row of a known
    type that has the wrong shape), ``changed`` (a row was set or removed) and ``cleared`` (a
    reset). What a subclass keeps beyond the rows must go into ``snapshot`` and come back in
    ``from_snapshot``, so that a restored state equals the one it was taken from.
    """

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, dict[str, Any]]] = {}
        self._txids: dict[str, None] = {}  # an ordered set: the order they were seen in

    # -- folding --------------------------------------------------------------------------

    def apply(self, event: object) -> None:
        """Apply one event; ``InvalidEvent`` (and nothing changed) when it is not valid."""
        valid = validate(event)
        headers = valid["headers"]
        if "control" in headers:
            if headers["control"] == "reset":
                self._rows.clear()
                self.cleared()
            return
        kind, key = valid["type"], valid["key"]
        operation = headers["operation"]
        value = valid.get("value") if operation != "delete" else None
        self.check(kind, key, value)
        txid = headers.get("txid")
        if txid is not None:
            self._txids[txid] = None
        table = self._rows.get(kind)
        old = table.get(key) if table is not None else None
        if operation == "delete":
            if table is not None and key in table:
                del table[key]
                if not table:
                    del self._rows[kind]
                self.changed(kind, key, old, None)
        else:
            assert value is not None  # validate() guarantees an object
            self._rows.setdefault(kind, {})[key] = value
            self.changed(kind, key, old, value)

    def apply_all(self, events: Iterable[object]) -> int:
        """Apply ``events`` in order and return how many were applied; the first invalid one
        raises ``InvalidEvent`` (those before it stay applied)."""
        count = 0
        for event in events:
            self.apply(event)
            count += 1
        return count

    # -- hooks for subclasses -------------------------------------------------------------

    def check(self, type: str, key: str, value: dict[str, Any] | None) -> None:
        """Raise ``InvalidEvent`` when ``value`` (None for a delete) is not a valid row of
        ``type``; the base class accepts every object."""

    def changed(
        self, type: str, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        """Called after the row ``(type, key)`` went from ``old`` to ``new`` (None: absent)."""

    def cleared(self) -> None:
        """Called after a ``reset`` removed every row."""

    # -- reading --------------------------------------------------------------------------

    def rows(self, type: str) -> dict[str, dict[str, Any]]:
        """The rows of ``type`` by key (a new dict; the values are the state's own: read them,
        do not change them)."""
        return dict(self._rows.get(type, {}))

    def get(self, type: str, key: str) -> dict[str, Any] | None:
        """The row ``(type, key)``, or None."""
        table = self._rows.get(type)
        return table.get(key) if table is not None else None

    def types(self) -> list[str]:
        """The types that have rows, sorted."""
        return sorted(self._rows)

    @property
    def txids(self) -> frozenset[str]:
        """Every ``headers.txid`` seen on a change event (kept across resets, as StreamDB
        does)."""
        return frozenset(self._txids)

    def has_txid(self, txid: str) -> bool:
        """Whether a change event with this txid has been applied."""
        return txid in self._txids

    def __eq__(self, other: object) -> bool:
        """States are equal when their snapshots are."""
        if not isinstance(other, State) or type(other) is not type(self):
            return NotImplemented
        return self.snapshot() == other.snapshot()

    __hash__ = None  # type: ignore[assignment]  # mutable

    # -- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as a JSON value (a deep copy: later events do not change it)."""
        return {
            "rows": copy.deepcopy(self._rows),
            "txids": list(self._txids),
        }

    @classmethod
    def from_snapshot(cls: type[S], data: dict[str, Any]) -> S:
        """A state equal to the one ``data`` (a ``snapshot()``) was taken from.

        ``ValueError`` when ``data`` is not a snapshot.
        """
        state = cls()
        try:
            rows, txids = data["rows"], data["txids"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a state snapshot: {exc!r} is missing") from None
        if not isinstance(rows, dict) or not isinstance(txids, list):
            raise ValueError("not a state snapshot: rows or txids has the wrong type")
        for kind, table in rows.items():
            if not isinstance(table, dict):
                raise ValueError(f"not a state snapshot: the rows of {kind!r} are not an object")
            if table:
                state._rows[kind] = copy.deepcopy(table)
        state._txids = dict.fromkeys(txids)
        state.restored(data)
        return state

    def restored(self, data: dict[str, Any]) -> None:
        """Called by ``from_snapshot`` once the rows are back: rebuild derived views and read
        the subclass's own parts of ``data``."""


class Materializer(Generic[S]):
    """Folds the JSON stream at ``path`` into a ``State`` (``state_factory()``), incrementally.

    Generic in the state's class: ``Materializer(path, state_factory=SessionState).state`` is a
    ``SessionState``.

    ``offset`` is where the next read starts (``-1`` until the first one); ``reads``,
    ``applied`` and ``skipped`` count the reads made, the events applied and the invalid events
    skipped by this object (the checkpoint carries ``skipped`` over).
    """

    @overload
    def __init__(self: Materializer[State], path: str) -> None: ...

    @overload
    def __init__(self, path: str, *, state_factory: type[S]) -> None: ...

    def __init__(self, path: str, *, state_factory: type[Any] = State) -> None:
        self.path = path
        self.state_factory: type[S] = state_factory
        self.state: S = state_factory()
        self.offset = "-1"
        self.reads = 0
        self.applied = 0
        self.skipped = 0
        self.up_to_date = False
        self.closed = False

    def _fold(self, result: streams.ReadResult) -> int:
        if not result.json_mode:
            raise ValueError(f"{self.path!r} is not a JSON stream: it holds no state events")
        self.reads += 1
        applied = 0
        for event in result.messages():
            try:
                self.state.apply(event)
            except InvalidEvent:
                self.skipped += 1
            else:
                applied += 1
        self.applied += applied
        self.offset = str(result.next)
        self.up_to_date = result.up_to_date
        self.closed = result.closed
        return applied

    def catch_up(self, *, max_bytes: int | None = None) -> int:
        """Read from ``offset`` until up to date, apply what was read, and return how many
        events were applied. ``StreamNotFound`` when there is no such stream."""
        applied = self._fold(streams.read(self.path, self.offset, max_bytes=max_bytes))
        while not self.up_to_date:
            applied += self._fold(streams.read(self.path, self.offset, max_bytes=max_bytes))
        return applied

    async def acatch_up(self, *, max_bytes: int | None = None) -> int:
        """``catch_up`` for async code (the reads run on the store's reader threads)."""
        applied = self._fold(await streams.aread(self.path, self.offset, max_bytes=max_bytes))
        while not self.up_to_date:
            result = await streams.aread(self.path, self.offset, max_bytes=max_bytes)
            applied += self._fold(result)
        return applied

    def checkpoint(self) -> dict[str, Any]:
        """Where this fold stands, as a JSON value: the stream, the offset and the state."""
        return {
            "version": CHECKPOINT_VERSION,
            "path": self.path,
            "offset": self.offset,
            "skipped": self.skipped,
            "state": self.state.snapshot(),
        }

    @overload
    @classmethod
    def restore(cls, path: str, checkpoint: dict[str, Any]) -> Materializer[State]: ...

    @overload
    @classmethod
    def restore(
        cls, path: str, checkpoint: dict[str, Any], *, state_factory: type[S]
    ) -> Materializer[S]: ...

    @classmethod
    def restore(
        cls, path: str, checkpoint: dict[str, Any], *, state_factory: type[Any] = State
    ) -> Materializer[Any]:
        """A materializer of ``path`` that continues from ``checkpoint`` (a ``checkpoint()``
        of the same stream): the next ``catch_up`` reads only what follows its offset.

        ``ValueError`` when ``checkpoint`` is not one, or was taken on another stream.
        """
        if not isinstance(checkpoint, dict) or checkpoint.get("version") != CHECKPOINT_VERSION:
            raise ValueError("not a checkpoint of this version of the materializer")
        if checkpoint.get("path") != path:
            raise ValueError(
                f"the checkpoint was taken on {checkpoint.get('path')!r}, not on {path!r}"
            )
        offset = checkpoint.get("offset")
        if not isinstance(offset, str):
            raise ValueError("the checkpoint has no offset")
        if offset != "-1":
            try:
                streams.parse_offset(offset)
            except streams.BadRequest:
                raise ValueError(f"the checkpoint's offset {offset[:40]!r} is malformed") from None
        materializer: Materializer[Any] = cls(path, state_factory=state_factory)
        materializer.state = state_factory.from_snapshot(checkpoint.get("state"))
        materializer.offset = offset
        skipped = checkpoint.get("skipped", 0)
        materializer.skipped = skipped if isinstance(skipped, int) else 0
        return materializer
