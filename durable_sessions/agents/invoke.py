"""Calling an agent and reading what it streams back (WIRE.md 4), under timeouts.

``events(invocation, timeouts=...)`` is an async iterator of the agent's events, each as the
agent sent it (a dict in any dialect: ``dialects.py`` normalises them). It ends when the agent
is done; anything that goes wrong is an ``InvocationError`` whose ``code`` says what.

- An ``http://`` or ``https://`` endpoint gets a POST of ``{...bodyTemplate, "messages": [...],
  "stream": true}`` with the agent's headers. The endpoint is checked again now
  (``resolve_agent_url``, the registration's SSRF rules) and the request goes to the address
  that check pinned, never to a fresh lookup of the name (DNS rebinding); the ``Host`` header
  and the TLS server name stay the endpoint's host, as webhooks do
  (``streams/subscriptions/webhooks.py``). No redirect is followed and no proxy of the
  environment is used. The reply is read as SSE (``SSEParser``): ``data:`` lines joined per
  event, comments and ``event:``/``id:``/``retry:`` fields skipped, ``data: [DONE]`` ends it;
  each event's data is parsed as JSON. A 204 or an empty body is no reply: nothing is yielded.
- A ``python:<dotted.path>`` endpoint names an async generator function of the server; it is
  called with the ``Invocation`` and may yield dicts (any dialect) or strings (text deltas,
  yielded as TanStack ``content`` chunks).

Timeouts (``Timeouts``, seconds): ``connect`` bounds the TCP and TLS connection;
``first_event`` runs from the start of ``events()`` to the first event (connection and response
headers included); ``between_events`` bounds each wait for the next one; ``total`` the whole
reply. SSE comments (keep-alive pings) are not events: an agent that only pings still times
out. Cancelling the task that iterates closes the upstream connection at once; the caller
should also wrap the iterator in ``contextlib.aclosing`` so that a cancel that lands while it
is busy elsewhere (between two events) closes it too, rather than at garbage collection.
"""

from __future__ import annotations

import asyncio
import codecs
import importlib
import inspect
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import certifi
import httpx

from durable_sessions import jsontext, outbound
from durable_sessions.agents.watchdog import Watchdog
from durable_sessions.sessions import agent_specs

T = TypeVar("T")

USER_AGENT = "durable-sessions-agent-runtime"
MAX_EVENT_CHARS = 8 * 1024 * 1024  # the largest append is 8 MiB (MAX_APPEND_BYTES)
MAX_SHOWN = 200  # characters of a bad line or error body quoted in a message
MAX_ERROR_BODY = 2048  # bytes of a non-2xx answer read to quote its start
CODES = (
    "upstream_status",
    "upstream_broken",
    "timeout_first_event",
    "timeout_between_events",
    "timeout_total",
    "connect_failed",
    "malformed_sse",
    "agent_refused",
    "python_agent_failed",
)


@dataclass
class Timeouts:
    """Seconds an invocation may take (see the module docstring for what each one bounds)."""

    connect: float = 10.0
    first_event: float = 60.0
    between_events: float = 60.0
    total: float = 600.0


