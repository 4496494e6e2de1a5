"""Errors of the streams layer. Each carries the HTTP status the protocol assigns to it.

The Python API raises them; the HTTP and websocket front ends turn them into responses and error
frames with the same status, a stable ``code`` and a readable message.
"""

from __future__ import annotations


class StreamError(Exception):
    """Base class: ``status`` is the protocol's HTTP status, ``headers`` go on the response."""

    status = 500
    default_code = "stream_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.headers = dict(headers or {})
        self.details = dict(details or {})

    def as_json(self) -> dict[str, object]:
        """The JSON error body: ``{"error": {"code": ..., "message": ..., **details}}``."""
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class BadRequest(StreamError):
    """Malformed input: headers, offsets, bodies (400)."""

    status = 400
    default_code = "bad_request"


class NotAuthenticated(StreamError):
    """The client did not authenticate and the policy requires it (401)."""

    status = 401
    default_code = "not_authenticated"


class PermissionDenied(StreamError):
    """The policy refuses this client this operation (403)."""

    status = 403
    default_code = "permission_denied"


class StaleProducerEpoch(StreamError):
    """An idempotent producer wrote with an epoch older than the stream has seen (403)."""

    status = 403
    default_code = "stale_producer_epoch"


class StreamNotFound(StreamError):
    """No stream at that path (404)."""

    status = 404
    default_code = "stream_not_found"


class Conflict(StreamError):
    """The request conflicts with the stream's state or configuration (409)."""

    status = 409
    default_code = "conflict"


class StreamClosed(Conflict):
    """Appending to a closed stream (409 with ``Stream-Closed: true``)."""

    default_code = "stream_closed"


class StreamGone(StreamError):
    """The stream was deleted but forks still read from it, or data before the offset is gone."""

    status = 410
    default_code = "stream_gone"


class PayloadTooLarge(StreamError):
    """The append body exceeds ``MAX_APPEND_BYTES`` (413)."""

    status = 413
    default_code = "payload_too_large"


class Unavailable(StreamError):
    """The store could not complete the operation (database down, shutting down) (503).

    Carries ``Retry-After`` (seconds): the condition is expected to pass, and a retry of an
    append that got plain ``unavailable`` cannot write twice (it was not committed).
    """

    status = 503
    default_code = "unavailable"
    retry_after = 1

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(
            message, code=code, headers={"Retry-After": str(self.retry_after), **(headers or {})}
        )


class CommitUnknown(Unavailable):
    """The connection broke while committing: the write may or may not have happened (503).

    Never retried automatically, since a retry could write twice; an idempotent producer's
    retry is safe.
    """

    default_code = "commit_unknown"
