"""Database outages under load: a real server process on a PostgreSQL of the test's own, which
the test crashes, keeps down, and starts again while clients append and read.

What must hold: every acknowledged append is stored exactly once, where its acknowledgement
said; every failed request is a 503 with ``Retry-After`` (never a 500 or a dropped connection);
an append answered plain ``unavailable`` was not written; nothing is written twice (the writer
never re-runs a transaction whose commit may have happened); the server serves again as soon as
the database is back; an idempotent producer that retries every 503 ends with each message
exactly once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest
from django.db import connection

from tests.postgres import PrivatePostgres
from tests.servers import ServerProcess

TIMEOUT = 120


@pytest.fixture
def private_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass (it brings a PostgreSQL server of its own)")
    database = PrivatePostgres().start()
    yield database
    database.destroy()


@dataclass
class Tally:
    """What the clients saw, and the moments the test waits for."""

    acked: list[tuple[dict, str]] = field(default_factory=list)  # (message, next offset)
    refused: list[tuple[dict, str]] = field(default_factory=list)  # (message, error code)
    reads: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self) -> None:
        self.changed.set()

    async def until(self, condition, what: str) -> None:
        async def wait() -> None:
            while not condition():
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(wait(), TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; {self.problems[:5]}") from None


def check_503(response: httpx.Response, tally: Tally) -> str:
    if response.status_code != 503:
        tally.problems.append(f"{response.status_code}: {response.text[:200]}")
        return "?"
    if response.headers.get("retry-after") != "1":
        tally.problems.append(f"503 without Retry-After: {dict(response.headers)}")
    return response.json()["error"]["code"]


async def append_forever(base: str, path: str, writer: int, tally: Tally, stop: asyncio.Event):
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        n = 0
        while not stop.is_set():
            message = {"w": writer, "n": n}
            n += 1
            try:
                response = await client.post(path, json=message)
            except httpx.TransportError as exc:
                tally.problems.append(f"append: the connection failed: {exc!r}")
                continue
            if response.status_code == 204:
                tally.acked.append((message, response.headers["stream-next-offset"]))
            else:
                tally.refused.append((message, check_503(response, tally)))
            tally.note()


async def read_forever(base: str, path: str, tally: Tally, stop: asyncio.Event):
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while not stop.is_set():
            response = await client.get(path, params={"offset": "-1"})
            if response.status_code != 200:
                check_503(response, tally)
            tally.reads[response.status_code] += 1
            tally.note()


async def read_all(base: str, path: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        messages, offset = [], "-1"
        while True:
            page = await client.get(path, params={"offset": offset})
            assert page.status_code == 200, page.text
            messages += page.json()
            offset = page.headers["stream-next-offset"]
            if page.headers.get("stream-up-to-date") == "true":
                return messages


async def test_a_postgres_crash_under_load_loses_no_acknowledged_append(private_postgres):
    url = private_postgres.create_database("outage")
    server = ServerProcess(public=True, env={"DATABASE_URL": url}).start()
    try:
        base = f"{server.url}/v1/stream/"
        path = f"outage-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.put(path, headers={"content-type": "application/json"})).is_success
        tally, stop = Tally(), asyncio.Event()
        tasks = [
            asyncio.ensure_future(append_forever(base, path, w, tally, stop)) for w in range(6)
        ]
        tasks.append(asyncio.ensure_future(read_forever(base, path, tally, stop)))
        await tally.until(lambda: len(tally.acked) >= 100, "appends before the crash")
        await asyncio.to_thread(private_postgres.stop, "immediate")
        refused_before = len(tally.refused)
        await tally.until(lambda: len(tally.refused) >= refused_before + 30, "503s while down")
        await tally.until(lambda: tally.reads[503] >= 3, "reads answered 503 while down")
        await asyncio.to_thread(private_postgres.start)
        acked_before = len(tally.acked)
        await tally.until(lambda: len(tally.acked) >= acked_before + 100, "appends once back")
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        assert not tally.problems, tally.problems[:10]
        stored = await read_all(base, path)
        keys = [json.dumps(m, sort_keys=True) for m in stored]
        assert len(keys) == len(set(keys)), "an append was written twice"
        position = {key: seq for seq, key in enumerate(keys)}
        for message, offset in tally.acked:
            key = json.dumps(message, sort_keys=True)
            assert key in position, f"acknowledged {message} is missing"
            assert position[key] == int(offset.split("_")[0]) - 1, "stored elsewhere than acked"
        codes = Counter(code for _message, code in tally.refused)
        assert set(codes) <= {"unavailable", "commit_unknown"}, codes
        for message, code in tally.refused:
            if code == "unavailable":  # plain unavailable: it was not written
                assert json.dumps(message, sort_keys=True) not in position, message
        assert tally.reads[200] > 0 and set(tally.reads) <= {200, 503}
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()[-3000:]


async def test_idempotent_producers_that_retry_every_503_store_each_message_once(
    private_postgres,
):
    url = private_postgres.create_database("retries")
    server = ServerProcess(public=True, env={"DATABASE_URL": url}).start()
    try:
        base = f"{server.url}/v1/stream/"
        path = f"retries-{uuid.uuid4().hex[:8]}"
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.put(path, headers={"content-type": "application/json"})).is_success
        tally, stop = Tally(), asyncio.Event()
        sent: dict[int, int] = {}

        async def produce(writer: int) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                seq = 0
                while not stop.is_set():
                    headers = {
                        "producer-id": f"p{writer}",
                        "producer-epoch": "0",
                        "producer-seq": str(seq),
                    }
                    message = {"w": writer, "n": seq}
                    response = await client.post(path, json=message, headers=headers)
                    if response.status_code in (200, 204):
                        tally.acked.append(({"w": writer, "n": seq}, ""))
                        seq += 1
                        sent[writer] = seq
                    else:
                        tally.refused.append(({"w": writer, "n": seq}, check_503(response, tally)))
                    tally.note()

        tasks = [asyncio.ensure_future(produce(w)) for w in range(4)]
        await tally.until(lambda: len(tally.acked) >= 50, "appends before the crash")
        await asyncio.to_thread(private_postgres.stop, "immediate")
        refused = len(tally.refused)
        await tally.until(lambda: len(tally.refused) >= refused + 20, "503s while down")
        await asyncio.to_thread(private_postgres.start)
        acked = len(tally.acked)
        await tally.until(lambda: len(tally.acked) >= acked + 50, "appends once back")
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        assert not tally.problems, tally.problems[:10]
        stored = await read_all(base, path)
        for writer, count in sent.items():
            mine = [m["n"] for m in stored if m["w"] == writer]
            assert mine == list(range(count)), f"producer {writer}: {mine[:20]}..."
    finally:
        server.stop()


async def test_a_crash_during_commit_is_commit_unknown_and_the_producers_retry_is_exact(
    private_postgres,
):
    """The one case where the outcome is unknown, made certain: the database dies while it runs
    the COMMIT (a deferred trigger holds it there). The append must be answered
    ``commit_unknown`` (not retried by the writer, not ``unavailable``); the producer's retry
    after the restart stores it exactly once."""
    url = private_postgres.create_database("commit")
    server = ServerProcess(public=True, env={"DATABASE_URL": url}).start()
    with psycopg.connect(host=str(private_postgres.dir), dbname="commit", user="postgres") as db:
        db.execute(
            "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$"
        )
        db.execute(
            "CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON durable_sessions_entry"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.data = 'held'::bytea)"
            " EXECUTE FUNCTION hold_commit()"
        )
        db.commit()
    try:
        base = f"{server.url}/v1/stream/"
        producer = {"producer-id": "p", "producer-epoch": "0", "producer-seq": "0"}
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            text = {"content-type": "text/plain"}
            assert (await client.put("commit", headers=text, content="start")).is_success
            append = asyncio.ensure_future(
                client.post("commit", headers={**text, **producer}, content="held")
            )

            def committing() -> bool:
                with psycopg.connect(host=str(private_postgres.dir), user="postgres") as db:
                    return bool(
                        db.execute(
                            "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                        ).fetchone()
                    )

            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while not await asyncio.to_thread(committing):  # poll: the COMMIT is under way
                assert not append.done(), append.result().text
                assert asyncio.get_running_loop().time() < deadline, "the COMMIT never started"
            await asyncio.to_thread(private_postgres.stop, "immediate")
            response = await asyncio.wait_for(append, TIMEOUT)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "commit_unknown"
            assert response.headers["retry-after"] == "1"
            await asyncio.to_thread(private_postgres.start)
            with psycopg.connect(
                host=str(private_postgres.dir), dbname="commit", user="postgres"
            ) as db:
                db.execute("DROP TRIGGER hold_commit ON durable_sessions_entry")
                db.commit()
            retry = await client.post("commit", headers={**text, **producer}, content="held")
            assert retry.status_code == 200, retry.text  # it had not been written: now it is
            again = await client.post("commit", headers={**text, **producer}, content="held")
            assert again.status_code == 204  # a duplicate from now on
            assert (await client.get("commit", params={"offset": "-1"})).text == "startheld"
    finally:
        server.stop()
