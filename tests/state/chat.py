"""A small writer of session-stream events for the state tests: chunk rows with increasing
createdAt, as the sessions layer writes them."""

from __future__ import annotations

from typing import Any

from durable_sessions import state

EPOCH = 1765606583.0


class Chat:
    """Builds ``chunk`` change events; ``clock`` advances one millisecond per chunk."""

    def __init__(self) -> None:
        self.clock = EPOCH
        self.seqs: dict[str, int] = {}

    def now(self) -> str:
        self.clock += 0.001
        return state.timestamp(self.clock)

    def chunk(
        self,
        message_id: str,
        chunk: dict[str, Any],
        *,
        role: str = "assistant",
        actor: str = "bot",
        seq: int | None = None,
        created_at: str | None = None,
        txid: str | None = None,
    ) -> dict[str, Any]:
        if seq is None:
            seq = self.seqs.get(message_id, 0)
        self.seqs[message_id] = max(self.seqs.get(message_id, 0), seq + 1)
        row = state.chunk_row(
            message_id,
            seq,
            actor_id=actor,
            role=role,
            chunk=chunk,
            created_at=created_at or self.now(),
        )
        return state.chunk_event(row, txid=txid)

    def user(
        self, message_id: str, text: str, *, actor: str = "alice", txid: str | None = None
    ) -> dict[str, Any]:
        created = self.now()
        chunk = state.whole_message(message_id, role="user", content=text, created_at=created)
        return self.chunk(
            message_id, chunk, role="user", actor=actor, created_at=created, txid=txid
        )

    def text(self, message_id: str, *words: str) -> list[dict[str, Any]]:
        """Content chunks with both delta and content (the text of the part so far)."""
        events, so_far = [], ""
        for word in words:
            so_far += word
            events.append(
                self.chunk(message_id, {"type": "content", "delta": word, "content": so_far})
            )
        return events


def fold(events: list[dict[str, Any]]) -> state.SessionState:
    s = state.SessionState()
    s.apply_all(events)
    return s


def dicts(s: state.SessionState) -> list[dict[str, Any]]:
    return [m.as_dict() for m in s.messages()]
