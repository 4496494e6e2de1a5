"""Where a webhook URL goes, and whether a webhook may go there (SSRF, PROTOCOL.md 12.8).

The reading of URLs and addresses is shared with the session agents and lives in
``durable_sessions/outbound.py``; this module is the webhooks' policy over it, with their
wording of errors (``WebhookUrlRejected``): ``parse_url()`` reads the parts of a URL that
decide where a request goes, and refuses what is malformed or ambiguous;
``checked_addresses()`` resolves the host and refuses it unless every address it stands for is
public (or loopback, when allowed), and requires https except to loopback. ``webhooks.py`` uses
both, to accept a subscription's URL and again at each delivery. The rules and their reasons
are in docs/subscriptions.md, "Webhook URLs and SSRF".
"""

from __future__ import annotations

from typing import Any

from durable_sessions import outbound
from durable_sessions.outbound import (
    Address,
    Resolver,
    ResolveTimeout,
    Target,
    Unresolved,
    address_problem,
    system_resolver,
)
from durable_sessions.streams.subscriptions.errors import WebhookUrlRejected

__all__ = [
    "Address",
    "ResolveTimeout",
    "Resolver",
    "Target",
    "Unresolved",
    "address_problem",
    "checked_addresses",
    "parse_url",
    "rejected",
    "system_resolver",
]


def rejected(url: str, why: str) -> WebhookUrlRejected:
    """The error that refuses ``url`` because of ``why``."""
    return WebhookUrlRejected(f"Webhook URL {url[:200]!r} rejected: {why}.")


def _why(exc: outbound.UrlRejected) -> str:
    if exc.why == "the scheme must be http or https":
        return "the scheme must be https (or http to loopback in development)"
    return exc.why


def parse_url(url: Any) -> Target:
    """The parts of ``url`` that decide where it goes, or WebhookUrlRejected for a malformed
    or ambiguous one."""
    if not isinstance(url, str) or not url:
        raise WebhookUrlRejected("The webhook URL must be a non-empty string.")
    try:
        return outbound.parse_url(url)
    except outbound.UrlRejected as exc:
        raise rejected(url, _why(exc)) from None


def checked_addresses(
    target: Target, resolver: Resolver, allow_loopback: bool, timeout: float
) -> list[Address]:
    """The checked addresses to connect to for ``target``; WebhookUrlRejected if one of them
    may not be reached; Unresolved if the name does not resolve."""
    try:
        addresses = outbound.checked_addresses(
            target, resolver, allow_loopback=allow_loopback, timeout=timeout
        )
    except outbound.UrlRejected as exc:
        raise rejected(target.url, exc.why) from None
    if target.scheme == "http" and not all(outbound.is_loopback(a) for a in addresses):
        raise rejected(target.url, "webhook URLs must use https (http only to loopback)")
    return addresses
