"""What drf-spectacular needs to describe the session API's authentication in the schema."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class SameOriginSessionScheme(OpenApiAuthenticationExtension):
    """The session cookie (``SameOriginSessionAuthentication``) as an OpenAPI security scheme."""

    target_class = "durable_sessions.sessions.auth.SameOriginSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        """An API key in Django's session cookie."""
        from django.conf import settings

        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}
