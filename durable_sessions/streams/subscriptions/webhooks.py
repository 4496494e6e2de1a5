"""Webhook URLs that cannot reach the server's own network, and their delivery.

A subscriber chooses the URL the server will POST to, so the URL is a way into whatever the
server can reach (SSRF, PROTOCOL.md 6.2 and 12.8). ``validate_url()`` accepts only ``https://``
to public addresses, and, when ``WEBHOOK_ALLOW_LOOPBACK`` is on (development, tests, the
conformance suite), ``http://`` or ``https://`` to this machine's loopback addresses. The
rules (``targets.py`` applies them), with their reasons, are in docs/subscriptions.md
("Webhook URLs and SSRF"); in short:

- the scheme is http or https; no user info; a port from 1 to 65535 (any: the address is what
  decides what a request can reach, and every request is the same HTTP POST);
- the host is a dotted-quad IPv4 address, a bracketed IPv6 address or an ASCII host name. A
  host that looks numeric but is not a dotted quad (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
  ``127.1``) is refused: resolvers and URL parsers disagree about what it means;
- every address the host stands for (itself, or every address the name resolves to) is public:
  not private, loopback (unless allowed), link-local (where cloud metadata services are),
  shared (CGNAT), unspecified, multicast, reserved, documentation, or a transition form
  (IPv4-mapped and NAT64 addresses are judged by the IPv4 address they carry; 6to4 and Teredo
  are refused).

``post()`` checks again when it delivers, since a name may point elsewhere by then (DNS
rebinding), and connects only to the addresses it checked: the URL's host is replaced by the
address, the request keeps the original ``Host`` header, and for https the TLS handshake sends
the host name (SNI) and verifies the certificate against it (httpx's ``sni_hostname`` request
extension). It never follows redirects, ignores proxy settings of the environment, opens a new
connection each time (a pooled connection verified for one name must not serve another that
shares the address) and reads at most ``MAX_RESPONSE_BYTES`` of the answer. It blocks: call it
from a worker thread. ``validate_url()`` resolves names, so it blocks too.
"""

from __future__ import annotations

import json
import random
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

from durable_sessions.conf import ds_settings
from durable_sessions.streams.subscriptions.errors import WebhookUrlRejected
from durable_sessions.streams.subscriptions.targets import (
    Address,
    Resolver,
    ResolveTimeout,
    Target,
    Unresolved,
    address_problem,
    checked_addresses,
    parse_url,
    rejected,
    system_resolver,
)

__all__ = [
    "MAX_RESPONSE_BYTES",
    "ConnectFailed",
    "Delivered",
    "DeliveryError",
    "DeliveryRefused",
    "DeliveryTimeout",
    "address_problem",
    "backoff",
    "post",
    "validate_url",
]

MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "durable-sessions-webhook"


class DeliveryError(Exception):
    """A webhook delivery that got no HTTP answer. The caller retries later (``backoff()``)."""


class DeliveryRefused(DeliveryError):
    """The URL, or an address its host resolves to now, is not one deliveries may go to."""


class DeliveryTimeout(DeliveryError):
    """The delivery took longer than its timeout (resolution, connection, request, answer)."""


class ConnectFailed(DeliveryError):
    """No connection: the name did not resolve, the connection was refused or unreachable, or
    the TLS handshake failed (certificate not valid for the host name)."""


@dataclass(frozen=True)
class Delivered:
    """The answer to a delivery: its status, its body parsed as JSON (None when empty, not
    JSON, compressed or cut off), the seconds it took, and whether the body was cut off at
    ``MAX_RESPONSE_BYTES``."""

    status: int
    data: Any
    elapsed: float
    truncated: bool = False

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return 200 <= self.status < 300


def validate_url(
    url: str, *, resolver: Resolver | None = None, allow_loopback: bool | None = None
) -> None:
    """Raise ``WebhookUrlRejected`` unless deliveries may go to ``url`` (see the module
    docstring). Names are resolved (``resolver``, default the system's), and every address
    must pass. ``allow_loopback`` defaults to ``WEBHOOK_ALLOW_LOOPBACK``."""
    target = parse_url(url)
    allow = ds_settings.WEBHOOK_ALLOW_LOOPBACK if allow_loopback is None else allow_loopback
    try:
        checked_addresses(target, resolver or system_resolver, allow, ds_settings.WEBHOOK_TIMEOUT)
    except Unresolved as exc:
        raise rejected(url, str(exc)) from None


