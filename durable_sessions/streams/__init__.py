"""The streams layer: a durable, offset-addressed log and the Durable Streams protocol.

This is the edge the layers above import. The Python API (``api.py``): ``create``/``acreate``,
``fork``/``afork``, ``append``/``aappend``, ``append_json``/``aappend_json``, ``close``/``aclose``,
``delete``/``adelete``, ``read``/``aread``, ``info``/``ainfo``, ``truncate``/``atruncate`` and
``retention``/``aretention`` (dropping old entries), ``submit_json`` (queue in order, without
waiting), ``subscribe`` (``live.py``), and ``revoke`` (``revocation.py``: every live reader of a
path, in every process, authorizes its user again now).
What they return (``Created``, ``Appended``, ``ReadResult``, ``StreamInfo``), the offsets
(``Position``, ``START``, ``parse_offset``), the errors (``StreamError`` and its subclasses, each
with its HTTP status) and ``is_json`` are exported beside them.
"""

from durable_sessions.streams.api import (
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
    aretention,
    atruncate,
    close,
    create,
    delete,
    fork,
    info,
    producer_state,
    read,
    retention,
    submit_json,
    truncate,
)
from durable_sessions.streams.commit import ProducerKey
from durable_sessions.streams.content import is_json
from durable_sessions.streams.errors import (
    BadRequest,
    CommitUnknown,
    Conflict,
    NotAuthenticated,
    PayloadTooLarge,
    PermissionDenied,
    StaleProducerEpoch,
    StreamClosed,
    StreamError,
    StreamGone,
    StreamNotFound,
    Unavailable,
)
from durable_sessions.streams.live import subscribe
from durable_sessions.streams.offsets import START, Position, parse_offset
from durable_sessions.streams.records import Appended, Created, ReadResult, StreamInfo
from durable_sessions.streams.retention import Retention
from durable_sessions.streams.revocation import revoke

__all__ = [
    "START",
    "Appended",
    "BadRequest",
    "CommitUnknown",
    "Conflict",
    "Created",
    "NotAuthenticated",
    "PayloadTooLarge",
    "PermissionDenied",
    "Position",
    "ProducerKey",
    "ReadResult",
    "Retention",
    "StaleProducerEpoch",
    "StreamClosed",
    "StreamError",
    "StreamGone",
    "StreamInfo",
    "StreamNotFound",
    "Unavailable",
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
    "aretention",
    "atruncate",
    "close",
    "create",
    "delete",
    "fork",
    "info",
    "is_json",
    "parse_offset",
    "producer_state",
    "read",
    "retention",
    "revoke",
    "submit_json",
    "subscribe",
    "truncate",
]
