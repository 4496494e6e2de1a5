"""Who may do what on the raw stream endpoints: the permission policy.

``DURABLE_SESSIONS["PERMISSION_POLICY"]`` names a class; the HTTP and websocket front ends
create it once and ask ``has_permission(access)`` before every operation. It may return a bool
or an awaitable of one (a policy that looks something up in the database). A refused anonymous
client gets 401, a refused authenticated one 403.

Actions: ``read`` (GET, HEAD, live reads, the source of a fork), ``create`` (PUT), ``append``
(POST: appends and closes), ``delete`` (DELETE).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

READ = "read"
CREATE = "create"
APPEND = "append"
DELETE = "delete"
ACTIONS = (READ, CREATE, APPEND, DELETE)


@dataclass(frozen=True, slots=True)
class Access:
    """One request for one action on one stream path, by ``user`` (possibly anonymous)."""

    user: Any
    action: str
    path: str
    scope: dict[str, Any] = field(default_factory=dict, repr=False)


class BasePermission:
    """Base class of permission policies."""

    def has_permission(self, access: Access) -> bool | Awaitable[bool]:
        raise NotImplementedError(".has_permission() must be overridden")


class AllowAny(BasePermission):
    """Everyone may do everything (public streams; how the conformance suite runs)."""

    def has_permission(self, access: Access) -> bool:
        return True


class IsAuthenticated(BasePermission):
    """Any authenticated user may do everything; anonymous clients nothing (the default)."""

    def has_permission(self, access: Access) -> bool:
        return bool(getattr(access.user, "is_authenticated", False))


class IsStaff(BasePermission):
    """Only staff users (``is_staff``) may use the raw stream endpoints."""

    def has_permission(self, access: Access) -> bool:
        user = access.user
        return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_staff", False))


class ReadAuthenticatedWriteStaff(BasePermission):
    """Authenticated users may read; only staff may create, append and delete."""

    def has_permission(self, access: Access) -> bool:
        user = access.user
        if not getattr(user, "is_authenticated", False):
            return False
        return access.action == READ or bool(getattr(user, "is_staff", False))