class InvocationError(Exception):
    """An invocation that failed; ``code`` is one of ``CODES``, ``status`` the HTTP status of
    an ``upstream_status``."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Invocation:
    """One call of an agent: who it answers, what it is sent, where it is."""

    session_id: str
    agent_id: str
    message_id: str  # the assistant message the reply is written under
    messages: list[dict[str, Any]]  # history(): OpenAI chat shape
    body_template: dict[str, Any]
    headers: dict[str, str]  # the agent's secrets: sent, never logged
    endpoint: str
    trigger_message_id: str | None = None


def _shown(text: str) -> str:
    return repr(text[:MAX_SHOWN] + ("..." if len(text) > MAX_SHOWN else ""))


# -- SSE ---------------------------------------------------------------------------------


class SSEParser:
    """The data of SSE events, fed text as it arrives (``feed``), then ``finish``.

    Our own rather than httpx-sse's: that one skips a line that is no SSE field without a word
    (an agent answering NDJSON or plain text would read as no reply, where WIRE.md 4 wants an
    error), refuses a reply whose content type is not ``text/event-stream`` and drops a last
    event that no blank line ends. Lines end at CR, LF or CRLF only (never at U+2028, which
    JSON strings may hold raw)."""

    def __init__(self) -> None:
        self._line = ""  # the unfinished line
        self._cr = False  # the last text ended in CR: a LF starting the next one is its pair
        self._data: list[str] = []
        self._size = 0
        self._started = False

    def feed(self, text: str) -> list[str]:
        """The data of the events ``text`` completes; ``InvocationError("malformed_sse")`` for
        a line that is not SSE, or an event larger than ``MAX_EVENT_CHARS``."""
        if self._cr and text.startswith("\n"):
            text = text[1:]
        self._cr = text.endswith("\r")
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        lines[0] = self._line + lines[0]
        self._line = lines.pop()
        if len(self._line) + self._size > MAX_EVENT_CHARS:
            raise InvocationError("malformed_sse", f"an SSE event longer than {MAX_EVENT_CHARS}")
        events: list[str] = []
        for line in lines:
            data = self._take(line)
            if data is not None:
                events.append(data)
        return events

    def finish(self) -> list[str]:
        """The data of the last event, also when no blank line ended it."""
        events = [] if not self._line else self.feed("\n")
        data = self._take("")
        return [*events, data] if data is not None else events

    def _take(self, line: str) -> str | None:
        if not self._started:
            self._started = True
            line = line.removeprefix("\ufeff")
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data, self._size = [], 0
            return data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            value = value.removeprefix(" ")
            self._data.append(value)
            self._size += len(value) + 1
            if self._size > MAX_EVENT_CHARS:
                raise InvocationError(
                    "malformed_sse", f"an SSE event longer than {MAX_EVENT_CHARS}"
                )
            return None
        if name in {"event", "id", "retry"}:
            return None
        raise InvocationError(
            "malformed_sse", f"the agent sent a line that is not SSE: {_shown(line)}"
        )


def _decode(data: str) -> object:
    try:
        return jsontext.loads(data)
    except ValueError:
        raise InvocationError(
            "malformed_sse", f"the agent sent data that is not JSON: {_shown('data: ' + data)}"
        ) from None


# -- HTTP agents -------------------------------------------------------------------------


_tls: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """The TLS context of every agent call (made once: certificates verified, as httpx's)."""
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context(cafile=certifi.where())
    return _tls


async def _http_source(
    invocation: Invocation,
    timeouts: Timeouts,
    client: httpx.AsyncClient | None,
    resolver: outbound.Resolver | None,
) -> AsyncGenerator[object, None]:
    url = invocation.endpoint
    try:
        target = outbound.parse_url(url)
        # Resolution blocks (getaddrinfo, bounded by the check's own timeout): off the loop.
        host, _port, address = await asyncio.to_thread(
            agent_specs.resolve_agent_url, url, resolver=resolver
        )
    except outbound.UrlRejected as exc:
        raise InvocationError("agent_refused", f"agent endpoint refused: {exc.why}") from None
    except agent_specs.AgentUrlRefused as exc:
        raise InvocationError("agent_refused", str(exc)) from None
    pinned = httpx.URL(url).copy_with(host=address, fragment=None)
    headers = httpx.Headers({"Accept": "text/event-stream", "User-Agent": USER_AGENT})
    headers.update(invocation.headers)
    headers["Host"] = target.host_header
    headers["Content-Type"] = "application/json"
    headers["Accept-Encoding"] = "identity"  # a compressed reply could be a decompression bomb
    extensions = {}
    if target.scheme == "https" and target.literal is None:
        extensions["sni_hostname"] = host  # SNI and the certificate check use the name
    body = jsontext.dumps(
        {**invocation.body_template, "messages": invocation.messages, "stream": True}
    )
    # A client of our own per invocation: a pooled connection verified for one name must not
    # serve another name on the same address. Its TLS context is shared: building one (the
    # system's certificates) blocked the event loop ~70 ms per generation
    # (benchmarks/agents_runtime.py).
    http = client or httpx.AsyncClient(
        trust_env=False, follow_redirects=False, verify=_tls_context()
    )
    try:
        request = http.build_request(
            "POST",
            pinned,
            content=body,
            headers=headers,
            extensions=extensions,
            # Reads are bounded by the event timeouts, which know what an event is.
            timeout=httpx.Timeout(timeouts.connect, read=None),
        )
        try:
            response = await http.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException as exc:
            raise InvocationError(
                "connect_failed",
                f"no connection to {host} ({address}) within {timeouts.connect:g} s: {exc}",
            ) from None
        except httpx.TransportError as exc:
            raise InvocationError(
                "connect_failed", f"could not connect to {host} ({address}): {exc}"
            ) from None
        try:
            async for event in _reply(response, host):
                yield event
        finally:
            await response.aclose()
    finally:
        if client is None:
            await http.aclose()


async def _reply(response: httpx.Response, host: str) -> AsyncGenerator[object, None]:
    """The events of ``response``: nothing for a 204, InvocationError for a non-2xx."""
    if response.status_code == 204:
        return
    try:
        if not 200 <= response.status_code < 300:
            start = await _start_of(response)
            raise InvocationError(
                "upstream_status",
                f"the agent answered {response.status_code} {response.reason_phrase}"
                + (f": {_shown(start)}" if start else ""),
                status=response.status_code,
            )
        parser = SSEParser()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        async for raw in response.aiter_raw():
            for data in parser.feed(decoder.decode(raw)):
                if data == "[DONE]":
                    return
                yield _decode(data)
        for data in parser.feed(decoder.decode(b"", final=True)) + parser.finish():
            if data == "[DONE]":
                return
            yield _decode(data)
    except httpx.TransportError as exc:
        raise InvocationError(
            "upstream_broken", f"the reply of {host} broke off: {exc or type(exc).__name__}"
        ) from None


async def _start_of(response: httpx.Response) -> str:
    chunks: list[bytes] = []
    size = 0
    async for raw in response.aiter_raw():
        chunks.append(raw)
        size += len(raw)
        if size >= MAX_ERROR_BODY:
            break
    return b"".join(chunks)[:MAX_ERROR_BODY].decode("utf-8", "replace").strip()


# -- Python agents -----------------------------------------------------------------------


def _python_agent(endpoint: str) -> Callable[[Invocation], Any]:
    path = endpoint.removeprefix(agent_specs.PYTHON_SCHEME)
    module_name, _, attribute = path.rpartition(".")
    try:
        agent = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # any failure to import is a misconfiguration, said as such
        raise InvocationError(
            "agent_refused", f"the Python agent {path!r} cannot be imported: {exc}"
        ) from None
    if not callable(agent):
        raise InvocationError("agent_refused", f"the Python agent {path!r} is not callable")
    return agent


async def _python_source(invocation: Invocation) -> AsyncGenerator[object, None]:
    agent = _python_agent(invocation.endpoint)
    try:
        produced = agent(invocation)
    except Exception as exc:
        raise InvocationError("python_agent_failed", _failure(exc)) from exc
    if not inspect.isasyncgen(produced) and not hasattr(produced, "__anext__"):
        raise InvocationError(
            "agent_refused",
            f"the Python agent {invocation.endpoint!r} is not an async generator function",
        )
    source: AsyncIterator[object] = produced
    try:
        while True:
            try:
                item = await anext(source)
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise InvocationError("python_agent_failed", _failure(exc)) from exc
            if isinstance(item, str):
                yield {"type": "content", "delta": item}
            elif isinstance(item, dict):
                yield item
            else:
                raise InvocationError(
                    "python_agent_failed",
                    f"the Python agent yielded a {type(item).__name__}, not a dict or a string",
                )
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def _failure(exc: BaseException) -> str:
    return f"the Python agent failed: {exc}" if str(exc) else f"the Python agent failed: {exc!r}"


# -- timeouts ----------------------------------------------------------------------------


async def _timed(source: AsyncGenerator[T, None], timeouts: Timeouts) -> AsyncGenerator[T, None]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + timeouts.total
    first = True
    watchdog = Watchdog()  # (one timer for all the reads: asyncio.timeout made one per event)
    try:
        while True:
            deadline = (
                start + timeouts.first_event if first else loop.time() + timeouts.between_events
            )
            try:
                with watchdog.until(min(deadline, end)):
                    item = await anext(source)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not watchdog.timed_out:
                    raise
                if end <= deadline:
                    code, said = "timeout_total", f"the reply took more than {timeouts.total:g} s"
                elif first:
                    code = "timeout_first_event"
                    said = f"no event within {timeouts.first_event:g} s of the request"
                else:
                    code = "timeout_between_events"
                    said = f"no event for {timeouts.between_events:g} s"
                raise InvocationError(code, f"the agent timed out: {said}") from None
            first = False
            yield item
    finally:
        watchdog.close()
        await source.aclose()


async def events(
    invocation: Invocation,
    *,
    timeouts: Timeouts,
    client: httpx.AsyncClient | None = None,
    resolver: outbound.Resolver | None = None,
) -> AsyncIterator[object]:
    """The events ``invocation``'s agent streams back, as it sent them (see the module
    docstring); ``InvocationError`` when it fails. ``client`` is an httpx client to send with
    (one of our own, closed after, by default); ``resolver`` resolves the endpoint's host (the
    system's by default)."""
    endpoint = invocation.endpoint
    source: AsyncGenerator[object, None]
    if endpoint.startswith(agent_specs.PYTHON_SCHEME):
        source = _python_source(invocation)
    elif endpoint.startswith(("http://", "https://")):
        source = _http_source(invocation, timeouts, client, resolver)
    else:
        raise InvocationError("agent_refused", f"not an agent endpoint: {_shown(endpoint)}")
    timed = _timed(source, timeouts)
    try:
        async for item in timed:
            yield item
    finally:
        await timed.aclose()
