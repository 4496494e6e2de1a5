"""Who may use the raw stream endpoints of ``sessions/<id>``: the session's roles.

The sessions layer claims the ``sessions/`` prefix of the streams layer (``claim_prefix``), so
this policy decides there whatever ``PERMISSION_POLICY`` says: members of every role and staff
may read (GET, HEAD, live reads, websockets); nobody may create, append to or delete a session
stream through the protocol, not even staff. Only the sessions service writes it, so no chunk
on it can carry someone else's name. A member removed is cut off live (``streams.revoke``).
"""

from __future__ import annotations

import uuid
from typing import Any

from channels.db import database_sync_to_async

from durable_sessions.sessions import roles
from durable_sessions.sessions.models import Membership, Session
from durable_sessions.streams.permissions import READ, Access, BasePermission

PREFIX = "sessions/"


def _session_id(path: str) -> uuid.UUID | None:
    rest = path[len(PREFIX) :]
    try:
        return uuid.UUID(rest) if "/" not in rest else None
    except ValueError:
        return None


def _may_read(user: Any, session_id: uuid.UUID) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if not Session.objects.filter(pk=session_id).exists():
        return bool(getattr(user, "is_staff", False))
    role = (
        Membership.objects.filter(session_id=session_id, user=user)
        .values_list("role", flat=True)
        .first()
    )
    return roles.allowed(role, roles.READ, staff=bool(getattr(user, "is_staff", False)))


class SessionStreams(BasePermission):
    """The policy of ``sessions/``: read by the session's members and staff, written by none."""

    async def has_permission(self, access: Access) -> bool:
        """Reads for members and staff; every other action refused."""
        if access.action != READ:
            return False
        session_id = _session_id(access.path)
        if session_id is None:
            return bool(getattr(access.user, "is_staff", False))
        return await database_sync_to_async(_may_read)(access.user, session_id)


def install() -> None:
    """Claim ``sessions/`` for this policy, observe its websockets (presence) and run the
    presence sweep beside the log (from ``AppConfig.ready``: no database touched)."""
    from durable_sessions.sessions import presence_live
    from durable_sessions.streams.permissions import claim_prefix

    claim_prefix(PREFIX, SessionStreams())
    presence_live.install(PREFIX)
