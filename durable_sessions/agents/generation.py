"""One generation: invoke an agent, normalise what it streams, coalesce it, write it, end it.

A generation has one messageId; its chunks take seq 0, 1, ... and the last one is exactly one
of ``done``, ``stop`` or ``error``. Its upstream call runs in a task of its own that feeds a
queue, so that the writer can flush held text on time and a stop can cancel the call (which
closes the connection) at once. Failures before the first token are retried with backoff
(``retries``); after it, the generation ends with an ``error`` that says what happened. A lost
lease ends it without a word: the worker that takes the session over writes its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from durable_sessions import state
from durable_sessions.agents import invoke
from durable_sessions.agents.coalesce import Coalescer
from durable_sessions.agents.dialects import MalformedOutput, Normalizer
from durable_sessions.agents.writer import LeaseLost, Writer
from durable_sessions.conf import ds_settings
from durable_sessions.sessions.agent_specs import AgentSpec

logger = logging.getLogger("durable_sessions.agents")

RETRYABLE = {"connect_failed", "timeout_first_event", "upstream_broken", "python_agent_failed"}
_END = object()


@dataclass
class Outcome:
    """How a generation ended, for its job row."""

    status: str = "done"  # done, stop, error, or "lost" (the lease: nothing more was written)
    error_code: str = ""
    error_message: str = ""
    stopped_by: str = ""
    first_token_at: float | None = None
    usage: dict[str, Any] | None = None
    deltas: int = 0
    attempts: int = 0
    wrote: bool = False
    ended: bool = False  # the terminal chunk is written


def option(spec: AgentSpec, name: str) -> Any:
    """An agent's runtime option, or the setting that gives its default."""
    setting = {
        "policy": "AGENT_POLICY",
        "onInterrupt": "AGENT_ON_INTERRUPT",
        "retries": "AGENT_RETRIES",
    }
    if name in spec.options:
        return spec.options[name]
    if name == "format":
        return "auto"
    return getattr(ds_settings, setting[name])


def timeouts(spec: AgentSpec) -> invoke.Timeouts:
    """The agent's timeouts over the ``AGENT_TIMEOUTS`` setting."""
    merged = {**dict(ds_settings.AGENT_TIMEOUTS), **spec.options.get("timeouts", {})}
    return invoke.Timeouts(
        connect=float(merged.get("connect", 10.0)),
        first_event=float(merged.get("firstToken", 60.0)),
        between_events=float(merged.get("betweenTokens", 60.0)),
        total=float(merged.get("total", 600.0)),
    )


