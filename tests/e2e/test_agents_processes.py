"""The agent runtime end to end, on real processes: a daphne server, two ``run_agents``
workers, and a fake OpenAI-compatible agent (``tests/agents/fake_upstream.py``) that streams
real SSE, started by the test.

A user posts through the session API; the agent's tokens reach two websocket subscribers live,
and the final message equals what the fake sent, in each of the four dialects. A worker killed
mid-answer (SIGKILL) is taken over by the other within the lease, and the answer ends (no
message stays incomplete, no seq is written twice); a worker frozen past its lease (SIGSTOP)
and let go again cannot write. A server killed right after acknowledging a message still has
it answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.authtoken.models import Token

from durable_sessions.agents.models import Job
from tests.agents.fake_upstream import FakeUpstream
from tests.e2e.test_multi_user import Follower
from tests.servers import ServerProcess, database_env
from tests.waiting import until, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent.parent
LEASE = 2.0  # seconds: the workers' lease, so that a takeover comes quickly
ENV = {
    "DS_AGENTS_EMBEDDED": "0",
    "DS_AGENT_ALLOW_PRIVATE": "1",  # the fake agent is on this machine
    "DS_AGENT_LEASE_TTL": str(LEASE),
    "DS_AGENT_RETRY_BACKOFF": "0.05",
    "DS_SUBSCRIPTION_SWEEP_INTERVAL": "0.2",
    # SQLite has no cross-process notifications: followers there re-read this often
    "DS_LIVE_RECHECK_INTERVAL": "0.05",
}


class Worker:
    """A ``manage.py run_agents`` process."""

    def __init__(self, name: str) -> None:
        self.name = name
        env = {**os.environ, **database_env(), **ENV}
        if "DATABASE_URL" in env:
            # A frozen worker may be frozen inside a transaction, holding row locks (the
            # session's subscription, the stream's row) that the worker taking over needs:
            # Postgres ends such a transaction after this long (docs/deployment.md advises it).
            env["DATABASE_URL"] += "?options=-c%20idle_in_transaction_session_timeout%3D3000"
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_agents", "--name", name],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: any("follows" in line for line in self.lines), 30, what=f"{name} up")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def said(self, text: str) -> bool:
        """Whether the worker's log has a line holding ``text``."""
        return any(text in line for line in self.lines)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


@pytest.fixture
def server(django_db_setup, django_db_blocker) -> Iterator[ServerProcess]:
    with django_db_blocker.unblock():
        process = ServerProcess(public=False, env=ENV).start()
    yield process
    process.stop()


@pytest.fixture
def workers(server) -> Iterator[list[Worker]]:
    started = [Worker("worker-a"), Worker("worker-b")]
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def alice() -> dict[str, str]:
    user = User.objects.create_user("alice")
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


def open_session(server: ServerProcess, headers: dict[str, str], endpoint: str, **spec) -> str:
    with httpx.Client(base_url=f"{server.url}/v1/", headers=headers, timeout=10) as api:
        created = api.post("sessions/", json={"title": "agents"})
        assert created.status_code == 201, created.text
        sid = created.json()["sessionId"]
        registered = api.post(
            f"sessions/{sid}/agents", json={"agents": [{"id": "bot", "endpoint": endpoint, **spec}]}
        )
        assert registered.status_code in (200, 201), registered.text
    return sid


