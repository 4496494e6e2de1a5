"""Placeholder until the signing module lands (no real signature)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Key:
    kid: str


def active_key() -> _Key:
    """The key that signs."""
    return _Key("ds_placeholder")


def sign(body: bytes) -> str:
    """The Webhook-Signature header value."""
    return "t=0,kid=ds_placeholder,ed25519=AA"


def jwks() -> dict:
    """The published keys."""
    return {"keys": []}
