"""The group-commit writer (durable_sessions/streams/writer.py): stopping, retries, durability."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest
from django.db import connection

from durable_sessions import streams
from durable_sessions.asgi import DurableSessionsRouter
from durable_sessions.streams.commit import AppendOp
from durable_sessions.streams.content import Payload, json_payload
from durable_sessions.streams.db import Database
from durable_sessions.streams.errors import Unavailable
from durable_sessions.streams.offsets import Position
from durable_sessions.streams.store import get_store
from durable_sessions.streams.writer import Writer
from tests.streams.dblocks import backends, held_stream
from tests.waiting import until, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class NoReaders:
    """A publisher for a writer of the test's own: nobody follows its streams."""

    def publish(self, notices, skip) -> None:
        pass

    def deliver(self, loop, notices) -> None:
        pass


def append(path: str, data: bytes) -> AppendOp:
    return AppendOp(path, Payload(data, 1))


def test_stop_fails_what_waits_and_leaves_the_running_commit_its_connection():
    """A stop that outlasts its timeout fails the queued appends at once, with a clear error,
    and lets the append under way finish on its own connection (it used to close it)."""
    streams.create("w/stop", content_type="text/plain")
    writer = Writer(Database(), NoReaders(), sweep_interval=None, name="durable-sessions-test-w")
    with held_stream("w/stop"):
        running = writer.submit(append("w/stop", b"a"))
        wait_until(lambda: writer.queued == 0, what="the writer to take the first append")
        waiting = [writer.submit(append("w/stop", b"b")) for _ in range(3)]
        finished = writer.stop(timeout=0.3)
        for future in waiting:
            assert future.done(), "a queued append was left without an answer"
            assert isinstance(future.exception(), Unavailable)
            assert "shutting down" in str(future.exception())
            assert future.exception().headers["Retry-After"] == "1"
        assert not running.done() and finished is False
    assert running.result(30).next == Position(1, 1)  # its connection was still there
    assert streams.read("w/stop").body == b"a"
    with pytest.raises(Unavailable):
        writer.submit(append("w/stop", b"c"))


def test_stop_finishes_everything_queued_when_there_is_time():
    streams.create("w/drain", content_type="text/plain")
    writer = Writer(Database(), NoReaders(), sweep_interval=None, name="durable-sessions-test-d")
    with held_stream("w/drain"):
        futures = [writer.submit(append("w/drain", str(i).encode())) for i in range(50)]
        stopping = concurrent.futures.ThreadPoolExecutor(1).submit(writer.stop, 30)
        wait_until(lambda: writer.stopping, what="stop() to begin")
    assert stopping.result(30) is True
    assert [f.result(0).next.seq for f in futures] == list(range(1, 51))
    assert streams.read("w/drain").body == "".join(str(i) for i in range(50)).encode()


async def test_the_asgi_lifespan_shutdown_commits_what_is_queued_first():
    """uvicorn's shutdown: "lifespan.shutdown.complete" goes out only after every queued append
    has committed (and got its answer)."""
    await streams.acreate("w/lifespan", content_type="application/json")
    router = DurableSessionsRouter(None)
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list[str] = []

    async def send(message):
        sent.append(message["type"])

    lifespan = asyncio.ensure_future(router({"type": "lifespan"}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    await until(lambda: sent == ["lifespan.startup.complete"])
    writer = get_store().writer_for("w/lifespan")
    loop = asyncio.get_running_loop()
    appends = [
        writer.submit(AppendOp("w/lifespan", json_payload([{"i": i}])), loop) for i in range(200)
    ]
    await inbox.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 30)
    assert sent[-1] == "lifespan.shutdown.complete"
    assert all(task.done() for task in appends), "shutdown completed with appends unanswered"
    seqs = sorted(task.result().next.seq for task in appends)
    assert seqs == list(range(1, 201))
    assert len((await streams.aread("w/lifespan")).messages()) == 200


def test_the_sqlite_log_syncs_every_commit_by_default(settings):
    """Acknowledged means durable: synchronous=FULL unless the project accepts the risk."""
    if connection.vendor != "sqlite":
        pytest.skip("a SQLite pragma")  # the Postgres pass checks synchronous_commit below
    pragma = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}

    def synchronous(_db, cur):
        return pragma[cur.execute("PRAGMA synchronous").fetchone()[0]]

    assert get_store().run_read_sync(synchronous) == "FULL"
    with Database().connect() as conn:
        assert pragma[conn.execute("PRAGMA synchronous").fetchone()[0]] == "FULL"
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "SQLITE_SYNCHRONOUS": "normal"}
    conn = Database().connect()
    assert pragma[conn.execute("PRAGMA synchronous").fetchone()[0]] == "NORMAL"
    conn.close()


