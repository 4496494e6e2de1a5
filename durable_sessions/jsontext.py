"""Parsing and writing JSON text fast where the hot paths do it (every layer may import this).

``loads`` parses with orjson (several times faster than the standard library on the small
texts of chunk rows) and falls back to ``json.loads`` for the rare text orjson refuses, or would
read differently (an integer beyond 64 bits, which it turns into a float): the result is always
what ``json.loads`` would give, bar ``NaN``/``Infinity``, which JSON itself does not allow, and
text nested too deeply to follow: both are a ``ValueError``, never a ``RecursionError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


# orjson turns an integer beyond 64 bits into a float, silently: a text holding a run of 19
# digits or more (every integer of 18 digits fits) is parsed by the standard library instead.
# Found by mapping every digit to 0 and every other byte to 1 and looking for 19 zeros: four
# times faster than a regular expression, which cost a quarter of a session's cold fold.
_DIGITS_TO_ZERO = bytes(0 if 0x30 <= byte <= 0x39 else 1 for byte in range(256))
_LONG_RUN = bytes(19)


def loads(text: bytes | str) -> Any:
    """The value of the JSON ``text``; ``ValueError`` when it is not JSON (``NaN`` and the
    infinities included), or nests deeper than the parsers can follow."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        if _LONG_RUN in raw.translate(_DIGITS_TO_ZERO):
            raise orjson.JSONDecodeError("long digits", "", 0)
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses but JSON allows: an integer beyond 64 bits
            return json.loads(text, parse_constant=_refuse)
        except RecursionError:
            raise ValueError("the JSON text nests too deeply") from None


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON text; ``TypeError`` for what JSON cannot hold. NaN and the
    infinities, which JSON has no text for, are written ``null`` (orjson's rule): the values
    this writes come from JSON or from our own code, which holds none."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson's refusals (an integer beyond 64 bits...): the standard library
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()


def depth(value: Any) -> int:
    """How deeply ``value`` nests arrays and objects (a scalar: 0), counted without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
