"""Where an outbound URL goes, and whether the server may send a request there (SSRF).

Shared by every feature whose URLs someone else chooses: webhooks
(``streams/subscriptions/targets.py``) and session agents (``sessions/agent_specs.py``). Each
applies its own policy on top (which schemes, whether loopback or private networks may be
reached) and words its own errors; the reading of URLs and addresses is here, once.

- ``parse_url()`` reads the parts of a URL that decide where a request goes and refuses what is
  malformed or ambiguous (``UrlRejected`` with ``why``): no user info, a port from 1 to 65535,
  a dotted-quad IPv4 address, a bracketed IPv6 address or an ASCII host name; a host that looks
  numeric but is not a dotted quad is refused (resolvers and URL parsers disagree about it),
  and so is a URL that httpx (what sends the request) reads differently.
- ``address_problem()`` says what makes an address one the server may not reach: private,
  loopback, link-local (where cloud metadata services answer), shared (CGNAT), unspecified,
  multicast, reserved, documentation, or a transition form (IPv4-mapped and NAT64 addresses are
  judged by the IPv4 address they carry; 6to4 and Teredo are refused).
- ``checked_addresses()`` resolves the host (within a timeout: ``getaddrinfo`` has none) and
  refuses it unless every address passes; the caller then connects to one of those addresses
  only, so a name that changes meanwhile (DNS rebinding) reaches nothing else.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

Resolver = Callable[[str, int], Iterable[str]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")

# Ranges that are not public, with what they are. 127.0.0.0/8 and ::1 are tested apart, since
# a policy may let loopback through.
_V4 = [
    ("0.0.0.0/8", "an unspecified address"),
    ("10.0.0.0/8", "a private address (RFC 1918)"),
    ("100.64.0.0/10", "a shared address (carrier-grade NAT, RFC 6598)"),
    ("169.254.0.0/16", "a link-local address (where cloud metadata services answer)"),
    ("172.16.0.0/12", "a private address (RFC 1918)"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.0.2.0/24", "a documentation address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("192.168.0.0/16", "a private address (RFC 1918)"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved or broadcast address"),
]
_V6 = [
    ("::/128", "an unspecified address"),
    ("::/8", "a reserved address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard address"),
    ("2001::/23", "an IETF protocol address (Teredo and others)"),
    ("2001:db8::/32", "a documentation address"),
    ("2002::/16", "a 6to4 address"),
    ("3fff::/20", "a documentation address"),
    ("5f00::/16", "a segment routing address"),
    ("fc00::/7", "a unique local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
]
SPECIAL = [(ipaddress.ip_network(net), why) for net, why in _V4 + _V6]
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# The private networks a policy may open (``allow_private``): the ones a service of one's own
# network listens on. Link-local (cloud metadata), multicast and the rest stay refused.
PRIVATE = [
    ipaddress.ip_network(net)
    for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
]


@dataclass(frozen=True)
class Target:
    """Where a URL goes: what ``parse_url()`` reads in it."""

    url: str
    scheme: str
    host: str  # lowercased; an IPv6 address without brackets
    port: int
    literal: Address | None  # the host, when it is an address
    host_header: str


class UrlRejected(ValueError):
    """A URL that may not be used: ``why`` says why (a phrase, without the URL)."""

    def __init__(self, url: Any, why: str) -> None:
        super().__init__(why)
        self.url = url
        self.why = why


class Unresolved(Exception):
    """A host name that did not resolve."""


class ResolveTimeout(Unresolved):
    """A host name whose resolution took longer than allowed."""


def parse_url(url: Any) -> Target:
    """The parts of ``url`` that decide where it goes; ``UrlRejected`` for a malformed or
    ambiguous one, or one whose scheme is not http or https."""
    if not isinstance(url, str) or not url:
        raise UrlRejected(url, "the URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise UrlRejected(url, f"longer than {MAX_URL_LENGTH} characters")
    if any(char <= " " or char == "\x7f" for char in url):
        # urlsplit() drops tabs and newlines silently; what we check must be what we send.
        raise UrlRejected(url, "it contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRejected(url, "it is not a valid URL (host or port)") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise UrlRejected(url, "the scheme must be http or https")
    if "@" in parts.netloc:
        raise UrlRejected(url, "user info (user:password@) is not allowed")
    default = 443 if scheme == "https" else 80
    if port is not None and not 0 < port < 65536:
        raise UrlRejected(url, "the port is not a number from 1 to 65535")
    host = parts.hostname or ""
    if not host:
        raise UrlRejected(url, "it has no host")
    literal = _literal(url, host, bracketed=parts.netloc.startswith("["))
    try:
        sent = httpx.URL(url)  # what a request sends: it must read the host and port as we do
    except httpx.InvalidURL:
        raise UrlRejected(url, "it is not a valid URL") from None
    if (sent.raw_host.decode("ascii").lower(), sent.port or default) != (host, port or default):
        raise UrlRejected(url, "its host and port read differently to different URL parsers")
    shown = f"[{host}]" if literal is not None and literal.version == 6 else host
    return Target(
        url=url,
        scheme=scheme,
        host=host,
        port=port or default,
        literal=literal,
        host_header=shown if port in {None, default} else f"{shown}:{port}",
    )


def _literal(url: str, host: str, bracketed: bool) -> Address | None:
    """The address ``host`` is, None for a host name, or UrlRejected."""
    if bracketed:
        if "%" in host:
            raise UrlRejected(url, "IPv6 zone identifiers are not allowed")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise UrlRejected(url, "the IPv6 address is not valid") from None
    if not host.isascii():
        raise UrlRejected(url, "the host name must be ASCII (use its xn-- form)")
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if NUMERIC_LABEL.fullmatch(labels[-1]):
        # What a browser would read as an IPv4 address: only the dotted quad is unambiguous.
        try:
            return ipaddress.IPv4Address(host)
        except ValueError:
            raise UrlRejected(
                url, "write an IPv4 address as a dotted quad (like 192.0.2.1)"
            ) from None
    if len(host) > 253 or not all(LABEL.fullmatch(label) for label in labels):
        raise UrlRejected(url, "the host name is not valid")
    return None


def address_problem(
    address: Address, *, allow_loopback: bool, allow_private: bool = False
) -> str | None:
    """What makes ``address`` one the server may not reach, or None when it is public (or
    loopback and ``allow_loopback``, or private and ``allow_private``: see ``PRIVATE``)."""
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return address_problem(
                address.ipv4_mapped, allow_loopback=allow_loopback, allow_private=allow_private
            )
        if address in NAT64:  # an IPv4 address reached through a NAT64 gateway, never ours
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
            return address_problem(embedded, allow_loopback=False)
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if allow_private and any(
        address.version == network.version and address in network for network in PRIVATE
    ):
        return None
    for network, why in SPECIAL:
        if address.version == network.version and address in network:
            return why
    return None if address.is_global else "not a public address"


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, through the system's resolver."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve(resolver: Resolver, host: str, port: int, timeout: float) -> list[Address]:
    """``resolver``'s addresses for ``host``, within ``timeout`` seconds (getaddrinfo has no
    timeout of its own: it runs on a daemon thread that may be left behind)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["addresses"] = list(resolver(host, port))
        except Exception as exc:  # reported to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="ds-outbound-resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ResolveTimeout(f"resolving {host} took more than {timeout:g} s")
    if "error" in outcome:
        raise Unresolved(f"{host} did not resolve: {outcome['error']}")
    try:
        addresses = [ipaddress.ip_address(text.split("%")[0]) for text in outcome["addresses"]]
    except ValueError as exc:
        raise Unresolved(f"{host} resolved to something that is not an address: {exc}") from exc
    if not addresses:
        raise Unresolved(f"{host} resolved to no address")
    return addresses


