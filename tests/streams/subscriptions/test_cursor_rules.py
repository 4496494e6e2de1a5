"""The cursor rules under random interleavings (hypothesis): appends, claims, acks, heartbeats,
releases, lapsed leases and the sweep, by three workers, some of them stale.

Whatever happens: a cursor only grows, is always a position of its stream and never passes the
tail; a stream is pending exactly when its tail is past its cursor, so every appended offset is
acked or pending; a refused call (fenced, a bad offset) changes no cursor; an ack that was
accepted named a real position; one worker holds the lease at a time.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable_sessions import streams
from durable_sessions.streams import subscriptions
from durable_sessions.streams.offsets import Position
from durable_sessions.streams.subscriptions import leases
from durable_sessions.streams.subscriptions.models import Subscription

pytestmark = pytest.mark.django_db(transaction=True)

WORKERS = ("w1", "w2", "w3")


def plan(rng: random.Random, length: int) -> list[tuple]:
    """A random interleaving: appends, claims and acks most often, acks mostly by the worker
    that claimed last, to a known position (newest first) or a made-up one."""
    kinds = ["append", "claim", "ack", "heartbeat", "release", "lapse"]
    weights = [4, 2, 5, 1, 1, 1]
    steps: list[tuple] = []
    for _ in range(length):
        kind = rng.choices(kinds, weights)[0]
        who = "holder" if rng.random() < 0.75 else rng.choice(WORKERS)
        if kind == "append":
            steps.append(("append", rng.randrange(2), rng.randbytes(rng.randint(1, 4))))
        elif kind == "claim":
            steps.append(("claim", rng.choice(WORKERS)))
        elif kind == "ack":
            pick = rng.choice([0, 0, 1, 2, rng.randrange(40), -1])
            steps.append(("ack", who, rng.randrange(2), pick, rng.randrange(4)))
        elif kind in ("heartbeat", "release"):
            steps.append((kind, who))
        else:
            steps.append(("lapse",))
    return steps


class Run:
    """One subscription over two streams, and what the test knows of them."""

    def __init__(self) -> None:
        run = uuid.uuid4().hex[:8]
        self.id = f"rules-{run}"
        self.paths = [f"rules-{run}/a", f"rules-{run}/b"]
        wake = f"rules-{run}/wake"
        streams.create(wake, content_type="application/json")
        for path in self.paths:
            streams.create(path, content_type="text/plain")
        subscriptions.ensure(
            # Leases long enough that only the test's "lapse" step ends one.
            self.id,
            type="pull-wake",
            streams=self.paths,
            wake_stream=wake,
            lease_ttl_ms=600_000,
        )
        self.positions = {path: [Position(0, 0)] for path in self.paths}
        self.claims: dict[str, subscriptions.Claim] = {}
        self.holder = "w1"  # whoever claimed last
        self.cursors = {path: Position(0, 0) for path in self.paths}
        self.accepted = 0

    def acked(self) -> dict[str, Position]:
        return {state.path: state.acked for state in subscriptions.get(self.id).streams}

    def do(self, action: tuple) -> None:
        kind = action[0]
        if kind == "append":
            path = self.paths[action[1]]
            self.positions[path].append(streams.append(path, action[2]).next)
        elif kind == "claim":
            with contextlib.suppress(subscriptions.AlreadyClaimed, subscriptions.NoPendingWork):
                self.claims[action[1]] = subscriptions.claim(self.id, action[1])
                self.holder = action[1]
        elif kind == "ack":
            self.ack(*action[1:])
        elif kind in ("heartbeat", "release"):
            worker = self.holder if action[1] == "holder" else action[1]
            claim = self.claims.get(worker)
            if claim is None:
                return
            call = subscriptions.heartbeat if kind == "heartbeat" else subscriptions.release
            before = self.acked()
            try:
                call(claim)
            except subscriptions.Fenced:
                assert self.acked() == before
            if kind == "release":
                self.claims.pop(worker)
        else:  # the holder hangs: its lease (or an unclaimed wake) runs out; the sweep clears it
            found = Subscription.objects.filter(id=self.id)
            found.filter(lease_expires_at__isnull=False).update(lease_expires_at=time.time() - 1)
            found.filter(wake_expires_at__isnull=False).update(wake_expires_at=time.time() - 1)
            leases.wake_if_pending(leases.lapsed())

    def ack(self, who: str, stream: int, pick: int, done: int) -> None:
        worker = self.holder if who == "holder" else who
        claim = self.claims.get(worker)
        if claim is None:
            return
        path = self.paths[stream]
        known = self.positions[path]
        made_up = Position(abs(pick) + 1, abs(pick) * 7 + 3)  # (mostly no position)
        offset = made_up if pick < 0 or pick > 30 else known[-1 - pick % len(known)]
        before = self.acked()
        now = Subscription.objects.values("generation", "wake_id", "holder").get(id=self.id)
        current = (now["generation"], now["wake_id"], now["holder"])
        try:
            subscriptions.ack(claim, {path: offset}, done=done == 0)
        except (subscriptions.Fenced, subscriptions.InvalidOffset):
            assert self.acked() == before, "a refused ack moved a cursor"
            return
        self.accepted += 1
        assert offset in known, f"an ack to {offset}, no position of {path}, was accepted"
        assert current == (claim.generation, claim.wake_id, worker), "a stale ack was accepted"
        if done == 0:
            self.claims.pop(worker)

    def check(self) -> None:
        for state in subscriptions.get(self.id).streams:
            tail = self.positions[state.path][-1]
            assert state.acked.seq >= self.cursors[state.path].seq, "a cursor went back"
            assert state.acked in self.positions[state.path], "a cursor is no position"
            assert state.acked.seq <= tail.seq, "a cursor passed the tail"
            assert state.has_pending == (tail.seq > state.acked.seq)
            self.cursors[state.path] = state.acked
        holder = Subscription.objects.get(id=self.id).holder
        assert holder is None or holder in WORKERS


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(10, 40))
def test_cursor_rules_hold_under_any_interleaving(seed, length):
    run = Run()
    for action in plan(random.Random(seed), length):
        run.do(action)
        run.check()
