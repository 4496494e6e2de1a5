"""Tests of ``writes.submit_chunks``: a batch of chunks of many sessions moves every clock in one
transaction, stamps each session's chunks in batch order after the chunks before them, and a
session that is gone fails its own chunks only."""

from __future__ import annotations

import json

import pytest

from durable_sessions import streams
from durable_sessions.sessions import errors, service, writes
from durable_sessions.sessions.models import Session
from tests.sessions.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def chunk(session: Session, message_id: str, seq: int) -> writes.ChunkWrite:
    return writes.ChunkWrite(
        session,
        message_id=message_id,
        seq=seq,
        actor_id="bot",
        role="assistant",
        chunk={"type": "content", "delta": str(seq), "content": str(seq)},
    )


def rows(session: Session) -> list[dict]:
    body = streams.read(session.stream_path, "-1").body
    return [event["value"] for event in json.loads(body) if event.get("type") == "chunk"]


def test_a_batch_stamps_each_session_in_order_after_what_came_before():
    owner = make_user("batcher")
    first, _ = service.session_create(owner=owner)
    second, _ = service.session_create(owner=owner)
    writes.append_chunk(
        first, message_id="m0", seq=0, actor_id="u", role="user", chunk={"type": "content"}
    )
    batch = [chunk(first, "m1", 0), chunk(second, "m2", 0), chunk(first, "m1", 1)]
    batch.append(chunk(first, "m1", 2))
    outcomes = writes.submit_chunks(batch)
    for write, outcome in zip(batch, outcomes, strict=True):
        writes.chunk_appended(outcome, message_id=write.message_id, seq=write.seq)
    later = writes.append_chunk(
        first, message_id="m3", seq=0, actor_id="u", role="user", chunk={"type": "content"}
    )
    assert later.duplicate is False

    found = rows(first)
    assert [(r["messageId"], r["seq"]) for r in found] == [
        ("m0", 0),
        ("m1", 0),
        ("m1", 1),
        ("m1", 2),
        ("m3", 0),
    ]
    stamps = [r["createdAt"] for r in found]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # increasing, distinct
    assert [(r["messageId"], r["seq"]) for r in rows(second)] == [("m2", 0)]
    clock = Session.objects.get(pk=first.pk).clock_ms
    assert stamps[-1] == writes.state.timestamp(clock / 1000)  # the clock is the last stamp


def test_a_session_that_is_gone_fails_only_its_own_chunks():
    owner = make_user("batcher2")
    kept, _ = service.session_create(owner=owner)
    gone, _ = service.session_create(owner=owner)
    Session.objects.filter(pk=gone.pk).delete()
    outcomes = writes.submit_chunks([chunk(gone, "g", 0), chunk(kept, "k", 0)])
    assert isinstance(outcomes[0], errors.NotFound)
    writes.chunk_appended(outcomes[1], message_id="k", seq=0)
    assert [(r["messageId"], r["seq"]) for r in rows(kept)] == [("k", 0)]


def test_a_seq_written_twice_in_one_batch_is_refused_and_the_rest_lands():
    owner = make_user("batcher3")
    session, _ = service.session_create(owner=owner)
    outcomes = writes.submit_chunks([chunk(session, "m", 0), chunk(session, "m", 0)])
    writes.chunk_appended(outcomes[0], message_id="m", seq=0)
    with pytest.raises(errors.Conflict):
        writes.chunk_appended(outcomes[1], message_id="m", seq=0)
    assert [(r["messageId"], r["seq"]) for r in rows(session)] == [("m", 0)]
