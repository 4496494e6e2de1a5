"""Encoding JSON messages: a batch encoded at once stores exactly what one-by-one would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_sessions.streams.content import dump_message, json_payload
from durable_sessions.streams.errors import BadRequest

# Any JSON value, with text that may hold lone surrogates, line separators and non-ASCII.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec=None, exclude_categories=())),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.lists(json_values, min_size=1, max_size=8))
def test_a_batch_is_its_messages_texts_joined_by_commas(messages):
    payload = json_payload(messages)
    assert payload.count == len(messages)
    assert payload.data == b",".join(dump_message(message) for message in messages)


def test_a_lone_surrogate_is_escaped_in_its_own_message_only():
    assert json_payload(["\ud800", "é"]).data == '"\\ud800","é"'.encode()


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), object()])
def test_a_value_json_cannot_hold_is_refused(bad):
    with pytest.raises(BadRequest) as refused:
        json_payload([1, bad])
    assert refused.value.code == "invalid_json"


def test_no_messages_make_no_entry():
    assert json_payload([]) is None
