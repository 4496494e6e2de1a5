"""Compacting a session's stream (``python manage.py compact_sessions``): the same messages in
fewer events.

A compaction folds the stream from its first retained entry, then appends, in one entry, a
``reset`` control event and the compacted state, and drops every entry before that one
(``streams.truncate``): a read from the start begins at the reset. The compacted state:

- a finished message whose token chunks fold to nothing more than a whole message becomes one
  ``whole-message`` chunk, under its *last* seq (that seq is the message's, so no seq is taken
  twice, and the next one written to the message is still the next), unless a tool call of it
  waits for an approval (a whole message would ignore the ``approval-response`` to come);
- another finished message (ended by ``stop`` or ``error``, or with a finish reason or usage)
  keeps its chunks, with every run of consecutive ``content`` or ``thinking`` chunks merged
  into one under the run's first seq (``delta`` is the run's text, ``content`` the last one's);
- a message still streaming keeps its chunks as they are: its generation continues at its next
  seq, which the producers of ``writes.py`` still expect;
- the other rows (``presence``, ``agent``, our own types) are upserted as they stand.

Every compacted message is checked: it must materialize exactly as before (parts, status,
finish reason, usage, error, ``createdAt``, last seq, and its place in the order), else it
keeps its chunks unchanged. Chunk rows keep their ``createdAt``, in order. The append is
conditional on the tail the fold reached (``expect_tail``): if anything was written meanwhile,
the compaction folds again, so nothing written concurrently is lost. A subscriber sees the
reset and the compacted state, and materializes the same messages (txids in headers are not
carried over: they were delivered with the original writes).

A session whose older entries a fork still reads is skipped (compact the fork first: the
command takes forks before their sources).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.db.models.query import QuerySet
from django.utils import timezone

from durable_sessions import state, streams
from durable_sessions.sessions import cache, errors, writes
from durable_sessions.sessions.models import Session

Event = dict[str, Any]
Rows = dict[int, tuple[dict[str, Any], dict[str, Any]]]  # seq -> (chunk row, decoded chunk)
MERGED = ("content", "thinking")
ATTEMPTS = 5


def _same(message_id: str, rows: Rows, original: state.Message) -> bool:
    folded = state.materialize(message_id, rows)
    return folded.as_dict() == original.as_dict() and folded.started_at == original.started_at


def _row(message_id: str, seq: int, like: dict[str, Any], chunk: dict[str, Any]) -> Any:
    value = state.chunk_row(
        message_id,
        seq,
        actor_id=like["actorId"],
        role=like["role"],
        chunk=chunk,
        created_at=like["createdAt"],
    )
    return value, state.decode_chunk_row(state.chunk_key(message_id, seq), value)


def _whole(message_id: str, rows: Rows, message: state.Message) -> Rows:
    seqs = sorted(rows)
    first = rows[seqs[0]][0]
    like = {**first, "createdAt": message.started_at}
    chunk = state.whole_message(
        message_id, role=message.role, created_at=message.created_at, parts=message.parts
    )
    return {seqs[-1]: _row(message_id, seqs[-1], like, chunk)}


def _merge(message_id: str, run: list[int], rows: Rows) -> Rows:
    chunks = [rows[seq][1] for seq in run]
    if len(run) < 2 or not all(isinstance(c.get("delta"), str) for c in chunks):
        return {seq: rows[seq] for seq in run}
    merged = {**chunks[-1], "delta": "".join(c["delta"] for c in chunks)}
    return {run[0]: _row(message_id, run[0], rows[run[0]][0], merged)}


def _coalesced(message_id: str, rows: Rows) -> Rows:
    result: Rows = {}
    run: list[int] = []
    for seq in sorted(rows):
        kind = rows[seq][1]["type"]
        if run and kind != rows[run[0]][1]["type"]:
            result.update(_merge(message_id, run, rows))
            run = []
        if kind in MERGED:
            run.append(seq)
        else:
            result[seq] = rows[seq]
    if run:
        result.update(_merge(message_id, run, rows))
    return result


def compact_message(message_id: str, rows: Rows, message: state.Message) -> Rows:
    """The rows of one message after compaction (``rows`` themselves when nothing smaller
    materializes the same)."""
    if len(rows) < 2 or not message.complete:
        return rows
    waiting = any(part.get("state") == "approval-requested" for part in message.parts)
    candidates = [] if waiting else [_whole(message_id, rows, message)]  # (a whole message
    candidates.append(_coalesced(message_id, rows))  # ignores the approval-response to come)
    for candidate in candidates:
        if len(candidate) < len(rows) and _same(message_id, candidate, message):
            return candidate
    return rows


def compacted_events(session_state: state.SessionState) -> list[Event]:
    """A ``reset`` and the compacted state of ``session_state``, as one entry's events."""
    groups: dict[str, Rows] = {}
    order: dict[tuple[str, int], int] = {}
    for index, (key, value) in enumerate(session_state.rows(state.CHUNK_TYPE).items()):
        groups.setdefault(value["messageId"], {})[value["seq"]] = (
            value,
            state.decode_chunk_row(key, value),
        )
        order[(value["messageId"], value["seq"])] = index
    chunks: list[tuple[str, int, int, dict[str, Any]]] = []
    for message_id, rows in groups.items():
        message = session_state.message(message_id)
        kept = rows if message is None else compact_message(message_id, rows, message)
        for seq, (value, _chunk) in kept.items():
            place = order.get((message_id, seq), len(order))
            chunks.append((value["createdAt"], place, seq, value))
    chunks.sort(key=lambda item: (item[0], item[1], item[2]))
    events = [state.control("reset")]
    for type_name in session_state.types():
        if type_name != state.CHUNK_TYPE:
            rows_of_type = session_state.rows(type_name).items()
            events.extend(state.upsert(type_name, key, value) for key, value in rows_of_type)
    events.extend(state.chunk_event(value) for *_ignored, value in chunks)
    return events


