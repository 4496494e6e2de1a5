"""Token deltas coalesced before they are written, so that a reply is tens of rows, not thousands.

Every token of an agent's reply would otherwise be a ``chunk`` row on the session stream: a
write, an event to every reader, a row to fold. ``Coalescer`` holds ``content`` and ``thinking``
deltas for up to ``interval`` seconds and writes them as one chunk; any other chunk (a tool
call, an approval, ``done``, ``error``, ``stop``) first writes what is held, then itself, so the
order of kinds on the stream is the order the agent sent them in.

It also writes each chunk's ``content``, the text so far (WIRE.md 3): for ``content``, the text
of the current text part, which starts again after a tool call; for ``thinking``, all the
thinking so far (a message has one thinking part).

Coalescing must never change the parts a reader folds (``state.parts.PartsFold``). Joining
deltas is safe while the fold's current text part is the one the ``content`` rule describes:
each chunk's ``content`` then continues the fold's text, and the fold appends the delta. The one
place it is not is just after a tool call, where the fold starts a new text part only if the
chunk's ``content`` does not continue the old part's text (a new part whose text begins with
the old one's reads as its continuation): there, where a chunk is cut changes what the fold
builds. So the coalescer keeps a shadow of the fold's text state and, while the two disagree,
writes each delta as it came (in practice: the first delta after a tool call, at once).
``tests/agents/test_coalesce.py`` checks the whole claim on random streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Chunk = dict[str, Any]
DELTA_TYPES = ("content", "thinking")


def starts_tool_call(chunk: Chunk) -> bool:
    """Whether the fold counts ``chunk`` as a tool call, after which a new text part starts
    (the test of ``PartsFold._tool_call``: a ``toolCall`` with a ``function`` and a string id)."""
    call = chunk.get("toolCall")
    return (
        chunk.get("type") == "tool_call"
        and isinstance(call, dict)
        and isinstance(call.get("function"), dict)
        and isinstance(call.get("id"), str)
    )


class Coalescer:
    """The chunks of one generation, in the order and grouping they are to be written.

    ``push`` each chunk as it comes and write what it returns; call ``flush`` when the clock
    reaches ``due()`` and at the end, and write what it returns. ``text`` is the text of the
    current text part so far, held deltas included."""

    def __init__(
        self, interval: float = 0.05, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be zero or more seconds, got {interval!r}")
        self.interval = interval
        self.text = ""
        self._thinking = ""
        self._clock = clock
        self._held: Chunk | None = None  # the delta chunk being joined, without content
        self._held_since = 0.0
        # the shadow of PartsFold's text state: its current text, and whether a tool call came
        # since that text part started
        self._fold_text = ""
        self._fold_after_tool = False

    def push(self, chunk: Chunk, *, hold: bool = False) -> list[Chunk]:
        """The chunks to write now. A ``content`` or ``thinking`` delta is held (nothing to
        write) unless the oldest held one is ``interval`` old (with ``hold``: held anyway, for
        a caller that pushes a backlog and then flushes when ``due()``); any other chunk first
        flushes what is held, then is written itself. A delta chunk without a non-empty
        ``delta`` adds nothing and is dropped."""
        kind = chunk.get("type")
        if kind not in DELTA_TYPES:
            out = self.flush()
            if starts_tool_call(chunk):
                self.text = ""
                self._fold_after_tool = True
            out.append(chunk)
            return out
        delta = chunk.get("delta")
        if not isinstance(delta, str) or not delta:
            return []
        out = self.flush() if self._held is not None and self._held["type"] != kind else []
        if kind == "content" and not self._fold_agrees():
            # the fold would read a joined chunk differently from the deltas one by one
            self.text += delta
            out.append(self._written({**chunk, "delta": delta}))
            return out
        if kind == "content":
            self.text += delta
        else:
            self._thinking += delta
        if self._held is None:
            self._held, self._held_since = {**chunk, "delta": delta}, self._clock()
        else:
            # the latest chunk's other fields (a TanStack timestamp), all the held text
            self._held = {**chunk, "delta": self._held["delta"] + delta}
        if not hold and self._clock() - self._held_since >= self.interval:
            out += self.flush()
        return out

    def flush(self) -> list[Chunk]:
        """What is held, to write now (nothing when nothing is held)."""
        held, self._held = self._held, None
        return [] if held is None else [self._written(held)]

    def due(self) -> float | None:
        """The clock time at which the held text must be flushed; None when nothing is held."""
        return None if self._held is None else self._held_since + self.interval

    def _fold_agrees(self) -> bool:
        # the fold's text, once what is held is written, is the current text part
        held = self._held["delta"] if self._held is not None else ""
        return self._fold_text + held == self.text

    def _written(self, chunk: Chunk) -> Chunk:
        """A delta chunk as written, with its ``content``; the fold's shadow follows it."""
        if chunk["type"] == "thinking":
            return {**chunk, "content": self._thinking}
        written = {**chunk, "content": self.text}
        self._fold(written["delta"], written["content"])
        return written

    def _fold(self, delta: str, content: str) -> None:
        # what PartsFold._content does with a chunk holding both fields and a non-empty delta
        previous = self._fold_text
        continues = content.startswith(previous) or previous.startswith(content)
        if self._fold_after_tool and previous and (len(content) < len(previous) or not continues):
            previous, self._fold_after_tool = "", False
        self._fold_text = previous + delta
