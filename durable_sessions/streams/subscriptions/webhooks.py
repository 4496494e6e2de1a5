"""Placeholder until the webhook module lands: URLs are checked for a scheme only."""

from __future__ import annotations

from durable_sessions.streams.subscriptions.errors import WebhookUrlRejected


def validate_url(url: str) -> None:
    """Refuse what is not http(s)."""
    if not url.startswith(("http://", "https://")):
        raise WebhookUrlRejected("webhook URLs are http(s)")