def test_the_postgres_log_commits_synchronously():
    if connection.vendor != "postgresql":
        pytest.skip("a Postgres setting")
    conn = Database().connect()
    assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    conn.close()


def test_a_deadlock_is_retried_on_the_same_connection(request):
    """Postgres reports a deadlock as an OperationalError on a connection that is fine: the
    writer used to take it for a lost connection (a new connection, then 503 on a second one)."""
    if connection.vendor != "postgresql":
        pytest.skip("deadlocks between row locks are Postgres's")
    streams.create("w/dl-a", content_type="text/plain")
    streams.create("w/dl-b", content_type="text/plain")
    streams.append("w/dl-a", "0")
    streams.create("w/dl-c", content_type="text/plain")
    writer = get_store().writer_for("w/dl-a")
    [before] = [b["pid"] for b in backends(writer.name)]
    other = Database().connect()
    request.addfinalizer(other.close)
    other.execute("BEGIN")
    other.execute("SELECT 1 FROM durable_sessions_stream WHERE path = 'w/dl-b' FOR UPDATE")
    # The writer locks a, then waits for b; we then ask for a: one of us is a deadlock victim.
    # (Held up by c first, so that a and b go into one group commit.)
    with held_stream("w/dl-c"):
        writer.submit(AppendOp("w/dl-c", Payload(b"1", 1)))
        wait_until(lambda: writer.queued == 0)
        future = writer.submit(AppendOp("w/dl-a", Payload(b"1", 1)))
        writer.submit(AppendOp("w/dl-b", Payload(b"1", 1)))
    wait_until(lambda: any(b["wait"] == "Lock" for b in backends(writer.name)))
    outcome: list[BaseException | None] = []

    def lock_a():
        try:
            other.execute("SELECT 1 FROM durable_sessions_stream WHERE path = 'w/dl-a' FOR UPDATE")
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)
        finally:
            other.execute("ROLLBACK")

    thread = threading.Thread(target=lock_a)
    thread.start()
    assert future.result(30).next.seq == 2
    thread.join(30)
    other.close()
    assert [b["pid"] for b in backends(writer.name)] == [before], "the connection was replaced"
    assert streams.read("w/dl-a").body == b"01" and streams.read("w/dl-b").body == b"1"


def test_a_waiter_cancelled_by_its_caller_does_not_stop_the_writer():
    """A caller may give up on the future of a queued append (the agent runtime's cancelled
    generation did): the append stands, and the writer goes on (the InvalidStateError of
    setting a cancelled future's result killed the writer thread)."""
    streams.create("w/cancelled", content_type="application/json")
    cancelled = 0
    for n in range(50):  # until one is cancelled before the writer settles it
        cancelled += streams.submit_json("w/cancelled", [{"n": n}]).cancel()
        if cancelled:
            break
    assert cancelled, "every append was settled before its cancel: nothing was tested"
    after = streams.submit_json("w/cancelled", [{"n": "after"}]).result(timeout=10)
    assert after.next is not None
    written = streams.read("w/cancelled", "-1").messages()
    assert written == [{"n": k} for k in range(n + 1)] + [{"n": "after"}]
