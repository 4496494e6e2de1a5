"""A real HTTP agent for tests: streams scripted SSE replies in the four dialects of WIRE.md 4.

Usage::

    fake = FakeUpstream()
    base = fake.start()                    # "http://127.0.0.1:<port>", served by a thread
    fake.script(tokens=["Hel", "lo"], delay=0.01, usage={"prompt_tokens": 3, ...})
    ... POST f"{base}/v1/chat/completions" (or /tanstack, /vercel, /agui) ...
    fake.requests[-1].body["messages"]     # what the agent was sent
    fake.wait_closed(timeout=5)            # when the client closed the connection
    fake.stop()

The dialect of a reply is its ``dialect`` field, else the path's: ``/v1/chat/completions`` (and
any other path) OpenAI Chat Completions chunks, ``/tanstack`` TanStack AI chunks, ``/vercel``
AI SDK UI message stream parts, ``/agui`` AG-UI events.

``script(reply=None, **fields)`` queues a ``Reply`` (or one made of ``fields``) for the next
request; with none queued, ``default`` answers (a few words). A ``Reply`` holds:

- ``tokens``: text deltas, each a string or ``(delay, text)``; ``delay`` is the default delay
  before each token (seconds); ``tool_calls``: ``[{"id", "name", "arguments"}]`` streamed after
  the text; ``usage``: OpenAI-shaped usage (``prompt_tokens``...), sent in each dialect's way;
  ``finish_reason`` (``stop``, or ``tool_calls`` when there are calls); ``error``: a message
  sent as the dialect's error event instead of the finish;
- ``status`` and ``body``: any status with a raw body (``status=204`` or ``empty=True``: no
  body at all, or a 200 with an empty body); ``headers``: extra response headers;
- ``malformed``: a raw line written after the tokens (``"data: {oops"``, ``"garbage"``);
- ``hang``: ``"before_headers"`` (never answers), ``"mid_stream"`` (stops after the tokens,
  keeps the connection open); ``drop``: closes the connection after the tokens without ending
  the chunked body;
- ``done`` (end with ``data: [DONE]``), ``comments`` (``: keep-alive`` lines between events),
  ``event_names`` (``event: message`` lines), ``split_data`` (each event's JSON over two
  ``data:`` lines), ``crlf`` (lines end with CRLF);
- ``stamp``: every ``{now}`` in an event is replaced, as it is sent, by ``time.monotonic_ns()``
  (a token ``"{now} "`` says when it left: ``benchmarks/agents_runtime.py`` measures latency so).

Each request is recorded in ``requests`` (a ``Recorded``: ``method``, ``path``, ``headers`` with
lowercase names, ``body`` parsed as JSON when it is, ``opened_at``, ``finished_at`` when the
fake ended its reply, ``closed_at`` when the client closed the connection first), times from
``time.monotonic()`` (one clock for every process of the machine). ``closed_at`` is the last
request's. ``wait_requests(n)`` and ``wait_closed()`` wait for them (a condition, no polling).

From another process: ``python -m tests.agents.fake_upstream [--port N]`` prints the base URL
and serves; ``POST /_fake/script`` with a Reply's fields as JSON queues it, ``GET
/_fake/requests`` answers the records as JSON, ``POST /_fake/reset`` forgets both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

PATH_DIALECTS = {"/tanstack": "tanstack", "/vercel": "vercel", "/agui": "agui"}
REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class Reply:
    """One scripted answer (see the module docstring)."""

    tokens: list[Any] = field(default_factory=lambda: ["Hello", " from", " the", " fake"])
    delay: float = 0.0
    dialect: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    error: str | None = None
    status: int = 200
    body: str | None = None
    empty: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    malformed: str | None = None
    hang: str | None = None
    drop: bool = False
    done: bool = True
    comments: bool = False
    event_names: bool = False
    split_data: bool = False
    crlf: bool = False
    stamp: bool = False


@dataclass
class Recorded:
    """One request the fake took."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    opened_at: float
    finished_at: float | None = None
    closed_at: float | None = None


