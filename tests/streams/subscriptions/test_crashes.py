"""Subscriptions across crashes: real server processes on the test database, real HTTP.

Everything about a subscription is in the database, and every process sweeps it (leases and
wakes that ran out, pending work that no wake covers, due webhook retries). What must hold
whatever process dies when:

- every append a process acknowledged is eventually delivered to a live consumer, even when
  the process died before it woke anyone (another process's sweep wakes the subscription);
- a lease whose worker died lapses after ``lease_ttl_ms``, never before, and the work is woken
  again under a higher generation;
- a stale worker (its lease moved on, on this process or another) is ``409 FENCED`` on every
  call, and its calls change nothing: not the row, not a cursor;
- no cursor ever moves backwards (``Cursors`` watches every ``GET``);
- a webhook receiver that is down gets the same wake retried with a doubling backoff, and the
  signed delivery once it is back.

**"Killed after acknowledging, before waking" made certain.** A process acknowledges an append
when its writer commits, and its subscriptions thread wakes the subscription afterwards, on its
own; a SIGKILL "right after the response" would otherwise land before or after the wake by
luck. Two things pin it (``killed_before_waking``):

- On Postgres, the test holds the subscription's row locked (``SELECT ... FOR UPDATE`` on a
  connection of its own) from before the appends until after the kill. Every wake locks that
  row first and an append never touches it, so the appends are acknowledged while the victim's
  wake cannot commit; the test even waits until it sees the victim's connection waiting for
  that lock (``pg_blocking_pids``), so the kill cuts a wake that was under way.
- On SQLite one lock covers every write, so nothing can hold up the wake and let the append
  through. There the victim is stopped (SIGSTOP) the moment the last response arrives, and the
  database is read: no wake committed (the writer settles the append before it tells the
  subscriptions thread, so the stop wins this race: it did in each of some 60 tries; when it
  does not, the test says so instead of testing something else). The appends are one request
  there, so that the stop follows the acknowledgement of all of them at once. A stopped
  process commits nothing more, and the kill follows.

In both, the survivor is stopped too while the victim takes the appends, so that its sweep
cannot make the wake before the crash either; it is continued once the victim is dead. The
test process runs no subscriptions worker of its own (``no_worker_here``): every wake seen
here was made by a server process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from django.db import connection

from durable_sessions.streams import store
from durable_sessions.streams.db import Database
from durable_sessions.streams.store import reset_store
from durable_sessions.streams.subscriptions import signing
from durable_sessions.streams.subscriptions.models import Subscription
from tests.streams.dblocks import held_stream
from tests.streams.subscriptions.cluster import (
    TIMEOUT,
    Cursors,
    Node,
    error_code,
    link,
    state,
)
from tests.streams.subscriptions.receiver import Receiver
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")
TTL_MS = 2000  # the leases of these tests (long enough that a live holder's does not lapse)
SUBSCRIPTION = "durable_sessions_subscription"


@pytest.fixture(autouse=True)
def no_worker_here():
    """No subscriptions worker in the test process: earlier tests may have left the log's store
    (and its worker, which sweeps) running here. These tests reach the log over HTTP only and
    read the tables through the ORM, which starts nothing."""
    reset_store()
    yield
    assert store._store is None, "the test used the log in its own process"


@pytest.fixture
def nodes() -> Iterator[Callable[[str], Node]]:
    """Start server processes (``nodes("victim")``); all are stopped at the end."""
    started: list[Node] = []
    run = uuid.uuid4().hex[:6]

    def start(name: str) -> Node:
        node = Node(f"{name}-{run}").start()
        started.append(node)
        return node

    yield start
    for node in started:
        if node.server.process.poll() is None:
            node.thaw()  # (a frozen process would not hear the SIGTERM of stop())
        node.stop()


def paths() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"jobs/{run}", f"wake/{run}"


# -- crashing a process between its append and its wake ----------------------------------------


def waiting_for(name: str, pid: int) -> bool:
    """Postgres: whether a connection of the process named ``name`` waits for a lock that the
    backend ``pid`` holds."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND %s = ANY(pg_blocking_pids(pid))",
            [name, pid],
        )
        return cur.fetchone()[0] > 0


