"""JSON bodies and messages: encoding, batches, and the nesting limit (MAX_JSON_DEPTH)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_sessions.streams.content import (
    dump_message,
    json_payload,
    nests_deeper,
    parse_json_body,
    split_messages,
)
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


# -- nesting depth (MAX_JSON_DEPTH) ---------------------------------------------------------


def depth(value) -> int:
    """The nesting of a Python value, the plain recursive way."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def nested(levels: int, inner: str = "1") -> str:
    """JSON text of ``levels`` arrays around ``inner``."""
    return "[" * levels + inner + "]" * levels


def nested_value(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# Text in which quotes, backslashes and brackets make the string scanning hard.
tricky_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\aé\u2028', max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=4), children, max_size=3)
    ),
    max_leaves=30,
)


@given(tricky_values, st.integers(0, 12), st.booleans())
def test_the_depth_scan_agrees_with_the_parsed_value(value, limit, ensure_ascii):
    text = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    assert nests_deeper(text, limit) == (depth(value) > limit)


def test_a_deeply_nested_body_is_refused_before_the_parser_recurses():
    body = ("[" * 100_000 + "]" * 100_000).encode()  # 200 KB: RecursionError in json.loads
    with pytest.raises(BadRequest) as refused:
        parse_json_body(body, allow_empty_array=False)
    assert refused.value.code == "json_too_deep"
    objects = ('{"a":' * 50_000 + "1" + "}" * 50_000).encode()
    with pytest.raises(BadRequest) as refused:
        parse_json_body(objects, allow_empty_array=False)
    assert refused.value.code == "json_too_deep"


def test_a_message_may_nest_max_json_depth_levels_and_a_flattened_array_one_more():
    assert parse_json_body(nested(129).encode(), allow_empty_array=False).count == 1
    assert parse_json_body(b"  \n" + nested(129).encode(), allow_empty_array=False).count == 1
    for too_deep in (nested(130), '{"a":' + nested(128) + "}", " " + nested(130)):
        with pytest.raises(BadRequest) as refused:
            parse_json_body(too_deep.encode(), allow_empty_array=False)
        assert refused.value.code == "json_too_deep", too_deep[:10]
    assert parse_json_body(('{"a":' + nested(127) + "}").encode(), allow_empty_array=False)


def test_brackets_inside_strings_are_not_levels():
    text = json.dumps(["[" * 1000, {"k": "\\" + "{" * 500 + '"'}]).encode()
    assert parse_json_body(text, allow_empty_array=False).count == 2


def test_the_limit_is_a_setting(settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "MAX_JSON_DEPTH": 3}
    assert parse_json_body(nested(4).encode(), allow_empty_array=False).count == 1
    with pytest.raises(BadRequest):
        parse_json_body(nested(5).encode(), allow_empty_array=False)
    assert json_payload([nested_value(3)]).count == 1
    with pytest.raises(BadRequest):
        json_payload([1, nested_value(4)])


def test_python_values_too_deep_to_encode_or_past_the_limit_are_refused():
    for value in (nested_value(129), nested_value(100_000), {"a": nested_value(128)}):
        with pytest.raises(BadRequest) as refused:
            json_payload([value])
        assert refused.value.code == "json_too_deep"
        with pytest.raises(BadRequest) as refused:
            json_payload(["fine", value])
        assert refused.value.code == "json_too_deep"
    assert json_payload([nested_value(128), "x"]).count == 2


def test_utf16_and_utf32_bodies_are_measured_as_what_they_decode_to():
    for encoding in ("utf-16", "utf-16-le", "utf-32"):
        text = json.dumps(["孛[" * 200, nested_value(128)], ensure_ascii=False)
        assert parse_json_body(text.encode(encoding), allow_empty_array=False).count == 2
        with pytest.raises(BadRequest) as refused:
            parse_json_body(nested(300).encode(encoding), allow_empty_array=False)
        assert refused.value.code == "json_too_deep"


def test_an_entry_stored_too_deep_to_parse_cannot_be_split_but_fails_cleanly():
    with pytest.raises(BadRequest) as refused:
        split_messages(nested(100_000).encode())
    assert refused.value.code == "json_too_deep"