def _events(reply: Reply, dialect: str, request: Any) -> list[tuple[float, dict[str, Any]]]:
    """``(delay, event)`` of ``reply`` in ``dialect``."""
    model = request.get("model", "fake-model") if isinstance(request, dict) else "fake-model"
    tokens = [
        (t[0], t[1]) if isinstance(t, list | tuple) else (reply.delay, t) for t in reply.tokens
    ]
    reason = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    usage = reply.usage
    out: list[tuple[float, dict[str, Any]]] = []
    if dialect == "openai":

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        out.append((0.0, chunk({"role": "assistant", "content": ""})))
        out += [(delay, chunk({"content": text})) for delay, text in tokens]
        for index, call in enumerate(reply.tool_calls):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
            out.append((reply.delay, chunk({"tool_calls": [head]})))
            args = call.get("arguments", "{}")
            for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
                part = {"index": index, "function": {"arguments": piece}}
                out.append((reply.delay, chunk({"tool_calls": [part]})))
        if reply.error:
            out.append((0.0, {"error": {"message": reply.error, "type": "server_error"}}))
            return out
        out.append((0.0, chunk({}, reason)))
        wants_usage = isinstance(request, dict) and (request.get("stream_options") or {}).get(
            "include_usage"
        )
        if usage and wants_usage:
            out.append((0.0, {**chunk({}), "choices": [], "usage": usage}))
    elif dialect == "tanstack":
        so_far = ""
        for delay, text in tokens:
            so_far += text
            out.append(
                (
                    delay,
                    {
                        "type": "content",
                        "id": "fake",
                        "model": model,
                        "timestamp": 1,
                        "role": "assistant",
                        "delta": text,
                        "content": so_far,
                    },
                )
            )
        for index, call in enumerate(reply.tool_calls):
            tool = {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call.get("arguments", "{}")},
            }
            out.append((reply.delay, {"type": "tool_call", "toolCall": tool, "index": index}))
        if reply.error:
            out.append((0.0, {"type": "error", "error": {"message": reply.error}}))
            return out
        done: dict[str, Any] = {
            "type": "done",
            "id": "fake",
            "model": model,
            "finishReason": reason,
        }
        if usage:
            done["usage"] = {
                "promptTokens": usage.get("prompt_tokens", 0),
                "completionTokens": usage.get("completion_tokens", 0),
                "totalTokens": usage.get("total_tokens", 0),
            }
        out.append((0.0, done))
    elif dialect == "vercel":
        out += [
            (0.0, {"type": "start", "messageId": "fake"}),
            (0.0, {"type": "text-start", "id": "t1"}),
        ]
        out += [
            (delay, {"type": "text-delta", "id": "t1", "delta": text}) for delay, text in tokens
        ]
        out.append((0.0, {"type": "text-end", "id": "t1"}))
        for call in reply.tool_calls:
            arguments = json.loads(call.get("arguments") or "{}")
            out.append(
                (
                    reply.delay,
                    {
                        "type": "tool-input-available",
                        "toolCallId": call["id"],
                        "toolName": call["name"],
                        "input": arguments,
                    },
                )
            )
        if reply.error:
            out.append((0.0, {"type": "error", "errorText": reply.error}))
            return out
        finish: dict[str, Any] = {"type": "finish", "finishReason": reason}
        if usage:
            finish["messageMetadata"] = {"usage": usage}
        out.append((0.0, finish))
    elif dialect == "agui":
        out += [
            (0.0, {"type": "RUN_STARTED", "threadId": "thread", "runId": "run"}),
            (0.0, {"type": "TEXT_MESSAGE_START", "messageId": "fake", "role": "assistant"}),
        ]
        out += [
            (d, {"type": "TEXT_MESSAGE_CONTENT", "messageId": "fake", "delta": t})
            for d, t in tokens
        ]
        out.append((0.0, {"type": "TEXT_MESSAGE_END", "messageId": "fake"}))
        for call in reply.tool_calls:
            out += [
                (
                    reply.delay,
                    {
                        "type": "TOOL_CALL_START",
                        "toolCallId": call["id"],
                        "toolCallName": call["name"],
                        "parentMessageId": "fake",
                    },
                ),
                (
                    0.0,
                    {
                        "type": "TOOL_CALL_ARGS",
                        "toolCallId": call["id"],
                        "delta": call.get("arguments", "{}"),
                    },
                ),
                (0.0, {"type": "TOOL_CALL_END", "toolCallId": call["id"]}),
            ]
        if reply.error:
            out.append((0.0, {"type": "RUN_ERROR", "message": reply.error, "code": "fake"}))
            return out
        finished: dict[str, Any] = {"type": "RUN_FINISHED", "threadId": "thread", "runId": "run"}
        if usage:
            finished["result"] = {"usage": usage}
        out.append((0.0, finished))
    else:
        raise ValueError(f"no dialect {dialect!r}")
    return out


