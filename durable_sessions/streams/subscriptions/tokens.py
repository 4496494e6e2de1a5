"""Callback and claim tokens: a wake's bearer credential for its callback, ack and release.

A token says "generation ``g``, wake ``w``, of subscription ``s``, until ``expiry``". It is
``<payload>.<mac>``, both unpadded base64url, about 110 characters, fit for an
``Authorization: Bearer`` header (RFC 6750's token characters): ``payload`` is the JSON array
``[generation, wake_id, expiry in epoch milliseconds]``, readable by whoever holds the token
(none of it is secret: the wake's delivery carries the same values), and ``mac`` is an
HMAC-SHA256 of the payload and the subscription id, keyed from ``SECRET_KEY`` with a salt of
its own (Django's ``salted_hmac``), so no other signature made with ``SECRET_KEY`` can pass for
a token. The subscription id is in the MAC and not in the token: a token presented for another
subscription fails as a forgery does. ``SECRET_KEY_FALLBACKS`` are accepted, as Django's own
signatures accept them, so rotating ``SECRET_KEY`` does not cut short the wakes in flight.

The token proves the caller was handed this wake; whether the wake is still the current one
(generation, wake id, lease) is the subscription's state to decide (PROTOCOL.md 7.3).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

from durable_sessions.streams.subscriptions.errors import TokenExpired, TokenInvalid

SALT = "durable_sessions.streams.subscriptions.tokens"
MAX_TOKEN_LENGTH = 2048
TOKEN = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _mac(payload: str, subscription_id: str, secret: str | bytes) -> str:
    # The payload is base64url (no "."), so "payload.subscription_id" splits one way only.
    value = f"{payload}.{subscription_id}"
    return _b64(salted_hmac(SALT, value, secret, algorithm="sha256").digest())


def issue(
    subscription_id: str,
    generation: int,
    wake_id: str,
    ttl_seconds: float,
    *,
    now: float | None = None,
) -> str:
    """A token for wake ``wake_id`` of ``generation`` of ``subscription_id``, valid for
    ``ttl_seconds`` from ``now`` (default: the current time)."""
    start = time.time() if now is None else now
    expiry = math.ceil((start + ttl_seconds) * 1000)
    document = json.dumps([generation, wake_id, expiry], separators=(",", ":"))
    payload = _b64(document.encode("utf-8"))
    return f"{payload}.{_mac(payload, subscription_id, settings.SECRET_KEY)}"


def verify(token: str, subscription_id: str, *, now: float | None = None) -> tuple[int, str]:
    """The ``(generation, wake_id)`` that ``token`` was issued for, when it was issued for
    ``subscription_id`` and has not expired at ``now``.

    Raises ``TokenInvalid`` for anything that is not a token this server issued for this
    subscription (malformed, forged, tampered with, another subscription's), and
    ``TokenExpired`` for a genuine token past its expiry.
    """
    match = TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None or len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid("The token is malformed.")
    payload, mac = match.groups()
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    if not any(
        constant_time_compare(mac, _mac(payload, subscription_id, secret)) for secret in secrets
    ):
        raise TokenInvalid("The token is not valid for this subscription.")
    try:
        generation, wake_id, expiry = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
    except (binascii.Error, ValueError, TypeError) as exc:
        raise TokenInvalid("The token is malformed.") from exc
    if not (
        type(generation) is int and isinstance(wake_id, str) and type(expiry) is int
    ):  # what issue() writes; anything else was not made by it
        raise TokenInvalid("The token is malformed.")
    if (time.time() if now is None else now) * 1000 >= expiry:
        raise TokenExpired("The token has expired.")
    return generation, wake_id