def post(server: ServerProcess, headers: dict[str, str], sid: str, text: str) -> str:
    answer = httpx.post(
        f"{server.url}/v1/sessions/{sid}/messages",
        json={"content": text},
        headers=headers,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["messageId"]


def bot_messages(server, headers, sid) -> list[dict]:
    answer = httpx.get(
        f"{server.url}/v1/sessions/{sid}/messages?limit=1000", headers=headers, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return [m for m in answer.json()["messages"] if m["actorId"] == "bot"]


def text(message: dict) -> str:
    return "".join(p.get("content", "") for p in message["parts"] if p.get("type") == "text")


@contextlib.asynccontextmanager
async def follow(server: ServerProcess, headers: dict[str, str], sid: str):
    from websockets.asyncio.client import connect

    url = f"{server.url.replace('http://', 'ws://')}/ws/v1/stream/sessions/{sid}?offset=-1"
    async with connect(url, additional_headers=headers, max_size=None) as socket:
        follower = Follower(socket)
        task = asyncio.create_task(follower.run())
        try:
            yield follower
        finally:
            await socket.close()
            await task


def bot_chunks(follower: Follower) -> list[dict]:
    return [
        e["value"]
        for e in follower.events
        if e.get("type") == "chunk" and e["value"]["actorId"] == "bot"
    ]


TOKENS = ["The", " answer", " is", " forty", "-two", ",", " streamed", " live", "."] * 3


@pytest.mark.parametrize("dialect", ["openai", "tanstack", "vercel", "agui"])
async def test_an_answer_streams_live_to_two_subscribers_in_each_dialect(
    dialect, fake, server, workers, alice
):
    path = {"openai": "/v1/chat/completions"}.get(dialect, f"/{dialect}")
    usage_asked = {"stream_options": {"include_usage": True}}  # (OpenAI sends none unless asked)
    sid = open_session(server, alice, fake.url + path, format=dialect, bodyTemplate=usage_asked)
    fake.script(
        tokens=TOKENS,
        delay=0.03,
        usage={"prompt_tokens": 7, "completion_tokens": 27, "total_tokens": 34},
    )
    async with follow(server, alice, sid) as first, follow(server, alice, sid) as second:
        await asyncio.to_thread(post, server, alice, sid, "what is the answer?")
        # live: both see a partial answer before the agent has finished sending
        await until(lambda: len(bot_chunks(first)) >= 2 and len(bot_chunks(second)) >= 2, 30)
        assert fake.requests[-1].finished_at is None, "the answer was not streamed live"
        await until(
            lambda: (
                any('"done"' in c["chunk"] for c in bot_chunks(first))
                and any('"done"' in c["chunk"] for c in bot_chunks(second))
            ),
            30,
        )
    [answer] = await asyncio.to_thread(bot_messages, server, alice, sid)
    assert text(answer) == "".join(TOKENS)
    assert answer["status"] == "done"
    assert first.materialized() == second.materialized()
    sent = fake.requests[-1].body
    assert sent["stream"] is True and sent["messages"][-1]["content"] == "what is the answer?"
    job = await asyncio.to_thread(lambda: Job.objects.get(session_id=sid))
    assert job.worker in ("worker-a", "worker-b")
    if dialect in ("openai", "tanstack"):  # their done carries the upstream's usage
        assert (job.tokens_in, job.tokens_out, job.usage_counted) == (7, 27, False)
    else:  # counted: the deltas the agent sent
        assert job.tokens_out == len(TOKENS) and job.usage_counted


def chunk_seqs(sid: str) -> list[tuple[str, int]]:
    """Every (messageId, seq) of the session's chunk rows, read from the raw log."""
    from durable_sessions import jsontext, streams

    pairs, offset = [], "-1"
    while True:
        result = streams.read(f"sessions/{sid}", offset)
        for event in jsontext.loads(result.body):
            if event.get("type") == "chunk":
                pairs.append((event["value"]["messageId"], event["value"]["seq"]))
        offset = str(result.next)
        if result.up_to_date:
            return pairs


def holder(sid: str) -> str:
    job = Job.objects.filter(session_id=sid, status="running").first()
    return job.worker if job else ""


def test_a_worker_killed_mid_answer_is_taken_over_within_the_lease(fake, server, workers, alice):
    sid = open_session(server, alice, fake.url + "/tanstack", onInterrupt="retry")
    fake.script(tokens=[f"w{n} " for n in range(400)], delay=0.02)  # 8 s of tokens
    fake.script(tokens=["retried", " answer"], delay=0.0)
    post(server, alice, sid, "a long answer please")
    wait_until(
        lambda: holder(sid) and len(bot_messages(server, alice, sid)) == 1, 30, what="an answer"
    )
    wait_until(lambda: len(text(bot_messages(server, alice, sid)[0])) > 30, 30, what="tokens")
    victim = next(w for w in workers if w.name == holder(sid))
    killed = time.monotonic()
    victim.signal(signal.SIGKILL)
    victim.process.wait(10)
    wait_until(
        lambda: [m["isComplete"] for m in bot_messages(server, alice, sid)] == [True, True],
        LEASE * 3 + 20,
        what="the takeover",
    )
    taken_over = time.monotonic() - killed
    print(f"kill to both messages complete: {taken_over:.2f} s (lease {LEASE} s)")
    first, second = bot_messages(server, alice, sid)
    assert first["status"] == "error" and first["error"]["code"] == "interrupted"
    assert second["status"] == "done" and text(second) == "retried answer"
    seqs = chunk_seqs(sid)
    assert len(seqs) == len(set(seqs)), "a seq was written twice"
    counts = collections.Counter(mid for mid, _ in seqs)
    for message in (first, second):  # every seq from 0, no gap
        assert sorted(s for mid, s in seqs if mid == message["id"]) == list(
            range(counts[message["id"]])
        )
    jobs = list(Job.objects.filter(session_id=sid).order_by("queued_at"))
    assert [j.status for j in jobs] == ["interrupted", "done"]
    assert jobs[1].trigger == "retry" and jobs[1].worker != victim.name


def test_a_worker_frozen_past_its_lease_cannot_write_when_it_wakes(fake, server, workers, alice):
    if connection.vendor != "postgresql":
        pytest.skip(
            "SQLite: a process frozen inside a write transaction holds the database's one write"
            " lock, so nothing can take over until it runs again (the embedded default is one"
            " process); Postgres ends such a transaction (idle_in_transaction_session_timeout)"
        )
    sid = open_session(server, alice, fake.url + "/tanstack")
    fake.script(tokens=[f"f{n} " for n in range(1000)], delay=0.02)  # 20 s: still streaming
    post(server, alice, sid, "keep talking")
    wait_until(
        lambda: holder(sid) and len(bot_messages(server, alice, sid)) == 1, 30, what="an answer"
    )
    victim = next(w for w in workers if w.name == holder(sid))
    victim.signal(signal.SIGSTOP)
    wait_until(
        lambda: bot_messages(server, alice, sid)[0]["isComplete"], LEASE * 3 + 20, what="takeover"
    )
    ended = chunk_seqs(sid)
    victim.signal(signal.SIGCONT)  # it wakes still holding its stale claim, tokens waiting
    # its next write is refused before it is made: it says so in its log
    wait_until(
        lambda: victim.said("lost mid-answer") or victim.said("taken over"),
        30,
        what="the stale worker giving up",
    )
    assert chunk_seqs(sid) == ended, "the frozen worker wrote after the takeover"
    [answer] = bot_messages(server, alice, sid)
    assert answer["status"] == "error" and answer["error"]["code"] == "interrupted"


def test_a_server_killed_right_after_a_message_is_committed_still_has_it_answered(
    fake, django_db_setup, django_db_blocker, alice
):
    with django_db_blocker.unblock():
        first = ServerProcess(public=False, env=ENV).start()
    worker = Worker("worker-c")
    try:
        sid = open_session(first, alice, fake.url + "/tanstack")
        fake.script(tokens=["still", " answered"])
        post(first, alice, sid, "are you there?")
        first.process.kill()  # right after the 200: its wake may never have been made
        first.process.wait(10)
        with django_db_blocker.unblock():
            second = ServerProcess(public=False, env=ENV).start()
        try:
            wait_until(
                lambda: [text(m) for m in bot_messages(second, alice, sid)] == ["still answered"],
                LEASE * 3 + 20,
                what="the answer",
            )
        finally:
            second.stop()
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            first.stop()


def test_sigterm_lets_the_answer_under_way_finish(fake, server, alice):
    worker = Worker("worker-d")
    try:
        sid = open_session(server, alice, fake.url + "/tanstack")
        fake.script(tokens=[f"g{n} " for n in range(60)], delay=0.02)  # about 1.2 s
        post(server, alice, sid, "finish what you started")
        wait_until(lambda: bot_messages(server, alice, sid), 30, what="the answer's start")
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(30) == 0
    finally:
        worker.stop()
    [answer] = bot_messages(server, alice, sid)
    assert answer["status"] == "done" and text(answer) == "".join(f"g{n} " for n in range(60))
    assert worker.said("stopped")
