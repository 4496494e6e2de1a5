"""Building and checking State Protocol events (durable_sessions/state/events.py)."""

from __future__ import annotations

import json

import pytest

from durable_sessions import state
from durable_sessions.state import InvalidEvent


def test_builders_make_the_shapes_of_the_state_protocol():
    assert state.insert("user", "1", {"name": "Alice"}, txid="t1") == {
        "type": "user",
        "key": "1",
        "value": {"name": "Alice"},
        "headers": {"operation": "insert", "txid": "t1"},
    }
    assert state.update("user", "1", {"name": "A"}, old_value={"name": "Alice"}) == {
        "type": "user",
        "key": "1",
        "value": {"name": "A"},
        "old_value": {"name": "Alice"},
        "headers": {"operation": "update"},
    }
    assert state.upsert("p", "k", {}, timestamp="2025-01-15T10:30:00Z")["headers"] == {
        "operation": "upsert",
        "timestamp": "2025-01-15T10:30:00Z",
    }
    assert state.delete("user", "1", txid="t2") == {
        "type": "user",
        "key": "1",
        "headers": {"operation": "delete", "txid": "t2"},
    }
    assert state.control("reset") == {"headers": {"control": "reset"}}
    assert state.control("snapshot-end", offset="0000000000000001_0000000000000002") == {
        "headers": {"control": "snapshot-end", "offset": "0000000000000001_0000000000000002"}
    }


def test_every_built_event_is_json_and_valid():
    events = [
        state.insert("a", "b", {"x": [1, 2.5, None, True, {"y": "z"}]}),
        state.delete("a", "b"),
        state.control("snapshot-start"),
    ]
    for event in events:
        assert state.validate(json.loads(json.dumps(event))) == event


def test_is_control():
    assert state.is_control(state.control("reset"))
    assert not state.is_control(state.insert("a", "b", {}))
    assert not state.is_control("reset")
    assert not state.is_control({"headers": "control"})


BAD_EVENTS = [
    ([], "an event is a JSON object, got list"),
    (None, "an event is a JSON object, got null"),
    ({"type": "a", "key": "b", "value": {}}, "has no headers"),
    ({"type": "a", "key": "b", "value": {}, "headers": "insert"}, "headers of type str"),
    ({"type": "a", "key": "b", "value": {}, "headers": {}}, "neither headers.operation"),
    (
        {"headers": {"operation": "insert", "control": "reset"}},
        "either headers.operation or headers.control",
    ),
    ({"type": "a", "key": "b", "value": {}, "headers": {"operation": "merge"}}, "'merge'"),
    ({"key": "b", "value": {}, "headers": {"operation": "insert"}}, "type must be a non-empty"),
    ({"type": "", "key": "b", "value": {}, "headers": {"operation": "insert"}}, "empty string"),
    ({"type": "a", "key": 1, "value": {}, "headers": {"operation": "insert"}}, "got int"),
    ({"type": "a", "key": "b", "headers": {"operation": "insert"}}, "has no value"),
    ({"type": "a", "key": "b", "value": "x", "headers": {"operation": "update"}}, "a str value"),
    ({"type": "a", "key": "b", "value": None, "headers": {"operation": "upsert"}}, "null value"),
    ({"type": "a", "key": "b", "value": [1], "headers": {"operation": "insert"}}, "list value"),
    ({"type": "a", "key": "b", "value": 3, "headers": {"operation": "delete"}}, "object or null"),
    (
        {"type": "a", "key": "b", "value": {}, "headers": {"operation": "insert", "txid": ""}},
        "headers.txid must be a non-empty string",
    ),
    (
        {"type": "a", "key": "b", "value": {}, "headers": {"operation": "insert", "txid": 7}},
        "headers.txid",
    ),
    (
        {"type": "a", "key": "b", "value": {}, "headers": {"operation": "insert", "timestamp": 1}},
        "RFC 3339 string",
    ),
    (
        {
            "type": "a",
            "key": "b",
            "value": {},
            "headers": {"operation": "insert", "timestamp": "yesterday"},
        },
        "not an RFC 3339 timestamp",
    ),
    (
        {
            "type": "a",
            "key": "b",
            "value": {},
            "headers": {"operation": "insert", "timestamp": "2025-01-15T10:30:00"},
        },
        "not an RFC 3339 timestamp",  # no offset
    ),
    ({"headers": {"control": "truncate"}}, "headers.control must be one of"),
    ({"headers": {"control": "reset", "offset": 5}}, "headers.offset must be a non-empty"),
]


@pytest.mark.parametrize(("event", "message"), BAD_EVENTS)
def test_validate_refuses_what_streamdb_would_choke_on_and_says_why(event, message):
    with pytest.raises(InvalidEvent) as caught:
        state.validate(event)
    assert message in str(caught.value)


def test_the_event_names_the_row_when_it_can():
    with pytest.raises(InvalidEvent, match=r"type='chunk', key='m:0'"):
        state.validate(
            {"type": "chunk", "key": "m:0", "value": "x", "headers": {"operation": "insert"}}
        )


BAD_BUILDS = [
    (lambda: state.change("a", "b", {}, operation="replace"), "headers.operation"),
    (lambda: state.insert("", "b", {}), "type must be a non-empty string"),
    (lambda: state.insert("a", "b", None), "has a null value"),  # type: ignore[arg-type]
    (lambda: state.insert("a", "b", {"x": {1, 2}}), "a set, which is not a JSON value"),
    (lambda: state.insert("a", "b", {"x": float("nan")}), "JSON cannot represent"),
    (lambda: state.insert("a", "b", {1: "x"}), "a key 1 that is not a string"),
    (lambda: state.update("a", "b", {}, old_value={"x": object()}), "the old_value of"),
    (lambda: state.insert("a", "b", {}, txid=""), "headers.txid"),
    (lambda: state.insert("a", "b", {}, timestamp="now"), "RFC 3339"),
    (lambda: state.control("stop"), "headers.control must be one of"),
    (lambda: state.control("reset", offset=""), "headers.offset"),
]


@pytest.mark.parametrize(("build", "message"), BAD_BUILDS)
def test_builders_refuse_bad_parts(build, message):
    with pytest.raises(InvalidEvent) as caught:
        build()
    assert message in str(caught.value)


def test_invalid_event_is_a_value_error():
    assert issubclass(InvalidEvent, ValueError)


def test_a_reset_streamdb_applies_primes_each_collection_then_deletes_every_row():
    from durable_sessions import state

    events = state.reset_events([("chunk", "m:0"), ("agent", "a")], types=["presence"])
    assert events[:3] == [
        state.delete("presence", state.PRIMER_KEY),
        state.delete("chunk", state.PRIMER_KEY),
        state.delete("agent", state.PRIMER_KEY),
    ]
    assert events[3] == {"headers": {"control": "reset"}}
    assert events[4:] == [state.delete("chunk", "m:0"), state.delete("agent", "a")]
    folded = state.State()
    folded.apply(state.insert("chunk", "m:0", {"x": 1}))
    folded.apply_all(events)
    assert folded.rows("chunk") == {}
