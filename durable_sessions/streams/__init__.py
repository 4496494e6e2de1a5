"""The streams layer: a durable, offset-addressed log and the Durable Streams protocol.

The Python API (see ``store.py``): ``create``/``acreate``, ``fork``/``afork``,
``append``/``aappend``, ``append_json``/``aappend_json``, ``close``/``aclose``,
``delete``/``adelete``, ``read``/``aread``, ``info``/``ainfo`` and ``subscribe``.
"""

from durable_sessions.streams.store import (
    aappend,
    aappend_json,
    aclose,
    acreate,
    adelete,
    afork,
    ainfo,
    append,
    append_json,
    aread,
    close,
    create,
    delete,
    fork,
    info,
    read,
    subscribe,
)

__all__ = [
    "aappend",
    "aappend_json",
    "aclose",
    "acreate",
    "adelete",
    "afork",
    "ainfo",
    "append",
    "append_json",
    "aread",
    "close",
    "create",
    "delete",
    "fork",
    "info",
    "read",
    "subscribe",
]
