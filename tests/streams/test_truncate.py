"""Dropping old entries (durable_sessions/streams/retention.py): ``streams.truncate``."""

from __future__ import annotations

import httpx
import pytest

from durable_sessions import streams
from durable_sessions.streams.errors import BadRequest, Conflict, StreamGone, StreamNotFound
from durable_sessions.streams.models import Entry, Stream

pytestmark = pytest.mark.django_db(transaction=True)


def stream_with(path: str, *words: str) -> list[streams.Position]:
    """A text stream of one entry per word; the offset before each entry, then the tail."""
    streams.create(path, content_type="text/plain")
    offsets = [streams.START]
    for word in words:
        offsets.append(streams.append(path, word).next)
    return offsets


def everything(path: str, offset: str | streams.Position = "-1") -> bytes:
    data = b""
    while True:
        result = streams.read(path, offset)
        data += result.data
        offset = result.next
        if result.up_to_date:
            return data


def test_a_read_from_the_start_begins_at_the_first_retained_entry():
    offsets = stream_with("t/a", "one ", "two ", "three")
    assert streams.truncate("t/a", before=offsets[2]) == offsets[2]
    assert everything("t/a") == b"three"
    assert everything("t/a", offsets[2]) == b"three"
    assert streams.read("t/a", "-1").start == offsets[2]
    assert Entry.objects.filter(stream__path="t/a").count() == 1
    assert streams.retention("t/a").first == offsets[2]
    # offsets did not move: the next append continues where the stream was
    assert streams.append("t/a", " four").next.seq == 4
    assert everything("t/a") == b"three four"


def test_a_read_from_before_the_retained_data_is_410():
    offsets = stream_with("t/gone", "a", "b", "c")
    streams.truncate("t/gone", before=offsets[2])
    for offset in (offsets[1], str(offsets[1])):
        with pytest.raises(StreamGone) as caught:
            streams.read("t/gone", offset)
        assert caught.value.code == "before_retained"


def test_truncating_to_everything_leaves_an_empty_stream_that_still_grows():
    offsets = stream_with("t/all", "x", "y")
    streams.truncate("t/all", before=offsets[-1])
    result = streams.read("t/all", "-1")
    assert result.data == b"" and result.up_to_date and result.next == offsets[-1]
    streams.append("t/all", "z")
    assert everything("t/all") == b"z"


def test_bad_offsets_are_400_and_change_nothing():
    offsets = stream_with("t/bad", "aa", "bb")
    for bad in ("", "1,2", "abc", "now", "0000000000000001_0000000000000001"):
        with pytest.raises(BadRequest):
            streams.truncate("t/bad", before=bad)
    beyond = streams.Position(offsets[-1].seq + 1, offsets[-1].bytes + 2)
    with pytest.raises(BadRequest) as caught:
        streams.truncate("t/bad", before=beyond)
    assert caught.value.code == "offset_beyond_tail"
    assert everything("t/bad") == b"aabb"


def test_an_offset_at_or_before_the_retained_start_changes_nothing():
    offsets = stream_with("t/again", "a", "b", "c")
    streams.truncate("t/again", before=offsets[2])
    assert streams.truncate("t/again", before=offsets[2]) == offsets[2]  # a retry
    assert streams.truncate("t/again", before=offsets[1]) == offsets[2]
    assert streams.truncate("t/again", before="-1") == offsets[2]
    with pytest.raises(BadRequest):  # the retained start's seq with other bytes
        streams.truncate("t/again", before=streams.Position(offsets[2].seq, 99))
    assert everything("t/again") == b"c"


def test_unknown_and_deleted_streams():
    with pytest.raises(StreamNotFound):
        streams.truncate("t/none", before="-1")
    stream_with("t/del", "a")
    streams.delete("t/del")
    with pytest.raises(StreamNotFound):
        streams.truncate("t/del", before="-1")


