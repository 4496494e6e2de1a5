"""Who may do what in a session: the role model, in one place.

Viewers read; members also write messages, stop generations, approve and post tool results;
owners also manage members, agents, forks, reset, archive and delete. Staff may do everything.
Every entry point asks ``allowed(role, action)`` through the service.
"""

from __future__ import annotations

from durable_sessions.sessions.models import MEMBER, OWNER, VIEWER

READ = "read"  # see the session, its messages, events, members, agents; follow the stream
WRITE = "write"  # post messages, stop, approve, tool results, presence
MANAGE = "manage"  # members, agents, fork targets, reset, archive, delete
ACTIONS = (READ, WRITE, MANAGE)

_ALLOWED = {
    VIEWER: {READ},
    MEMBER: {READ, WRITE},
    OWNER: {READ, WRITE, MANAGE},
}


def allowed(role: str | None, action: str, *, staff: bool = False) -> bool:
    """Whether ``role`` (None: not a member) may do ``action``; staff may do everything."""
    if action not in ACTIONS:
        raise ValueError(f"unknown session action {action!r}")
    return staff or (role is not None and action in _ALLOWED.get(role, set()))
