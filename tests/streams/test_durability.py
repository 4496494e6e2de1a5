"""Durability under concurrency and crashes, with real server processes.

Several writers append concurrently through two daphne processes sharing the database; one
process is killed with SIGKILL in the middle and a new one takes its place. The writers are
idempotent producers and retry an unacknowledged append on another process until it is
acknowledged. Afterwards every stream must hold every append exactly once, byte for byte at the
offset it was acknowledged with, with strictly increasing, gap-free offsets.
"""

from __future__ import annotations

import threading
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


@dataclass
class Cluster:
    """The server processes the writers may use; one of them gets killed and replaced."""

    servers: list[ServerProcess]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, choice: int) -> str:
        with self.lock:
            return self.servers[choice % len(self.servers)].url

    def crash_and_replace(self, index: int) -> None:
        with self.lock:
            victim = self.servers[index]
        victim.kill()
        replacement = ServerProcess(public=True).start()
        with self.lock:
            self.servers[index] = replacement


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

        def write(writer: int, messages: list[tuple[bytes, int]]) -> None:
            path = paths[writer % len(paths)]
            producer = f"writer-{writer}"
            try:
                with httpx.Client(timeout=10) as client:
                    for seq, (payload, choice) in enumerate(messages):
                        attempt = 0
                        while True:
                            url = f"{cluster.pick(choice + attempt)}/v1/stream/{path}"
                            try:
                                response = client.post(
                                    url,
                                    content=payload,
                                    headers={
                                        "content-type": "application/octet-stream",
                                        "producer-id": producer,
                                        "producer-epoch": "0",
                                        "producer-seq": str(seq),
                                    },
                                )
                            except httpx.TransportError:
                                attempt += 1  # the process died under us: retry elsewhere
                                continue
                            assert response.status_code in (200, 204), response.text
                            break
                        acks[path].append(
                            Ack(
                                writer,
                                seq,
                                payload,
                                response.headers["stream-next-offset"],
                                response.status_code == 204,
                            )
                        )
                        acked.release()
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(i, w)) for i, w in enumerate(writers)]
        for thread in threads:
            thread.start()
        total = sum(len(w) for w in writers)
        for _ in range(min(kill_after, total)):
            if not acked.acquire(timeout=30):
                logs = "\n".join(server.output()[-3000:] for server in cluster.servers)
                raise AssertionError(f"writers stalled; errors {errors}; server output:\n{logs}")
        cluster.crash_and_replace(victim)
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        for path in paths:
            check_stream(cluster.pick(1), path, acks[path], writers, paths)
    finally:
        for server in cluster.servers:
            server.stop()


def check_stream(base: str, path: str, acks: list[Ack], writers, paths) -> None:
    response = httpx.get(f"{base}/v1/stream/{path}", params={"offset": "-1"})
    body = response.content
    assert response.headers["stream-up-to-date"] == "true"
    tail = parse_offset(response.headers["stream-next-offset"])
    assert tail.bytes == len(body)
    expected = [
        (i, s, p)
        for i, w in enumerate(writers)
        if paths[i % len(paths)] == path
        for s, (p, _choice) in enumerate(w)
    ]
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
