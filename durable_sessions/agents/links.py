"""Which sessions the agent runtime works on: a pull-wake subscription per session with agents.

A session with agents has the subscription ``agents-<session id>``, linked explicitly to its
stream ``sessions/<id>`` and waking the one wake stream of the worker pool
(``AGENT_WAKE_STREAM``). It is made when the session gets its first agent, before the message
that may trigger it is appended, and linked at the stream's tail then: history is not answered
again. Pending work is the stream's tail past the subscription's acked offset; nothing else is
written to remember it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

from durable_sessions import streams
from durable_sessions.conf import ds_settings
from durable_sessions.streams import subscriptions
from durable_sessions.streams.permissions import READ, Access, BasePermission, claim_prefix

logger = logging.getLogger("durable_sessions.agents")

PREFIX = "agents-"
STREAMS_PREFIX = "agents/"  # the runtime's own streams (the default wake stream)


class RuntimeStreams(BasePermission):
    """The policy of ``agents/``: staff may read (to watch the wakes), nobody writes through
    the protocol: a forged wake would only cost a claim, but it is nobody's business."""

    def has_permission(self, access: Access) -> bool:
        """Reads by staff; everything else refused."""
        return access.action == READ and bool(getattr(access.user, "is_staff", False))


def install() -> None:
    """Claim ``agents/`` for ``RuntimeStreams`` (from ``AppConfig.ready``: nothing touched)."""
    claim_prefix(STREAMS_PREFIX, RuntimeStreams())


def subscription_id(session_id: Any) -> str:
    """The id of the agents subscription of the session ``session_id``."""
    return PREFIX + uuid.UUID(str(session_id)).hex


def session_id_of(subscription: str) -> uuid.UUID | None:
    """The session an agents subscription is for, or None (another consumer's subscription)."""
    if not subscription.startswith(PREFIX):
        return None
    try:
        return uuid.UUID(subscription[len(PREFIX) :])
    except ValueError:
        return None


def wake_stream() -> str:
    """The wake stream of the worker pool, created (an empty JSON stream) if missing."""
    path = str(ds_settings.AGENT_WAKE_STREAM).strip("/")
    # (Conflict: it exists with other settings, made by an earlier configuration: use it.)
    with contextlib.suppress(streams.Conflict):
        streams.create(path, content_type="application/json")
    return path


def lease_ttl_ms() -> int:
    """The lease of a claim, in milliseconds (``AGENT_LEASE_TTL``)."""
    return max(1000, int(float(ds_settings.AGENT_LEASE_TTL) * 1000))


def ensure(session: Any) -> None:
    """Make sure ``session`` has its agents subscription (idempotent; on a changed lease
    setting the subscription is made again, at the stream's tail)."""
    sid = subscription_id(session.pk)
    config: dict[str, Any] = {
        "type": "pull-wake",
        "streams": [session.stream_path],
        "wake_stream": wake_stream(),
        "lease_ttl_ms": lease_ttl_ms(),
        "description": "agents of a session",
    }
    try:
        subscriptions.ensure(sid, **config)
    except subscriptions.SubscriptionExists:
        logger.info("the agents subscription %s is made again with new settings", sid)
        subscriptions.delete(sid)
        subscriptions.ensure(sid, **config)


def drop(session_id: Any) -> None:
    """Delete the agents subscription of a session (it was deleted; idempotent)."""
    subscriptions.delete(subscription_id(session_id))