@contextmanager
def wakes_held(subscription_ids: list[str]) -> Iterator[int | None]:
    """Postgres: hold these subscriptions' rows locked, so that no process can wake them (a wake
    locks the row first); yields the backend holding the locks. SQLite: holds nothing (None)."""
    if connection.vendor != "postgresql":
        yield None
        return
    conn = Database().connect()
    try:
        conn.execute("BEGIN")
        conn.execute(
            f"SELECT id FROM {SUBSCRIPTION} WHERE id = ANY(%s) FOR UPDATE", [subscription_ids]
        )
        yield conn.info.backend_pid
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def killed_before_waking(
    victim: Node, survivor: Node, subscription_ids: list[str], appends: Callable[[], T]
) -> T:
    """Run ``appends`` (appends through ``victim``, acknowledged when it returns), then SIGKILL
    the victim, certain that it woke none of ``subscription_ids`` (the module docstring says
    how); returns what ``appends`` returned. The survivor is continued after the kill."""
    before = {sid: state(sid) for sid in subscription_ids}
    assert all(row["wake_id"] is None for row in before.values())
    survivor.freeze()
    try:
        with wakes_held(subscription_ids) as lock:
            acknowledged = appends()
            if lock is not None:  # the victim's commit hook is at the wake, waiting for us
                wait_until(
                    lambda: waiting_for(victim.name, lock),
                    TIMEOUT,
                    what="the victim's wake to wait for the subscription's row",
                )
            victim.freeze()
            for sid, row in before.items():
                now = state(sid)
                assert (now["generation"], now["wake_id"]) == (row["generation"], None), (
                    f"the victim woke {sid} before it was stopped (SQLite: nothing can hold the "
                    "wake up alone, and this time it beat the SIGSTOP); run the test again"
                )
            victim.kill()
    finally:
        survivor.thaw()
    return acknowledged


def append_all(node: Node, path: str, messages: list[Any]) -> str:
    """Append ``messages`` through ``node``; returns the acknowledged tail. On Postgres one
    request each (each commit's hook then tries to wake, and waits); on SQLite all in one request
    (the stop must follow the response at once: see the module docstring)."""
    if connection.vendor == "postgresql":
        return [node.append(path, message) for message in messages][-1]
    return node.append(path, *messages)


@pytest.mark.parametrize("kind", ["pull-wake", "webhook"])
def test_appends_acknowledged_by_a_process_killed_before_its_wake_are_delivered(nodes, kind):
    survivor, victim = nodes("survivor"), nodes("victim")
    jobs, wake = paths()
    survivor.create(jobs)  # (so the survivor has written: its subscriptions thread runs)
    messages = [{"n": n, "kind": kind} for n in range(5)]
    with Receiver() as receiver:
        receiver.up()
        if kind == "pull-wake":
            survivor.create(wake)
            config: dict[str, Any] = {"type": kind, "wake_stream": wake}
        else:
            config = {"type": kind, "webhook": {"url": receiver.url()}}
        created = survivor.subscribe("s", streams=[jobs], lease_ttl_ms=TTL_MS, **config)
        cursors = Cursors()
        start = cursors.see(created)[jobs]

        tail = killed_before_waking(
            victim, survivor, ["s"], lambda: append_all(victim, jobs, messages)
        )

        # The survivor's sweep finds the pending work that no wake covers, and wakes it.
        if kind == "pull-wake":
            event = survivor.wait_for_wake(wake, "s", after=0)
            assert (event["type"], event["stream"], event["generation"]) == ("wake", jobs, 1)
            response = survivor.claim("s", "live-worker")
            assert response.status_code == 200, response.text
            claim = response.json()
            offered = link(claim["streams"], jobs)
        else:
            [delivery] = receiver.wait_for(1)
            jwks = survivor.jwks()
            assert signing.verify(delivery.body, delivery.headers["webhook-signature"], jwks)
            claim = delivery.data
            assert claim["subscription_id"] == "s"
            offered = link(claim["streams"], jobs)
        if kind == "webhook":  # (a pull-wake claim may come after a lapse: generation 2)
            assert claim["generation"] == 1  # the wake the crash cut off left nothing behind
        assert offered["has_pending"] is True
        assert (offered["acked_offset"], offered["tail_offset"]) == (start, tail)
        delivered, end = survivor.read(jobs, offered["acked_offset"])
        assert (delivered, end) == (messages, tail)  # every acknowledged append, once, in order

        if kind == "pull-wake":
            response = survivor.ack("s", claim, {jobs: tail}, done=True)
            assert response.json() == {"ok": True, "next_wake": False}
        # (the webhook answered {"done": true}: the server acks the wake's snapshot)
        wait_until(
            lambda: cursors.see(survivor.subscription("s"))[jobs] == tail,
            TIMEOUT,
            what="the cursor at the tail",
        )
        assert survivor.subscription("s")["status"] == "active"
        assert len(receiver.deliveries) == (1 if kind == "webhook" else 0)