@dataclass
class Generation:
    """A generation of ``spec`` writing ``message_id`` through ``writer``."""

    spec: AgentSpec
    message_id: str
    writer: Writer
    invocation: invoke.Invocation
    on_first_token: Callable[[], Awaitable[None]] | None = None
    outcome: Outcome = field(default_factory=Outcome)
    stop_requested_by: str | None = None
    _stop_reason: str = "user"
    _upstream: asyncio.Task[None] | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, by: str, reason: str = "user") -> None:
        """Stop the generation: the upstream call is cancelled (its connection closed) and the
        generation ends with ``stop`` naming ``by``, keeping what it had written."""
        if self.stop_requested_by is None:
            self.stop_requested_by = by
            self._stop_reason = reason
            self._stopping.set()
            if self._upstream is not None:
                self._upstream.cancel()

    async def run(self) -> Outcome:
        """Run to the end; never raises for what the agent does (only for cancellation)."""
        retries = int(option(self.spec, "retries"))
        backoff = float(ds_settings.AGENT_RETRY_BACKOFF)
        try:
            for attempt in range(retries + 1):
                self.outcome.attempts = attempt + 1
                retry = await self._attempt()
                if not retry or attempt == retries or self.stop_requested_by is not None:
                    break
                logger.info(
                    "agent %s failed before its first token (%s): retry %d",
                    self.spec.id,
                    self.outcome.error_code,
                    attempt + 1,
                )
                with contextlib.suppress(TimeoutError):  # the backoff, cut short by a stop
                    await asyncio.wait_for(self._stopping.wait(), backoff * (2**attempt))
            if self.outcome.ended:
                return self.outcome
            if self.stop_requested_by is not None:
                self.outcome.status = "stop"
                self.outcome.stopped_by = self.stop_requested_by
                chunk = state.stop_chunk(self._stop_reason)
                chunk["stoppedBy"] = self.stop_requested_by
                await self._write([chunk])
            elif self.outcome.status == "error":
                message = self.outcome.error_message or self.outcome.error_code
                await self._write([state.error_chunk(message, self.outcome.error_code)])
            elif self.outcome.wrote:  # the upstream ended without saying so
                await self._write([{"type": "done", "finishReason": "stop"}])
        except LeaseLost:
            self.outcome.status = "lost"
        return self.outcome

    def _failed(self, code: str, message: str) -> None:
        self.outcome.status, self.outcome.error_code = "error", code
        self.outcome.error_message = message

    async def _attempt(self) -> bool:
        """One call of the agent; True when it failed before its first token in a way worth
        a retry."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        normalizer = Normalizer(option(self.spec, "format"))
        coalescer = Coalescer(float(ds_settings.AGENT_FLUSH_INTERVAL))
        hold = coalescer.interval > 0  # a backlog is written together (0: one write per token)
        self.outcome.status, self.outcome.error_code, self.outcome.error_message = "done", "", ""

        async def pump() -> None:
            try:
                # (aclosing: a cancel between two events closes the upstream at once too)
                stream = invoke.events(self.invocation, timeouts=timeouts(self.spec))
                async with contextlib.aclosing(stream) as events:  # type: ignore[type-var]
                    async for event in events:
                        await queue.put(event)
                await queue.put(_END)
            except invoke.InvocationError as exc:
                await queue.put(exc)
            except Exception as exc:  # the client itself: say what it was
                logger.exception("agent %s: the call failed", self.spec.id)
                await queue.put(invoke.InvocationError("connect_failed", str(exc) or repr(exc)))

        self._upstream = asyncio.ensure_future(pump())
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self.outcome.ended:
                due = coalescer.due()
                wait = None if due is None else max(0.0, due - time.monotonic())
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, stopped}, timeout=wait, return_when="FIRST_COMPLETED")
                if not getter.done():
                    getter.cancel()
                    if stopped.done():  # a stop: keep the partial answer, the caller ends it
                        await self._write(coalescer.flush())
                        return False
                    await self._write(coalescer.flush())  # the held text is due
                    continue
                # what came meanwhile too (a slow write lets the queue grow): it is written
                # together, not one token per write, so a backlog never outgrows the writes
                items = [getter.result()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                out: list[dict[str, Any]] = []
                for item in items:
                    if item is _END or isinstance(item, invoke.InvocationError):
                        await self._write(out)
                        return await self._finish(item, normalizer, coalescer)
                    try:
                        chunks = normalizer.feed(item)
                    except MalformedOutput as exc:
                        await self._write(out + coalescer.flush())
                        self._failed(
                            "malformed_output", f"the agent sent what is not its dialect: {exc}"
                        )
                        logger.warning("agent %s: %s", self.spec.id, exc)
                        return False
                    for chunk in chunks:
                        if chunk.get("type") in ("content", "thinking"):
                            self.outcome.deltas += 1  # (the upstream's, before coalescing)
                        out += coalescer.push(chunk, hold=hold)
                due = coalescer.due()
                if due is not None and due <= time.monotonic():
                    out += coalescer.flush()
                await self._write(out)
            return False  # a terminal chunk was written: what follows is not read
        except asyncio.CancelledError:
            if self.stop_requested_by is None:
                raise
            await self._write(coalescer.flush())  # keep the partial answer
            return False
        finally:
            stopped.cancel()
            upstream = self._upstream
            if upstream is not None and not upstream.done():
                upstream.cancel()
                with contextlib.suppress(BaseException):
                    await upstream

    async def _finish(self, item: Any, normalizer: Normalizer, coalescer: Coalescer) -> bool:
        """The upstream ended (``_END``) or failed (an ``InvocationError``): write what is
        held and how it ended; True when it is worth a retry."""
        if item is _END:
            try:
                await self._write(coalescer.flush() + normalizer.finish())
            except MalformedOutput as exc:
                self._failed("malformed_output", str(exc))
            await self._write(coalescer.flush())
            return False
        await self._write(coalescer.flush())
        self._failed(item.code, str(item))
        status = getattr(item, "status", 0) or 0
        return not self.outcome.wrote and (item.code in RETRYABLE or status == 429 or status >= 500)

    async def _write(self, chunks: list[dict[str, Any]]) -> None:
        for chunk in chunks:
            kind = chunk.get("type")
            if self.outcome.ended:
                return  # exactly one terminal chunk, the last one
            if not self.outcome.wrote:
                self.outcome.wrote = True
                self.outcome.first_token_at = time.time()
                if self.on_first_token is not None:
                    await self.on_first_token()
            await self.writer.write(chunk)
            if kind in ("done", "error", "stop"):
                self.outcome.ended = True
                if kind == "done" and isinstance(chunk.get("usage"), dict):
                    self.outcome.usage = chunk["usage"]
                if kind == "error" and self.outcome.status != "error":
                    found = chunk.get("error")
                    error: dict[str, Any] = found if isinstance(found, dict) else {}
                    self._failed(
                        str(error.get("code") or "agent_error"), str(error.get("message", ""))
                    )
