"""Durability under concurrency and crashes, with real server processes.

Several writers append concurrently through two daphne processes sharing the database; one
process is killed with SIGKILL in the middle and a new one takes its place. The writers are
idempotent producers and retry an unacknowledged append on another process until it is
acknowledged. Afterwards every stream must hold every append exactly once, byte for byte at the
offset it was acknowledged with, with strictly increasing, gap-free offsets.

The victim is first stopped (SIGSTOP), wherever the writers are, and one more append (the probe)
is sent to it and seen to leave the client: the kill then finds at least that request
unanswered, besides whatever the writers had in flight.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable_sessions.streams.offsets import parse_offset
from tests.servers import ServerProcess

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Ack:
    writer: int
    seq: int
    payload: bytes
    next_offset: str
    duplicate: bool
    url: str


@dataclass
class Attempt:
    """One try of one append: where it went, when the whole request left the client, and when
    and how it ended (``answered`` or the name of the transport error)."""

    writer: int
    seq: int
    url: str
    sent_at: float | None = None
    ended_at: float | None = None
    outcome: str = "pending"
    sent: threading.Event = field(default_factory=threading.Event)

    def trace(self, event: str, info: dict) -> None:
        """httpx's trace hook: the request body is on the socket."""
        if event == "http11.send_request_body.complete":
            self.sent_at = time.monotonic()
            self.sent.set()


@dataclass
class Cluster:
    """The server processes the writers may use; one of them gets killed and replaced."""

    servers: list[ServerProcess]
    lock: threading.Condition = field(default_factory=threading.Condition)
    attempts: list[Attempt] = field(default_factory=list)  # notified on the lock when one is made

    def pick(self, choice: int) -> str:
        with self.lock:
            return self.servers[choice % len(self.servers)].url

    def crash_and_replace(self, index: int) -> float:
        """SIGKILL the server at ``index`` and start another in its place; returns the moment
        of the kill."""
        with self.lock:
            victim = self.servers[index]
        killed_at = time.monotonic()
        victim.kill()
        replacement = ServerProcess(public=True).start()
        with self.lock:
            self.servers[index] = replacement
        return killed_at

    def first_attempt(self, writer: int, timeout: float = 30) -> Attempt:
        """The first attempt of ``writer``, once its thread has made it."""
        with self.lock:
            assert self.lock.wait_for(lambda: self._attempts_of(writer), timeout)
            return self._attempts_of(writer)[0]

    def _attempts_of(self, writer: int) -> list[Attempt]:
        return [a for a in self.attempts if a.writer == writer]

    def append(
        self, client: httpx.Client, path: str, writer: int, seq: int, payload: bytes, choice: int
    ) -> tuple[httpx.Response, str]:
        """Append as producer ``writer-<writer>`` until a server acknowledges it: the first try
        on server ``choice``, each retry (the process died under us) on the next one."""
        attempt_number = 0
        while True:
            url = self.pick(choice + attempt_number)
            attempt = Attempt(writer, seq, url)
            with self.lock:
                self.attempts.append(attempt)
                self.lock.notify_all()
            try:
                response = client.post(
                    f"{url}/v1/stream/{path}",
                    content=payload,
                    headers={
                        "content-type": "application/octet-stream",
                        "producer-id": f"writer-{writer}",
                        "producer-epoch": "0",
                        "producer-seq": str(seq),
                    },
                    extensions={"trace": attempt.trace},
                )
            except httpx.TransportError as exc:
                attempt.outcome, attempt.ended_at = type(exc).__name__, time.monotonic()
                attempt_number += 1
                continue
            attempt.outcome, attempt.ended_at = "answered", time.monotonic()
            assert response.status_code in (200, 204), response.text
            return response, url


