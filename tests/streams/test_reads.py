"""Catch-up reads (durable_sessions/streams/reads.py): offsets checked whole, reads never write."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from asgiref.sync import sync_to_async

from durable_sessions import streams
from durable_sessions.streams.errors import BadRequest
from durable_sessions.streams.models import Stream
from durable_sessions.streams.offsets import Position
from durable_sessions.streams.store import get_store
from tests.streams.dblocks import held_stream
from tests.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_offset_whose_byte_half_names_no_position_is_400():
    streams.create("r/off", content_type="text/plain", data="abc")
    streams.append("r/off", "defg")
    streams.append("r/off", "h")
    assert streams.read("r/off", Position(1, 3)).body == b"defgh"
    assert streams.read("r/off", Position(2, 7)).body == b"h"
    assert streams.read("r/off", Position(3, 8)).body == b""
    for bad in (Position(1, 999), Position(1, 0), Position(0, 1), Position(2, 3), Position(3, 9)):
        with pytest.raises(BadRequest) as refused:
            streams.read("r/off", bad)
        assert refused.value.code == "invalid_offset", bad
    with pytest.raises(BadRequest) as beyond:
        streams.read("r/off", Position(4, 9))
    assert beyond.value.code == "offset_beyond_tail"


def test_offsets_into_a_forks_source_part_are_checked_there():
    streams.create("r/src", content_type="text/plain", data="ab")
    middle = streams.append("r/src", "cd").next
    streams.append("r/src", "ef")
    streams.fork("r/fork", "r/src", offset=middle)
    streams.append("r/fork", "XY")
    assert streams.read("r/fork", Position(1, 2)).body == b"cdXY"
    assert streams.read("r/fork", middle).body == b"XY"
    with pytest.raises(BadRequest):
        streams.read("r/fork", Position(1, 3))


def test_over_http_a_made_up_offset_is_400(public_server):
    with httpx.Client(base_url=f"{public_server.url}/v1/stream/", timeout=10) as client:
        client.put("r-http", headers={"content-type": "text/plain"}, content="hello")
        client.post("r-http", headers={"content-type": "text/plain"}, content="world")
        ok = client.get("r-http", params={"offset": "0000000000000001_0000000000000005"})
        assert ok.status_code == 200 and ok.text == "world"
        bad = client.get("r-http", params={"offset": "0000000000000001_0000000000000004"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_offset"
        poll = client.get(
            "r-http", params={"offset": "0000000000000001_0000000000000009", "live": "long-poll"}
        )
        assert poll.status_code == 400


def touched_at(path: str) -> float:
    return Stream.objects.get(path=path).touched_at


async def test_a_read_never_waits_for_a_lock_and_its_renewal_goes_through_the_writer():
    """A read that renews a sliding TTL used to UPDATE from the reader thread: behind a held
    write lock (SQLite) or row lock (Postgres) it waited, and on SQLite failed after 30 s."""
    await streams.acreate("r/ttl", content_type="text/plain", data="x", ttl=3600)
    stale = time.time() - 60
    await sync_to_async(Stream.objects.filter(path="r/ttl").update)(touched_at=stale)
    with held_stream("r/ttl"):
        before = time.time()
        result = await asyncio.wait_for(streams.aread("r/ttl"), 5)
        assert result.body == b"x"
        assert await sync_to_async(touched_at)("r/ttl") == stale  # not by the reader
    renewed = {}

    async def check() -> None:
        renewed["at"] = await sync_to_async(touched_at)("r/ttl")

    async def poll() -> None:
        while True:
            await check()
            if renewed["at"] >= before:
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), 30)  # the writer renewed it once the lock was free


async def test_many_reads_renew_a_stream_once():
    await streams.acreate("r/many", content_type="text/plain", data="x", ttl=3600)
    stale = time.time() - 60
    await sync_to_async(Stream.objects.filter(path="r/many").update)(touched_at=stale)
    writer = get_store().writer_for("r/many")
    with held_stream("r/many"):
        await asyncio.gather(*(streams.aread("r/many") for _ in range(50)))
        assert writer.queued <= 1, "more than one renewal queued for one stream"
    await until(lambda: writer.queued == 0, timeout=30)
