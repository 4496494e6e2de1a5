"""What the sessions service raises, each error carrying its HTTP status.

They are REST framework exceptions, so the API answers them as they are; the websocket, the
admin and the management commands read ``status_code`` and ``detail`` the same way.
"""

from __future__ import annotations

from rest_framework import exceptions, status


class SessionError(exceptions.APIException):
    """Base class of the sessions service's errors."""


class NotFound(SessionError):
    """No such session (or the caller may not know it exists), member, agent or message."""

    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "not found"
    default_code = "not_found"


class Forbidden(SessionError):
    """The caller's role does not allow this."""

    status_code = status.HTTP_403_FORBIDDEN
    default_detail = "your role in this session does not allow this"
    default_code = "forbidden"


class Conflict(SessionError):
    """The request contradicts the session's state (archived, an id taken, the last owner)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "conflict"
    default_code = "conflict"


class Invalid(SessionError):
    """A value the service cannot take (beyond what the serializers check)."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "invalid request"
    default_code = "invalid"


class Unavailable(SessionError):
    """The log could not take the write now; retry (the answer carries ``Retry-After``)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "the log is unavailable, retry"
    default_code = "unavailable"


class Fenced(Conflict):
    """A write by an agent worker whose claim was taken over: it may not write any more."""

    default_detail = "the claim was taken over"
    default_code = "fenced"