def checked_addresses(
    target: Target,
    resolver: Resolver,
    *,
    allow_loopback: bool,
    timeout: float,
    allow_private: bool = False,
) -> list[Address]:
    """The checked addresses to connect to for ``target``; ``UrlRejected`` if one of them may
    not be reached (``address_problem``); ``Unresolved`` if the name does not resolve. The
    scheme is the caller's policy (``is_loopback`` helps)."""
    if target.literal is None and not allow_loopback:
        name = target.host.rstrip(".")
        if name == "localhost" or name.endswith(".localhost"):
            raise UrlRejected(target.url, "localhost is a loopback address")
    if target.literal is not None:
        addresses = [target.literal]
    else:
        addresses = resolve(resolver, target.host, target.port, timeout)
    for address in addresses:
        problem = address_problem(
            address, allow_loopback=allow_loopback, allow_private=allow_private
        )
        if problem:
            where = "" if target.literal is not None else f"{target.host} resolves to {address}, "
            raise UrlRejected(target.url, f"{where}{problem}")
    return addresses


def is_loopback(address: Address) -> bool:
    """Whether ``address`` is loopback (also as an IPv4-mapped IPv6 address)."""
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def is_public(address: Address) -> bool:
    """Whether ``address`` is one of the public internet (what no policy needs to open)."""
    return address_problem(address, allow_loopback=False) is None