def test_a_fork_pins_the_entries_it_reads():
    offsets = stream_with("t/src", "a", "b", "c", "d")
    streams.fork("t/fork", "t/src", offset=offsets[3])  # reads a, b, c
    assert streams.retention("t/src").pinned == 0
    with pytest.raises(Conflict) as caught:
        streams.truncate("t/src", before=offsets[1])
    assert caught.value.code == "fork_reads_entries"
    assert everything("t/fork") == b"abc"
    # truncating the fork below its fork offset drops nothing of the source's, and moves the
    # fork's own start: the source may then drop what the fork no longer reads
    streams.truncate("t/fork", before=offsets[2])
    assert everything("t/fork") == b"c"
    assert streams.retention("t/src").pinned == 2
    streams.truncate("t/src", before=offsets[2])
    with pytest.raises(Conflict):
        streams.truncate("t/src", before=offsets[3])
    assert everything("t/src") == b"cd"
    assert everything("t/fork") == b"c"


def test_a_fork_truncated_past_its_fork_offset_pins_nothing():
    offsets = stream_with("t/s2", "a", "b")
    streams.fork("t/f2", "t/s2")
    tail = streams.append("t/f2", "c").next
    streams.truncate("t/f2", before=tail)
    assert streams.retention("t/s2").pinned is None
    streams.truncate("t/s2", before=offsets[-1])
    assert everything("t/s2") == b""
    assert everything("t/f2") == b""
    streams.append("t/f2", "d")
    assert everything("t/f2") == b"d"


def test_a_fork_of_a_fork_pins_the_first_source_too():
    offsets = stream_with("t/s3", "a", "b", "c")
    streams.fork("t/f3", "t/s3", offset=offsets[2])
    streams.fork("t/g3", "t/f3")
    streams.truncate("t/f3", before=offsets[2])  # f3 reads nothing of s3 now; g3 still does
    assert streams.retention("t/s3").pinned == 0
    with pytest.raises(Conflict):
        streams.truncate("t/s3", before=offsets[1])
    assert everything("t/g3") == b"ab"


def test_a_fork_starts_at_its_source_s_retained_start():
    offsets = stream_with("t/s4", "a", "b", "c")
    streams.truncate("t/s4", before=offsets[2])
    streams.fork("t/f4", "t/s4", offset="-1")  # the start: the first retained position
    assert everything("t/f4") == b""
    streams.fork("t/f5", "t/s4")
    assert everything("t/f5") == b"c"
    assert Stream.objects.get(path="t/f5").first_seq == 2
    with pytest.raises(StreamGone):
        streams.read("t/f5", offsets[1])
    with pytest.raises(BadRequest) as caught:
        streams.fork("t/f6", "t/s4", offset=offsets[1])
    assert caught.value.code == "invalid_fork"


def test_a_fork_continues_the_producers_it_is_given():
    streams.create("t/p", content_type="application/json")
    streams.append_json("t/p", [{"n": 0}], producer=("p1", 0, 0))
    streams.fork("t/pf", "t/p", producers={"p1": (0, 0)})
    assert streams.append_json("t/pf", [{"n": 0}], producer=("p1", 0, 0)).duplicate
    assert not streams.append_json("t/pf", [{"n": 1}], producer=("p1", 0, 1)).duplicate
    with pytest.raises(BadRequest):
        streams.fork("t/pg", "t/p", producers={"": (0, 0)})


def test_a_conditional_append_lands_at_the_tail_it_names_or_not_at_all():
    streams.create("t/c", content_type="application/json")
    tail = streams.append_json("t/c", [1]).next
    streams.append_json("t/c", [2])
    with pytest.raises(Conflict) as caught:
        streams.append_json("t/c", [3], expect_tail=tail)
    assert caught.value.code == "tail_moved"
    now = streams.info("t/c").tail
    assert streams.append_json("t/c", [3], expect_tail=now).next.seq == now.seq + 1


def test_over_http_a_read_before_the_retained_data_is_410(public_server):
    offsets = stream_with("t/http", "a", "b", "c")
    streams.truncate("t/http", before=offsets[2])
    base = f"{public_server.url}/v1/stream/t/http"
    for start in ("-1", str(streams.START)):  # the start of the stream: its retained start
        response = httpx.get(base, params={"offset": start})
        assert response.status_code == 200 and response.content == b"c", start
    assert httpx.get(base, params={"offset": str(offsets[1])}).status_code == 410
    assert httpx.get(base, params={"offset": str(offsets[2])}).content == b"c"
