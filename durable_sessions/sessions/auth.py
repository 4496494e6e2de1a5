"""How the session API knows who calls: a REST framework token, or the session cookie guarded
by a strict same-origin check in place of the CSRF token.

The reference client sends neither a token nor ``X-CSRFToken``: it relies on the page's
session cookie. So a cookie-authenticated write passes when the browser says it is
same-origin (``Sec-Fetch-Site: same-origin``), or, from a browser that does not send that
header, when its ``Origin`` is this site or an allowed origin (``CORS_ALLOWED_ORIGINS``); a
request with neither header is refused, unless it carries a valid CSRF token (Django's check,
which is also accepted). A cross-site form or fetch is refused with 403.
"""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions

from durable_sessions.conf import ds_settings


def _origin_allowed(request: Any) -> bool:
    origin = request.META.get("HTTP_ORIGIN")
    if not origin or origin == "null":
        return False
    if origin == f"{request.scheme}://{request.get_host()}":
        return True
    allowed = [o for o in ds_settings.CORS_ALLOWED_ORIGINS if o != "*"]
    return origin in allowed


class SameOriginSessionAuthentication(authentication.SessionAuthentication):
    """Django's session cookie, with same-origin checked instead of (or besides) CSRF."""

    def enforce_csrf(self, request: Any) -> None:
        """Refuse a cookie-authenticated write that is not provably from this site."""
        if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
            return
        site = request.META.get("HTTP_SEC_FETCH_SITE")
        if site is not None:
            if site == "same-origin" or (site == "same-site" and _origin_allowed(request)):
                return
            raise exceptions.PermissionDenied(
                f"cross-site request refused (Sec-Fetch-Site: {site})"
            )
        if "HTTP_ORIGIN" in request.META:
            if _origin_allowed(request):
                return
            raise exceptions.PermissionDenied("cross-site request refused (Origin)")
        # Neither header: only a valid CSRF token proves the page is ours.
        super().enforce_csrf(request)
