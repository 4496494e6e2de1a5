"""One claim of one session: take over what a dead worker left, then answer what arrives.

A ``SessionRun`` holds the session's agents subscription under a lease (the worker's
heartbeats keep it), follows the session stream from the subscription's acked offset, and for
every batch finds the triggers (``triggers.py``), opens a job per generation (once per
trigger: ``jobs.open_job``) and runs the generations, applying each agent's policy when it is
already answering (``queue``, ``interrupt``, ``parallel``, ``reject``). A ``stop-request`` row
on the stream stops the generation it names. When nothing runs and the stream is read to its
tail, its own writes included, the run acks ``done`` there and ends.

At the start, the jobs an earlier claim left running are taken over: one that wrote nothing is
run again; one cut off mid-answer is ended with ``error`` (code ``interrupted``), written
under this claim's epoch at the exact tail the run read (so nothing the dead worker may still
write lands after it), or ended and retried under a new messageId (``onInterrupt: retry``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from durable_sessions import state, streams
from durable_sessions.agents import history, invoke, jobs, triggers
from durable_sessions.agents import models as m
from durable_sessions.agents.generation import Generation, Outcome, option
from durable_sessions.agents.writer import Lease, LeaseLost, Writer, db, lease_db
from durable_sessions.conf import ds_settings
from durable_sessions.sessions import agents as registry
from durable_sessions.sessions import cache, errors
from durable_sessions.sessions.agent_specs import AgentSpec
from durable_sessions.sessions.models import Session
from durable_sessions.streams import subscriptions


class Slots(Protocol):
    """What a run needs of its worker: generation slots (``AgentWorker.slot``)."""

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Hold one of the worker's generation slots."""
        ...


logger = logging.getLogger("durable_sessions.agents")

T = TypeVar("T")
STOP_REQUEST = "stop-request"
INTERRUPTED = "interrupted"


@dataclass
class Running:
    """A generation in flight, its task and its job."""

    generation: Generation
    task: asyncio.Task[Outcome]
    job: m.Job


def _read(path: str, use: Callable[[state.SessionState, str], T]) -> T:
    """``use(state, offset)`` on the session's state caught up to its tail, under the cache's
    lock: the state is shared with the process's other readers (the API's, in the embedded
    runtime), so nothing of it is kept beyond ``use``."""
    return cache.read(path, use)


