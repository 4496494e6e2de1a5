"""Who a user is on a session stream: the public, stable ``actorId``.

``DURABLE_SESSIONS["ACTOR_ID"]`` names a callable ``(user) -> str``; the default is the
username. The actor of every write is the authenticated user: an ``actorId`` or
``X-Actor-Id`` a client sends is never taken for it.
"""

from __future__ import annotations

from typing import Any

from durable_sessions.conf import ds_settings


def username(user: Any) -> str:
    """The default ``ACTOR_ID``: the user's username."""
    return str(user.get_username())


def actor_id(user: Any) -> str:
    """The public actorId of ``user``."""
    value = ds_settings.ACTOR_ID(user)
    if not isinstance(value, str) or not value:
        raise TypeError("ACTOR_ID must return a non-empty string")
    return value


def display_name(user: Any) -> str:
    """The name shown for ``user`` (the same on all their devices)."""
    full = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return full or username(user)