_default_context: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi's CAs), made once, on first use."""
    global _default_context
    if _default_context is None:
        _default_context = httpx.create_ssl_context(trust_env=False)
    return _default_context


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    resolver: Resolver | None = None,
    allow_loopback: bool | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Delivered:
    """POST ``body`` with ``headers`` to ``url``, to a checked address only, within about
    ``timeout`` seconds (each step is bounded by what is left; a last read may overrun).

    Any HTTP answer is returned, 3xx and 5xx included (redirects are not followed). Raises
    ``DeliveryRefused`` when the URL or an address of its host is not allowed now,
    ``ConnectFailed`` when no address answers, ``DeliveryTimeout``, or ``DeliveryError`` when
    the connection broke off; all of them mean "try again later". ``resolver``,
    ``allow_loopback`` and ``ssl_context`` (the CAs trusted) default to the system's resolver,
    ``WEBHOOK_ALLOW_LOOPBACK`` and httpx's CA bundle.
    """
    start = time.monotonic()
    deadline = start + timeout
    allow = ds_settings.WEBHOOK_ALLOW_LOOPBACK if allow_loopback is None else allow_loopback
    try:
        target = parse_url(url)
        addresses = checked_addresses(target, resolver or system_resolver, allow, timeout)
    except WebhookUrlRejected as exc:
        raise DeliveryRefused(exc.message) from None
    except ResolveTimeout as exc:
        raise DeliveryTimeout(str(exc)) from None
    except Unresolved as exc:
        raise ConnectFailed(str(exc)) from None
    failures = []
    for address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeliveryTimeout(f"no connection to {target.host} within {timeout:g} s")
        try:
            return _send(target, address, body, headers, deadline, ssl_context, start)
        except httpx.ConnectTimeout as exc:
            failures.append(f"{address}: connection timed out ({exc})")
        except httpx.ConnectError as exc:
            failures.append(f"{address}: {exc}")
    raise ConnectFailed(f"could not connect to {target.host}: " + "; ".join(failures))


def _send(
    target: Target,
    address: Address,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
    context: ssl.SSLContext | None,
    start: float,
) -> Delivered:
    """One attempt on one address; httpx's connect errors go up to try the next address."""
    pinned = httpx.URL(target.url).copy_with(host=str(address), fragment=None)
    sent = httpx.Headers({"User-Agent": USER_AGENT})
    sent.update(headers)
    for name in ("Host", "Content-Length", "Transfer-Encoding"):
        sent.pop(name, None)  # ours to set: the body is exactly ``body``
    sent["Host"] = target.host_header
    sent["Accept-Encoding"] = "identity"  # a compressed answer could be a decompression bomb
    sent["Connection"] = "close"
    extensions = {}
    if target.scheme == "https" and target.literal is None:
        extensions["sni_hostname"] = target.host  # SNI and certificate check use the name
    with httpx.Client(
        verify=context or _ssl_context(),
        trust_env=False,  # no proxy from the environment: it would connect where it likes
        follow_redirects=False,
        timeout=httpx.Timeout(max(deadline - time.monotonic(), 0.001)),
    ) as client:
        request = client.build_request(
            "POST", pinned, content=bytes(body), headers=sent, extensions=extensions
        )
        try:
            response = client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise
        except httpx.TimeoutException as exc:
            raise DeliveryTimeout(f"{target.host} ({address}) did not answer: {exc}") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError(f"delivery to {target.host} ({address}) failed: {exc}") from exc
        try:
            raw, truncated = _read(response, deadline, target)
        finally:
            response.close()
    data = None
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if raw and not truncated and encoding in {"", "identity"}:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = None
    return Delivered(response.status_code, data, time.monotonic() - start, truncated)


def _read(response: httpx.Response, deadline: float, target: Target) -> tuple[bytes, bool]:
    """At most MAX_RESPONSE_BYTES of the answer's body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                return b"".join(chunks)[:MAX_RESPONSE_BYTES], True
            if time.monotonic() > deadline:
                raise DeliveryTimeout(f"{target.host} took too long to send its answer")
    except httpx.TimeoutException as exc:
        raise DeliveryTimeout(f"{target.host} stopped sending its answer: {exc}") from exc
    except httpx.HTTPError as exc:
        raise DeliveryError(f"the answer of {target.host} broke off: {exc}") from exc
    return b"".join(chunks), False


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry): 1, 2, 4 ... up
    to 60 seconds, each with +-20 % jitter (so from 0.8 to 72 seconds)."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    nominal = min(60.0, 2.0 ** min(attempt - 1, 6))
    return nominal * random.uniform(0.8, 1.2)
