"""The subscriptions' thread of each process: wakes after commits, the durable sweep, webhooks.

It runs beside the process's store (a store ``Extension``, registered when Django starts):

- **After a commit** the writer hands it what changed. It links new streams to the
  subscriptions whose pattern matches them, then looks up the subscriptions linked to the
  touched streams (one indexed query per batch of commits, whatever the number of subscribers)
  and wakes those that are idle with pending work. The writer never waits for any of it.
- **The sweep**, every ``SUBSCRIPTION_SWEEP_INTERVAL``: leases and unclaimed wakes that ran
  out are cleared and woken again; idle subscriptions with pending work that no wake covers (a
  process died between a commit and its wake) are woken; streams a pattern matches but that
  were never linked are linked; due webhook deliveries are sent. Every process sweeps; row
  locks and re-checks make a second sweeper harmless.
- **Webhooks** go out from a small pool of threads (``WEBHOOK_THREADS``), each delivery taken
  by one process only (``deliveries.take``).

Nothing here holds state that matters across a restart: it is all in the database.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import InterfaceError, OperationalError, close_old_connections, connections

from durable_sessions import dbthreads
from durable_sessions.conf import ds_settings
from durable_sessions.streams.db import STREAM
from durable_sessions.streams.offsets import START
from durable_sessions.streams.records import Change
from durable_sessions.streams.subscriptions import (
    cursors,
    deliveries,
    leases,
    patterns,
    service,
    signing,
    webhooks,
)
from durable_sessions.streams.subscriptions.models import Subscription, SubscriptionLink

logger = logging.getLogger("durable_sessions.streams.subscriptions")

LINK = "durable_sessions_subscription_link"
SUBSCRIPTION = "durable_sessions_subscription"
BACKFILL_EVERY = 10  # sweeps between passes that link streams a pattern matches
IDLE_CLOSE = 1.0  # seconds without work after which the thread closes its connection


class SubscriptionWorker:
    """One process's subscriptions thread and webhook pool (see the module docstring)."""

    def __init__(self, store: Any = None) -> None:
        self._cond = threading.Condition()
        self._changes: list[Change] = []
        self._send = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._sending: set[str] = set()
        self._sending_lock = threading.Lock()
        self._sweeps = 0
        self._logged_at = -60.0
        leases.delivery_listeners.append(self.poke)
        self.ensure_started()  # every process sweeps, also one that never commits

    # -- the other threads' side ---------------------------------------------------------------

    def committed(self, changes: list[Change]) -> None:
        """From a writer thread: queue what changed, wake the thread, return."""
        with self._cond:
            if self._stopping:
                return
            self._changes.extend(changes)
            self._start()
            self._cond.notify()

    def poke(self) -> None:
        """A webhook delivery was made due: send it now, not at the next sweep."""
        with self._cond:
            if self._stopping:
                return
            self._send = True
            self._start()
            self._cond.notify()

    def ensure_started(self) -> None:
        """Start the thread (the sweep) even if this process commits nothing."""
        with self._cond:
            if not self._stopping:
                self._start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and the webhook pool (a delivery under way finishes)."""
        with self._cond:
            self._stopping = True
            thread = self._thread
            self._cond.notify()
        if self.poke in leases.delivery_listeners:
            leases.delivery_listeners.remove(self.poke)
        if thread is not None:
            thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="durable-sessions-subscriptions", daemon=True
            )
            self._thread.start()

    # -- the thread's side ---------------------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic()
        try:
            while True:
                with self._cond:
                    while not (self._changes or self._send or self._stopping):
                        wait = next_sweep - time.monotonic()
                        if wait <= 0:
                            break
                        if not self._cond.wait(min(wait, IDLE_CLOSE)):
                            dbthreads.close()  # idle: the connection is not kept meanwhile
                    if self._stopping:
                        return
                    changes, self._changes = self._changes, []
                    send, self._send = self._send, False
                try:
                    dbthreads.tidy()  # kept while rounds follow each other
                    if changes:
                        self.after_commit(changes)
                    if send:
                        self.send_due()
                    if time.monotonic() >= next_sweep:
                        interval = float(ds_settings.SUBSCRIPTION_SWEEP_INTERVAL)
                        next_sweep = time.monotonic() + interval
                        self.sweep()
                except Exception:  # a database outage, say: the next round tries again
                    self._failed("a round of work")
        finally:
            connections.close_all()  # this thread's connections

    def _failed(self, what: str) -> None:
        """Log a failure, at most once a minute (an outage fails every round, several times a
        second): the database being unreachable in one line, anything else with its
        traceback."""
        now = time.monotonic()
        if now - self._logged_at < 60:
            logger.debug("subscriptions: %s failed", what, exc_info=True)
            return
        self._logged_at = now
        error = sys.exc_info()[1]
        if isinstance(error, OperationalError | InterfaceError):
            logger.warning("subscriptions: %s failed, the database is unavailable: %s", what, error)
        else:
            logger.exception("subscriptions: %s failed (logged once a minute)", what)

    def _any(self) -> bool:
        """Whether any subscription exists: one cheap query per round, so that a project
        without subscriptions pays nothing more (never cached: a subscription made by another
        process a moment ago must see the next commit)."""
        return Subscription.objects.using(cursors.alias()).filter(deleted=False).exists()

    def after_commit(self, changes: list[Change]) -> None:
        """Link new streams, then wake the idle subscriptions of the touched streams.

        One query finds them, and only those that may need a wake (idle, or whose lease or
        wake has run out): while a subscription has a wake in flight, the commits of its
        streams cost one indexed lookup that returns nothing, not a transaction each.
        """
        created = [
            (change.path, change.stream_id, change.start or START)
            for change in changes
            if change.kind == "create" and change.stream_id is not None
        ]
        touched = service.links_for_new_streams(created) if created else set()
        paths = sorted({change.path for change in changes if change.kind != "delete"})
        touched.update(self.idle_linked(paths))
        if touched:
            leases.wake_if_pending(sorted(touched))

    def idle_linked(self, paths: list[str]) -> list[str]:
        """The subscriptions linked to ``paths`` that have no live wake or lease."""
        if not paths:
            return []
        now = time.time()
        marks = ", ".join(["%s"] * len(paths))
        sql = (
            f"SELECT DISTINCT l.subscription_id FROM {LINK} l"
            f" JOIN {SUBSCRIPTION} sub ON sub.id = l.subscription_id"
            f" WHERE l.path IN ({marks}) AND sub.deleted = %s AND (sub.wake_id IS NULL"
            " OR (sub.lease_expires_at IS NOT NULL AND sub.lease_expires_at <= %s)"
            " OR (sub.wake_expires_at IS NOT NULL AND sub.wake_expires_at <= %s))"
        )
        with connections[cursors.alias()].cursor() as cur:
            cur.execute(sql, [*paths, False, now, now])
            return [row[0] for row in cur.fetchall()]

    def sweep(self) -> None:
        """Lapsed leases and wakes, pending work without a wake, unlinked matches, webhooks."""
        self._sweeps += 1
        if not self._any():
            return
        lapsed = leases.lapsed()
        if lapsed:
            leases.wake_if_pending(lapsed)
        pending = self.pending_without_wake()
        if pending:
            leases.wake_if_pending(pending)
        if self._sweeps % BACKFILL_EVERY == 1:
            self.link_missed_matches()
        self.send_due()

    def pending_without_wake(self, limit: int = 500) -> list[str]:
        """Idle subscriptions with a linked stream whose tail is past its cursor."""
        now = time.time()
        sql = (
            f"SELECT DISTINCT l.subscription_id FROM {LINK} l"
            f" JOIN {STREAM} s ON s.path = l.path AND s.deleted = %s"
            f" JOIN {SUBSCRIPTION} sub ON sub.id = l.subscription_id"
            " WHERE sub.deleted = %s AND sub.wake_id IS NULL"
            " AND (s.ttl_seconds IS NULL OR s.touched_at + s.ttl_seconds > %s)"
            " AND (s.expires_at IS NULL OR s.expires_at > %s)"
            " AND ((l.stream_id = s.id AND s.tail_seq > l.acked_seq)"
            " OR ((l.stream_id IS NULL OR l.stream_id <> s.id) AND s.tail_seq > 0))"
            " LIMIT %s"
        )
        with connections[cursors.alias()].cursor() as cur:
            cur.execute(sql, [False, False, now, now, limit])
            return [row[0] for row in cur.fetchall()]

    def link_missed_matches(self) -> None:
        """Streams created after a pattern subscription that were never linked to it (the
        process that created them died before its commit hook ran): link them at their start."""
        from durable_sessions.streams.models import Stream

        db = cursors.alias()
        for subscription_id, pattern, created_at in (
            Subscription.objects.using(db)
            .filter(deleted=False, pattern__isnull=False)
            .values_list("id", "pattern", "created_at")
        ):
            if pattern is None:
                continue
            linked = SubscriptionLink.objects.using(db).filter(subscription_id=subscription_id)
            candidates = (
                Stream.objects.using(db)
                .filter(
                    path__startswith=patterns.literal_prefix(pattern),
                    deleted=False,
                    created_at__gt=created_at,
                    source__isnull=True,
                )
                .exclude(path__in=linked.values("path"))
                .values_list("path", "id")
            )
            missed = [(p, i, START) for p, i in candidates if patterns.matches(pattern, p)]
            if missed:
                service.links_for_new_streams(missed)

    def send_due(self) -> None:
        """Hand each due webhook delivery to the pool (one at a time per subscription)."""
        for subscription_id in deliveries.due():
            with self._sending_lock:
                if subscription_id in self._sending:
                    continue
                self._sending.add(subscription_id)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=int(ds_settings.WEBHOOK_THREADS),
                    thread_name_prefix="durable-sessions-webhook",
                )
            try:
                self._pool.submit(self._deliver, subscription_id)
            except RuntimeError:  # shutting down
                self._done_sending(subscription_id)
                return

    def _done_sending(self, subscription_id: str) -> None:
        with self._sending_lock:
            self._sending.discard(subscription_id)

    def _deliver(self, subscription_id: str) -> None:
        try:
            close_old_connections()
            delivery = deliveries.take(subscription_id)
            if delivery is None:
                return
            headers = {
                "content-type": "application/json",
                "webhook-signature": signing.sign(delivery.body),
            }
            try:
                answer = webhooks.post(
                    delivery.url,
                    delivery.body,
                    headers,
                    timeout=float(ds_settings.WEBHOOK_TIMEOUT),
                )
            except Exception as exc:  # refused, unreachable, timed out, a rejected address
                deliveries.settle(delivery, error=f"{type(exc).__name__}: {exc}")
                return
            if not 200 <= answer.status < 300:
                deliveries.settle(delivery, error=f"HTTP {answer.status}")
                return
            done = isinstance(answer.data, dict) and answer.data.get("done") is True
            deliveries.settle(delivery, done=done)
        except Exception:
            logger.exception("subscriptions: delivering the webhook of %s failed", subscription_id)
        finally:
            self._done_sending(subscription_id)
            connections.close_all()


def install() -> None:
    """Run a ``SubscriptionWorker`` beside every store of this process (called at app ready)."""
    from durable_sessions.streams.store import register_extension

    register_extension(SubscriptionWorker)
