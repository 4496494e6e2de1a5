"""Tests of durable_sessions/agents/coalesce.py: deltas are held and joined, other chunks flush
them, each written chunk carries ``content`` by WIRE.md 3's rule, and, on random streams,
folding the coalesced chunks gives the parts that folding every delta gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from durable_sessions.agents.coalesce import Coalescer
from durable_sessions.agents.dialects import Normalizer
from durable_sessions.state import PartsFold

Chunk = dict[str, Any]


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def content(delta: str) -> Chunk:
    return {"type": "content", "delta": delta}


def thinking(delta: str) -> Chunk:
    return {"type": "thinking", "delta": delta}


def tool_call(call_id: str, arguments: str = "") -> Chunk:
    function = {"name": "f", "arguments": arguments}
    return {"type": "tool_call", "toolCall": {"id": call_id, "function": function}, "index": 0}


def annotate(chunks: list[Chunk]) -> list[Chunk]:
    """The chunks as written one by one, uncoalesced: each ``content`` chunk with the text of
    the current text part so far (a tool call starts a new one), each ``thinking`` chunk with
    all the thinking so far; chunks without a delta are left out, as the coalescer drops them."""
    text = thinking_so_far = ""
    out = []
    for chunk in chunks:
        if chunk["type"] in ("content", "thinking"):
            if not chunk.get("delta"):
                continue
            if chunk["type"] == "content":
                text += chunk["delta"]
                chunk = {**chunk, "content": text}
            else:
                thinking_so_far += chunk["delta"]
                chunk = {**chunk, "content": thinking_so_far}
        elif chunk["type"] == "tool_call":
            text = ""
        out.append(chunk)
    return out


def fold(chunks: list[Chunk]) -> list[Chunk]:
    parts = PartsFold()
    for chunk in chunks:
        parts.feed(chunk)
    parts.finish()
    return parts.parts


def test_annotate_restarts_the_text_after_a_tool_call() -> None:
    chunks = annotate([content("Hi"), content(" there"), tool_call("c"), content("Done")])
    assert [chunk.get("content") for chunk in chunks] == ["Hi", "Hi there", None, "Done"]


def test_deltas_are_held_then_written_as_one_chunk_with_the_text_so_far() -> None:
    clock = Clock()
    coalescer = Coalescer(0.05, clock=clock)
    assert coalescer.due() is None
    assert coalescer.push(content("Hel")) == []
    assert coalescer.due() == 0.05
    clock.now = 0.01
    assert coalescer.push(content("lo")) == []
    assert coalescer.text == "Hello"
    assert coalescer.flush() == [{"type": "content", "delta": "Hello", "content": "Hello"}]
    assert coalescer.flush() == [] and coalescer.due() is None
    clock.now = 0.02
    assert coalescer.push(content(",")) == []
    clock.now = 0.07
    assert coalescer.push(content(" you")) == [
        {"type": "content", "delta": ", you", "content": "Hello, you"}
    ]


def test_any_other_chunk_flushes_first_and_a_tool_call_starts_a_new_text_part() -> None:
    coalescer = Coalescer(10, clock=Clock())
    assert coalescer.push(thinking("Hmm")) == []
    assert coalescer.push(thinking(", weather")) == []
    assert coalescer.push(content("Let me check.")) == [
        {"type": "thinking", "delta": "Hmm, weather", "content": "Hmm, weather"}
    ]
    call = tool_call("c1", "{}")
    assert coalescer.push(call) == [
        {"type": "content", "delta": "Let me check.", "content": "Let me check."},
        call,
    ]
    assert coalescer.text == ""
    # the first text after a tool call is written at once (the fold tells a new part by it)
    assert coalescer.push(content("Sunny")) == [
        {"type": "content", "delta": "Sunny", "content": "Sunny"}
    ]
    assert coalescer.push(content(", 20C")) == []
    assert coalescer.push(thinking(" more")) == [
        {"type": "content", "delta": ", 20C", "content": "Sunny, 20C"}
    ]
    done = {"type": "done", "finishReason": "stop"}
    assert coalescer.push(done) == [
        {"type": "thinking", "delta": " more", "content": "Hmm, weather more"},
        done,
    ]
    assert coalescer.push(content("")) == [] and coalescer.flush() == []


def test_a_zero_interval_writes_every_delta() -> None:
    coalescer = Coalescer(0, clock=Clock())
    assert coalescer.push(content("a")) == [{"type": "content", "delta": "a", "content": "a"}]
    assert coalescer.push(content("b")) == [{"type": "content", "delta": "b", "content": "ab"}]


def test_a_new_text_that_reads_as_the_old_one_goes_on_is_written_delta_by_delta() -> None:
    # after "ab" and a tool call, the new part "a", "b": joined, "ab" would read to the fold as
    # the old part going on; one by one, "a" starts a new part
    coalescer = Coalescer(10, clock=Clock())
    chunks = [content("ab"), tool_call("c"), content("a"), content("b")]
    written = [out for chunk in chunks for out in coalescer.push(chunk)] + coalescer.flush()
    assert fold(written) == fold(annotate(chunks))
    assert [chunk.get("content") for chunk in written] == ["ab", None, "a", "ab"]


def writes_of(deltas: int, *, timer: bool) -> int:
    clock = Clock()
    coalescer = Coalescer(0.05, clock=clock)
    writes = 0
    for step in range(deltas):
        clock.now = step * 0.01
        due = coalescer.due()
        if timer and due is not None and clock.now >= due:
            writes += len(coalescer.flush())
        writes += len(coalescer.push(content("tok ")))
    return writes + len(coalescer.flush())


def test_a_hundred_deltas_ten_ms_apart_are_about_twenty_writes() -> None:
    # the runtime flushes at due(): five deltas a write (less one where 0.01 steps round)
    assert 18 <= writes_of(100, timer=True) <= 20
    assert 15 <= writes_of(100, timer=False) <= 20  # only pushes: each write takes one more


def test_text_tool_text_through_the_normaliser_folds_to_three_parts() -> None:
    events = [
        {"type": "start"},
        {"type": "text-delta", "id": "t1", "delta": "Let me "},
        {"type": "text-delta", "id": "t1", "delta": "look."},
        {"type": "tool-input-available", "toolCallId": "c1", "toolName": "find", "input": {}},
        {"type": "tool-output-available", "toolCallId": "c1", "output": "42"},
        {"type": "text-delta", "id": "t2", "delta": "Let "},
        {"type": "text-delta", "id": "t2", "delta": "me see: 42."},
        {"type": "finish", "finishReason": "stop"},
    ]
    normalizer, coalescer = Normalizer(), Coalescer(10, clock=Clock())
    written = [
        out for event in events for chunk in normalizer.feed(event) for out in coalescer.push(chunk)
    ]
    parts = fold(written + coalescer.flush())
    assert [(part["type"], part.get("content")) for part in parts] == [
        ("text", "Let me look."),
        ("tool-call", None),
        ("tool-result", "42"),
        ("text", "Let me see: 42."),
    ]


# -- the property: coalescing never changes what the fold builds ------------------------------

# few, short texts: a new text part that begins like the last one (the case where cutting
# matters to the fold) must come up often
TEXT = st.sampled_from(["", "a", "b", "ab", "aa", "a b"])
OPS = st.one_of(
    st.tuples(st.just("content"), TEXT),
    st.tuples(st.just("thinking"), TEXT),
    st.tuples(st.just("tool"), st.sampled_from(["c1", "c2"]), st.text(alphabet="{}x", max_size=2)),
    st.tuples(st.just("done")),
    st.tuples(st.just("tick"), st.floats(min_value=0, max_value=0.1)),
    st.tuples(st.just("timer")),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(OPS, max_size=40), st.sampled_from([0.0, 0.02, 0.05, 1.0]))
def test_coalescing_never_changes_the_folded_parts(
    ops: list[tuple[Any, ...]], interval: float
) -> None:
    clock = Clock()
    coalescer = Coalescer(interval, clock=clock)
    pushed: list[Chunk] = []
    written: list[Chunk] = []
    for op in ops:
        if op[0] == "tick":
            clock.now += op[1]
            continue
        if op[0] == "timer":
            due = coalescer.due()
            if due is not None and clock.now >= due:
                written += coalescer.flush()
            continue
        if op[0] in ("content", "thinking"):
            chunk = {"type": op[0], "delta": op[1]}
        elif op[0] == "tool":
            chunk = tool_call(op[1], op[2])
        else:
            chunk = {"type": "done", "finishReason": "stop"}
        pushed.append(chunk)
        written += coalescer.push(chunk)
    written += coalescer.flush()
    one_by_one = annotate(pushed)

    assert fold(written) == fold(one_by_one)
    # nothing lost, nothing empty, nothing reordered across kinds
    for kind in ("content", "thinking"):
        deltas = [chunk["delta"] for chunk in written if chunk["type"] == kind]
        assert all(deltas)
        assert "".join(deltas) == "".join(c["delta"] for c in one_by_one if c["type"] == kind)
    others = [chunk for chunk in written if chunk["type"] not in ("content", "thinking")]
    assert others == [chunk for chunk in one_by_one if chunk["type"] not in ("content", "thinking")]
    # each written content is one the uncoalesced chunks carried, in the same order
    annotated = [(c["type"], c["content"]) for c in one_by_one if "content" in c]
    remaining = iter(annotated)
    for chunk in written:
        if chunk["type"] in ("content", "thinking"):
            assert (chunk["type"], chunk["content"]) in remaining


def test_held_deltas_of_a_backlog_are_written_as_one_chunk():
    """``hold``: a caller that pushes what piled up during a slow write gets nothing back
    before its own flush, however old the held text is, and then one chunk with all of it."""
    clock = Clock()
    coalescer = Coalescer(0.05, clock=clock)
    coalescer.push(content("a"))
    clock.now = 1.0  # far past due
    assert coalescer.push(content("b"), hold=True) == []
    assert coalescer.push(content("c"), hold=True) == []
    assert coalescer.due() is not None and coalescer.due() <= clock.now
    assert coalescer.flush() == [{"type": "content", "delta": "abc", "content": "abc"}]
    # a chunk that is not a delta still flushes first, hold or not
    coalescer.push(content("d"), hold=True)
    out = coalescer.push({"type": "done", "finishReason": "stop"}, hold=True)
    assert out == [
        {"type": "content", "delta": "d", "content": "abcd"},
        {"type": "done", "finishReason": "stop"},
    ]
