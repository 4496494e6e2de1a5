"""Every write to a session's stream goes through here: the clock, the order, the producers.

- **The clock**: every chunk gets its ``createdAt`` from the session row's ``clock_ms``, moved
  by one atomic ``UPDATE ... RETURNING`` to ``max(now, last + 1 ms)``: it never decreases
  within a session, across processes too, and no two chunks share one.
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

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import connection
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


def tick(session_id: Any) -> int:
    """The session's next ``createdAt`` in epoch milliseconds (and its last activity now)."""
    now_ms = int(time.time() * 1000)
    table = Session._meta.db_table
    pk = Session._meta.pk.get_db_prep_value(session_id, connection)
    activity = Session._meta.get_field("last_activity_at").get_db_prep_value(
        timezone.now(), connection
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET clock_ms = CASE WHEN clock_ms >= %s THEN clock_ms + 1 ELSE %s END,"
            f" last_activity_at = %s WHERE id = %s RETURNING clock_ms",
            [now_ms, now_ms, activity, pk],
        )
        row = cursor.fetchone()
    if row is None:
        raise errors.NotFound("no such session")
    return int(row[0])


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
    future = submit_chunk(
        session,
        message_id=message_id,
        seq=seq,
        actor_id=actor_id,
        role=role,
        chunk=chunk,
        txid=txid,
        epoch=epoch,
        producer_seq=producer_seq,
        expect_tail=expect_tail,
    )
    return chunk_appended(future, message_id=message_id, seq=seq)


def submit_chunk(
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
) -> Any:
    """``append_chunk`` without waiting for the commit: the future of its result, for
    ``chunk_appended`` (the agent runtime awaits it on its event loop, not on a thread)."""
    with _order_lock(session.pk):
        created_at = state.timestamp(tick(session.pk) / 1000)
        payload = chunk(created_at) if callable(chunk) else chunk
        value = state.chunk_row(
            message_id, seq, actor_id=actor_id, role=role, chunk=payload, created_at=created_at
        )
        event = state.chunk_event(value, txid=txid)
        producer_id = f"chunk:{message_id}"
        if epoch is None:
            epoch, producer_seq = 0, seq
            if seq > 0:
                known = streams.producer_state(session.stream_path, producer_id)
                if known is not None and known[0] > 0:
                    epoch, producer_seq = known[0], known[1] + 1
        producer = (producer_id, epoch, seq if producer_seq is None else producer_seq)
        return _submit(session.stream_path, [event], producer, expect_tail)


def chunk_appended(future: Any, *, message_id: str, seq: int) -> streams.Appended:
    """The result of a ``submit_chunk`` (its future done, or waited for here), with the
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