class FakeUpstream:
    """A scripted SSE agent on 127.0.0.1, served by a thread (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.default = Reply()
        self.requests: list[Recorded] = []
        self._queue: list[Reply] = []
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    # -- the test's side ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, ``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def closed_at(self) -> float | None:
        """When the client closed the last request's connection before the reply ended."""
        with self._changed:
            return self.requests[-1].closed_at if self.requests else None

    def start(self) -> str:
        """Serve from a daemon thread; the base URL."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), daemon=True, name="fake-upstream"
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        return self.url

    def stop(self) -> None:
        """Stop serving (open connections are closed)."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def script(self, reply: Reply | None = None, **values: Any) -> Reply:
        """Queue ``reply`` (or a Reply of ``values``) for the next request."""
        reply = reply or Reply(**values)
        with self._changed:
            self._queue.append(reply)
        return reply

    def reset(self) -> None:
        """Forget the queued replies and the recorded requests."""
        with self._changed:
            self._queue.clear()
            self.requests.clear()

    def wait_requests(self, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        """The requests, once there are ``count``; TimeoutError after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} requests, not {count}")
            return list(self.requests)

    def wait_closed(self, index: int = -1, timeout: float = 10.0) -> float:
        """When the client closed the connection of request ``index`` (the time)."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: (
                    len(self.requests) > (index if index >= 0 else -index - 1)
                    and self.requests[index].closed_at is not None
                ),
                timeout,
            )
            if not done:
                raise TimeoutError("the client did not close the connection")
            closed = self.requests[index].closed_at
            assert closed is not None
            return closed

    # -- the server -----------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            # Hanging handlers end with the loop: asyncio.run cancels what is left.

    def _changed_now(self, apply: Any = None) -> None:
        with self._changed:
            if apply is not None:
                apply()
            self._changed.notify_all()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if path.startswith("/_fake/"):
            await self._control(method, path, body, writer)
            return
        record = Recorded(method, path, headers, body, time.monotonic())
        closed = asyncio.Event()

        async def watch() -> None:  # HTTP/1.1 without pipelining: the client sends no more
            with contextlib.suppress(ConnectionError):
                await reader.read(1)
            if record.finished_at is None:
                self._changed_now(lambda: setattr(record, "closed_at", time.monotonic()))
            closed.set()

        with self._changed:
            reply = self._queue.pop(0) if self._queue else self.default
            self.requests.append(record)
            self._changed.notify_all()
        watcher = asyncio.create_task(watch())
        try:
            await self._answer(reply, path, body, writer, closed)
            self._changed_now(lambda: setattr(record, "finished_at", time.monotonic()))
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            await watcher

    async def _answer(
        self,
        reply: Reply,
        path: str,
        body: Any,
        writer: asyncio.StreamWriter,
        closed: asyncio.Event,
    ) -> None:
        async def pause(seconds: float | None) -> None:
            """Wait ``seconds`` (None: forever), or until the client closes."""
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closed.wait(), seconds)
            if closed.is_set():
                raise ConnectionResetError("the client closed the connection")

        if reply.hang == "before_headers":
            await pause(None)
        status = 204 if reply.status == 204 else reply.status
        reason = REASONS.get(status, "Status")
        ok = 200 <= status < 300 and status != 204
        kind = "text/event-stream" if ok and reply.body is None else "text/plain"
        head = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {kind}",
            "Connection: close",
            "Cache-Control: no-cache",
        ]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        if status == 204:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            await writer.drain()
            return
        if reply.body is not None or reply.empty:
            data = (reply.body or "").encode()
            head.append(f"Content-Length: {len(data)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
            await writer.drain()
            return
        head.append("Transfer-Encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        end = "\r\n" if reply.crlf else "\n"

        async def send(text: str) -> None:
            data = text.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        dialect = reply.dialect or PATH_DIALECTS.get(path.split("?")[0], "openai")
        events = _events(reply, dialect, body)
        # Where the malformed line, the hang or the drop goes: after the text's events.
        at = len(reply.tokens) + {"openai": 1, "vercel": 2, "agui": 2}.get(dialect, 0)
        for index, (delay, event) in enumerate([*events, (0.0, None)]):
            if index == at:
                if reply.malformed is not None:
                    await send(reply.malformed + end + end)
                if reply.hang == "mid_stream":
                    await pause(None)
                if reply.drop:
                    writer.transport.abort()
                    return
            if event is None:
                break
            if delay:
                await pause(delay)
            text = json.dumps(event, ensure_ascii=False)
            if reply.stamp:
                text = text.replace("{now}", str(time.monotonic_ns()))
            cut = text.find(', "', len(text) // 2) + 1  # between two members: JSON whitespace
            lines = [text[:cut], text[cut:]] if reply.split_data and cut else [text]
            frame = "".join(f"data: {line}{end}" for line in lines) + end
            if reply.event_names:
                frame = f"event: message{end}" + frame
            if reply.comments:
                frame = f": keep-alive{end}{end}" + frame
            await send(frame)
        if reply.done:
            await send(f"data: [DONE]{end}{end}")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _control(
        self, method: str, path: str, body: Any, writer: asyncio.StreamWriter
    ) -> None:
        if path == "/_fake/script" and method == "POST":
            known = {f.name for f in fields(Reply)}
            self.script(Reply(**{k: v for k, v in (body or {}).items() if k in known}))
            answer: Any = {"queued": True}
        elif path == "/_fake/reset" and method == "POST":
            self.reset()
            answer = {"reset": True}
        else:
            with self._changed:
                answer = [asdict(record) for record in self.requests]
        data = json.dumps(answer).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()


def main() -> None:
    """Serve a fake upstream until interrupted, printing its base URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    fake = FakeUpstream(options.host, options.port)
    print(fake.start(), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    fake.stop()


if __name__ == "__main__":
    main()
