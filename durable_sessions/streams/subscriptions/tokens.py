"""Placeholder until the tokens module lands: signed (generation, wake id) for a subscription."""

from __future__ import annotations

from django.core import signing

from durable_sessions.streams.subscriptions.errors import TokenExpired, TokenInvalid

SALT = "durable_sessions.subscriptions.token"


def issue(subscription_id: str, generation: int, wake_id: str, ttl_seconds: float) -> str:
    """A token for one wake of one subscription."""
    return signing.dumps([subscription_id, generation, wake_id, ttl_seconds], salt=SALT)


def verify(token: str, subscription_id: str) -> tuple[int, str]:
    """``(generation, wake_id)`` of a valid token for ``subscription_id``."""
    try:
        sub, generation, wake_id, _ttl = signing.loads(token, salt=SALT, max_age=24 * 3600)
    except signing.SignatureExpired:
        raise TokenExpired("token expired") from None
    except (signing.BadSignature, ValueError, TypeError):
        raise TokenInvalid("token invalid") from None
    if sub != subscription_id:
        raise TokenInvalid("token invalid")
    return generation, wake_id
