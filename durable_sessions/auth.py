"""Who is calling: Django's session cookie or a REST framework token, from an ASGI scope.

The stream endpoints run in front of Django's middleware, so they authenticate here, with
Django's own session engine and user lookup: ``Authorization: Token <key>`` (or ``Bearer``) when
``rest_framework.authtoken`` is installed, else the session cookie, else an anonymous user.
A client that sends neither costs no database query.

``authenticate_again`` serves long-lived connections (websockets) that must notice a user
deactivated, a token deleted or a session ended: connections showing the same credentials
share one lookup per interval.
"""

from __future__ import annotations

import asyncio
import weakref
from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from channels.db import aclose_old_connections
from django.apps import apps
from django.conf import settings
from django.contrib.auth import aget_user
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host


class _SessionHolder:
    """The part of a request that ``aget_user`` reads: its session (all it needs of the
    ``HttpRequest`` its signature names)."""

    def __init__(self, session: Any) -> None:
        self.session = session


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """The value of header ``name`` (lowercase bytes) in an ASGI scope, or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


async def _token_user(key: str) -> Any:
    if not apps.is_installed("rest_framework.authtoken"):
        return None
    from rest_framework.authtoken.models import Token

    try:
        token = await Token.objects.select_related("user").aget(key=key)
    except Token.DoesNotExist:
        return None
    return token.user if token.user.is_active else None


async def authenticate(scope: dict[str, Any]) -> tuple[Any, str | None]:
    """The user making this request and how it proved it (``"token"``, ``"session"``).

    A request that proves no identity, or presents a token or session that does not check out,
    is ``(AnonymousUser, None)``.
    """
    authorization = header(scope, b"authorization")
    if authorization:
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() in {"token", "bearer"}:
            # A request that shows a token is judged by it alone, never by a cookie beside it.
            user = await _token_user(key.strip()) if key.strip() else None
            return (user, "token") if user is not None else (AnonymousUser(), None)
    cookies = header(scope, b"cookie")
    if cookies:
        jar = SimpleCookie()
        try:
            jar.load(cookies)
        except Exception:
            return AnonymousUser(), None
        morsel = jar.get(settings.SESSION_COOKIE_NAME)
        if morsel is not None and morsel.value:
            engine = import_module(settings.SESSION_ENGINE)
            session = engine.SessionStore(morsel.value)
            user = await aget_user(_SessionHolder(session))  # type: ignore[arg-type]
            if user.is_authenticated:
                return user, "session"
    return AnonymousUser(), None


class _Lookups:
    """The recent re-authentications of one event loop, by credentials."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str | None, str | None], tuple[float, asyncio.Future]] = {}
        self.pruned_at = 0.0

    def prune(self, now: float, max_age: float) -> None:
        """Forget lookups older than ``max_age``; a pass at most once per ``max_age``."""
        if now - self.pruned_at >= max_age:
            self.by_key = {k: v for k, v in self.by_key.items() if now - v[0] < max_age}
            self.pruned_at = now


_lookups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lookups] = (
    weakref.WeakKeyDictionary()
)


async def _look_up_again(scope: dict[str, Any]) -> tuple[Any, str | None]:
    # As Channels' database_sync_to_async does: before, the connection may have gone stale
    # since the last lookup; after, it is closed unless CONN_MAX_AGE keeps it (the next lookup
    # may be an interval away).
    await aclose_old_connections()
    try:
        return await authenticate(scope)
    finally:
        await aclose_old_connections()


async def authenticate_again(
    scope: dict[str, Any], max_age: float
) -> tuple[Any, str | None, float]:
    """``authenticate(scope)`` done afresh, or shared with a lookup of the same credentials
    started less than ``max_age`` seconds ago: ``(user, via, started)``, where ``started`` is
    the event loop's time when that lookup began (what the result is as fresh as).

    N sockets opened with one token or one session cookie cost one lookup per ``max_age``, not N.
    A failed lookup is not shared: the next caller tries again.
    """
    loop = asyncio.get_running_loop()
    now = loop.time()
    key = (header(scope, b"authorization"), header(scope, b"cookie"))
    if key == (None, None):
        return AnonymousUser(), None, now  # nothing to look up
    lookups = _lookups.get(loop)
    if lookups is None:
        lookups = _lookups[loop] = _Lookups()
    lookups.prune(now, max_age)
    entry = lookups.by_key.get(key)
    if entry is None or now - entry[0] >= max_age:
        entry = (now, asyncio.ensure_future(_look_up_again(scope)))
        lookups.by_key[key] = entry
        entry[1].add_done_callback(lambda done: _forget_failure(lookups, key, done))
    started, lookup = entry
    # Shielded: one caller going away (its socket closed) must not cancel the others' lookup.
    user, via = await asyncio.shield(lookup)
    return user, via, started


def _forget_failure(lookups: _Lookups, key: tuple, done: asyncio.Future) -> None:
    if done.cancelled() or done.exception() is not None:
        entry = lookups.by_key.get(key)
        if entry is not None and entry[1] is done:
            del lookups.by_key[key]


def host_allowed(scope: dict[str, Any]) -> bool:
    """Whether the ``Host`` header names this site (``ALLOWED_HOSTS``, as Django checks it)."""
    host = header(scope, b"host")
    if not host:
        return True  # HTTP/1.0 without Host: nothing is built from it
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


def same_origin_or_allowed(scope: dict[str, Any], allowed: list[str]) -> bool:
    """Whether a request's ``Origin`` (if any) is this site or an explicitly allowed origin.

    Browsers send ``Origin`` with every cross-site write, so a write authenticated by a session
    cookie and carrying a foreign origin is a cross-site request forgery.
    """
    origin = header(scope, b"origin")
    if origin is None:
        return True
    host = header(scope, b"host")
    if host:
        # A page on http(s)://site opens ws(s)://site. Daphne reports no scheme for sockets:
        # then the host must match.
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", ""), scope.get("scheme"))
        if scheme is None and scope.get("type") == "websocket":
            if urlsplit(origin).netloc == host:
                return True
        elif origin == f"{scheme or 'http'}://{host}":
            return True
    return origin in allowed
