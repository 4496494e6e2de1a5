"""Folding events into state, and following a real stream from a checkpoint
(durable_sessions/state/materialize.py)."""

from __future__ import annotations

import json
import pickle
import uuid

import pytest

from durable_sessions import state, streams
from durable_sessions.state import InvalidEvent, Materializer, State


def test_insert_update_upsert_delete_and_reset():
    s = State()
    s.apply(state.insert("user", "1", {"name": "Alice"}))
    s.apply(state.insert("user", "2", {"name": "Bob"}))
    s.apply(state.update("user", "1", {"name": "Alice Smith"}))
    assert s.rows("user") == {"1": {"name": "Alice Smith"}, "2": {"name": "Bob"}}
    s.apply(state.upsert("user", "3", {"name": "Carol"}))
    s.apply(state.upsert("user", "3", {"name": "Carol K"}))
    assert s.get("user", "3") == {"name": "Carol K"}
    s.apply(state.delete("user", "2"))
    s.apply(state.delete("user", "404"))  # deleting what is not there changes nothing
    assert sorted(s.rows("user")) == ["1", "3"]
    s.apply(state.insert("flag", "dark", {"on": True}))
    assert s.types() == ["flag", "user"]
    s.apply(state.control("snapshot-start"))
    s.apply(state.control("snapshot-end"))
    assert s.types() == ["flag", "user"]
    s.apply(state.control("reset"))
    assert s.types() == [] and s.rows("user") == {} and s.get("user", "1") is None


def test_an_update_replaces_the_row_and_an_insert_of_a_known_key_replaces_it_too():
    s = State()
    s.apply(state.insert("p", "k", {"a": 1, "b": 2}))
    s.apply(state.update("p", "k", {"a": 3}))
    assert s.get("p", "k") == {"a": 3}
    s.apply(state.insert("p", "k", {"c": 4}))
    assert s.get("p", "k") == {"c": 4}
    s.apply(state.update("p", "new", {"d": 5}))  # an update of a missing row sets it
    assert s.get("p", "new") == {"d": 5}


def test_txids_are_collected_from_change_events_and_survive_a_reset():
    s = State()
    s.apply(state.insert("a", "1", {}, txid="t1"))
    s.apply(state.delete("a", "1", txid="t2"))
    s.apply({"headers": {"control": "reset"}, "txid": "t3"})
    assert s.txids == {"t1", "t2"}
    assert s.has_txid("t1") and not s.has_txid("t3")


def test_an_invalid_event_changes_nothing():
    s = State()
    s.apply(state.insert("a", "1", {"x": 1}))
    before = s.snapshot()
    for bad in (
        {"type": "a", "key": "1", "value": 5, "headers": {"operation": "insert", "txid": "t"}},
        [],
        "x",
    ):
        with pytest.raises(InvalidEvent):
            s.apply(bad)
    assert s.snapshot() == before and not s.has_txid("t")


def test_apply_all_counts_and_stops_at_the_first_invalid_event():
    s = State()
    assert s.apply_all([state.insert("a", str(n), {}) for n in range(3)]) == 3
    with pytest.raises(InvalidEvent):
        s.apply_all([state.insert("b", "1", {}), {"headers": {}}, state.insert("b", "2", {})])
    assert s.rows("b") == {"1": {}}


def test_a_snapshot_is_json_a_deep_copy_and_restores_an_equal_state():
    s = State()
    s.apply(state.insert("a", "1", {"nested": {"x": [1]}}, txid="t1"))
    snap = s.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    s.apply(state.update("a", "1", {"nested": {"x": [2]}}))
    assert snap["rows"]["a"]["1"] == {"nested": {"x": [1]}}
    restored = State.from_snapshot(json.loads(json.dumps(snap)))
    assert restored.get("a", "1") == {"nested": {"x": [1]}} and restored.txids == {"t1"}
    restored.apply(state.update("a", "1", {"nested": {"x": [2]}}))
    assert restored == s


@pytest.mark.parametrize(
    "bad", [None, [], {}, {"rows": [], "txids": []}, {"rows": {"a": 1}, "txids": []}]
)
def test_from_snapshot_refuses_what_is_not_a_snapshot(bad):
    with pytest.raises(ValueError, match="not a state snapshot"):
        State.from_snapshot(bad)


# -- a real stream ---------------------------------------------------------------------------


def _path() -> str:
    return f"state-test/{uuid.uuid4().hex[:12]}"


