"""The agent worker: follows the wake stream, claims sessions, runs their generations.

``AgentWorker.run()`` is the whole runtime of one process (``manage.py run_agents``, or a
thread of the server process in the embedded default, ``embedded.py``). It follows the wake
stream from its tail, then asks every agents subscription with pending work to wake (what
arrived while no worker ran), and for each wake claims the session (``AlreadyClaimed`` and
``NoPendingWork`` only mean another worker was quicker) and hands the claim to a
``SessionRun``. Many sessions run at once; ``AGENT_CONCURRENCY`` bounds the generations.
One heartbeat keeps the leases of all the worker's claims (one transaction); a claim it
could not extend was taken over, and its run stops writing.
Any number of workers may run, on any number of machines: the claims share the sessions out.

``stop()`` is the graceful end (SIGTERM): no new claim, and each run finishes the generations
it has, for up to ``AGENT_SHUTDOWN_GRACE`` seconds; then the rest are cut and their claims
released, so that another worker takes them over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator

from durable_sessions import streams
from durable_sessions.agents import links
from durable_sessions.agents.session_run import SessionRun
from durable_sessions.agents.writer import close_pools, db, lease_db
from durable_sessions.conf import ds_settings
from durable_sessions.sessions.models import Session
from durable_sessions.streams import subscriptions

logger = logging.getLogger("durable_sessions.agents")


def _pending_subscriptions() -> list[str]:
    """Every session with agents has its subscription (made again if it was lost); the ids of
    those with pending work (what arrived while no worker ran: their wake events may be before
    the offset this worker follows the wake stream from, so it claims them itself)."""
    pending = []
    for session in Session.objects.filter(agents__isnull=False).distinct():
        links.ensure(session)
        sid = links.subscription_id(session.pk)
        if any(link.has_pending for link in subscriptions.get(sid).streams):
            pending.append(sid)
    return pending


def _has_pending(subscription_id: str) -> bool:
    try:
        return any(link.has_pending for link in subscriptions.get(subscription_id).streams)
    except subscriptions.SubscriptionNotFound:
        return False


class AgentWorker:
    """The runtime of one process (see the module docstring)."""

    def __init__(self, name: str | None = None, *, concurrency: int | None = None) -> None:
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.concurrency = int(concurrency or ds_settings.AGENT_CONCURRENCY)
        self._slots = asyncio.Semaphore(self.concurrency)
        self.runs: dict[str, SessionRun] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()  # set once the worker follows the wake stream

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the worker's ``AGENT_CONCURRENCY`` generation slots."""
        async with self._slots:
            yield

    async def run(self) -> None:
        """Work until ``stop()``; then end gracefully."""
        wake_path = await db(links.wake_stream)
        tail = (await streams.ainfo(wake_path)).tail
        follower = asyncio.ensure_future(self._follow(wake_path, str(tail)))
        heartbeats = asyncio.ensure_future(self._heartbeats())
        try:
            for subscription_id in await db(_pending_subscriptions):
                self.kick(subscription_id)
            self.ready.set()
            logger.info("agent worker %s follows %s", self.name, wake_path)
            await self._stopping.wait()
        finally:
            follower.cancel()
            await self._drain()
            heartbeats.cancel()
            await asyncio.to_thread(close_pools)

    def stop(self) -> None:
        """End gracefully (from the worker's loop)."""
        self._stopping.set()

    async def _follow(self, wake_path: str, offset: str) -> None:
        while True:
            try:
                async for wake in subscriptions.wakes(wake_path, offset):
                    offset = str(wake.next)
                    if links.session_id_of(wake.subscription_id) is not None:
                        self.kick(wake.subscription_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # the log is away: follow again from where it was
                logger.exception("following %s failed; again in a second", wake_path)
                await asyncio.sleep(1.0)

    async def _heartbeats(self) -> None:
        """Keep the leases of every claim this worker holds: one transaction for all of them
        every quarter of the lease (``subscriptions.heartbeat_many``). A claim it could not
        extend was taken over: its run stops writing. While the database is away, each run's
        ``Lease`` deadline decides."""
        while True:
            ttls = [run.lease.ttl for run in self.runs.values()] or [links.lease_ttl_ms() / 1000]
            await asyncio.sleep(max(0.2, min(ttls) / 4))
            runs = list(self.runs.values())
            if not runs:
                continue
            started = time.monotonic()
            try:
                refused = await lease_db(subscriptions.heartbeat_many, [r.claim for r in runs])
            except Exception:
                logger.exception("heartbeat of %d claims failed", len(runs))
                continue
            lost = {claim.subscription_id for claim in refused}
            for run in runs:
                if run.claim.subscription_id in lost:
                    run.taken_over()
                else:
                    run.lease.renewed(started)

    def kick(self, subscription_id: str) -> None:
        """Claim ``subscription_id`` and work on it (again, if this worker already does)."""
        if self._stopping.is_set():
            return
        if subscription_id in self._tasks:
            self._again.add(subscription_id)
            return
        task = asyncio.ensure_future(self._claim_and_run(subscription_id))
        self._tasks[subscription_id] = task

    async def _claim_and_run(self, subscription_id: str) -> None:
        session_id = links.session_id_of(subscription_id)
        if session_id is None:
            return
        try:
            while not self._stopping.is_set():
                self._again.discard(subscription_id)
                try:
                    claim = await lease_db(subscriptions.claim, subscription_id, self.name)
                except (
                    subscriptions.AlreadyClaimed,
                    subscriptions.NoPendingWork,
                    subscriptions.SubscriptionNotFound,
                ):
                    return
                session = await db(lambda: Session.objects.filter(pk=session_id).first())
                if session is None:
                    await subscriptions.adelete(subscription_id)
                    return
                run = SessionRun(self.name, self, claim, session)
                self.runs[subscription_id] = run
                try:
                    await run.run()
                finally:
                    self.runs.pop(subscription_id, None)
                if subscription_id not in self._again and not await lease_db(
                    _has_pending, subscription_id
                ):
                    return  # (pending work whose wake went by while the run ended: claim it)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "session %s: the run failed; its lease lapses and it is retried", session_id
            )
        finally:
            self._tasks.pop(subscription_id, None)

    async def _drain(self) -> None:
        """The graceful end: let the runs finish, up to the grace, then cut and release."""
        for run in list(self.runs.values()):
            run.stop()
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(
                tasks, timeout=float(ds_settings.AGENT_SHUTDOWN_GRACE)
            )
            runs = [run for run in self.runs.values()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for run in runs:
                with contextlib.suppress(Exception):
                    await lease_db(subscriptions.release, run.claim)
        logger.info("agent worker %s stopped", self.name)