writers_strategy = st.lists(
    st.lists(
        st.tuples(st.binary(min_size=1, max_size=300), st.integers(0, 7)), min_size=3, max_size=25
    ),
    min_size=2,
    max_size=5,
)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    writers=writers_strategy,
    streams_count=st.integers(1, 3),
    kill_after=st.integers(1, 40),
    victim=st.integers(0, 1),
)
def test_acknowledged_appends_survive_sigkill_exactly_once(
    writers, streams_count, kill_after, victim
):
    run = uuid.uuid4().hex[:8]
    cluster = Cluster([ServerProcess(public=True).start(), ServerProcess(public=True).start()])
    paths = [f"durability-{run}-{n}" for n in range(streams_count)]
    probe_writer = len(writers)  # one more producer, on the first stream
    probe_payload = f"probe-{run}".encode()
    try:
        for path in paths:
            response = httpx.put(
                f"{cluster.pick(0)}/v1/stream/{path}",
                headers={"content-type": "application/octet-stream"},
            )
            assert response.status_code == 201
        acks: dict[str, list[Ack]] = {path: [] for path in paths}
        acked = threading.Semaphore(0)
        errors: list[BaseException] = []

        def write(writer: int, messages: list[tuple[bytes, int]], path: str) -> None:
            try:
                with httpx.Client(timeout=10) as client:
                    for seq, (payload, choice) in enumerate(messages):
                        response, url = cluster.append(client, path, writer, seq, payload, choice)
                        acks[path].append(
                            Ack(
                                writer,
                                seq,
                                payload,
                                response.headers["stream-next-offset"],
                                response.status_code == 204,
                                url,
                            )
                        )
                        acked.release()
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)

        threads = [
            threading.Thread(target=write, args=(i, w, paths[i % len(paths)]))
            for i, w in enumerate(writers)
        ]
        for thread in threads:
            thread.start()
        total = sum(len(w) for w in writers)
        for _ in range(min(kill_after, total)):
            if not acked.acquire(timeout=30):
                logs = "\n".join(server.output()[-3000:] for server in cluster.servers)
                raise AssertionError(f"writers stalled; errors {errors}; server output:\n{logs}")
        victim_url = cluster.pick(victim)
        cluster.servers[victim].freeze()  # from now on it answers nothing
        probe = threading.Thread(
            target=write, args=(probe_writer, [(probe_payload, victim)], paths[0])
        )
        probe.start()
        probe_attempt = cluster.first_attempt(probe_writer)
        assert probe_attempt.url == victim_url
        assert probe_attempt.sent.wait(30), "the probe never left the client"
        killed_at = cluster.crash_and_replace(victim)
        for thread in [*threads, probe]:
            thread.join(60)
            assert not thread.is_alive(), "a writer never got its append acknowledged"
        assert not errors, errors

        # Requests in flight at the kill, never answered: they had left the client before it and
        # failed after it. The probe at least (sent to a stopped process), and any writer's that
        # was waiting on the victim.
        unanswered = [
            a
            for a in cluster.attempts
            if a.url == victim_url
            and a.sent_at is not None
            and a.sent_at < killed_at < a.ended_at
            and a.outcome != "answered"
        ]
        assert probe_attempt in unanswered, probe_attempt
        assert all(a.outcome != "ConnectError" for a in unanswered)
        final = {(ack.writer, ack.seq): ack for path_acks in acks.values() for ack in path_acks}
        for attempt in unanswered:  # retried elsewhere until acknowledged...
            ack = final[(attempt.writer, attempt.seq)]
            assert ack.url != victim_url, (attempt, ack)
        expected = {
            path: [
                (i, s, p)
                for i, w in enumerate(writers)
                if paths[i % len(paths)] == path
                for s, (p, _choice) in enumerate(w)
            ]
            for path in paths
        }
        expected[paths[0]].append((probe_writer, 0, probe_payload))
        for path in paths:  # ...and stored exactly once, as everything else
            check_stream(cluster.pick(1 - victim), path, acks[path], expected[path])
    finally:
        for server in cluster.servers:
            server.stop()


def check_stream(
    base: str, path: str, acks: list[Ack], expected: list[tuple[int, int, bytes]]
) -> None:
    response = httpx.get(f"{base}/v1/stream/{path}", params={"offset": "-1"})
    body = response.content
    assert response.headers["stream-up-to-date"] == "true"
    tail = parse_offset(response.headers["stream-next-offset"])
    assert tail.bytes == len(body)
    assert len(acks) == len(expected)
    assert tail.seq == len(expected), "every append is stored exactly once, with no gap"
    assert len(body) == sum(len(p) for _i, _s, p in expected)
    fresh = [ack for ack in acks if not ack.duplicate]
    positions = [parse_offset(ack.next_offset) for ack in fresh]
    assert len({p.seq for p in positions}) == len(positions), "no two appends share an offset"
    for ack, position in zip(fresh, positions, strict=True):
        assert body[position.bytes - len(ack.payload) : position.bytes] == ack.payload
    by_writer: dict[int, list[int]] = {}
    for ack, position in zip(fresh, positions, strict=True):
        by_writer.setdefault(ack.writer, []).append(position.seq)
    for seqs in by_writer.values():
        assert seqs == sorted(seqs), "a writer's appends keep their order"
    # The whole log tiles exactly: walking it entry by entry through offsets gives every byte.
    offset, rebuilt = "-1", b""
    while True:
        page = httpx.get(f"{base}/v1/stream/{path}", params={"offset": offset})
        rebuilt += page.content
        offset = page.headers["stream-next-offset"]
        if page.headers.get("stream-up-to-date") == "true":
            break
    assert rebuilt == body