@pytest.mark.django_db(transaction=True)
def test_the_materializer_catches_up_then_applies_only_new_events():
    path = _path()
    streams.create(path, content_type="application/json")
    streams.append_json(
        path, [state.insert("user", "1", {"n": 1}), state.insert("user", "2", {"n": 2})]
    )
    streams.append_json(path, [state.update("user", "1", {"n": 11}, txid="tx")])
    folder = Materializer(path)
    assert folder.catch_up() == 3
    assert folder.reads == 1 and folder.up_to_date and not folder.closed
    assert folder.state.rows("user") == {"1": {"n": 11}, "2": {"n": 2}}
    assert folder.state.has_txid("tx")

    assert folder.catch_up() == 0  # nothing new: one read, nothing applied
    assert folder.reads == 2 and folder.applied == 3

    streams.append_json(path, [state.delete("user", "2"), state.insert("user", "3", {"n": 3})])
    assert folder.catch_up() == 2
    assert folder.applied == 5
    assert folder.state.rows("user") == {"1": {"n": 11}, "3": {"n": 3}}
    assert folder.offset == str(streams.info(path).tail)
    streams.delete(path)


@pytest.mark.django_db(transaction=True)
def test_catching_up_reads_as_many_times_as_the_batches_need():
    path = _path()
    streams.create(path, content_type="application/json")
    for n in range(10):
        streams.append_json(path, [state.insert("row", str(n), {"pad": "x" * 200})])
    folder = Materializer(path)
    assert folder.catch_up(max_bytes=500) == 10
    assert folder.reads > 3 and len(folder.state.rows("row")) == 10
    streams.delete(path)


@pytest.mark.django_db(transaction=True)
def test_invalid_events_on_the_stream_are_skipped_and_counted():
    path = _path()
    streams.create(path, content_type="application/json")
    streams.append_json(
        path,
        [
            state.insert("a", "1", {}),
            {"type": "a", "key": "2", "value": {}},  # no headers: StreamDB would stop here
            "not an event",
            {"type": "a", "key": "3", "value": "scalar", "headers": {"operation": "insert"}},
            state.insert("a", "4", {}),
        ],
    )
    folder = Materializer(path)
    assert folder.catch_up() == 2
    assert folder.skipped == 3 and sorted(folder.state.rows("a")) == ["1", "4"]
    again = Materializer.restore(path, folder.checkpoint())
    assert again.skipped == 3
    streams.delete(path)


@pytest.mark.django_db(transaction=True)
def test_a_checkpoint_restores_without_reading_from_the_start():
    path = _path()
    streams.create(path, content_type="application/json")
    streams.append_json(path, [state.insert("a", str(n), {"n": n}) for n in range(5)])
    folder = Materializer(path)
    folder.catch_up()
    checkpoint = folder.checkpoint()
    assert json.loads(json.dumps(checkpoint)) == checkpoint
    assert pickle.loads(pickle.dumps(checkpoint)) == checkpoint

    streams.append_json(path, [state.delete("a", "0"), state.insert("a", "5", {"n": 5})])
    resumed = Materializer.restore(path, json.loads(json.dumps(checkpoint)))
    assert resumed.catch_up() == 2  # only the two new events are applied
    assert resumed.reads == 1
    fresh = Materializer(path)
    assert fresh.catch_up() == 7
    assert resumed.state == fresh.state and resumed.offset == fresh.offset
    streams.delete(path)


@pytest.mark.django_db(transaction=True)
async def test_acatch_up_follows_the_stream_from_async_code():
    path = _path()
    await streams.acreate(path, content_type="application/json")
    await streams.aappend_json(path, [state.insert("a", "1", {})])
    folder = Materializer(path)
    assert await folder.acatch_up() == 1
    await streams.aappend_json(path, [state.insert("a", "2", {}), state.control("reset")])
    await streams.aappend_json(path, [state.insert("a", "3", {})])
    assert await folder.acatch_up(max_bytes=1) == 3
    assert folder.state.rows("a") == {"3": {}}
    await streams.adelete(path)


@pytest.mark.django_db(transaction=True)
def test_a_materializer_refuses_a_stream_that_is_not_json_and_a_missing_one():
    path = _path()
    streams.create(path, content_type="text/plain", data="hello")
    with pytest.raises(ValueError, match="is not a JSON stream"):
        Materializer(path).catch_up()
    streams.delete(path)
    with pytest.raises(streams.StreamNotFound):
        Materializer(_path()).catch_up()


def test_restore_refuses_a_checkpoint_of_another_stream_or_a_broken_one():
    good = Materializer("a/b").checkpoint()
    with pytest.raises(ValueError, match="taken on 'a/b', not on 'a/c'"):
        Materializer.restore("a/c", good)
    for broken in (
        None,
        {},
        {**good, "version": 99},
        {**good, "offset": 5},
        {**good, "offset": "x_y"},
    ):
        with pytest.raises(ValueError):
            Materializer.restore("a/b", broken)
    with pytest.raises(ValueError, match="not a state snapshot"):
        Materializer.restore("a/b", {**good, "state": {"rows": 1}})
