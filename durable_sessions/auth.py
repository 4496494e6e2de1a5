"""Who is calling: Django's session cookie or a REST framework token, from an ASGI scope.

The stream endpoints run in front of Django's middleware, so they authenticate here, with
Django's own session engine and user lookup: ``Authorization: Token <key>`` (or ``Bearer``) when
``rest_framework.authtoken`` is installed, else the session cookie, else an anonymous user.
A client that sends neither costs no database query.
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import aget_user
from django.contrib.auth.models import AnonymousUser


class _SessionHolder:
    """The part of a request that ``aget_user`` reads: its session."""

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


async def authenticate(scope: dict[str, Any]) -> Any:
    """The user making this request (``AnonymousUser`` when it proves no identity).

    A request that presents a token or session that does not check out is anonymous too.
    """
    authorization = header(scope, b"authorization")
    if authorization:
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() in {"token", "bearer"} and key.strip():
            user = await _token_user(key.strip())
            if user is not None:
                return user
    cookies = header(scope, b"cookie")
    if cookies:
        jar = SimpleCookie()
        try:
            jar.load(cookies)
        except Exception:
            return AnonymousUser()
        morsel = jar.get(settings.SESSION_COOKIE_NAME)
        if morsel is not None and morsel.value:
            engine = import_module(settings.SESSION_ENGINE)
            session = engine.SessionStore(morsel.value)
            return await aget_user(_SessionHolder(session))
    return AnonymousUser()
