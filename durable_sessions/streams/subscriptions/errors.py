"""The errors of the subscription routes, with the codes PROTOCOL.md section 6-7 gives them.

They are ``StreamError``s, so the HTTP front end answers them as it answers every error of the
layer: their status, and ``{"error": {"code", "message", ...details}}``.
"""

from __future__ import annotations

from durable_sessions.streams.errors import StreamError


class InvalidRequest(StreamError):
    """A malformed body, path or field (400)."""

    status = 400
    default_code = "INVALID_REQUEST"


class WebhookUrlRejected(StreamError):
    """A webhook URL that is not https, or points at a private, loopback or metadata address
    (400)."""

    status = 400
    default_code = "WEBHOOK_URL_REJECTED"


class TokenInvalid(StreamError):
    """A missing, malformed or forged callback or claim token (401)."""

    status = 401
    default_code = "TOKEN_INVALID"


class TokenExpired(StreamError):
    """A token past its expiry (401)."""

    status = 401
    default_code = "TOKEN_EXPIRED"


class SubscriptionNotFound(StreamError):
    """No subscription with that id, or it was deleted (404)."""

    status = 404
    default_code = "SUBSCRIPTION_NOT_FOUND"


class SubscriptionExists(StreamError):
    """A subscription with that id exists with another configuration (409)."""

    status = 409
    default_code = "SUBSCRIPTION_ALREADY_EXISTS"


class Fenced(StreamError):
    """A call for a wake that is no longer the current one: stale generation or wake id, an
    expired lease (409). It changes nothing."""

    status = 409
    default_code = "FENCED"


class AlreadyClaimed(StreamError):
    """Another worker holds the lease (409, with ``current_holder`` and ``generation``)."""

    status = 409
    default_code = "ALREADY_CLAIMED"


class NoPendingWork(StreamError):
    """A claim with nothing to do: every linked stream is acked to its tail (409)."""

    status = 409
    default_code = "NO_PENDING_WORK"


class InvalidOffset(StreamError):
    """An ack for a stream that is not linked, before the cursor, or past the tail (409)."""

    status = 409
    default_code = "INVALID_OFFSET"
