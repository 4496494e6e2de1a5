"""Helpers of the runtime's tests: a real ``AgentWorker`` on a thread of this process (its own
event loop, the log's real store), sessions with agents, posts, and reading the answers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from durable_sessions.agents.models import Job
from durable_sessions.agents.worker import AgentWorker
from durable_sessions.sessions import agents as registry
from durable_sessions.sessions import cache, service
from tests.waiting import wait_until

ANSWER_TIMEOUT = 30.0


@contextmanager
def running_worker(name: str = "test-worker", **options: Any) -> Iterator[AgentWorker]:
    """An ``AgentWorker`` running on a thread until the block ends (then stopped gracefully)."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def main() -> None:
        async def run() -> None:
            worker = AgentWorker(name, **options)
            holder["worker"], holder["loop"] = worker, asyncio.get_running_loop()
            task = asyncio.ensure_future(worker.run())
            await worker.ready.wait()
            ready.set()
            await task

        try:
            asyncio.run(run())
        except BaseException as exc:  # (the test reads it)
            holder["error"] = exc
            ready.set()

    thread = threading.Thread(target=main, name=f"agents-{name}", daemon=True)
    thread.start()
    assert ready.wait(30), "the worker did not start"
    if "error" in holder:
        raise holder["error"]
    try:
        yield holder["worker"]
    finally:
        holder["loop"].call_soon_threadsafe(holder["worker"].stop)
        thread.join(60)
        assert not thread.is_alive(), "the worker did not stop"
    if "error" in holder:
        raise holder["error"]


def session_with(owner: Any, *agents: dict[str, Any]) -> str:
    """A new session of ``owner`` with ``agents`` registered (as the settings may: Python
    agents included). Returns its id."""
    session, _created = service.session_create(owner=owner, title="runtime test")
    if agents:
        registry.register(session, list(agents), by=owner, trusted=True)
    return str(session.pk)


def post(user: Any, session_id: str, content: str) -> str:
    """Post a user message; its messageId."""
    return service.message_post(user=user, session_id=session_id, content=content)


def messages(user: Any, session_id: str) -> list[dict[str, Any]]:
    """Every materialized message of the session, as the API answers them."""
    cache.clear()  # (read the stream again: the worker's process is this one, its cache too)
    return service.messages_read(user=user, session_id=session_id, limit=1000)["messages"]


def answers(user: Any, session_id: str, agent_id: str) -> list[dict[str, Any]]:
    """The messages ``agent_id`` wrote."""
    return [m for m in messages(user, session_id) if m["actorId"] == agent_id]


def text(message: dict[str, Any]) -> str:
    """The text of a materialized message."""
    return "".join(p.get("content", "") for p in message["parts"] if p.get("type") == "text")


def wait_for_answers(
    user: Any, session_id: str, agent_id: str, count: int = 1, *, complete: bool = True
) -> list[dict[str, Any]]:
    """Wait until ``agent_id`` has written ``count`` messages (complete ones, by default)."""
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        nonlocal found
        found = answers(user, session_id, agent_id)
        done = [m for m in found if m["isComplete"]] if complete else found
        return len(done) >= count

    wait_until(ready, ANSWER_TIMEOUT, what=f"{count} answer(s) of {agent_id}")
    return found


def pending(session_id: str) -> bool:
    """Whether the session's subscription has work past its acked offset."""
    from durable_sessions.agents import links
    from durable_sessions.streams import subscriptions

    info = subscriptions.get(links.subscription_id(session_id))
    return any(link.has_pending for link in info.streams)


def idle(session_id: str) -> bool:
    """Whether the runtime is done with the session: its subscription acked to the tail and
    unclaimed, and every job ended."""
    from durable_sessions.agents import links
    from durable_sessions.streams import subscriptions

    info = subscriptions.get(links.subscription_id(session_id))
    quiet = info.holder is None and not any(link.has_pending for link in info.streams)
    return quiet and all(job.ended_at is not None for job in jobs_of(session_id))


def jobs_of(session_id: str) -> list[Job]:
    """The session's job rows, oldest first."""
    return list(Job.objects.filter(session_id=session_id).order_by("queued_at"))


def agent(agent_id: str, script: str, **options: Any) -> dict[str, Any]:
    """An AgentSpec of a scripted agent (``tests/agents/scripted.py``)."""
    return {"id": agent_id, "endpoint": f"python:tests.agents.scripted.{script}", **options}