class SessionRun:
    """The work of one claim (see the module docstring)."""

    def __init__(
        self, worker_name: str, slots: Slots, claim: subscriptions.Claim, session: Session
    ) -> None:
        self.worker_name = worker_name
        self.slots = slots
        self.claim = claim
        self.session = session
        self.path = session.stream_path
        self.lease = Lease(claim.lease_ttl_ms / 1000)
        self.running: dict[str, Running] = {}  # by messageId
        self.queued: dict[str, deque[tuple[AgentSpec, m.Job]]] = {}
        self.changed = asyncio.Event()
        self.stopping = False
        self.acking = False
        self.log = _SessionLog(logger, {"session": str(session.pk), "claim": claim.generation})

    # -- the claim ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Work until idle, then ack; on a lost lease, stop writing and leave. The worker
        heartbeats the claim (``AgentWorker``: one transaction for all its claims)."""
        try:
            await self._take_over()
            link = next((s for s in self.claim.streams if s.path == self.path), None)
            offset = str(link.acked) if link is not None else "-1"
            offset = await self._follow(offset)
            if not self.lease.lost:
                self.acking = True  # (a heartbeat refused from now on: the ack ended the wake)
                try:
                    await lease_db(subscriptions.ack, self.claim, {self.path: offset}, done=True)
                except subscriptions.Fenced:
                    self.log.warning("claim fenced before its ack: another worker has it")
                except subscriptions.SubscriptionNotFound:
                    self.log.info("the session was deleted meanwhile")
        finally:
            for running in list(self.running.values()):
                running.task.cancel()
            if self.running:
                await asyncio.gather(
                    *(r.task for r in self.running.values()), return_exceptions=True
                )

    def taken_over(self) -> None:
        """A heartbeat was refused: another worker has the session (or it is gone). Write
        nothing more: the generations are cut where they are, the run leaves."""
        if self.acking or self.lease.lost:
            return
        self.log.warning("the claim was taken over: this worker stops writing")
        self.lease.lost = True
        for running in self.running.values():
            running.task.cancel()
        self.changed.set()

    async def _follow(self, offset: str) -> str:
        """Read from ``offset`` and handle each batch until idle at the tail; the offset
        reached."""
        batches: asyncio.Queue[streams.ReadResult | BaseException] = asyncio.Queue()
        up_to_date = False
        held = False  # (stopping: a batch that asks for work was read, not acked)

        async def read() -> None:
            try:
                async for batch in streams.subscribe(self.path, offset):
                    await batches.put(batch)
            except BaseException as exc:
                await batches.put(exc)

        info = await streams.ainfo(self.path)
        up_to_date = str(info.tail) == offset
        reader = asyncio.ensure_future(read())
        try:
            while not self.lease.lost:
                if not self.stopping:
                    await self._start_waiting()
                # Idle: nothing runs, and nothing waits (stopping: what waits is left). A
                # stopping run reads on to the tail too: what needs no answer, this run's own
                # writes among it, is acked with the rest.
                idle = not self.running and (self.stopping or not any(self.queued.values()))
                if idle and held:
                    return offset
                if idle and up_to_date:
                    # (the batch that said "up to date" may predate this run's last writes)
                    try:
                        tail = str((await streams.ainfo(self.path)).tail)
                    except (streams.StreamNotFound, streams.StreamGone):
                        return offset  # the session was deleted
                    if tail == offset:
                        return offset
                    up_to_date = False
                    continue
                self.changed.clear()
                getter = asyncio.ensure_future(batches.get())
                waiter = asyncio.ensure_future(self.changed.wait())
                done, _pending = await asyncio.wait(
                    {getter, waiter}, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if getter not in done:
                    getter.cancel()
                    continue
                item = getter.result()
                if isinstance(item, BaseException):
                    if isinstance(item, streams.StreamNotFound | streams.StreamGone):
                        self.log.info("the session's stream is gone")
                        return offset
                    raise item
                if self.stopping:  # only stops; work to do is the next claim's (not acked)
                    self._stops(item.messages())
                    held = held or bool(await self._decide(item.messages()))
                    if not held:
                        offset, up_to_date = str(item.next), item.up_to_date
                    continue
                await self._handle(item.messages())
                offset, up_to_date = str(item.next), item.up_to_date
            return offset
        finally:
            reader.cancel()

    # -- what arrives ------------------------------------------------------------------------

    def _stops(self, events: list[Any]) -> None:
        """Stop the generations that ``stop-request`` rows among ``events`` name."""
        for event in events:
            if isinstance(event, dict) and event.get("type") == STOP_REQUEST:
                found = event.get("value")
                value: dict[str, Any] = found if isinstance(found, dict) else {}
                target = self.running.get(str(event.get("key")))
                if target is not None:
                    target.generation.stop(str(value.get("actorId", "")), "user")

    async def _handle(self, events: list[Any]) -> None:
        self._stops(events)
        for plan, source in await self._decide(events):
            await self._plan(plan, source)

    async def _decide(self, events: list[Any]) -> list[tuple[triggers.Plan, state.Message | None]]:
        """Which agents answer which of ``events`` (each plan with its source message)."""
        arrived = triggers.arrivals(events)
        if not arrived:
            return []
        specs, registered_at = await db(self._agents)
        if not specs:
            return []
        depth_of = await db(jobs.depths, self.session, [a.message_id for a in arrived])
        max_chain = int(ds_settings.AGENT_MAX_CHAIN)

        def decide(session_state: state.SessionState, _offset: str) -> list[Any]:
            plans = triggers.plans(
                arrived,
                session_state=session_state,
                agents=specs,
                registered_at=registered_at,
                depth_of=depth_of,
                max_chain=max_chain,
            )
            return [(plan, session_state.message(plan.source_message_id)) for plan in plans]

        return await db(_read, self.path, decide)

    def _agents(self) -> tuple[list[AgentSpec], dict[str, Any]]:
        return registry.registered(self.session), jobs.registered_at(self.session)

    async def _plan(self, plan: triggers.Plan, source: state.Message | None) -> None:
        busy = [r for r in self.running.values() if r.job.agent_id == plan.agent.id]
        policy = option(plan.agent, "policy")
        initiated_by = None
        if source is not None:
            initiated_by = await db(jobs.initiator, self.session, source.actor_id, source.id)
        status = m.REJECTED if busy and policy == "reject" else m.QUEUED
        job = await db(
            jobs.open_job,
            self.session,
            key=plan.key,
            agent_id=plan.agent.id,
            trigger=plan.trigger,
            trigger_message_id=plan.trigger_message_id,
            message_id=str(uuid.uuid4()),
            depth=plan.depth,
            initiated_by_id=initiated_by,
            status=status,
            worker=self.worker_name,
            generation=self.claim.generation,
        )
        if job is None:
            return  # answered, or being answered, already
        self.log.info(
            "job %s: %s answers %s (%s)",
            job.pk,
            plan.agent.id,
            plan.trigger_message_id,
            plan.trigger,
        )
        if status == m.REJECTED:
            await db(jobs.update, job, ended_at=jobs.now(), error_code="busy")
            return
        # (again: what ran may have ended while the job row was made)
        busy = [r for r in self.running.values() if r.job.agent_id == plan.agent.id]
        if busy and policy == "interrupt":
            by = source.actor_id if source is not None else ""
            for running in busy:
                running.generation.stop(by, INTERRUPTED)
        if busy and policy in ("queue", "interrupt"):
            self.queued.setdefault(plan.agent.id, deque()).append((plan.agent, job))
            return
        await self._start(plan.agent, job)

    async def _start_waiting(self) -> None:
        """Start the next queued job of each agent that runs nothing (a job queued while the
        answer it waited for was ending would otherwise wait for ever)."""
        for agent_id, waiting in self.queued.items():
            if waiting and not any(r.job.agent_id == agent_id for r in self.running.values()):
                spec, job = waiting.popleft()
                await self._start(spec, job)

    # -- generations -------------------------------------------------------------------------

    async def _start(self, spec: AgentSpec, job: m.Job) -> None:
        def sent(session_state: state.SessionState, _offset: str) -> list[dict[str, Any]]:
            upto = job.trigger_message_id if job.trigger in triggers.MESSAGE_TRIGGERS else None
            if job.trigger == "regenerate":  # a new answer to what its own answer followed
                ids = [msg.id for msg in session_state.messages()]
                source = session_state.message(job.trigger_message_id)
                if source is not None and source.actor_id == spec.id and source.id in ids:
                    index = ids.index(source.id)
                    upto = ids[index - 1] if index > 0 else None
            return history.history(session_state, upto=upto)

        invocation = invoke.Invocation(
            session_id=str(self.session.pk),
            agent_id=spec.id,
            message_id=job.message_id,
            messages=await db(_read, self.path, sent),
            body_template=spec.body_template,
            headers=spec.headers,
            endpoint=spec.endpoint,
            trigger_message_id=job.trigger_message_id,
        )
        writer = Writer(
            self.session,
            job.message_id,
            actor_id=spec.id,
            lease=self.lease,
            epoch=self.claim.generation,
        )

        async def first_token() -> None:
            await db(jobs.update, job, first_token_at=jobs.now())

        generation = Generation(
            spec, job.message_id, writer, invocation, on_first_token=first_token
        )
        await db(
            jobs.update,
            job,
            status=m.RUNNING,
            started_at=jobs.now(),
            worker=self.worker_name,
            claim_generation=self.claim.generation,
        )
        await db(_generating, self.session, True)
        task = asyncio.ensure_future(self._run(generation, job))
        self.running[job.message_id] = Running(generation, task, job)

    async def _run(self, generation: Generation, job: m.Job) -> Outcome:
        try:
            async with self.slots.slot():
                outcome = await generation.run()
        except asyncio.CancelledError:
            self.running.pop(job.message_id, None)
            self.changed.set()
            raise
        try:  # (still "running" until its job row says how it ended)
            await self._ended(generation, job, outcome)
        finally:
            self.running.pop(job.message_id, None)
            self.changed.set()
        return outcome

    async def _ended(self, generation: Generation, job: m.Job, outcome: Outcome) -> None:
        if outcome.status == "lost":
            self.log.warning(
                "job %s: the claim was lost mid-answer; its new holder ends it", job.pk
            )
            return
        usage = outcome.usage or {}
        tokens_in = usage.get("promptTokens", usage.get("inputTokens"))
        tokens_out = usage.get("completionTokens", usage.get("outputTokens"))
        counted = not isinstance(tokens_out, int)
        if counted:
            tokens_in = (
                sum(len(str(msg.get("content") or "")) for msg in generation.invocation.messages)
                // 4
            )
            tokens_out = outcome.deltas
        await db(
            jobs.update,
            job,
            status={"done": m.DONE, "stop": m.STOPPED}.get(outcome.status, m.ERROR),
            ended_at=jobs.now(),
            attempts=outcome.attempts,
            tokens_in=tokens_in if isinstance(tokens_in, int) else None,
            tokens_out=tokens_out,
            usage_counted=counted,
            error_code=outcome.error_code[:64],
            error_message=outcome.error_message[:2000],
            stopped_by=outcome.stopped_by[:255],
        )
        self.log.info(
            "job %s of %s ended: %s %s", job.pk, job.agent_id, outcome.status, outcome.error_code
        )
        waiting = self.queued.get(job.agent_id)
        if waiting and not self.stopping:
            spec, next_job = waiting.popleft()
            await self._start(spec, next_job)
        if not any(mid != job.message_id for mid in self.running):
            await db(_generating, self.session, False)

    # -- taking over -------------------------------------------------------------------------

    async def _take_over(self) -> None:
        left = await db(jobs.orphans, self.session, self.claim.generation)
        if not left:
            return
        specs = {spec.id: spec for spec in (await db(self._agents))[0]}
        for job in left:
            await db(jobs.adopt, job, worker=self.worker_name, generation=self.claim.generation)
            spec = specs.get(job.agent_id)
            if spec is None:
                await db(
                    jobs.update,
                    job,
                    status=m.ERROR,
                    ended_at=jobs.now(),
                    error_code="agent_removed",
                )
                continue
            if job.status == m.QUEUED:
                await self._plan_again(spec, job)
                continue
            await self._end_cut_off(spec, job)

    async def _plan_again(self, spec: AgentSpec, job: m.Job) -> None:
        if any(r.job.agent_id == spec.id for r in self.running.values()):
            self.queued.setdefault(spec.id, deque()).append((spec, job))
        else:
            await self._start(spec, job)

    async def _end_cut_off(self, spec: AgentSpec, job: m.Job) -> None:
        for _ in range(8):

            def look(session_state: state.SessionState, offset: str) -> Any:
                return (
                    session_state.message(job.message_id),
                    _stop_requested(session_state, job.message_id),
                    session_state.next_seq(job.message_id),
                    offset,
                )

            message, stopped_by, next_seq, offset = await db(_read, self.path, look)
            if message is None:  # it wrote nothing: run it again, as if it never started
                self.log.info("job %s wrote nothing before its worker stopped: run again", job.pk)
                await self._plan_again(spec, job)
                return
            if message.complete:
                status = {"done": m.DONE, "stop": m.STOPPED}.get(message.status, m.ERROR)
                await db(jobs.update, job, status=status, ended_at=jobs.now())
                return
            if stopped_by is not None:
                chunk = state.stop_chunk("user")
                chunk["stoppedBy"] = stopped_by
            else:
                chunk = state.error_chunk(
                    "the worker running this answer stopped before it ended", INTERRUPTED
                )
            writer = Writer(
                self.session,
                job.message_id,
                actor_id=spec.id,
                lease=self.lease,
                epoch=self.claim.generation,
                first_seq=next_seq,
            )
            try:
                await writer.write(chunk, expect_tail=offset)
            except errors.Conflict:
                continue  # something was appended meanwhile (the old worker?): read again
            except LeaseLost:
                return
            break
        else:
            self.log.error("job %s: could not end the cut-off generation", job.pk)
            return
        ended = m.STOPPED if stopped_by is not None else m.INTERRUPTED
        await db(
            jobs.update,
            job,
            status=ended,
            ended_at=jobs.now(),
            error_code="" if stopped_by else INTERRUPTED,
        )
        self.log.info("job %s: cut off by its worker's end, now %s", job.pk, ended)
        if stopped_by is None and option(spec, "onInterrupt") == "retry":
            retry = await db(
                jobs.open_job,
                self.session,
                key=f"{job.key} #{job.attempts + 1}",
                agent_id=spec.id,
                trigger="retry",
                trigger_message_id=job.trigger_message_id,
                message_id=str(uuid.uuid4()),
                depth=job.depth,
                initiated_by_id=job.initiated_by_id,
                status=m.QUEUED,
                worker=self.worker_name,
                generation=self.claim.generation,
            )
            if retry is not None:
                await self._plan_again(spec, retry)

    # -- leaving -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Start nothing more; end when what runs has ended (graceful shutdown)."""
        self.stopping = True
        self.changed.set()


class _SessionLog(logging.LoggerAdapter):
    """Every line says which session and claim it is about (also as ``extra`` fields, for
    structured handlers)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        """Prefix the session id and the claim's generation."""
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"session {extra.get('session')} (claim {extra.get('claim')}): {msg}", kwargs


def _stop_requested(session_state: state.SessionState, message_id: str) -> str | None:
    row = session_state.get(STOP_REQUEST, message_id)
    return str(row.get("actorId", "")) if row is not None else None


def _generating(session: Session, on: bool) -> None:
    from django.utils import timezone

    rows = Session.objects.filter(pk=session.pk)
    if on:
        rows.filter(generating_since__isnull=True).update(generating_since=timezone.now())
    else:
        rows.update(generating_since=None)
