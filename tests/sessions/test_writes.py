"""Tests of ``writes.submit_chunks``: a batch of chunks of many sessions moves every clock in one
transaction, stamps each session's chunks in batch order after the chunks before them, and a
session that is gone fails its own chunks only; two batches whose clocks deadlock (Postgres)
come through, the victim retried."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest
from django.db import connection

from durable_sessions import streams
from durable_sessions.sessions import errors, service, writes
from durable_sessions.sessions.models import Session
from durable_sessions.streams.db import Database
from tests.sessions.conftest import make_user
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def chunk(session: Session, message_id: str, seq: int) -> writes.ChunkWrite:
    return writes.ChunkWrite(
        session,
        message_id=message_id,
        seq=seq,
        actor_id="bot",
        role="assistant",
        chunk={"type": "content", "delta": str(seq), "content": str(seq)},
    )


def rows(session: Session) -> list[dict]:
    body = streams.read(session.stream_path, "-1").body
    return [event["value"] for event in json.loads(body) if event.get("type") == "chunk"]


def test_a_batch_stamps_each_session_in_order_after_what_came_before():
    owner = make_user("batcher")
    first, _ = service.session_create(owner=owner)
    second, _ = service.session_create(owner=owner)
    writes.append_chunk(
        first, message_id="m0", seq=0, actor_id="u", role="user", chunk={"type": "content"}
    )
    batch = [chunk(first, "m1", 0), chunk(second, "m2", 0), chunk(first, "m1", 1)]
    batch.append(chunk(first, "m1", 2))
    outcomes = writes.submit_chunks(batch)
    for write, outcome in zip(batch, outcomes, strict=True):
        writes.chunk_appended(outcome, message_id=write.message_id, seq=write.seq)
    later = writes.append_chunk(
        first, message_id="m3", seq=0, actor_id="u", role="user", chunk={"type": "content"}
    )
    assert later.duplicate is False

    found = rows(first)
    assert [(r["messageId"], r["seq"]) for r in found] == [
        ("m0", 0),
        ("m1", 0),
        ("m1", 1),
        ("m1", 2),
        ("m3", 0),
    ]
    stamps = [r["createdAt"] for r in found]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # increasing, distinct
    assert [(r["messageId"], r["seq"]) for r in rows(second)] == [("m2", 0)]
    clock = Session.objects.get(pk=first.pk).clock_ms
    assert stamps[-1] == writes.state.timestamp(clock / 1000)  # the clock is the last stamp


def test_a_session_that_is_gone_fails_only_its_own_chunks():
    owner = make_user("batcher2")
    kept, _ = service.session_create(owner=owner)
    gone, _ = service.session_create(owner=owner)
    Session.objects.filter(pk=gone.pk).delete()
    outcomes = writes.submit_chunks([chunk(gone, "g", 0), chunk(kept, "k", 0)])
    assert isinstance(outcomes[0], errors.NotFound)
    writes.chunk_appended(outcomes[1], message_id="k", seq=0)
    assert [(r["messageId"], r["seq"]) for r in rows(kept)] == [("k", 0)]


def test_a_seq_written_twice_in_one_batch_is_refused_and_the_rest_lands():
    owner = make_user("batcher3")
    session, _ = service.session_create(owner=owner)
    outcomes = writes.submit_chunks([chunk(session, "m", 0), chunk(session, "m", 0)])
    writes.chunk_appended(outcomes[0], message_id="m", seq=0)
    with pytest.raises(errors.Conflict):
        writes.chunk_appended(outcomes[1], message_id="m", seq=0)
    assert [(r["messageId"], r["seq"]) for r in rows(session)] == [("m", 0)]


def test_clocks_locked_in_crossed_order_are_a_deadlock_that_is_retried(request):
    """Postgres may lock a batch's session rows in any order (the UPDATE's join picks it), so
    two batches can deadlock; the victim's UPDATE is rolled back whole and ``tick_many`` runs
    it again, on the same connection."""
    if connection.vendor != "postgresql":
        pytest.skip("deadlocks between row locks are Postgres's")
    owner = make_user("crossed")
    sessions = [service.session_create(owner=owner)[0] for _ in range(2)]
    other, watch = Database().connect(), Database().connect()
    request.addfinalizer(other.close)
    request.addfinalizer(watch.close)
    deadlocks = _deadlocks(watch)
    held = 0
    for _attempt in range(4):  # (which row the batch locks first is the plan's choice)
        other.execute("BEGIN")
        _lock(other, sessions[held])
        batch = _Tick(sessions)
        wait_until(lambda b=batch: _waiting_on_a_lock(watch, b.pid), what="the batch to wait")
        # The batch waits for the row we hold: does it hold the other one already?
        other.execute("SAVEPOINT probe")
        try:
            _lock(other, sessions[1 - held], nowait=True)
        except psycopg.errors.LockNotAvailable:
            other.execute("ROLLBACK TO SAVEPOINT probe")
            _lock(other, sessions[1 - held])  # it does: the cycle, and one of us gives way
            other.execute("ROLLBACK")
            break
        other.execute("ROLLBACK")  # it did not: let it through, then hold the other row first
        batch.join()
        held = 1 - held
    else:
        raise AssertionError("the batch never locked the row we did not hold first")
    clocks = batch.join()
    # a deadlock was counted (a backend's statistics reach pg_stat_database within a second)
    wait_until(lambda: _deadlocks(watch) > deadlocks, what="the deadlock to be counted")
    found = Session.objects.filter(pk__in=[s.pk for s in sessions]).values_list("pk", "clock_ms")
    assert clocks == {str(pk): clock for pk, clock in found}  # the batch came through, once


class _Tick(threading.Thread):
    """``tick_many`` of one count for each session, on a thread (and connection) of its own."""

    def __init__(self, sessions: list[Session]) -> None:
        super().__init__()
        self.sessions = sessions
        self.ready = threading.Event()
        self.pid = 0
        self.outcome: Any = None
        self.start()
        assert self.ready.wait(30)

    def run(self) -> None:
        try:
            connection.ensure_connection()
            self.pid = connection.connection.info.backend_pid
            self.ready.set()
            self.outcome = writes.tick_many({s.pk: 1 for s in self.sessions})
        except Exception as exc:
            self.outcome = exc
        finally:
            connection.close()

    def join(self, timeout: float | None = 30) -> Any:  # type: ignore[override]
        super().join(timeout)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _lock(conn: Any, session: Session, *, nowait: bool = False) -> None:
    table = Session._meta.db_table
    tail = " NOWAIT" if nowait else ""
    conn.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE{tail}", [session.pk])


def _deadlocks(conn: Any) -> int:
    row = conn.execute(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    return int(row[0])


def _waiting_on_a_lock(conn: Any, pid: int) -> bool:
    row = conn.execute(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
    ).fetchone()
    return row is not None and row[0] == "Lock"
