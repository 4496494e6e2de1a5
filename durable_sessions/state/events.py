"""Change and control events of the State Protocol: building them and checking them.

A change event says what happened to one row, ``(type, key)``::

    {"type": "chunk", "key": "m1:0", "value": {...}, "headers": {"operation": "insert"}}

and a control event steers the reader (``snapshot-start``, ``snapshot-end``, ``reset``)::

    {"headers": {"control": "reset"}}

The builders (``change``, ``insert``, ``update``, ``upsert``, ``delete``, ``control``) return
events that are already checked; ``validate`` checks one read from a stream. Both refuse, with
``InvalidEvent``, every shape the public ``@durable-streams/state`` client (StreamDB) would throw
on and stop reading at: no ``headers``, an unknown operation, a change without a string ``type``
and ``key``, a value that is not a JSON object (StreamDB requires objects for its collections).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

OPERATIONS = ("insert", "update", "upsert", "delete")
CONTROLS = ("snapshot-start", "snapshot-end", "reset")


class InvalidEvent(ValueError):
    """An event that does not have the State Protocol's shape; the message says what is wrong."""


def _where(event: dict[str, Any]) -> str:
    kind, key = event.get("type"), event.get("key")
    if isinstance(kind, str) and isinstance(key, str):
        return f" (type={kind[:60]!r}, key={key[:80]!r})"
    return ""


