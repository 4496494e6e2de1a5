"""durable_sessions/jsontext.py: orjson where it can, the standard library's results always."""

from __future__ import annotations

import json

import pytest

from durable_sessions import jsontext


@pytest.mark.parametrize(
    "text",
    ['{"a": [1, 2.5, "é", null, true]}', "[]", '"x"', str(2**70), '{"big": ' + str(-(2**80)) + "}"],
)
def test_loads_gives_what_json_loads_gives(text):
    assert jsontext.loads(text) == json.loads(text)
    assert jsontext.loads(text.encode()) == json.loads(text)
    assert repr(jsontext.loads(text)) == repr(json.loads(text))  # 1.9e19 is not 19...01


@pytest.mark.parametrize("text", ["", "{", "[1,]", "nope", b"\xff"])
def test_loads_refuses_what_is_not_json_with_a_value_error(text):
    with pytest.raises(ValueError):
        jsontext.loads(text)


def test_dumps_is_compact_utf8_and_falls_back_for_big_integers():
    assert jsontext.dumps({"a": "é", "b": [1, None]}) == '{"a":"é","b":[1,null]}'.encode()
    assert json.loads(jsontext.dumps({"big": 2**70})) == {"big": 2**70}
    with pytest.raises(TypeError):
        jsontext.dumps({"s": {1, 2}})
    assert jsontext.dumps([float("nan"), float("inf")]) == b"[null,null]"


def test_depth_counts_without_recursion():
    assert jsontext.depth(5) == 0 and jsontext.depth([]) == 1 and jsontext.depth({"a": [1]}) == 2
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert jsontext.depth(deep) == 100_001


def test_loads_turns_recursion_into_a_value_error():
    with pytest.raises(ValueError):
        jsontext.loads("[" * 100_000 + "]" * 100_000)
