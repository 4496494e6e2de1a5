"""The state layer: State Protocol events on JSON streams, and folding them into state.

Built on the public ``durable_sessions.streams`` API only. The edge the sessions layer imports:

- events (``events.py``): ``change``, ``insert``, ``update``, ``upsert``, ``delete``,
  ``control``, ``validate``, ``is_control``, ``InvalidEvent``;
- the fold (``materialize.py``): ``State`` and ``Materializer`` (catch-up from a checkpoint);
- the session stream (``messages.py``, ``parts.py``): ``SessionState``, ``Message``,
  ``materialize``;
- the server's own chunk rows (``chunks.py``): ``chunk_row``, ``chunk_event``, ``chunk_key``,
  ``whole_message``, ``tool_result_message``, ``tool_result_part``, ``stop_chunk``,
  ``error_chunk``, ``approval_response``, ``text_parts``, ``timestamp``.
"""

from durable_sessions.state.chunks import (
    CHUNK_TYPE,
    ROLES,
    approval_response,
    chunk_event,
    chunk_key,
    chunk_row,
    error_chunk,
    stop_chunk,
    text_parts,
    timestamp,
    tool_result_message,
    tool_result_part,
    whole_message,
)
from durable_sessions.state.events import (
    CONTROLS,
    OPERATIONS,
    PRIMER_KEY,
    InvalidEvent,
    change,
    control,
    delete,
    insert,
    is_control,
    reset_events,
    update,
    upsert,
    validate,
)
from durable_sessions.state.materialize import Materializer, State
from durable_sessions.state.messages import Message, SessionState, decode_chunk_row, materialize
from durable_sessions.state.parts import PartsFold

__all__ = [
    "CHUNK_TYPE",
    "CONTROLS",
    "OPERATIONS",
    "PRIMER_KEY",
    "ROLES",
    "InvalidEvent",
    "Materializer",
    "Message",
    "PartsFold",
    "SessionState",
    "State",
    "approval_response",
    "change",
    "chunk_event",
    "chunk_key",
    "chunk_row",
    "control",
    "decode_chunk_row",
    "delete",
    "error_chunk",
    "insert",
    "is_control",
    "materialize",
    "reset_events",
    "stop_chunk",
    "text_parts",
    "timestamp",
    "tool_result_message",
    "tool_result_part",
    "update",
    "upsert",
    "validate",
    "whole_message",
]