def session_compact(*, session_id: Any, dry_run: bool = False) -> dict[str, Any]:
    """Compact the stream of one session (maintenance: no user, no role check).

    Returns ``{sessionId, compacted, events, after, reason?, offset?}``: the events read from
    the first retained entry, and how many the compacted entry holds (the reset included).
    """
    session = Session.objects.get(pk=session_id)
    path = session.stream_path
    report: dict[str, Any] = {"sessionId": str(session.pk), "compacted": False}
    for _attempt in range(ATTEMPTS):
        fold = state.Materializer(path, state_factory=state.SessionState)
        fold.catch_up()
        compacted = compacted_events(fold.state)
        events = writes.reset_batch(writes.existing_rows(fold.state), compacted[1:])
        tail = streams.parse_offset(fold.offset) if fold.offset != "-1" else streams.START
        retained = streams.retention(path)
        # Measured in bytes: the deletes that clear StreamDB's rows cost an event each but few
        # bytes, and the next compaction drops them.
        size = len(json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode())
        report.update(
            events=fold.applied + fold.skipped,
            after=len(events),
            bytes=tail.bytes - retained.first.bytes,
            bytes_after=size,
        )
        if size >= report["bytes"]:
            return {**report, "reason": "nothing to compact"}
        pinned = retained.pinned
        if pinned is not None and pinned < tail.seq:
            return {**report, "reason": "a fork still reads its older entries"}
        if dry_run:
            return {**report, "reason": "dry run"}
        try:
            writes.append_events(session, events, expect_tail=str(tail))
        except errors.Conflict as exc:
            if exc.get_codes() == "tail_moved":
                continue  # written to meanwhile: fold again
            raise
        cache.forget(path)
        try:
            streams.truncate(path, before=tail)
        except streams.Conflict:  # forked meanwhile: the compacted state stays, nothing dropped
            return {**report, "reason": "forked meanwhile: nothing dropped", "offset": str(tail)}
        return {**report, "compacted": True, "offset": str(tail)}
    return {**report, "reason": "the session kept changing; try again"}


def sessions_to_compact(
    *, session_id: Any = None, idle_seconds: float | None = None
) -> QuerySet[Session]:
    """The sessions the command compacts: one, or all (idle for ``idle_seconds`` when given),
    forks before their sources (newest first)."""
    sessions = Session.objects.all()
    if session_id is not None:
        sessions = sessions.filter(pk=session_id)
    if idle_seconds is not None:
        cutoff = timezone.now() - timedelta(seconds=idle_seconds)
        sessions = sessions.filter(
            Q(last_activity_at__lte=cutoff)
            | Q(last_activity_at__isnull=True, created_at__lte=cutoff)
        )
    return sessions.order_by("-created_at")