def _name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check_json(value: object, where: str, depth: int = 0) -> None:
    """Refuse what JSON cannot hold (sets, NaN, non-string keys, objects), so that a built
    event is refused here and not by the append that would write it."""
    if depth > 256:
        raise InvalidEvent(f"{where} is nested more than 256 levels deep")
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEvent(f"{where} holds {value!r}, which JSON cannot represent")
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(item, where, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEvent(f"{where} has a key {key!r} that is not a string")
            _check_json(item, where, depth + 1)
        return
    raise InvalidEvent(f"{where} holds a {type(value).__name__}, which is not a JSON value")


def _check_timestamp(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"headers.timestamp must be an RFC 3339 string, got {_name(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in value.upper():
        raise InvalidEvent(f"headers.timestamp {value[:40]!r} is not an RFC 3339 timestamp")


def _validate_control(event: dict[str, Any], headers: dict[str, Any]) -> dict[str, Any]:
    kind = headers["control"]
    if kind not in CONTROLS:
        raise InvalidEvent(f"headers.control must be one of {', '.join(CONTROLS)}, got {kind!r}")
    offset = headers.get("offset")
    if "offset" in headers and (not isinstance(offset, str) or not offset):
        raise InvalidEvent(f"headers.offset must be a non-empty string, got {_name(offset)}")
    return event


def validate(event: object) -> dict[str, Any]:
    """Return ``event`` when it is a valid change or control event; raise ``InvalidEvent``
    saying what is wrong otherwise.

    Change events: ``type`` and ``key`` non-empty strings; ``headers.operation`` one of
    ``insert``, ``update``, ``upsert``, ``delete``; ``value`` a JSON object (absent or null only
    on a delete); ``headers.txid`` a non-empty string and ``headers.timestamp`` an RFC 3339 one
    when present. Control events: ``headers.control`` one of ``snapshot-start``,
    ``snapshot-end``, ``reset``; ``headers.offset`` a non-empty string when present.
    """
    if not isinstance(event, dict):
        raise InvalidEvent(f"an event is a JSON object, got {_name(event)}")
    headers = event.get("headers")
    if not isinstance(headers, dict):
        problem = "has no headers" if headers is None else f"has headers of type {_name(headers)}"
        raise InvalidEvent(f"the event{_where(event)} {problem}: every event needs an object")
    if "operation" in headers and "control" in headers:
        raise InvalidEvent("an event has either headers.operation or headers.control, not both")
    if "control" in headers:
        return _validate_control(event, headers)
    if "operation" not in headers:
        raise InvalidEvent(
            f"the event{_where(event)} has neither headers.operation nor headers.control"
        )
    operation = headers["operation"]
    if operation not in OPERATIONS:
        raise InvalidEvent(
            f"headers.operation must be one of {', '.join(OPERATIONS)}, got {operation!r}"
        )
    for field in ("type", "key"):
        value = event.get(field)
        if not isinstance(value, str) or not value:
            what = "an empty string" if value == "" else _name(value)
            raise InvalidEvent(f"a change event's {field} must be a non-empty string, got {what}")
    value = event.get("value")
    if operation == "delete":
        if value is not None and not isinstance(value, dict):
            raise InvalidEvent(f"a delete's value must be an object or null{_where(event)}")
    elif not isinstance(value, dict):
        missing = "has no value" if "value" not in event else f"has a {_name(value)} value"
        raise InvalidEvent(f"an {operation}{_where(event)} {missing}: values are JSON objects")
    if "txid" in headers and (not isinstance(headers["txid"], str) or not headers["txid"]):
        raise InvalidEvent(f"headers.txid must be a non-empty string, got {headers['txid']!r}")
    if "timestamp" in headers:
        _check_timestamp(headers["timestamp"])
    return event


def is_control(event: object) -> bool:
    """Whether ``event`` is a control event (``headers.control`` is set)."""
    return (
        isinstance(event, dict)
        and isinstance(event.get("headers"), dict)
        and "control" in event["headers"]
    )


def change(
    type: str,
    key: str,
    value: dict[str, Any] | None,
    *,
    operation: str,
    txid: str | None = None,
    old_value: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A checked change event of ``operation`` on the row ``(type, key)``.

    ``txid`` goes into ``headers.txid`` (StreamDB's ``awaitTxId`` waits for it); ``value`` is
    left out of a delete when it is None. ``InvalidEvent`` for any bad part, including values
    JSON cannot hold.
    """
    headers: dict[str, Any] = {"operation": operation}
    if txid is not None:
        headers["txid"] = txid
    if timestamp is not None:
        headers["timestamp"] = timestamp
    event: dict[str, Any] = {"type": type, "key": key}
    if value is not None or operation != "delete":
        event["value"] = value
    if old_value is not None:
        event["old_value"] = old_value
    event["headers"] = headers
    validate(event)
    _check_json(value, f"the value of {type!r} {key!r}")
    _check_json(old_value, f"the old_value of {type!r} {key!r}")
    return event


def insert(
    type: str,
    key: str,
    value: dict[str, Any],
    *,
    txid: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A checked ``insert`` of ``value`` at ``(type, key)``. See ``change``."""
    return change(type, key, value, operation="insert", txid=txid, timestamp=timestamp)


def update(
    type: str,
    key: str,
    value: dict[str, Any],
    *,
    txid: str | None = None,
    old_value: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A checked ``update``: ``value`` replaces the row at ``(type, key)``. See ``change``."""
    return change(
        type, key, value, operation="update", txid=txid, old_value=old_value, timestamp=timestamp
    )


def upsert(
    type: str,
    key: str,
    value: dict[str, Any],
    *,
    txid: str | None = None,
    old_value: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A checked ``upsert``: insert or replace the row at ``(type, key)``. See ``change``."""
    return change(
        type, key, value, operation="upsert", txid=txid, old_value=old_value, timestamp=timestamp
    )


def delete(
    type: str,
    key: str,
    *,
    txid: str | None = None,
    old_value: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A checked ``delete`` of the row at ``(type, key)`` (without a value). See ``change``."""
    return change(
        type, key, None, operation="delete", txid=txid, old_value=old_value, timestamp=timestamp
    )


def control(kind: str, *, offset: str | None = None) -> dict[str, Any]:
    """A checked control event: ``snapshot-start``, ``snapshot-end`` or ``reset``.

    A control event carries no txid: StreamDB only collects txids from change events.
    """
    headers: dict[str, Any] = {"control": kind}
    if offset is not None:
        headers["offset"] = offset
    return validate({"headers": headers})


# A key no row of the session stream has (a chunk key ends in its seq, a presence key starts
# with an actorId, agent ids hold no colon): deleting it changes nothing, but opens the
# collection's sync transaction in StreamDB.
PRIMER_KEY = ":reset"


def reset_events(
    existing: Iterable[tuple[str, str]], *, types: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """A reset that the public StreamDB client (``@durable-streams/state`` 0.3.1) also applies:
    the events to append, in one entry, before the rows that the reset state starts with.

    StreamDB throws on a bare ``reset`` (it clears each collection outside a sync transaction)
    and stops reading, unless every collection already had a change in the same read batch; and
    even then its clearing is not committed, so the old rows stay. So the batch is: a delete of
    a key that never exists in each collection (``types``, and the types of ``existing``),
    which opens its transaction; the ``reset`` (which clears every reader that follows the
    protocol); then an explicit delete of every row in ``existing`` (what clears StreamDB).
    A reader starting after the reset sees deletes of rows it never had: harmless.
    """
    rows = list(existing)
    kinds = list(dict.fromkeys([*types, *(kind for kind, _ in rows)]))
    primers = [delete(kind, PRIMER_KEY) for kind in kinds]
    return [*primers, control("reset"), *(delete(kind, key) for kind, key in rows)]
