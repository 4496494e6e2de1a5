"""What an agent streams, normalised to the session's chunk shapes (WIRE.md 3 and 4).

An agent answers in one of four dialects: TanStack AI chunks (``tanstack.py``: our own shapes),
the Vercel AI SDK UI message stream (``vercel.py``), OpenAI Chat Completions streaming chunks
(``openai_chat.py``) or AG-UI events (``agui.py``). ``Normalizer`` tells which from the first
event, or is told, and turns each upstream event into the TanStack AI chunks that
``state.parts.PartsFold`` folds (``base.py`` says which shapes), ending with one ``done`` or
``error``; events after it are ignored. An event that is not a JSON object of its dialect is
``MalformedOutput``: the runtime logs it and ends the generation with an ``error`` of code
``malformed_output``, rather than drop text silently. The mapping tables and the detection
rules are in ``docs/agents-dialects.md``.
"""

from __future__ import annotations

from durable_sessions.agents.dialects.agui import AGUI
from durable_sessions.agents.dialects.base import Chunk, Dialect, MalformedOutput, kind_of
from durable_sessions.agents.dialects.openai_chat import OpenAIChat
from durable_sessions.agents.dialects.tanstack import TanStack
from durable_sessions.agents.dialects.vercel import Vercel

FORMATS = ("auto", "tanstack", "vercel", "openai", "agui")
TERMINAL_TYPES = ("done", "error")

# in the order of detection: OpenAI's and AG-UI's shapes cannot be confused with the others;
# TanStack before Vercel, which share tool-input-available (and error, told apart by its field)
DIALECTS: dict[str, type[Dialect]] = {
    dialect.name: dialect for dialect in (OpenAIChat, AGUI, TanStack, Vercel)
}


def detect(event: dict[str, object]) -> str | None:
    """The name of the dialect a first event is in, by its shape; None when it cannot be told."""
    return next((name for name, dialect in DIALECTS.items() if dialect.detect(event)), None)


class Normalizer:
    """One agent reply's upstream events, normalised: ``feed`` each event, then ``finish``.

    ``format`` is one of ``FORMATS``; with ``auto`` the dialect is told from the first event
    and ``format`` names it from then on. ``terminal`` is the ``done`` or ``error`` chunk
    emitted, after which events are ignored; it stays None for a stream that ends without one
    (the runtime decides what to write then)."""

    def __init__(self, format: str = "auto") -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        self.format = format
        self.terminal: Chunk | None = None
        self._dialect = None if format == "auto" else DIALECTS[format]()

    def feed(self, event: object) -> list[Chunk]:
        """The normalised chunks for one upstream event (maybe none). ``MalformedOutput`` when
        the event is not a JSON object of the dialect, or the first one's dialect is unknown."""
        if self.terminal is not None:
            return []
        if not isinstance(event, dict):
            raise MalformedOutput(f"an agent event must be a JSON object, got {kind_of(event)}")
        if self._dialect is None:
            name = detect(event)
            if name is None:
                shown = {key: event[key] for key in list(event)[:3]}
                raise MalformedOutput(
                    f"cannot tell the dialect of the first agent event {shown!r}: it is not "
                    "TanStack AI, Vercel AI SDK, OpenAI Chat Completions or AG-UI"
                )
            self.format, self._dialect = name, DIALECTS[name]()
        return self._emit(self._dialect.feed(event))

    def finish(self) -> list[Chunk]:
        """At the end of the upstream stream: what is still owed (the ``done`` of an OpenAI
        stream whose usage came last); [] when a terminal chunk was already emitted."""
        if self.terminal is not None or self._dialect is None:
            return []
        return self._emit(self._dialect.finish())

    def _emit(self, chunks: list[Chunk]) -> list[Chunk]:
        out = []
        for chunk in chunks:
            if chunk["type"] in ("content", "thinking") and not chunk["delta"]:
                continue  # an empty delta adds nothing and would cost a write
            out.append(chunk)
            if chunk["type"] in TERMINAL_TYPES:
                self.terminal = chunk
                break
        return out


__all__ = ["DIALECTS", "FORMATS", "Dialect", "MalformedOutput", "Normalizer", "detect"]
