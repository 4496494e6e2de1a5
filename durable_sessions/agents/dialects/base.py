"""What the dialect modules share: the chunk shapes they emit, typed reads of an event's fields,
the bookkeeping of tool calls streamed in parts, and the ``Dialect`` base class.

The chunks are the TanStack AI shapes that ``state.parts.PartsFold`` folds (WIRE.md 3). Two
choices follow from the fold: a ``content`` or ``thinking`` chunk carries ``delta`` only (the
coalescer adds ``content``, the text so far), and a ``tool_call`` chunk's ``arguments`` is the
new part of the arguments, since the fold appends them per ``toolCall.id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

Chunk = dict[str, Any]


class MalformedOutput(ValueError):
    """An agent event that is not a JSON object of its dialect, or whose dialect cannot be told.
    The message names the event and what is wrong with it; the runtime ends the generation with
    an ``error`` chunk of code ``malformed_output``."""


def kind_of(value: object) -> str:
    """The JSON kind of a value, for messages: ``a string``, ``null``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__


class Fields:
    """Typed reads of one event's fields: a wrong or missing one is ``MalformedOutput`` whose
    message starts with ``label``, the event (``vercel part 'text-delta'``)."""

    def __init__(self, event: dict[str, Any], label: str) -> None:
        self.event, self.label = event, label

    def fail(self, problem: str) -> NoReturn:
        """Raise ``MalformedOutput`` for this event."""
        raise MalformedOutput(f"{self.label}: {problem}")

    def maybe_text(self, key: str) -> str | None:
        """A string field, or None when it is absent or null."""
        value = self.event.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(f"{key} must be a string, got {kind_of(value)}")
        return value

    def text(self, key: str) -> str:
        """A string field that must be there."""
        value = self.maybe_text(key)
        if value is None:
            self.fail(f"{key} is missing (a string)")
        return value

    def maybe_object(self, key: str) -> dict[str, Any] | None:
        """An object field, or None when it is absent or null."""
        value = self.event.get(key)
        if value is not None and not isinstance(value, dict):
            self.fail(f"{key} must be an object, got {kind_of(value)}")
        return value

    def nested(self, key: str) -> Fields:
        """An object field that must be there, to read in turn."""
        value = self.maybe_object(key)
        if value is None:
            self.fail(f"{key} is missing (an object)")
        return Fields(value, f"{self.label} {key}")

    def maybe_int(self, key: str) -> int | None:
        """An integer field, or None when it is absent or null."""
        value = self.event.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            self.fail(f"{key} must be an integer, got {kind_of(value)}")
        return value

    def items(self, key: str) -> list[Fields]:
        """An array of objects (absent or null: none), each to read in turn."""
        values = self.event.get(key) or []
        if not isinstance(values, list):
            self.fail(f"{key} must be an array, got {kind_of(values)}")
        for value in values:
            if not isinstance(value, dict):
                self.fail(f"each of {key} must be an object, got {kind_of(value)}")
        return [Fields(value, f"{self.label} {key}[{n}]") for n, value in enumerate(values)]

    def input(self) -> object:
        """The ``input`` of a tool call: any JSON value, but it must be there."""
        if "input" not in self.event:
            self.fail("input is missing")
        return self.event["input"]


def content(delta: str) -> Chunk:
    """A text chunk."""
    return {"type": "content", "delta": delta}


def thinking(delta: str) -> Chunk:
    """A thinking (reasoning) chunk."""
    return {"type": "thinking", "delta": delta}


def done(finish_reason: str | None, usage: dict[str, int] | None = None) -> Chunk:
    """The terminal chunk of a finished reply; ``usage`` as TanStack names its counts."""
    chunk: Chunk = {"type": "done", "finishReason": finish_reason}
    if usage:
        chunk["usage"] = usage
    return chunk


def error(message: str, code: str | None = None) -> Chunk:
    """The terminal chunk of a failed reply: ``error`` is ``{message, code?}`` (WIRE.md 3)."""
    body: dict[str, str] = {"message": message}
    if code is not None:
        body["code"] = code
    return {"type": "error", "error": body}


def tool_result(call_id: str, output: object) -> Chunk:
    """A tool's result; ``content`` is a string, JSON-encoded unless the output is one."""
    return {"type": "tool_result", "toolCallId": call_id, "content": json_text(output)}


def json_text(value: object) -> str:
    """A value as the string a ``tool_result`` or ``arguments`` holds."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parsed(arguments: str) -> object:
    """Streamed arguments as a tool's input: the JSON they spell, else the text itself (a
    model's bad JSON is for the tool to report, not a broken stream)."""
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return arguments


@dataclass
class Call:
    """One tool call of a stream, as far as it has come."""

    name: str
    index: int
    arguments: str = ""
    input: object = None
    has_input: bool = False
    answered: bool = False


@dataclass
class Calls:
    """The tool calls of one stream, for dialects that send a call in parts: their order (the
    TanStack ``index``), names, arguments so far, inputs, and whether a result came."""

    calls: dict[str, Call] = field(default_factory=dict)
    last: str | None = None

    def start(self, call_id: str, name: str, arguments: str = "") -> Chunk:
        """The ``tool_call`` chunk that opens a call (or goes on with it, if it is known)."""
        call = self.calls.get(call_id)
        if call is None:
            call = self.calls[call_id] = Call(name, len(self.calls))
        call.arguments += arguments
        self.last = call_id
        return self._chunk(call_id, call, arguments)

    def append(self, call_id: str, delta: str, fields: Fields) -> Chunk:
        """The ``tool_call`` chunk for more arguments of a started call."""
        call = self.get(call_id, fields)
        call.arguments += delta
        return self._chunk(call_id, call, delta)

    def get(self, call_id: str, fields: Fields) -> Call:
        """A started call; ``MalformedOutput`` naming the event when there is none."""
        call = self.calls.get(call_id)
        if call is None:
            fields.fail(f"no tool call {call_id!r} was started")
        return call

    def answer(self, call_id: str) -> None:
        """A result came for the call (a result for an unknown call is still written)."""
        if call_id in self.calls:
            self.calls[call_id].answered = True

    def input_of(self, call: Call) -> object:
        """The call's input: as sent whole, else parsed from the streamed arguments."""
        return call.input if call.has_input else parsed(call.arguments)

    def finish_reason(self) -> str:
        """For dialects that send none: ``tool_calls`` while a call awaits its result."""
        pending = any(not call.answered for call in self.calls.values())
        return "tool_calls" if pending else "stop"

    @staticmethod
    def _chunk(call_id: str, call: Call, arguments: str) -> Chunk:
        function = {"name": call.name, "arguments": arguments}
        tool_call = {"id": call_id, "type": "function", "function": function}
        return {"type": "tool_call", "toolCall": tool_call, "index": call.index}


class Dialect:
    """One upstream dialect, one instance per reply: ``detect`` tells a first event of it by its
    shape, cheaply; ``feed`` translates one event (a JSON object) into chunks; ``finish`` gives
    what is still owed when the upstream stream ends."""

    name: ClassVar[str] = ""

    @classmethod
    def detect(cls, event: dict[str, Any]) -> bool:
        """Whether a first event looks like this dialect."""
        raise NotImplementedError(".detect() must be overridden")

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        """The chunks for one upstream event (empty chunks are dropped by the caller)."""
        raise NotImplementedError(".feed() must be overridden")

    def finish(self) -> list[Chunk]:
        """What is still owed at the end of the upstream stream."""
        return []
