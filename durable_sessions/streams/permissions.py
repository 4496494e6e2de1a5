"""Who may do what on the raw stream endpoints: the permission policy.

``DURABLE_SESSIONS["PERMISSION_POLICY"]`` names a class; the HTTP and websocket front ends
create it once and ask ``has_permission(access)`` before every operation (a websocket: when it
opens, at its first append frame, and again every ``AUTH_RECHECK_INTERVAL``, see
``wsauth.py``). It may return a bool or an awaitable of one (a policy that looks something up
in the database). A refused anonymous client gets 401, a refused authenticated one 403.

Actions: ``read`` (GET, HEAD, live reads, the source of a fork), ``create`` (PUT), ``append``
(POST: appends and closes), ``delete`` (DELETE), and for subscriptions (``subscriptions/``)
``subscribe`` (create, read, delete one, change its streams) and ``claim`` (take a pull-wake
lease), both on the path ``__ds/subscriptions/<id>``.

A layer above may claim a prefix (``claim_prefix``): its policy then governs those paths
instead of the configured one.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from durable_sessions.auth import authenticate, authenticate_again, same_origin_or_allowed
from durable_sessions.conf import ds_settings
from durable_sessions.streams.errors import NotAuthenticated, PermissionDenied

READ = "read"
CREATE = "create"
APPEND = "append"
DELETE = "delete"
SUBSCRIBE = "subscribe"  # manage a subscription (path: __ds/subscriptions/<id>)
CLAIM = "claim"  # claim a pull-wake subscription's lease (path: __ds/subscriptions/<id>)
ACTIONS = (READ, CREATE, APPEND, DELETE, SUBSCRIBE, CLAIM)


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
        """Whether ``access.user`` may do ``access.action`` on ``access.path`` (or an
        awaitable of that)."""
        raise NotImplementedError(".has_permission() must be overridden")


class AllowAny(BasePermission):
    """Everyone may do everything (public streams; how the conformance suite runs)."""

    def has_permission(self, access: Access) -> bool:
        """Always."""
        return True


class IsAuthenticated(BasePermission):
    """Any authenticated user may do everything; anonymous clients nothing (the default)."""

    def has_permission(self, access: Access) -> bool:
        """When the user is authenticated."""
        return bool(getattr(access.user, "is_authenticated", False))


class IsStaff(BasePermission):
    """Only staff users (``is_staff``) may use the raw stream endpoints."""

    def has_permission(self, access: Access) -> bool:
        """When the user is authenticated and staff."""
        user = access.user
        return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_staff", False))


class ReadAuthenticatedWriteStaff(BasePermission):
    """Authenticated users may read; only staff may create, append and delete."""

    def has_permission(self, access: Access) -> bool:
        """Reads for authenticated users; everything else for staff only."""
        user = access.user
        if not getattr(user, "is_authenticated", False):
            return False
        return access.action == READ or bool(getattr(user, "is_staff", False))


_policy: tuple[type, Any] | None = None
_claimed: dict[str, BasePermission] = {}


def permission_policy() -> BasePermission:
    """The configured policy instance (made again when the setting changes)."""
    global _policy
    cls = ds_settings.PERMISSION_POLICY
    if _policy is None or _policy[0] is not cls:
        _policy = (cls, cls())
    return _policy[1]


def claim_prefix(prefix: str, policy: BasePermission) -> None:
    """Let ``policy`` alone govern every path that starts with ``prefix`` (which ends with
    ``/``), whatever ``PERMISSION_POLICY`` says: a layer above that owns those streams (the
    sessions own ``sessions/``) decides who reads and writes them. Claiming again replaces."""
    if not prefix.endswith("/"):
        raise ValueError("a claimed prefix ends with '/'")
    _claimed[prefix] = policy


def policy_for(path: str) -> BasePermission:
    """The policy that governs ``path``: the claim of its prefix, else the configured one."""
    for prefix, policy in _claimed.items():
        if path.startswith(prefix):
            return policy
    return permission_policy()


class Caller:
    """Who is calling, authenticated on first need, and what the policy lets them do.

    A caller authenticated by a session cookie must also come from this site or from an origin
    listed in ``CORS_ALLOWED_ORIGINS``: for every write, and (``cross_site_reads=False``, the
    websocket case, where no CORS protects a read) for reads too.
    """

    def __init__(self, scope: dict[str, Any], *, cross_site_reads: bool = True) -> None:
        self.scope = scope
        self.cross_site_reads = cross_site_reads
        self.user: Any = None
        self.via: str | None = None

    async def authenticate_again(self, max_age: float) -> float:
        """Find out again who is calling (for a connection that outlives its credentials: a
        token deleted, a session ended, a user deactivated); the next ``authorize`` judges that
        user. Returns the event loop time the lookup started (see ``auth.authenticate_again``).
        """
        self.user, self.via, started = await authenticate_again(self.scope, max_age)
        return started

    async def authorize(self, action: str, path: str) -> None:
        """Return if allowed; raise ``NotAuthenticated`` (401) or ``PermissionDenied`` (403)."""
        policy = policy_for(path)
        if isinstance(policy, AllowAny):
            return
        if self.user is None:
            self.user, self.via = await authenticate(self.scope)
        checks_origin = action != READ or not self.cross_site_reads
        if (
            self.via == "session"
            and checks_origin
            and not same_origin_or_allowed(self.scope, ds_settings.CORS_ALLOWED_ORIGINS)
        ):
            raise PermissionDenied(
                "cross-site request with session credentials refused (use a token, or list the "
                "origin in CORS_ALLOWED_ORIGINS)",
                code="csrf_origin",
            )
        allowed = policy.has_permission(Access(self.user, action, path, self.scope))
        if not isinstance(allowed, bool):
            allowed = await allowed
        if allowed:
            return
        if not getattr(self.user, "is_authenticated", False):
            raise NotAuthenticated(
                "authentication required", headers={"WWW-Authenticate": 'Token realm="streams"'}
            )
        raise PermissionDenied(f"not allowed to {action} {path!r}")
