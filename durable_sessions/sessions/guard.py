"""Who stands where in a session: ``session_access()``, the check every service flow starts with.

It lives apart from ``service.py`` so that the flows in their own modules (agents, actions,
presence...) can use it while ``service.py`` re-exports them, without an import circle.
``service.Access`` and ``service.session_access`` are these.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from durable_sessions.sessions import errors, roles
from durable_sessions.sessions.identity import actor_id
from durable_sessions.sessions.models import Membership, Session


@dataclass(frozen=True, slots=True)
class Access:
    """A user's standing in a session: the session row and their role (None for staff who are
    not members)."""

    session: Session
    user: Any
    role: str | None

    @property
    def actor_id(self) -> str:
        """The user's public actorId."""
        return actor_id(self.user)

    @property
    def staff(self) -> bool:
        """Whether the user is staff (may do everything)."""
        return bool(getattr(self.user, "is_staff", False))


def as_uuid(value: Any) -> uuid.UUID:
    """``value`` as a session id; ``NotFound`` when it is not a UUID."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise errors.NotFound("no such session") from None


def role_of(user: Any, session: Session) -> str | None:
    """``user``'s role in ``session`` (None: not a member, or not authenticated)."""
    if not getattr(user, "is_authenticated", False):
        return None
    return (
        Membership.objects.filter(session=session, user=user).values_list("role", flat=True).first()
    )


def session_access(*, user: Any, session_id: Any, action: str) -> Access:
    """The session and the user's role, if ``user`` may do ``action`` in it.

    ``NotFound`` for an unknown session, ``Forbidden`` for a role that does not allow
    ``action`` (an outsider may not even read), ``Conflict`` for a write to an archived one.
    """
    try:
        session = Session.objects.get(pk=as_uuid(session_id))
    except Session.DoesNotExist:
        raise errors.NotFound("no such session") from None
    role = role_of(user, session)
    if not roles.allowed(role, action, staff=bool(getattr(user, "is_staff", False))):
        raise errors.Forbidden(f"your role in this session does not allow {action}")
    if action != roles.READ and session.archived:
        raise errors.Conflict("the session is archived", code="archived")
    return Access(session, user, role)


def refusal(*, user: Any, session_id: Any, action: str) -> errors.SessionError | None:
    """Why ``user`` may not do ``action`` in the session at all (``NotFound``, ``Forbidden``),
    or None: the session's state (archived) is not looked at. The API asks it when a body is
    refused, so that a caller without the role learns that, not what is wrong with the body."""
    try:
        session = Session.objects.get(pk=as_uuid(session_id))
    except (Session.DoesNotExist, errors.NotFound):
        return errors.NotFound("no such session")
    staff = bool(getattr(user, "is_staff", False))
    if not roles.allowed(role_of(user, session), action, staff=staff):
        return errors.Forbidden(f"your role in this session does not allow {action}")
    return None
