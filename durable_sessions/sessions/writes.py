"""Every write to a session's stream goes through here: the clock, the order, the producers.

- **The clock**: every chunk gets its ``createdAt`` from the session row's ``clock_ms``, moved
  by one atomic ``UPDATE ... RETURNING`` to ``max(now, last + 1 ms)``: it never decreases
  within a session, across processes too, and no two chunks share one. A batch of chunks
  (``submit_chunks``, the agent runtime's) moves the clocks of all its sessions in one
  statement and one commit.
- **The order**: in a process, the clock is read and the append queued under one lock per
  session, and appends to one stream commit in queue order (``streams.submit_json``), so the
  stream holds chunks in ``createdAt`` order while concurrent posts still share a commit.
- **Seq never reused**: each message's chunks are appended with the idempotent producer
  ``chunk:<messageId>`` (epoch 0, producer seq = chunk seq). The log itself refuses a seq that
  is already written (a duplicate) or skips one (a gap), whatever process writes, also after
  a reset. The agent runtime writes its generations under the epoch of its claim (producer seq
  counted per epoch): a worker whose claim was taken over is refused (``errors.Fenced``) as soon
  as the new holder has written to that message.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from durable_sessions import state, streams
from durable_sessions.sessions import errors
from durable_sessions.sessions.models import Session

_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_locks_lock = threading.Lock()


def _order_lock(session_id: Any) -> threading.Lock:
    key = str(session_id)
    with _locks_lock:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = threading.Lock()
        return lock


def tick_many(counts: dict[Any, int]) -> dict[str, int]:
    """Move the clocks of many sessions at once, by ``counts[session_id]`` values each, in one
    transaction: the last of each session's values (by ``str(session_id)``; the first is
    ``last - count + 1``), none for a session that is gone. The runtime writes the chunks of
    all its generations this way: one commit for the clocks of a batch, not one per chunk."""
    now_ms = int(time.time() * 1000)
    table = Session._meta.db_table
    pk = Session._meta.pk
    activity = Session._meta.get_field("last_activity_at").get_db_prep_value(
        timezone.now(), connection
    )
    items = sorted((str(key), count) for key, count in counts.items())
    if not items:
        return {}
    if connection.vendor == "postgresql":
        values = ", ".join(["(%s::uuid, %s::bigint)"] * len(items))
        sql = (
            f"UPDATE {table} AS s SET clock_ms = GREATEST(s.clock_ms + v.n, %s + v.n - 1),"
            f" last_activity_at = %s FROM (VALUES {values}) AS v(id, n) WHERE s.id = v.id"
            f" RETURNING s.id, s.clock_ms"
        )
        params: list[Any] = [now_ms, activity]
        for key, count in items:
            params += [pk.get_db_prep_value(key, connection), count]
        for attempt in range(3):
            try:
                with connection.cursor() as cursor:
                    cursor.execute(sql, params)
                    return {str(row[0]): int(row[1]) for row in cursor.fetchall()}
            except OperationalError as exc:  # two batches locked rows in crossed order
                if getattr(exc.__cause__, "sqlstate", None) != "40P01" or attempt == 2:
                    raise
        raise AssertionError("unreachable")
    sql = (
        f"UPDATE {table} SET clock_ms = MAX(clock_ms + %s, %s + %s - 1), last_activity_at = %s"
        f" WHERE id = %s RETURNING clock_ms"
    )
    clocks: dict[str, int] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        for key, count in items:
            cursor.execute(
                sql, [count, now_ms, count, activity, pk.get_db_prep_value(key, connection)]
            )
            row = cursor.fetchone()
            if row is not None:
                clocks[key] = int(row[0])
    return clocks


def _result(future: Any) -> streams.Appended:
    try:
        return future.result()
    except streams.Unavailable as exc:
        raise errors.Unavailable(str(exc)) from exc
    except streams.StreamNotFound as exc:
        raise errors.NotFound("the session's stream is gone") from exc


def _submit(
    path: str, events: Sequence[dict], producer: Any = None, expect_tail: str | None = None
) -> Any:
    try:
        return streams.submit_json(path, events, producer=producer, expect_tail=expect_tail)
    except streams.Unavailable as exc:
        raise errors.Unavailable(str(exc)) from exc
    except streams.StreamNotFound as exc:
        raise errors.NotFound("the session's stream is gone") from exc


@dataclass(frozen=True)
class ChunkWrite:
    """One chunk to append: the arguments of ``append_chunk``."""

    session: Session
    message_id: str
    seq: int
    actor_id: str
    role: str
    chunk: dict[str, Any] | Callable[[str], dict[str, Any]]
    txid: str | None = None
    epoch: int | None = None
    producer_seq: int | None = None
    expect_tail: str | None = None


def append_chunk(
    session: Session,
    *,
    message_id: str,
    seq: int,
    actor_id: str,
    role: str,
    chunk: dict[str, Any] | Callable[[str], dict[str, Any]],
    txid: str | None = None,
    epoch: int | None = None,
    producer_seq: int | None = None,
    expect_tail: str | None = None,
) -> streams.Appended:
    """Append chunk ``seq`` of ``message_id``, stamped by the session clock. ``chunk`` is the
    decoded payload, or a function of the ``createdAt`` it gets (a whole message states it).

    ``errors.Conflict`` when that seq of that message is already written (``duplicate`` is
    set on the error) or when it would skip one. The runtime passes its claim's ``epoch`` and
    its own ``producer_seq``; ``errors.Fenced`` when a later epoch wrote to the message. Other
    writers pass neither: a message the runtime wrote is continued in its producer session (an
    approval after the answer), any other under epoch 0 with producer seq = chunk seq. With
    ``expect_tail`` the chunk lands exactly at that offset or not at all (``Conflict``,
    ``tail_moved``).
    """
    write = ChunkWrite(
        session, message_id, seq, actor_id, role, chunk, txid, epoch, producer_seq, expect_tail
    )
    (outcome,) = submit_chunks([write])
    if isinstance(outcome, Exception):
        raise outcome
    return chunk_appended(outcome, message_id=message_id, seq=seq)


def submit_chunks(batch: Sequence[ChunkWrite]) -> list[Any]:
    """Queue the appends of ``batch`` without waiting for their commits: for each, the future
    of its result (for ``chunk_appended``) or the error that kept it from being queued. The
    clocks of all their sessions move in one transaction (``tick_many``); the chunks of one
    session are stamped and queued in ``batch`` order. The agent runtime submits the chunks of
    all its generations so and awaits the futures on its event loop."""
    by_session: dict[str, list[int]] = {}
    for index, write in enumerate(batch):
        by_session.setdefault(str(write.session.pk), []).append(index)
    outcomes: list[Any] = [None] * len(batch)
    with contextlib.ExitStack() as held:
        for key in sorted(by_session):  # (one order for every batch: no two wait on each other)
            held.enter_context(_order_lock(key))
        clocks = tick_many({key: len(indexes) for key, indexes in by_session.items()})
        for key, indexes in by_session.items():
            last = clocks.get(key)
            for position, index in enumerate(indexes):
                if last is None:
                    outcomes[index] = errors.NotFound("no such session")
                    continue
                try:
                    outcomes[index] = _queue(batch[index], last - len(indexes) + 1 + position)
                except Exception as exc:  # (this chunk's: the others are queued all the same)
                    outcomes[index] = exc
    return outcomes


def _queue(write: ChunkWrite, clock_ms: int) -> Any:
    created_at = state.timestamp(clock_ms / 1000)
    payload = write.chunk(created_at) if callable(write.chunk) else write.chunk
    value = state.chunk_row(
        write.message_id,
        write.seq,
        actor_id=write.actor_id,
        role=write.role,
        chunk=payload,
        created_at=created_at,
    )
    event = state.chunk_event(value, txid=write.txid)
    producer_id = f"chunk:{write.message_id}"
    epoch, producer_seq = write.epoch, write.producer_seq
    if epoch is None:
        epoch, producer_seq = 0, write.seq
        if write.seq > 0:
            known = streams.producer_state(write.session.stream_path, producer_id)
            if known is not None and known[0] > 0:
                epoch, producer_seq = known[0], known[1] + 1
    producer = (producer_id, epoch, write.seq if producer_seq is None else producer_seq)
    return _submit(write.session.stream_path, [event], producer, write.expect_tail)


def chunk_appended(future: Any, *, message_id: str, seq: int) -> streams.Appended:
    """The result of a ``submit_chunks`` future (done, or waited for here), with the
    errors of ``append_chunk``."""
    try:
        result = _result(future)
    except streams.StaleProducerEpoch as exc:
        raise errors.Fenced(f"message {message_id} is written under a later claim") from exc
    except streams.Conflict as exc:  # a producer gap, or the tail moved
        if exc.code == "tail_moved":
            raise errors.Conflict(str(exc), code="tail_moved") from exc
        raise errors.Conflict(f"chunk {seq} of message {message_id} skips one") from exc
    if result.duplicate:
        conflict = errors.Conflict(f"chunk {seq} of message {message_id} is already written")
        conflict.duplicate = True  # type: ignore[attr-defined]
        raise conflict
    return result


def append_events(
    session: Session, events: Sequence[dict], *, expect_tail: str | None = None
) -> streams.Appended:
    """Append state events (presence, agent, control rows...) in one entry, in session order.

    With ``expect_tail`` the entry lands exactly at that offset or not at all
    (``errors.Conflict`` with code ``tail_moved``: something was appended meanwhile).
    """
    with _order_lock(session.pk):
        future = _submit(session.stream_path, events, expect_tail=expect_tail)
    try:
        return _result(future)
    except streams.Conflict as exc:
        raise errors.Conflict(str(exc), code=exc.code or "conflict") from exc


SESSION_TYPES = ("chunk", "presence", "agent")


def reset_batch(existing: Iterable[tuple[str, str]], restored: Sequence[dict]) -> list[dict]:
    """The one entry of a reset whose state starts with ``restored``: the reset as the public
    StreamDB client also applies it (``state.reset_events``: deletes of the ``existing`` rows
    that ``restored`` does not write again), then ``restored``."""
    kept = {(event["type"], event["key"]) for event in restored if "type" in event}
    gone = [row for row in existing if row not in kept]
    return [*state.reset_events(gone, types=SESSION_TYPES), *restored]


def existing_rows(session_state: state.State) -> list[tuple[str, str]]:
    """Every ``(type, key)`` row of a folded state."""
    return [(kind, key) for kind in session_state.types() for key in session_state.rows(kind)]
