"""What drf-spectacular needs to describe the session API: its cookie authentication scheme,
and ``SessionSchema``, which declares the error answers every view of ``SessionAPIView`` can
give, beside the answers its ``@extend_schema`` names.

The errors, each with a ``{"detail": ...}`` body (``ErrorOut``), except 400, whose body names
the fields (``{"<field>": ["..."]}``) or says ``detail``:

- 400 when the operation takes a body or query parameters (the serializers refuse it);
- 401 everywhere (no or bad credentials), 403 wherever a role or the same-origin rule may
  refuse (every route about one session, every write);
- 404 and 409 on routes about one session (unknown session, member or message; archived, taken,
  the last owner, an offset gone);
- 415 on operations with a body that is not JSON; 503 everywhere (the log is unavailable,
  retry: ``Retry-After``).

A view that answers another error declares it in its own ``@extend_schema(responses=...)``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema

from durable_sessions.sessions.serializers import ErrorOut

VALIDATION_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "The fields that were refused, each with its messages (by item, for a list"
    " field); or `detail`.",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {
        "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object"}]
    },
}
DESCRIPTIONS = {
    "400": "The body or the query is invalid.",
    "401": "Not authenticated.",
    "403": "Your role in the session does not allow this, or a cross-site request.",
    "404": "No such session (or member, or message).",
    "409": "The session's state forbids it (archived, already exists, last owner...).",
    "415": "The body is not JSON.",
    "503": "The log is unavailable: retry after `Retry-After` seconds.",
}


class SameOriginSessionScheme(OpenApiAuthenticationExtension):
    """The session cookie (``SameOriginSessionAuthentication``) as an OpenAPI security scheme."""

    target_class = "durable_sessions.sessions.auth.SameOriginSessionAuthentication"
    name = "cookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        """An API key in Django's session cookie."""
        from django.conf import settings

        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


class SessionSchema(AutoSchema):
    """drf-spectacular's schema of a session API view, with the errors it can answer."""

    def error_statuses(self) -> list[str]:
        """The error statuses of this operation (see the module's docstring)."""
        has_body = self.method in ("PUT", "PATCH", "POST")
        in_session = "{" in self.path
        codes = ["401"]
        if has_body or self.get_override_parameters():
            codes.append("400")
        if has_body or in_session:
            codes.append("403")
        if in_session:
            codes += ["404", "409"]
        if has_body:
            codes.append("415")
        return [*sorted(codes), "503"]

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        for code in self.error_statuses():
            if code not in responses:
                body = VALIDATION_ERROR if code == "400" else ErrorOut
                response = self._get_response_for_code(body, code, direction=direction)
                response["description"] = DESCRIPTIONS[code]
                responses[code] = response
        return dict(sorted(responses.items()))
