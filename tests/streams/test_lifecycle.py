"""Deleting, expiring and forking (durable_sessions/streams/lifecycle.py): one lock order."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from durable_sessions import streams
from durable_sessions.streams.commit import AppendOp
from durable_sessions.streams.content import Payload
from durable_sessions.streams.db import STREAM, Database
from durable_sessions.streams.errors import Conflict, StreamGone, StreamNotFound
from durable_sessions.streams.lifecycle import DeleteOp
from durable_sessions.streams.models import Stream
from durable_sessions.streams.store import get_store
from durable_sessions.streams.writer import Writer
from tests.streams.dblocks import backends, held_stream
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class NoReaders:
    def publish(self, notices, skip) -> None:
        pass

    def deliver(self, loop, notices) -> None:
        pass


def soft_deleted_source_with_a_fork(name: str) -> tuple[int, int]:
    streams.create(f"{name}/src", content_type="text/plain", data="s")
    streams.fork(f"{name}/fork", f"{name}/src")
    streams.delete(f"{name}/src")
    with pytest.raises(StreamGone):
        streams.read(f"{name}/src")
    ids = dict(Stream.objects.filter(path__startswith=f"{name}/").values_list("path", "id"))
    assert ids[f"{name}/src"] < ids[f"{name}/fork"]  # a source is always older than its forks
    return ids[f"{name}/src"], ids[f"{name}/fork"]


def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks and their order are Postgres's (SQLite locks the whole file)")


def test_deleting_the_last_fork_locks_the_source_before_the_fork():
    """The group commit locks rows in ascending id order; the cascade from a fork to its source
    used to lock the fork first: while the source is locked elsewhere, the fork must not be."""
    postgres_only()
    _source_id, fork_id = soft_deleted_source_with_a_fork("lo")
    writer = get_store().writer_for("lo/fork")
    with held_stream("lo/src"):
        deleting = writer.submit(DeleteOp("lo/fork"))
        wait_until(lambda: any(b["wait"] == "Lock" for b in backends(writer.name)))
        probe = Database().connect()
        try:
            probe.execute("BEGIN")
            probe.execute(f"SELECT id FROM {STREAM} WHERE id = %s FOR UPDATE NOWAIT", [fork_id])
        finally:  # (LockNotAvailable here: the fork was locked while its source was waited for)
            probe.execute("ROLLBACK")
            probe.close()
    assert deleting.result(30) is None
    for path in ("lo/src", "lo/fork"):  # the cascade removed both
        with pytest.raises(StreamNotFound):
            streams.info(path)
    assert streams.create("lo/src", content_type="text/plain").created


def test_a_cascading_delete_and_group_commits_race_without_a_deadlock():
    """Two writers (as two processes would): one deletes forks whose removal cascades to their
    sources, the other group-commits appends to the same sources and forks. Postgres counts
    the deadlocks it had to break; there must be none."""
    postgres_only()

    def deadlocks() -> int:
        with Database().connect() as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            return conn.execute(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()[0]

    rounds = 40
    for n in range(rounds):
        soft_deleted_source_with_a_fork(f"race{n}")
        for _ in range(30):  # entries to delete: the cascade holds the fork's lock a while
            streams.append(f"race{n}/fork", "x" * 200)
    before = deadlocks()
    deleter = Writer(Database(), NoReaders(), sweep_interval=None, name="durable-sessions-t-del")
    appender = Writer(Database(), NoReaders(), sweep_interval=None, name="durable-sessions-t-app")
    results = []
    for n in range(rounds):
        results.append(deleter.submit(DeleteOp(f"race{n}/fork")))
        for path in (f"race{n}/src", f"race{n}/fork"):
            results.append(appender.submit(AppendOp(path, Payload(b"y", 1))))
    outcomes = [f.exception(60) or f.result() for f in results]
    deleter.stop()
    appender.stop()  # their backends exit: Postgres flushes their statistics
    wait_until(lambda: not backends("durable-sessions-t-"), what="the writers' backends to exit")
    assert all(isinstance(o, StreamGone | StreamNotFound) or o is None or o.next for o in outcomes)
    assert deadlocks() == before, "Postgres broke a deadlock between the log's transactions"


def test_the_sweep_removes_a_soft_deleted_stream_left_without_forks():
    """A deletion that bypassed the log (the ORM, as the admin's delete once did) left a
    soft-deleted source with no fork: its path stayed blocked for good."""
    soft_deleted_source_with_a_fork("orphan")
    Stream.objects.filter(path="orphan/fork").delete()  # behind the log's back
    with pytest.raises(Conflict):
        streams.create("orphan/src", content_type="text/plain")
    wait_until(
        lambda: not Stream.objects.filter(path="orphan/src").exists(),
        timeout=30,
        what="the expiry sweep to remove the orphan",
    )
    assert streams.create("orphan/src", content_type="text/plain").created


def test_an_expired_fork_is_gone_at_once_and_swept_with_its_deleted_source():
    streams.create("exp/src", content_type="text/plain", data="s")
    streams.fork("exp/fork", "exp/src", ttl=1)
    streams.delete("exp/src")  # soft: the fork reads from it
    deadline = Stream.objects.get(path="exp/fork").touched_at + 1
    wait_until(lambda: time.time() > deadline + 0.01, what="the fork's TTL to pass")
    with pytest.raises(StreamNotFound):
        streams.append("exp/fork", "late")
    wait_until(
        lambda: not Stream.objects.filter(path__startswith="exp/").exists(),
        timeout=30,
        what="the sweep to remove the fork and its source",
    )
    assert streams.create("exp/src", content_type="text/plain").created


def test_creating_a_fork_while_its_source_is_deleted_elsewhere():
    """create locks the source's chain and the target path in one order; a concurrent delete of
    the source either comes first (404/409) or after (the fork keeps it, soft-deleted)."""
    streams.create("cf/src", content_type="text/plain", data="abc")
    errors: list[BaseException] = []

    def delete() -> None:
        try:
            streams.delete("cf/src")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=delete)
    thread.start()
    try:
        fork = streams.fork("cf/fork", "cf/src")
    except (StreamNotFound, Conflict):
        fork = None
    thread.join(30)
    assert not errors
    if fork is not None:
        assert streams.read("cf/fork").body == b"abc"
        with pytest.raises(StreamGone):
            streams.read("cf/src")
