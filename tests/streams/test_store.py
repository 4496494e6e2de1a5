"""The log's Python API (durable_sessions/streams/api.py), on the configured database."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from durable_sessions import streams
from durable_sessions.streams import hub
from durable_sessions.streams.errors import (
    BadRequest,
    Conflict,
    PayloadTooLarge,
    StaleProducerEpoch,
    StreamClosed,
    StreamGone,
    StreamNotFound,
)
from durable_sessions.streams.live import Follower
from durable_sessions.streams.offsets import START, Position, format_offset
from durable_sessions.streams.records import Notice, StoredEntry

pytestmark = pytest.mark.django_db(transaction=True)


def test_create_append_read_roundtrip():
    created = streams.create("t/a", content_type="text/plain", data="hello")
    assert created.created
    assert created.info.tail == Position(1, 5)
    appended = streams.append("t/a", " world", content_type="text/plain")
    assert appended.next == Position(2, 11)
    assert appended.status == 204
    result = streams.read("t/a")
    assert result.body == b"hello world"
    assert result.up_to_date and not result.closed
    assert str(result.next) == format_offset(2, 11)


def test_create_is_idempotent_for_identical_config_and_rejects_another():
    streams.create("t/b", content_type="application/json", ttl=60)
    again = streams.create("t/b", content_type="APPLICATION/JSON; charset=utf-8", ttl=60)
    assert not again.created
    with pytest.raises(Conflict):
        streams.create("t/b", content_type="application/json", ttl=61)
    with pytest.raises(Conflict):
        streams.create("t/b", content_type="text/plain", ttl=60)


def test_read_from_an_offset_returns_only_what_follows():
    streams.create("t/c", content_type="text/plain")
    first = streams.append("t/c", "one")
    streams.append("t/c", "two")
    streams.append("t/c", "three")
    assert streams.read("t/c", first.next).body == b"twothree"
    assert streams.read("t/c", str(first.next)).body == b"twothree"


def test_offsets_increase_strictly_and_without_gaps():
    streams.create("t/d", content_type="text/plain")
    seqs = [streams.append("t/d", f"m{i}").next.seq for i in range(20)]
    assert seqs == list(range(1, 21))


def test_json_mode_flattens_one_level_and_joins_reads():
    streams.create("t/json", content_type="application/json", data="[]")
    streams.append("t/json", b'{"a": 1}', content_type="application/json")
    streams.append("t/json", b'[[1, 2], {"b": 2}]', content_type="application/json")
    streams.append_json("t/json", ["x", None])
    result = streams.read("t/json")
    assert json.loads(result.body) == [{"a": 1}, [1, 2], {"b": 2}, "x", None]
    assert result.count == 5
    assert result.messages() == [{"a": 1}, [1, 2], {"b": 2}, "x", None]


def test_json_mode_rejects_invalid_json_empty_arrays_and_nan():
    streams.create("t/json2", content_type="application/json")
    for body in (b"{nope", b"[]", b"NaN", b'{"x": Infinity}', b"\xff\xfe"):
        with pytest.raises(BadRequest):
            streams.append("t/json2", body, content_type="application/json")
    assert streams.read("t/json2").body == b"[]"


def test_numbers_json_cannot_write_back_are_refused():
    streams.create("t/inf", content_type="application/json")
    with pytest.raises(BadRequest):
        streams.append("t/inf", b"[1e400]", content_type="application/json")
    with pytest.raises(BadRequest):
        streams.append_json("t/inf", [float("nan")])
    assert streams.read("t/inf").messages() == []


def test_the_python_api_validates_paths_and_sizes(settings):
    for path in ("a//b", "__ds/x", "", "a/../b"):
        with pytest.raises(BadRequest):
            streams.create(path, content_type="text/plain")
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "MAX_APPEND_BYTES": 10}
    streams.create("t/size", content_type="text/plain")
    with pytest.raises(PayloadTooLarge):
        streams.append("t/size", "x" * 11)
    with pytest.raises(PayloadTooLarge):
        streams.create("t/size2", content_type="text/plain", data="y" * 11)


def test_sync_writes_inside_an_atomic_block_fail_fast_on_sqlite(postgres):
    from django.db import transaction

    streams.create("t/atomic", content_type="text/plain")
    with transaction.atomic():
        if postgres:  # not atomic with the caller, but it works
            assert streams.append("t/atomic", "x").next.seq == 1
        else:
            with pytest.raises(RuntimeError, match="atomic"):
                streams.append("t/atomic", "x")


def test_a_fork_retried_without_an_offset_after_the_source_grew_is_the_same_fork():
    streams.create("t/grow", content_type="text/plain", data="a")
    assert streams.fork("t/grow-fork", "t/grow").created
    streams.append("t/grow", "b")
    again = streams.fork("t/grow-fork", "t/grow")
    assert not again.created
    assert streams.read("t/grow-fork").body == b"a"


def test_append_without_content_type_parses_by_the_stream_type():
    streams.create("t/json3", content_type="application/json")
    streams.append("t/json3", b'[{"a": 1}, {"b": 2}]')
    assert streams.read("t/json3").messages() == [{"a": 1}, {"b": 2}]


def test_content_type_mismatch_is_a_conflict():
    streams.create("t/ct", content_type="text/plain")
    with pytest.raises(Conflict) as info:
        streams.append("t/ct", b"{}", content_type="application/json")
    assert info.value.code == "content_type_mismatch"


def test_missing_stream_is_not_found():
    with pytest.raises(StreamNotFound):
        streams.append("t/missing", "x", content_type="text/plain")
    with pytest.raises(StreamNotFound):
        streams.read("t/missing")
    with pytest.raises(StreamNotFound):
        streams.delete("t/missing")


def test_close_is_durable_idempotent_and_blocks_appends():
    streams.create("t/close", content_type="text/plain", data="a")
    closed = streams.close("t/close")
    assert closed.closed and closed.next == Position(1, 1)
    assert streams.close("t/close").closed
    with pytest.raises(StreamClosed) as info:
        streams.append("t/close", "b")
    assert info.value.headers == {"Stream-Closed": "true", "Stream-Next-Offset": str(closed.next)}
    result = streams.read("t/close")
    assert result.closed and result.body == b"a"
    assert streams.info("t/close").closed


def test_append_and_close_atomically():
    streams.create("t/final", content_type="text/plain")
    result = streams.append("t/final", "last", close=True)
    assert result.closed
    assert streams.read("t/final").body == b"last"


def test_stream_seq_must_increase_bytewise():
    streams.create("t/seq", content_type="text/plain")
    streams.append("t/seq", "a", seq="09")
    streams.append("t/seq", "b", seq="10")
    with pytest.raises(Conflict):
        streams.append("t/seq", "c", seq="10")
    with pytest.raises(Conflict):
        streams.append("t/seq", "c", seq="1")
    streams.append("t/seq", "d", seq="9")  # "9" sorts after "10" byte-wise
    assert streams.read("t/seq").body == b"abd"


def test_idempotent_producer_dedupes_fences_and_detects_gaps():
    streams.create("t/prod", content_type="text/plain")
    first = streams.append("t/prod", "a", producer=("p", 0, 0))
    assert first.status == 200 and first.producer_seq == 0
    assert streams.append("t/prod", "b", producer=("p", 0, 1)).status == 200
    duplicate = streams.append("t/prod", "a", producer=("p", 0, 0))
    assert duplicate.duplicate and duplicate.status == 204 and duplicate.producer_seq == 1
    with pytest.raises(Conflict) as gap:
        streams.append("t/prod", "d", producer=("p", 0, 3))
    assert gap.value.headers == {"Producer-Expected-Seq": "2", "Producer-Received-Seq": "3"}
    with pytest.raises(BadRequest):
        streams.append("t/prod", "e", producer=("p", 1, 4))
    assert streams.append("t/prod", "c", producer=("p", 1, 0)).status == 200
    with pytest.raises(StaleProducerEpoch) as stale:
        streams.append("t/prod", "zombie", producer=("p", 0, 2))
    assert stale.value.headers == {"Producer-Epoch": "1"}
    assert streams.read("t/prod").body == b"abc"


def test_retry_of_the_producer_write_that_closed_is_a_duplicate():
    streams.create("t/pclose", content_type="text/plain")
    assert streams.append("t/pclose", "A", close=True, producer=("p", 0, 0)).status == 200
    retry = streams.append("t/pclose", "B", close=True, producer=("p", 0, 0))
    assert retry.duplicate and retry.closed
    with pytest.raises(StreamClosed):
        streams.append("t/pclose", "C", close=True, producer=("p", 0, 1))
    assert streams.read("t/pclose").body == b"A"


def test_delete_then_recreate_is_a_new_stream():
    streams.create("t/del", content_type="text/plain", data="old")
    streams.delete("t/del")
    with pytest.raises(StreamNotFound):
        streams.read("t/del")
    streams.create("t/del", content_type="text/plain", data="new")
    assert streams.read("t/del").body == b"new"


def test_fork_reads_source_prefix_then_its_own_entries():
    streams.create("t/src", content_type="text/plain", data="A")
    middle = streams.append("t/src", "B")
    streams.append("t/src", "C")
    streams.fork("t/fork", "t/src", offset=middle.next)
    streams.append("t/fork", "X")
    streams.append("t/src", "D")
    assert streams.read("t/fork").body == b"ABX"
    assert streams.read("t/src").body == b"ABCD"
    assert streams.read("t/fork", middle.next).body == b"X"


def test_fork_with_sub_offsets_composes_across_a_chain():
    streams.create("t/l0", content_type="application/json", data='[{"a":1},{"b":2},{"c":3}]')
    streams.fork("t/l1", "t/l0", offset=START, sub_offset=2)
    streams.fork("t/l2", "t/l1", offset=START, sub_offset=1)
    streams.append_json("t/l2", [{"z": 0}])
    assert streams.read("t/l1").messages() == [{"a": 1}, {"b": 2}]
    assert streams.read("t/l2").messages() == [{"a": 1}, {"z": 0}]
    with pytest.raises(BadRequest):
        streams.fork("t/l3", "t/l0", offset=START, sub_offset=4)


def test_fork_offsets_that_name_no_position_are_rejected():
    streams.create("t/s2", content_type="text/plain", data="hello")
    with pytest.raises(BadRequest):
        streams.fork("t/f2", "t/s2", offset=Position(1, 3))
    with pytest.raises(BadRequest):
        streams.fork("t/f2", "t/s2", offset=Position(2, 5))


def test_deleting_a_source_with_forks_is_soft_and_cascades_later():
    streams.create("t/root", content_type="text/plain", data="R")
    streams.fork("t/child", "t/root")
    streams.delete("t/root")
    with pytest.raises(StreamGone):
        streams.read("t/root")
    with pytest.raises(Conflict):
        streams.create("t/root", content_type="text/plain")
    assert streams.read("t/child").body == b"R"
    streams.delete("t/child")
    with pytest.raises(StreamNotFound):
        streams.info("t/root")


def test_ttl_expiry_makes_the_stream_disappear(monkeypatch):
    import time

    streams.create("t/ttl", content_type="text/plain", ttl=100)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 101)
    with pytest.raises(StreamNotFound):
        streams.read("t/ttl")
    created = streams.create("t/ttl", content_type="text/plain")
    assert created.created


def test_the_expiry_sweep_deletes_expired_streams_that_nobody_touches():
    """Reads hide an expired stream by themselves; deleting it is the job of the writer's sweep
    (every EXPIRY_SWEEP_INTERVAL, 0.5 s in the tests): its row, entries and producers go while
    nobody reads or writes it. Watched through the ORM, which renews no TTL."""
    from durable_sessions.streams.models import Entry, Producer, Stream

    streams.create("t/swept", content_type="text/plain", ttl=2)
    streams.append("t/swept", "a", producer=("p", 0, 0))
    streams.append("t/swept", "b", producer=("p", 0, 1))
    streams.create("t/kept", content_type="text/plain", data="k")
    swept = Stream.objects.get(path="t/swept").pk
    assert Entry.objects.filter(stream_id=swept).count() == 2
    assert Producer.objects.filter(stream_id=swept).count() == 1
    deadline = time.monotonic() + 20
    while Stream.objects.filter(pk=swept).exists():
        assert time.monotonic() < deadline, "the expired stream was never swept"
        time.sleep(0.05)
    assert not Entry.objects.filter(stream_id=swept).exists()
    assert not Producer.objects.filter(stream_id=swept).exists()
    kept = Stream.objects.get(path="t/kept")
    assert Entry.objects.filter(stream=kept).count() == 1


async def test_async_api_and_concurrent_appends_are_gap_free():
    await streams.acreate("t/async", content_type="application/json")
    results = await asyncio.gather(
        *(streams.aappend_json("t/async", [{"i": i}]) for i in range(200))
    )
    seqs = sorted(result.next.seq for result in results)
    assert seqs == list(range(1, 201))
    read = await streams.aread("t/async", "-1")
    assert sorted(m["i"] for m in read.messages()) == list(range(200))


async def test_group_commit_spans_streams_and_keeps_per_stream_order():
    paths = [f"t/many/{n}" for n in range(10)]
    await asyncio.gather(*(streams.acreate(p, content_type="application/json") for p in paths))

    async def writer(path: str) -> None:
        for i in range(30):
            await streams.aappend_json(path, [i])

    await asyncio.gather(*(writer(p) for p in paths))
    for path in paths:
        assert (await streams.aread(path)).messages() == list(range(30))


async def test_subscribe_catches_up_then_follows_live_until_closed():
    await streams.acreate("t/live", content_type="application/json", data="[1, 2]")
    received: list = []

    async def follow() -> None:
        async for batch in streams.subscribe("t/live", "-1"):
            received.extend(batch.messages())

    task = asyncio.create_task(follow())
    await streams.aappend_json("t/live", [3])
    await streams.aappend_json("t/live", [4, 5])
    await streams.aclose("t/live")
    await asyncio.wait_for(task, 10)
    assert received == [1, 2, 3, 4, 5]


async def test_following_from_now_skips_history():
    await streams.acreate("t/now", content_type="text/plain", data="old")
    async with Follower("t/now", None) as follower:
        first = await follower.next(None)
        assert first.count == 0 and first.up_to_date and first.next == Position(1, 3)
        await streams.aappend("t/now", "new", close=True)
        batch = await follower.next(10)
    assert batch.body == b"new" and batch.closed


async def test_follower_times_out_without_data_and_recovers_after_overflow(monkeypatch, settings):
    """A queue that overflows is dropped and its reader re-reads the database at once: not
    after a quiet LIVE_RECHECK_INTERVAL (an hour here, longer than next()'s timeout), and not on
    a later notice (the overflowing one is the last: nothing is left queued)."""
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "LIVE_RECHECK_INTERVAL": 3600.0}
    await streams.acreate("t/slow", content_type="text/plain")
    async with Follower("t/slow", START) as follower:
        await follower.next(None)
        assert await follower.next(0.05) is None
        monkeypatch.setattr(hub, "SUBSCRIPTION_QUEUE_LIMIT", 2)
        for i in range(3):  # two queued, the third overflows
            await streams.aappend("t/slow", str(i))
        batch = await follower.next(10)  # its queue overflowed: it re-reads the database
    assert batch is not None and batch.body == b"012"


@pytest.mark.parametrize("new_data", ["a longer new stream", ""])
async def test_a_follower_does_not_carry_on_into_a_recreated_stream(new_data):
    await streams.acreate("t/again", content_type="text/plain", data="old")
    await streams.aappend("t/again", "er")
    async with Follower("t/again", START) as follower:
        await follower.next(None)
        await streams.adelete("t/again")
        await streams.acreate("t/again", content_type="text/plain", data=new_data)
        with pytest.raises(StreamNotFound):  # shorter than our position, or not
            await follower.next(10)


async def test_two_writer_threads_keep_every_stream_gap_free_and_in_order(settings):
    from durable_sessions.streams.store import get_store, reset_store

    await asyncio.to_thread(reset_store)
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "WRITER_THREADS": 2}
    try:
        store = get_store()
        assert len(store.writers) == (2 if store.database.is_postgres else 1)
        paths = [f"t/two/{n}" for n in range(8)]
        await asyncio.gather(*(streams.acreate(p, content_type="application/json") for p in paths))
        if store.database.is_postgres:  # the streams really are spread over both writers
            assert {id(store.writer_for(p)) for p in paths} == {id(w) for w in store.writers}

        async def writer(path: str) -> None:
            for i in range(25):
                await streams.aappend_json(path, [i])

        await asyncio.gather(*(writer(p) for p in paths))
        for path in paths:
            result = await streams.aread(path)
            assert result.messages() == list(range(25)) and result.next.seq == 25
    finally:
        await asyncio.to_thread(reset_store)


async def test_followers_at_one_position_share_the_batch_of_one_list_of_notices():
    """The hub's one list of notices makes one batch for every reader at the same position;
    a reader elsewhere gets its own batch from the same list."""
    await streams.acreate("t/shared", content_type="text/plain")
    await streams.aappend("t/shared", "a")
    async with Follower("t/shared", START) as first, Follower("t/shared", START) as second:
        await first.next(None)
        await second.next(None)
        await streams.aappend("t/shared", "b")
        async with Follower("t/shared", START) as ahead:
            assert (await ahead.next(None)).body == b"ab"
            stream_id = first.info.id
            entries = [StoredEntry(1, 2, 1, b"b"), StoredEntry(2, 3, 1, b"c")]
            notices = [Notice(stream_id, Position(3, 3), entries=entries)]
            batch = first.advance(notices)
            assert second.advance(notices) is batch
            assert batch.body == b"bc" and batch.start == Position(1, 1)
            own = ahead.advance(notices)
            assert own.body == b"c" and own.start == Position(2, 2)
            assert first.position == second.position == ahead.position == Position(3, 3)
            # Once past them, the same notices make an empty batch, not the shared one again.
            assert first.advance(notices).count == 0


async def test_a_follower_hands_live_notices_to_its_direct_reader_while_it_waits():
    """A reader that takes notices directly (websockets do) gets them without next() waking;
    what it declines is queued for next() as usual."""
    await streams.acreate("t/direct", content_type="text/plain")
    taken: list[bytes] = []
    accept = True

    def direct(notices) -> bool:
        if not accept:
            return False
        batch = follower.advance(notices)
        assert batch is not None
        taken.append(batch.body)
        return True

    async with Follower("t/direct", START, direct) as follower:
        await follower.next(None)
        waiting = asyncio.ensure_future(follower.next(None))
        deadline = time.monotonic() + 10
        while not follower._subscription.waiting:  # until next() waits on its subscription
            assert time.monotonic() < deadline and not waiting.done()
            await asyncio.sleep(0.001)
        await streams.aappend("t/direct", "a")
        await streams.aappend("t/direct", "b")
        assert taken == [b"a", b"b"] and not waiting.done()
        accept = False
        await streams.aappend("t/direct", "c")
        batch = await asyncio.wait_for(waiting, 10)
    assert batch.body == b"c" and batch.start == Position(2, 2)


def test_the_api_takes_typed_keywords_only():
    streams.create("t/kw", content_type="text/plain")
    with pytest.raises(TypeError):
        streams.append("t/kw", "x", contenttype="text/plain")  # a typo is an error, not ignored
    with pytest.raises(TypeError):
        streams.create("t/kw2", "text/plain")  # keywords only
    with pytest.raises(TypeError):
        streams.fork("t/kw3", "t/kw", offst="-1")


def test_the_package_exports_what_callers_need():
    for name in ("Position", "START", "StreamError", "StreamNotFound", "ReadResult", "Created"):
        assert hasattr(streams, name), name
    assert streams.parse_offset(str(streams.START)) == streams.START


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda: streams.create("t/o1", ttl=10**12), "invalid_ttl"),
        (lambda: streams.create("t/o2", ttl=-1), "invalid_ttl"),
        (lambda: streams.create("t/o3", ttl="60"), "invalid_ttl"),
        (lambda: streams.create("t/o4", expires_at=1e300), "invalid_expires_at"),
        (lambda: streams.create("t/o5", expires_at=float("nan")), "invalid_expires_at"),
        (lambda: streams.create("t/o6", ttl=5, expires_at=2e9), "invalid_ttl"),
        (lambda: streams.create("t/o7", content_type="text/\x00plain"), "invalid_content_type"),
        (lambda: streams.append("t/opts", "x", seq="a\x00b"), "invalid_stream_seq"),
        (lambda: streams.append("t/opts", "x", seq=5), "invalid_stream_seq"),
        (lambda: streams.append("t/opts", "x", producer=("p\x00", 0, 0)), "invalid_producer"),
        (lambda: streams.append("t/opts", "x", producer=("p", -1, 0)), "invalid_producer"),
        (lambda: streams.append("t/opts", "x", producer=("p", 0, 2**53)), "invalid_producer"),
        (lambda: streams.append("t/opts", "x", producer=["p", 0, 0]), "invalid_producer"),
    ],
)
def test_the_python_api_checks_options_as_their_headers_are_checked(call, code):
    """A NUL in a Stream-Seq reached Postgres (a 503) and was stored by SQLite; a TTL of
    centuries made the admin fail later: the API refuses what no header could say."""
    streams.create("t/opts", content_type="text/plain")
    with pytest.raises(BadRequest) as refused:
        call()
    assert refused.value.code == code
    assert streams.read("t/opts").body == b""