def test_a_wake_whose_event_was_lost_in_a_crash_lapses_and_is_made_again(nodes):
    """A pull-wake's event is appended after the wake's transaction commits; a process killed in
    between leaves a wake that nobody hears of. It lapses after ``lease_ttl_ms`` and the sweep
    makes another, with its event.

    Made certain as above: the test holds the wake stream's row (a wake event's append locks
    it), sees the wake committed and the victim's writer waiting for that row, then kills."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs the wake stream locked alone (a row lock); on SQLite one lock covers every "
            "write, so the event cannot be held up while its wake commits"
        )
    survivor, victim = nodes("survivor"), nodes("victim")
    jobs, wake = paths()
    survivor.create(jobs)
    survivor.create(wake)
    survivor.subscribe("s", type="pull-wake", streams=[jobs], wake_stream=wake, lease_ttl_ms=1000)
    survivor.freeze()
    try:
        with held_stream(wake) as lock:
            tail = victim.append(jobs, {"n": 1})
            wait_until(lambda: state("s")["wake_id"] is not None, TIMEOUT, what="the wake")
            made = state("s")
            wait_until(
                lambda: waiting_for(victim.name, lock.info.backend_pid),
                TIMEOUT,
                what="the wake's event to wait for the wake stream",
            )
            victim.freeze()
            victim.kill()
    finally:
        survivor.thaw()
    assert made["generation"] == 1 and made["holder"] is None
    event = survivor.wait_for_wake(wake, "s", after=0)
    assert event["generation"] == 2
    assert event["ts"] >= int(made["wake_expires_at"] * 1000)  # it lapsed first, never early
    assert [e["generation"] for e in survivor.wakes(wake, "s")] == [2]  # 1's was never written
    claim = survivor.claim("s", "live-worker").json()
    assert claim["generation"] == 2 and link(claim["streams"], jobs)["tail_offset"] == tail
    assert survivor.ack("s", claim, {jobs: tail}, done=True).json()["ok"] is True


def test_a_process_that_has_written_nothing_still_sweeps(nodes):
    victim, reader = nodes("victim"), nodes("reader")
    jobs, wake = paths()
    victim.create(jobs)
    victim.create(wake)
    victim.subscribe("s", type="pull-wake", streams=[jobs], wake_stream=wake, lease_ttl_ms=1000)
    reader.read(jobs)  # the reader has the log open, and has committed nothing
    killed_before_waking(victim, reader, ["s"], lambda: victim.append(jobs, {"n": 1}))
    reader.wait_for_wake(wake, "s", after=0, timeout=5)  # 25 sweep intervals


# -- leases whose worker died, and stale workers ------------------------------------------------

# A worker in a process of its own: claims, acks its first message (which extends the lease),
# says so on stdout, and hangs until it is killed.
WORKER = """
import json, sys, time, httpx
base, subscription_id, path, first = sys.argv[1:]
client = httpx.Client(base_url=base, timeout=30)
claim = client.post(f"__ds/subscriptions/{subscription_id}/claim", json={"worker": "doomed"})
claim = claim.json()
renewed = time.time()
ack = client.post(
    f"__ds/subscriptions/{subscription_id}/ack",
    headers={"authorization": "Bearer " + claim["token"]},
    json={"wake_id": claim["wake_id"], "generation": claim["generation"],
          "acks": [{"stream": path, "offset": first}]},
)
print(json.dumps({"claim": claim, "renewed": renewed, "ack": ack.status_code}), flush=True)
sys.stdin.read()
"""


def fenced_calls(
    node: Node, stale: dict[str, Any], current: dict[str, Any], acks: dict[str, str]
) -> dict[str, Callable[[], Any]]:
    """Every call a stale worker could make with its claim ``stale``."""
    posing = {**stale, "wake_id": current["wake_id"], "generation": current["generation"]}
    return {
        "ack and done": lambda: node.ack("s", stale, acks, done=True),
        "ack": lambda: node.ack("s", stale, acks),
        "heartbeat": lambda: node.ack("s", stale),
        "release": lambda: node.release("s", stale),
        "ack naming the current wake": lambda: node.ack("s", posing, acks, done=True),
        "release naming the current wake": lambda: node.release("s", posing),
    }


def assert_fenced(
    calls: dict[str, Callable[[], Any]],
    observers: list[Node],
    cursors: Cursors,
    keep_alive: Callable[[], Any] | None = None,
) -> None:
    """Each call answers ``409 FENCED`` and changes nothing: the stored row and links, and what
    ``GET`` shows on every process in ``observers``. ``keep_alive`` (the live holder's
    heartbeat) runs before each, so that its lease cannot lapse in the middle of a comparison."""
    for name, call in calls.items():
        if keep_alive is not None:
            assert keep_alive().status_code == 200
        row = state("s")
        shown = [node.subscription("s") for node in observers]
        response = call()
        assert error_code(response) == (409, "FENCED"), (name, response.text)
        assert state("s") == row, name
        after = [node.subscription("s") for node in observers]
        for seen in after:
            cursors.see(seen)
        assert after == shown, name


def test_a_lease_whose_worker_died_lapses_and_its_token_is_fenced(nodes):
    node = nodes("server")
    jobs, wake = paths()
    node.create(jobs)
    node.create(wake)
    cursors = Cursors()
    start = cursors.see(
        node.subscribe("s", type="pull-wake", streams=[jobs], wake_stream=wake, lease_ttl_ms=TTL_MS)
    )[jobs]
    first = node.append(jobs, {"n": 1})
    tail = node.append(jobs, {"n": 2})
    assert node.wait_for_wake(wake, "s", after=0)["generation"] == 1

    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(node.http.base_url), "s", jobs, first],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        said = json.loads(worker.stdout.readline())
    finally:
        worker.kill()  # the worker dies holding the lease
        worker.wait(10)
    dead, renewed = said["claim"], said["renewed"]
    assert said["ack"] == 200
    assert cursors.see(node.subscription("s"))[jobs] == first  # what it acked before dying stays

    busy = node.claim("s", "live-worker")
    if time.time() < renewed + TTL_MS / 1000:  # (the lease still ran when the server answered)
        assert error_code(busy) == (409, "ALREADY_CLAIMED")
        assert busy.json()["error"]["current_holder"] == "doomed"

    # The lease lapses (never before lease_ttl_ms), and the sweep wakes the work again.
    event = node.wait_for_wake(wake, "s", after=dead["generation"])
    assert event["ts"] >= int((renewed + TTL_MS / 1000) * 1000)
    response = node.claim("s", "live-worker")
    assert response.status_code == 200, response.text
    live = response.json()
    assert live["generation"] >= event["generation"] > dead["generation"]
    offered = link(live["streams"], jobs)
    assert (offered["acked_offset"], offered["tail_offset"]) == (first, tail)

    heartbeat = lambda: node.ack("s", live)  # noqa: E731
    assert_fenced(fenced_calls(node, dead, live, {jobs: tail}), [node], cursors, heartbeat)
    assert node.ack("s", live, {jobs: tail}, done=True).json() == {"ok": True, "next_wake": False}
    assert cursors.see(node.subscription("s"))[jobs] == tail
    assert_fenced(fenced_calls(node, dead, live, {jobs: tail}), [node], cursors)  # idle now
    delivered, _ = node.read(jobs, start)
    assert delivered == [{"n": 1}, {"n": 2}]


def test_a_stale_worker_on_one_process_is_fenced_after_another_took_the_lease(nodes):
    a, b = nodes("a"), nodes("b")
    jobs, wake = paths()
    b.create(jobs)
    b.create(wake)
    cursors = Cursors()
    cursors.see(
        b.subscribe("s", type="pull-wake", streams=[jobs], wake_stream=wake, lease_ttl_ms=TTL_MS)
    )
    offsets = [a.append(jobs, {"n": n}) for n in range(3)]

    response = a.claim("s", "stale-worker")
    assert response.status_code == 200, response.text
    stale = response.json()
    renewed = time.time()
    assert a.ack("s", stale, {jobs: offsets[0]}).status_code == 200
    assert cursors.see(b.subscription("s"))[jobs] == offsets[0]

    # The stale worker stops heartbeating; once its lease has run out, B hands the lease over.
    def lapsed() -> bool:
        row = state("s")
        return row["holder"] is None or row["lease_expires_at"] <= time.time()

    wait_until(lapsed, TIMEOUT, what="the lease to run out")
    response = b.claim("s", "new-worker")
    assert response.status_code == 200, response.text
    assert time.time() >= renewed + TTL_MS / 1000  # never taken over early
    new = response.json()
    assert new["generation"] > stale["generation"]
    assert link(new["streams"], jobs)["acked_offset"] == offsets[0]
    assert b.ack("s", new, {jobs: offsets[1]}).status_code == 200

    # The stale worker, on A, whatever it tries: fenced, and nothing moves, as seen from both.
    heartbeat = lambda: b.ack("s", new)  # noqa: E731
    assert_fenced(fenced_calls(a, stale, new, {jobs: offsets[2]}), [a, b], cursors, heartbeat)
    assert cursors.see(a.subscription("s"))[jobs] == offsets[1]

    # The new holder cannot move a cursor backwards either; its acks work on either process.
    row = state("s")
    assert error_code(b.ack("s", new, {jobs: offsets[0]})) == (409, "INVALID_OFFSET")
    assert state("s")["links"] == row["links"]
    response = a.ack("s", new, {jobs: offsets[2]}, done=True)
    assert response.json() == {"ok": True, "next_wake": False}
    assert cursors.see(a.subscription("s"))[jobs] == offsets[2]
    assert cursors.see(b.subscription("s"))[jobs] == offsets[2]
    assert_fenced(fenced_calls(a, stale, new, {jobs: offsets[2]}), [a, b], cursors)


# -- a webhook receiver that is down for a while -----------------------------------------------


def test_a_webhook_receiver_that_was_down_gets_the_retried_delivery_signed(nodes):
    a, b = nodes("a"), nodes("b")
    jobs, _wake = paths()
    b.create(jobs)
    with Receiver() as receiver:  # down: its port refuses connections
        created = b.subscribe(
            "s",
            type="webhook",
            streams=[jobs],
            webhook={"url": receiver.url()},
            lease_ttl_ms=TTL_MS,
        )
        cursors = Cursors()
        start = cursors.see(created)[jobs]
        appended = time.time()
        first = a.append(jobs, {"n": 1})

        # Each failed attempt schedules the next: the earliest next_attempt_at seen after each
        # (sending one pushes it further while the request is out).
        schedule: dict[int, float] = {}
        wakes: set[tuple[int, str]] = set()

        def attempts() -> int:
            row = Subscription.objects.values(
                "attempts", "next_attempt_at", "generation", "wake_id"
            ).get(id="s")
            if row["attempts"]:
                schedule[row["attempts"]] = min(
                    schedule.get(row["attempts"], float("inf")), row["next_attempt_at"]
                )
                wakes.add((row["generation"], row["wake_id"]))
            return row["attempts"]

        wait_until(lambda: attempts() >= 1, TIMEOUT, what="a failed delivery")
        shown = b.subscription("s")
        assert shown["status"] == "failed"
        assert "ConnectFailed" in state("s")["last_error"]
        second = b.append(jobs, {"n": 2})  # more data while the receiver is down
        wait_until(lambda: attempts() >= 3, TIMEOUT, what="three failed deliveries")
        assert a.subscription("s")["status"] == "failed"
        assert len(wakes) == 1  # the same wake is retried, not a new one made

        # Retries are never early, and back off: about 1, 2, 4 s (each +-20 %, plus the sweep's
        # delay and this machine's noise, so only loose upper bounds).
        gaps = [schedule[2] - schedule[1], schedule[3] - schedule[2]]
        assert schedule[1] >= appended + 0.8
        assert 1.6 <= gaps[0] <= 2.4 + 2.0, (schedule, gaps)
        assert 3.2 <= gaps[1] <= 4.8 + 2.0, (schedule, gaps)
        assert gaps[1] > gaps[0]

        receiver.up()  # back, on the same port
        # The next retry is when the last failure scheduled it (up to the 60 s cap, with
        # jitter, if this machine was slow enough for more attempts to fail meanwhile).
        due = Subscription.objects.values_list("next_attempt_at", flat=True).get(id="s")
        wait = (due if due is not None else time.time() + 72.0) - time.time()
        late, fresh = receiver.wait_for(2, timeout=max(0.0, wait) + TIMEOUT)
        assert late.at >= schedule[3]  # the retry schedule held
        kid = created["webhook"]["signing"]["kid"]
        jwks = a.jwks()
        for delivery in (late, fresh):
            header = delivery.headers["webhook-signature"]
            assert signing.verify(delivery.body, header, jwks) and f"kid={kid}," in header
        # The wake made before the outage, its snapshot as it was then; then the data since.
        [(generation_made, wake_id)] = wakes
        assert (late.data["generation"], late.data["wake_id"]) == (generation_made, wake_id)
        offered = link(late.data["streams"], jobs)
        assert (offered["acked_offset"], offered["tail_offset"]) == (start, first)
        assert fresh.data["generation"] == generation_made + 1
        offered = link(fresh.data["streams"], jobs)
        assert (offered["acked_offset"], offered["tail_offset"]) == (first, second)
        delivered, _ = b.read(jobs, start)
        assert delivered == [{"n": 1}, {"n": 2}]

        wait_until(
            lambda: cursors.see(b.subscription("s"))[jobs] == second,
            TIMEOUT,
            what="the cursor at the tail",
        )
        assert a.subscription("s")["status"] == "active"
        row = state("s")
        assert (row["attempts"], row["last_error"], row["wake_id"]) == (0, "", None)
        assert len(receiver.deliveries) == 2  # once up, each wake was delivered once
