"""The messages of a session stream, materialized from its ``chunk`` rows (WIRE.md 3).

``SessionState`` is a ``State`` that also groups the ``chunk`` rows by ``messageId`` and turns
each group into a ``Message``, with the rules of the reference client:

- A group whose lowest seq holds a ``whole-message`` (or the legacy ``user-message``) is that
  message, complete; its other chunks are ignored.
- Otherwise the chunks are folded in seq order (``parts.PartsFold``); the legacy
  ``message-start`` is skipped, ``message-end`` completes the message, as do ``done``, ``stop``
  and ``error``. The first of them sets ``status`` (``done``, ``stop``, ``error``; ``streaming``
  before), ``finish_reason``, ``usage`` and ``error``.
- Messages are ordered by the smallest ``createdAt`` of their chunks, then by arrival.

A ``chunk`` row is checked when it is applied (string ``messageId``, ``actorId`` and
``createdAt``, a known ``role``, an integer ``seq``, a key ``<messageId>:<seq>``, a ``chunk``
string holding a JSON object with a string ``type``): a bad one is refused with
``InvalidEvent``, which the ``Materializer`` counts and skips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from durable_sessions import jsontext
from durable_sessions.state.chunks import CHUNK_TYPE, ROLES, chunk_key
from durable_sessions.state.events import InvalidEvent
from durable_sessions.state.materialize import State
from durable_sessions.state.parts import PartsFold

WHOLE = ("whole-message", "user-message")
TERMINAL = {"done": "done", "stop": "stop", "error": "error", "message-end": "done"}


@dataclass
class Message:
    """One materialized message. Treat it as read-only: the state caches it."""

    id: str
    role: str
    actor_id: str
    parts: list[dict[str, Any]]
    created_at: str
    complete: bool
    status: str  # streaming, done, stop or error
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    last_seq: int = 0
    started_at: str = field(default="", repr=False)  # the smallest createdAt: the sort key

    def as_dict(self) -> dict[str, Any]:
        """The message as the session API returns it (camelCase keys)."""
        return {
            "id": self.id,
            "role": self.role,
            "actorId": self.actor_id,
            "parts": self.parts,
            "createdAt": self.created_at,
            "isComplete": self.complete,
            "status": self.status,
            "finishReason": self.finish_reason,
            "usage": self.usage,
            "error": self.error,
            "lastSeq": self.last_seq,
        }


Row = tuple[dict[str, Any], dict[str, Any]]  # the chunk row and its decoded chunk


def _error_of(chunk: dict[str, Any]) -> dict[str, Any]:
    error = chunk.get("error")
    if isinstance(error, dict):
        return {k: v for k, v in error.items() if k in ("message", "code")}
    return {"message": error if isinstance(error, str) else "error"}  # the reference's string


def materialize(message_id: str, rows: dict[int, Row]) -> Message:
    """The message made of ``rows`` (its chunk rows and decoded chunks, by seq; not empty)."""
    seqs = sorted(rows)
    started_at = min(row["createdAt"] for row, _ in rows.values())
    first, first_chunk = rows[seqs[0]]
    whole = first_chunk.get("message")
    if first_chunk["type"] in WHOLE and isinstance(whole, dict):
        role = whole.get("role")
        created = whole.get("createdAt")
        return Message(
            id=message_id,
            role=role if role in ROLES else first["role"],
            actor_id=first["actorId"],
            # The parts of the decoded chunk, which this state alone holds, as they are: a
            # Message is read-only (a deep copy per message cost a quarter of a cold read).
            parts=list(whole.get("parts", [])),
            created_at=created if isinstance(created, str) and created else first["createdAt"],
            complete=True,
            status="done",
            last_seq=seqs[-1],
            started_at=started_at,
        )
    fold = PartsFold()
    message = Message(
        id=message_id,
        role=first["role"],
        actor_id=first["actorId"],
        parts=fold.parts,
        created_at=first["createdAt"],
        complete=False,
        status="streaming",
        last_seq=seqs[-1],
        started_at=started_at,
    )
    for seq in seqs:
        chunk = rows[seq][1]
        kind = chunk["type"]
        if kind in WHOLE or kind == "message-start":
            continue
        fold.feed(chunk)
        if kind in TERMINAL and not message.complete:
            message.complete = True
            message.status = TERMINAL[kind]
            if kind == "done":
                reason, usage = chunk.get("finishReason"), chunk.get("usage")
                message.finish_reason = reason if isinstance(reason, str) else None
                message.usage = usage if isinstance(usage, dict) else None
            elif kind == "stop":
                reason = chunk.get("reason")
                message.finish_reason = reason if isinstance(reason, str) else "stop"
            elif kind == "error":
                message.error = _error_of(chunk)
    if message.complete:
        fold.finish()
    message.parts = fold.parts
    return message


def decode_chunk_row(key: str, value: dict[str, Any]) -> dict[str, Any]:
    """The decoded ``chunk`` of a chunk row; ``InvalidEvent`` saying what is wrong with the row
    when it does not have the shape of WIRE.md 3."""
    for field_name in ("messageId", "actorId", "chunk", "createdAt"):
        if not isinstance(value.get(field_name), str) or not value[field_name]:
            raise InvalidEvent(f"the chunk row {key!r} has no string {field_name}")
    seq = value.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidEvent(f"the chunk row {key!r} has a seq that is not an integer from 0")
    if value.get("role") not in ROLES:
        raise InvalidEvent(f"the chunk row {key!r} has the role {value.get('role')!r}")
    if key != chunk_key(value["messageId"], seq):
        raise InvalidEvent(f"the chunk row {key!r} is not keyed <messageId>:<seq>")
    try:
        chunk = jsontext.loads(value["chunk"])
    except ValueError:
        raise InvalidEvent(f"the chunk of the row {key!r} is not JSON") from None
    if not isinstance(chunk, dict) or not isinstance(chunk.get("type"), str):
        raise InvalidEvent(f"the chunk of the row {key!r} is not an object with a string type")
    if chunk["type"] in WHOLE:
        message = chunk.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("parts"), list):
            raise InvalidEvent(f"the {chunk['type']} of the row {key!r} has no message parts")
    return chunk


class _Group:
    """The chunk rows of one message, and its materialized form while they do not change."""

    __slots__ = ("arrival", "message", "rows")

    def __init__(self, arrival: int) -> None:
        self.arrival = arrival
        self.rows: dict[int, Row] = {}
        self.message: Message | None = None


class SessionState(State):
    """The state of a session stream, with its messages and the views the sessions layer uses
    (generations in flight, tool calls, approvals, seq counters, presence, agents)."""

    def __init__(self) -> None:
        super().__init__()
        self._groups: dict[str, _Group] = {}
        self._arrivals = 0  # messages seen, in order of their first chunk
        self._high: dict[str, int] = {}  # the highest seq seen per message, across resets
        self._decoded: tuple[str, dict[str, Any]] | None = None
        self._ordered: list[Message] | None = None

    # -- folding (State's hooks) ----------------------------------------------------------

    def check(self, type: str, key: str, value: dict[str, Any] | None) -> None:
        """Refuse a ``chunk`` row that does not have the shape of WIRE.md 3."""
        if type == CHUNK_TYPE and value is not None:
            self._decoded = (key, decode_chunk_row(key, value))

    def changed(
        self, type: str, key: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        """Keep the chunk groups in step with the ``chunk`` rows."""
        if type != CHUNK_TYPE:
            return
        if new is None:
            if old is not None:
                self._remove(old["messageId"], old["seq"])
        else:  # the key is <messageId>:<seq>, so a replaced row stays in its message
            decoded = self._decoded
            chunk = decoded[1] if decoded and decoded[0] == key else jsontext.loads(new["chunk"])
            self._add(new, chunk)
        self._decoded = None

    def cleared(self) -> None:
        """A reset: no message is left (the seq counters stay)."""
        self._groups.clear()
        self._ordered = None

    def _add(self, row: dict[str, Any], chunk: dict[str, Any]) -> None:
        message_id, seq = row["messageId"], row["seq"]
        group = self._groups.get(message_id)
        if group is None:
            group = self._groups[message_id] = _Group(self._arrivals)
            self._arrivals += 1
        group.rows[seq] = (row, chunk)
        group.message = None
        self._ordered = None
        if seq > self._high.get(message_id, -1):
            self._high[message_id] = seq

    def _remove(self, message_id: str, seq: int) -> None:
        group = self._groups.get(message_id)
        if group is None or group.rows.pop(seq, None) is None:
            return
        if not group.rows:
            del self._groups[message_id]
        group.message = None
        self._ordered = None

    # -- snapshots ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The rows and txids, plus the messages' arrival order and seq counters."""
        data = super().snapshot()
        data["messages"] = {
            "arrival": {message_id: group.arrival for message_id, group in self._groups.items()},
            "arrivals": self._arrivals,
            "high": dict(self._high),
        }
        return data

    def restored(self, data: dict[str, Any]) -> None:
        """Rebuild the chunk groups from the rows and take back their arrival order."""
        extra = data.get("messages")
        if not isinstance(extra, dict):
            raise ValueError("not a session state snapshot: messages is missing")
        arrival, arrivals, high = extra.get("arrival"), extra.get("arrivals"), extra.get("high")
        if not (isinstance(arrival, dict) and isinstance(arrivals, int) and isinstance(high, dict)):
            raise ValueError("not a session state snapshot: arrival, arrivals or high is wrong")
        for key, row in self.rows(CHUNK_TYPE).items():
            chunk = decode_chunk_row(key, row)
            group = self._groups.get(row["messageId"])
            if group is None:
                group = self._groups[row["messageId"]] = _Group(arrival.get(row["messageId"], 0))
            group.rows[row["seq"]] = (row, chunk)
        self._arrivals = arrivals
        self._high = dict(high)

    # -- messages -------------------------------------------------------------------------

    def messages(self) -> list[Message]:
        """Every message, ordered by the smallest ``createdAt`` of its chunks, then arrival."""
        if self._ordered is None:
            for message_id, group in self._groups.items():
                if group.message is None:
                    group.message = materialize(message_id, group.rows)
            groups = sorted(
                self._groups.values(),
                key=lambda group: (group.message.started_at, group.arrival),  # type: ignore[union-attr]
            )
            self._ordered = [group.message for group in groups]  # type: ignore[misc]
        return list(self._ordered)

    def message(self, message_id: str) -> Message | None:
        """The message ``message_id``, or None."""
        group = self._groups.get(message_id)
        if group is None:
            return None
        if group.message is None:
            group.message = materialize(message_id, group.rows)
        return group.message

    def active_generations(self) -> list[str]:
        """The ids of the assistant messages that are not complete, in message order."""
        return [m.id for m in self.messages() if m.role == "assistant" and not m.complete]

    def find_tool_call(self, tool_call_id: str) -> str | None:
        """The id of the message holding the tool call ``tool_call_id``, or None."""
        for message in self.messages():
            for part in message.parts:
                if part.get("type") == "tool-call" and part.get("id") == tool_call_id:
                    return message.id
        return None

    def find_approval(self, approval_id: str) -> tuple[str, int] | None:
        """``(message id, next seq)`` of the message whose tool call asked for the approval
        ``approval_id`` (where its ``approval-response`` goes), or None."""
        for message in self.messages():
            for part in message.parts:
                approval = part.get("approval")
                if (
                    part.get("type") == "tool-call"
                    and isinstance(approval, dict)
                    and approval.get("id") == approval_id
                ):
                    return message.id, self.next_seq(message.id)
        return None

    def next_seq(self, message_id: str) -> int:
        """The seq the next chunk of ``message_id`` takes: one more than the highest seen,
        also before a reset this state read (0 for a message it never saw)."""
        return self._high.get(message_id, -1) + 1

    def presence(self) -> dict[str, dict[str, Any]]:
        """The ``presence`` rows, by ``<actorId>:<deviceId>``."""
        return self.rows("presence")

    def agents(self) -> dict[str, dict[str, Any]]:
        """The ``agent`` rows, by agentId."""
        return self.rows("agent")
