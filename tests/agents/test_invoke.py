"""events(): real HTTP to the fake upstream, Python agents, every InvocationError code."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from durable_sessions.agents.invoke import Invocation, InvocationError, SSEParser, Timeouts, events
from tests.agents.fake_upstream import FakeUpstream

FAST = Timeouts(connect=2.0, first_event=5.0, between_events=5.0, total=10.0)


@pytest.fixture
def private(settings: Any) -> None:
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "AGENT_ALLOW_PRIVATE": True}


@pytest.fixture
def public_only(settings: Any) -> None:
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "AGENT_ALLOW_PRIVATE": False}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


def invocation(endpoint: str, **changes: Any) -> Invocation:
    values: dict[str, Any] = {
        "session_id": "s1",
        "agent_id": "bot",
        "message_id": "m2",
        "messages": [{"role": "user", "content": "hi", "name": "alice"}],
        "body_template": {"model": "m-1", "temperature": 0},
        "headers": {"Authorization": "Bearer secret"},
        "endpoint": endpoint,
        "trigger_message_id": "m1",
    }
    values.update(changes)
    return Invocation(**values)


async def collect(inv: Invocation, timeouts: Timeouts = FAST, **options: Any) -> list[Any]:
    return [event async for event in events(inv, timeouts=timeouts, **options)]


async def failure(inv: Invocation, timeouts: Timeouts = FAST, **options: Any) -> InvocationError:
    with pytest.raises(InvocationError) as caught:
        await collect(inv, timeouts, **options)
    return caught.value


def texts(chunks: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content", "") for chunk in chunks for choice in chunk["choices"]
    )


# -- HTTP: the request and the reply --------------------------------------------------------


async def test_posts_the_template_messages_and_stream_with_the_agent_headers(
    private: None, fake: FakeUpstream
) -> None:
    fake.script(tokens=["Hel", "lo"], usage={"prompt_tokens": 1, "total_tokens": 3})
    chunks = await collect(invocation(f"{fake.url}/v1/chat/completions?key=q"))
    assert texts(chunks) == "Hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    (request,) = fake.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions?key=q"
    assert request.body == {
        "model": "m-1",
        "temperature": 0,
        "messages": [{"role": "user", "content": "hi", "name": "alice"}],
        "stream": True,
    }
    assert request.headers["authorization"] == "Bearer secret"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == f"127.0.0.1:{fake.port}"


@pytest.mark.parametrize(
    ("path", "types"),
    [
        ("/tanstack", ["content", "content", "done"]),
        ("/vercel", ["start", "text-start", "text-delta", "text-delta", "text-end", "finish"]),
        (
            "/agui",
            [
                "RUN_STARTED",
                "TEXT_MESSAGE_START",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_CONTENT",
                "TEXT_MESSAGE_END",
                "RUN_FINISHED",
            ],
        ),
    ],
)
async def test_every_dialect_is_yielded_as_sent(
    private: None, fake: FakeUpstream, path: str, types: list[str]
) -> None:
    fake.script(tokens=["a", "b"])
    chunks = await collect(invocation(fake.url + path))
    assert [chunk["type"] for chunk in chunks] == types


@pytest.mark.parametrize(
    "variant",
    [{"comments": True}, {"event_names": True}, {"split_data": True}, {"crlf": True}, {}],
)
async def test_sse_comments_event_names_split_data_and_crlf_read_the_same(
    private: None, fake: FakeUpstream, variant: dict[str, Any]
) -> None:
    fake.script(tokens=["one ", "two"], **variant)
    chunks = await collect(invocation(f"{fake.url}/v1/chat/completions"))
    assert texts(chunks) == "one two"
    assert len(chunks) == 4  # role, two tokens, finish: [DONE] is not an event


async def test_a_stamped_reply_says_when_each_token_left(private: None, fake: FakeUpstream) -> None:
    before = time.monotonic_ns()
    fake.script(tokens=["{now} ", "{now}"], delay=0.01, stamp=True)
    chunks = await collect(invocation(f"{fake.url}/tanstack"))
    stamps = [int(c["delta"]) for c in chunks if c["type"] == "content"]
    assert len(stamps) == 2 and before < stamps[0] < stamps[1] <= time.monotonic_ns()


async def test_the_pinned_address_is_connected_with_the_name_as_host(
    private: None, fake: FakeUpstream
) -> None:
    seen: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        seen.append(host)
        return ["127.0.0.1"]

    url = f"http://agent.test:{fake.port}/tanstack"
    chunks = await collect(invocation(url), resolver=resolver)
    assert chunks[-1]["type"] == "done"
    assert seen == ["agent.test"]
    assert fake.requests[0].headers["host"] == f"agent.test:{fake.port}"


async def test_204_and_an_empty_body_are_no_reply(private: None, fake: FakeUpstream) -> None:
    fake.script(status=204)
    fake.script(empty=True)
    assert await collect(invocation(f"{fake.url}/v1/chat/completions")) == []
    assert await collect(invocation(f"{fake.url}/v1/chat/completions")) == []
    assert len(fake.requests) == 2


def test_the_parser_ends_a_last_event_without_a_blank_line_and_keeps_u2028() -> None:
    parser = SSEParser()
    assert parser.feed('\ufeffdata: {"a": "x\u2028y"}\r') == []
    assert parser.feed("\n\r\ndata: 1\ndata:2") == ['{"a": "x\u2028y"}']
    assert parser.finish() == ["1\n2"]


# -- HTTP: failures ----------------------------------------------------------------------


async def test_a_non_2xx_names_the_status_and_the_start_of_the_body(
    private: None, fake: FakeUpstream
) -> None:
    fake.script(status=503, body="model overloaded, retry later")
    error = await failure(invocation(f"{fake.url}/v1/chat/completions"))
    assert (error.code, error.status) == ("upstream_status", 503)
    assert "503" in str(error) and "model overloaded" in str(error)


async def test_a_data_line_that_is_not_json_is_malformed_and_named(
    private: None, fake: FakeUpstream
) -> None:
    fake.script(tokens=["fine"], malformed="data: {oops")
    seen: list[Any] = []
    with pytest.raises(InvocationError) as caught:
        async for event in events(invocation(f"{fake.url}/tanstack"), timeouts=FAST):
            seen.append(event)
    assert caught.value.code == "malformed_sse"
    assert "data: {oops" in str(caught.value)
    assert [event["type"] for event in seen] == ["content"]  # what came before is kept


async def test_a_line_that_is_not_sse_is_malformed(private: None, fake: FakeUpstream) -> None:
    fake.script(tokens=[], malformed='{"type": "content", "delta": "ndjson"}')
    error = await failure(invocation(f"{fake.url}/tanstack"))
    assert error.code == "malformed_sse"
    assert "ndjson" in str(error)


async def test_no_answer_is_timeout_first_event(private: None, fake: FakeUpstream) -> None:
    fake.script(hang="before_headers")
    started = time.monotonic()
    error = await failure(invocation(f"{fake.url}/tanstack"), Timeouts(first_event=0.3))
    assert error.code == "timeout_first_event"
    assert 0.3 <= time.monotonic() - started < 3
    fake.wait_closed()  # the connection is not left open


async def test_headers_then_silence_is_timeout_first_event(
    private: None, fake: FakeUpstream
) -> None:
    fake.script(tokens=[], hang="mid_stream")
    error = await failure(invocation(f"{fake.url}/tanstack"), Timeouts(first_event=0.3))
    assert error.code == "timeout_first_event"


async def test_silence_mid_stream_is_timeout_between_events(
    private: None, fake: FakeUpstream
) -> None:
    fake.script(tokens=["a", "b"], hang="mid_stream", comments=True)
    seen: list[Any] = []
    with pytest.raises(InvocationError) as caught:
        async for event in events(
            invocation(f"{fake.url}/tanstack"), timeouts=Timeouts(between_events=0.3)
        ):
            seen.append(event)
    assert caught.value.code == "timeout_between_events"
    assert len(seen) == 2


async def test_a_reply_longer_than_total_is_timeout_total(
    private: None, fake: FakeUpstream
) -> None:
    fake.script(tokens=["x"] * 50, delay=0.05)
    error = await failure(invocation(f"{fake.url}/tanstack"), Timeouts(total=0.5))
    assert error.code == "timeout_total"


async def test_nothing_listening_is_connect_failed(private: None) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await failure(invocation(f"http://127.0.0.1:{port}/tanstack"))
    assert error.code == "connect_failed"


async def test_a_connection_dropped_mid_reply_is_upstream_broken(
    private: None, fake: FakeUpstream
) -> None:
    fake.script(tokens=["a"], drop=True)
    error = await failure(invocation(f"{fake.url}/tanstack"))
    assert error.code == "upstream_broken"


async def test_loopback_is_refused_at_connect_time_without_allow_private(
    public_only: None, fake: FakeUpstream
) -> None:
    def rebinding(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # say it resolved to a public address when it was registered

    for url, resolver in [
        (f"http://agent.example.com:{fake.port}/tanstack", rebinding),
        (f"{fake.url}/tanstack", None),
    ]:
        error = await failure(invocation(url), resolver=resolver)
        assert error.code == "agent_refused"
        assert "loopback" in str(error)
    assert fake.requests == []


async def test_link_local_is_refused_even_with_allow_private(private: None) -> None:
    def metadata(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    error = await failure(invocation("http://agent.example.com/x"), resolver=metadata)
    assert error.code == "agent_refused"


async def test_an_endpoint_of_another_scheme_is_refused() -> None:
    assert (await failure(invocation("ftp://example.com/x"))).code == "agent_refused"


# -- cancellation ------------------------------------------------------------------------


async def test_cancel_closes_the_upstream_connection_at_once(
    private: None, fake: FakeUpstream
) -> None:
    fake.script(tokens=["a"], hang="mid_stream")
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in events(invocation(f"{fake.url}/tanstack"), timeouts=FAST):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    cancelled = time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    closed = await asyncio.to_thread(fake.wait_closed)
    print(f"upstream closed {1000 * (closed - cancelled):.1f} ms after the cancel")
    assert 0 <= closed - cancelled < 0.5


async def test_cancel_between_events_closes_it_through_aclosing(
    private: None, fake: FakeUpstream
) -> None:
    fake.script(tokens=["a", "b"], hang="mid_stream")
    first, forever = asyncio.Event(), asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(
            events(invocation(f"{fake.url}/tanstack"), timeouts=FAST)
        ) as stream:
            async for _ in stream:
                first.set()
                await forever.wait()  # busy with the event when the cancel comes

    task = asyncio.create_task(consume())
    await first.wait()
    cancelled = time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    closed = await asyncio.to_thread(fake.wait_closed)
    print(f"upstream closed {1000 * (closed - cancelled):.1f} ms after the cancel")
    assert 0 <= closed - cancelled < 0.5


# -- Python agents -----------------------------------------------------------------------

FINALLY: list[str] = []


async def mixed_agent(inv: Invocation) -> AsyncIterator[Any]:
    yield "Hel"
    yield {"type": "content", "delta": "lo", "content": "Hello"}
    yield {"type": "done", "finishReason": "stop", "for": inv.message_id}


async def failing_agent(inv: Invocation) -> AsyncIterator[Any]:
    yield "partial"
    raise RuntimeError("the model is on fire")


async def slow_agent(inv: Invocation) -> AsyncIterator[Any]:
    try:
        yield "first"
        await asyncio.Event().wait()
        yield "never"
    finally:
        FINALLY.append(inv.message_id)


async def odd_agent(inv: Invocation) -> AsyncIterator[Any]:
    yield 42


def not_a_generator(inv: Invocation) -> list[str]:
    return ["no"]


NOT_CALLABLE = "text"


async def test_a_python_agent_yields_dicts_and_strings_as_deltas() -> None:
    chunks = await collect(invocation("python:tests.agents.test_invoke.mixed_agent"))
    assert chunks == [
        {"type": "content", "delta": "Hel"},
        {"type": "content", "delta": "lo", "content": "Hello"},
        {"type": "done", "finishReason": "stop", "for": "m2"},
    ]


async def test_an_exception_in_a_python_agent_is_python_agent_failed() -> None:
    error = await failure(invocation("python:tests.agents.test_invoke.failing_agent"))
    assert error.code == "python_agent_failed"
    assert "the model is on fire" in str(error)
    error = await failure(invocation("python:tests.agents.test_invoke.odd_agent"))
    assert error.code == "python_agent_failed"


@pytest.mark.parametrize(
    "path",
    [
        "tests.agents.no_such_module.agent",
        "tests.agents.test_invoke.no_such_agent",
        "tests.agents.test_invoke.NOT_CALLABLE",
        "tests.agents.test_invoke.not_a_generator",
    ],
)
async def test_a_python_agent_that_cannot_be_imported_or_run_is_refused(path: str) -> None:
    error = await failure(invocation(f"python:{path}"))
    assert error.code == "agent_refused"


async def test_a_python_agent_runs_under_the_timeouts_and_is_closed() -> None:
    FINALLY.clear()
    error = await failure(
        invocation("python:tests.agents.test_invoke.slow_agent"), Timeouts(between_events=0.2)
    )
    assert error.code == "timeout_between_events"
    assert FINALLY == ["m2"]


async def test_a_cancelled_python_agent_is_closed() -> None:
    FINALLY.clear()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in events(
            invocation("python:tests.agents.test_invoke.slow_agent"), timeouts=FAST
        ):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert FINALLY == ["m2"]
