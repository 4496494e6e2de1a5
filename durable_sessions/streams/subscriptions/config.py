"""What a subscription is configured with, parsed strictly from a request body or from Python.

``parse(body)`` validates the ``PUT /v1/stream/__ds/subscriptions/<id>`` body (PROTOCOL.md
section 6.2) and returns a ``Config``; ``Config.hash`` is what re-confirmation compares: two
PUTs with the same configuration (streams in any order, duplicates ignored) are the same.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from durable_sessions.conf import ds_settings
from durable_sessions.streams import protocol
from durable_sessions.streams.errors import BadRequest
from durable_sessions.streams.subscriptions import patterns, webhooks
from durable_sessions.streams.subscriptions.errors import InvalidRequest
from durable_sessions.streams.subscriptions.models import PULL_WAKE, WEBHOOK

MIN_LEASE_TTL_MS = 1_000
MAX_LEASE_TTL_MS = 600_000
DEFAULT_LEASE_TTL_MS = 30_000
MAX_ID_LENGTH = 255
MAX_STREAMS = 1_000
MAX_DESCRIPTION = 1_000
FIELDS = {"type", "pattern", "streams", "webhook", "wake_stream", "lease_ttl_ms", "description"}


@dataclass(frozen=True, slots=True)
class Config:
    """A subscription's configuration, normalized."""

    kind: str
    pattern: str | None
    streams: tuple[str, ...]
    webhook_url: str | None
    wake_stream: str | None
    lease_ttl_ms: int
    description: str | None

    @property
    def hash(self) -> str:
        """The SHA-256 of the configuration's canonical JSON."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def check_id(subscription_id: str) -> str:
    """A subscription id from a URL or a caller: 1 to 255 printable characters, no ``/``."""
    if not subscription_id or len(subscription_id) > MAX_ID_LENGTH:
        raise InvalidRequest(f"a subscription id has 1 to {MAX_ID_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 or c == "/" for c in subscription_id):
        raise InvalidRequest("a subscription id has no control characters and no '/'")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in subscription_id):
        raise InvalidRequest("a subscription id is valid Unicode text")
    return subscription_id


def stream_path(value: Any, field: str) -> str:
    """A stream path given in a body, checked as stream paths are."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be a string")
    try:
        return protocol.parse_stream_path(value.strip("/"), ds_settings.MAX_PATH_LENGTH)
    except BadRequest as exc:
        raise InvalidRequest(f"{field}: {exc.message}") from None


def stream_paths(value: Any, field: str = "streams") -> tuple[str, ...]:
    """A list of stream paths: sorted, without duplicates."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{field} must be a non-empty array of stream paths")
    if len(value) > MAX_STREAMS:
        raise InvalidRequest(f"{field} has at most {MAX_STREAMS} paths")
    return tuple(sorted({stream_path(item, field) for item in value}))


def parse(body: Any) -> Config:
    """The configuration in a create body; ``InvalidRequest``/``WebhookUrlRejected`` (400)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(unknown)}")
    kind = body.get("type")
    if kind not in (WEBHOOK, PULL_WAKE):
        raise InvalidRequest('type must be "webhook" or "pull-wake"')
    pattern = body.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise InvalidRequest("pattern must be a string")
        pattern = pattern.strip("/")
        patterns.parse_pattern(pattern, ds_settings.MAX_PATH_LENGTH)
    streams: tuple[str, ...] = ()
    if body.get("streams") not in (None, []):
        streams = stream_paths(body["streams"])
    if pattern is None and not streams:
        raise InvalidRequest("at least one of pattern and streams is required")
    lease = body.get("lease_ttl_ms", DEFAULT_LEASE_TTL_MS)
    if (
        isinstance(lease, bool)
        or not isinstance(lease, int)
        or not MIN_LEASE_TTL_MS <= lease <= MAX_LEASE_TTL_MS
    ):
        raise InvalidRequest(
            f"lease_ttl_ms must be an integer from {MIN_LEASE_TTL_MS} to {MAX_LEASE_TTL_MS}"
        )
    description = body.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION
    ):
        raise InvalidRequest(f"description must be a string of at most {MAX_DESCRIPTION}")
    webhook_url = wake_stream = None
    if kind == WEBHOOK:
        webhook = body.get("webhook")
        if not isinstance(webhook, dict) or set(webhook) - {"url"}:
            raise InvalidRequest('webhook subscriptions need "webhook": {"url": ...}')
        url = webhook.get("url")
        if not isinstance(url, str) or not url:
            raise InvalidRequest("webhook.url must be a URL")
        if body.get("wake_stream") is not None:
            raise InvalidRequest("wake_stream is for pull-wake subscriptions")
        webhooks.validate_url(url)  # last: it resolves the host name
        webhook_url = url
    else:
        if body.get("webhook") is not None:
            raise InvalidRequest("webhook is for webhook subscriptions")
        if body.get("wake_stream") is None:
            raise InvalidRequest("pull-wake subscriptions need wake_stream")
        wake_stream = stream_path(body["wake_stream"], "wake_stream")
    return Config(kind, pattern, streams, webhook_url, wake_stream, lease, description)
