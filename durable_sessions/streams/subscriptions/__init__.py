"""Protocol subscriptions (PROTOCOL.md sections 6-7): durable cursors that wake consumers.

A subscription links streams (by a pattern, or explicitly) to a consumer, keeps a cursor per
stream, and wakes the consumer when a stream's tail passes its cursor: by a signed webhook, or
by a wake event on a wake stream that workers claim under a lease. All of it is stored in the
streams database (``models.py``). The HTTP routes are in ``routes.py``; this package exports the
Python API (``api.py``) for consumers in the same project, and the errors.
"""

from durable_sessions.streams.subscriptions.api import (
    Info,
    Wake,
    aack,
    aadd_streams,
    ack,
    aclaim,
    add_streams,
    adelete,
    aensure,
    aget,
    aheartbeat,
    arelease,
    aremove_stream,
    claim,
    delete,
    ensure,
    get,
    heartbeat,
    heartbeat_many,
    release,
    remove_stream,
    wakes,
)
from durable_sessions.streams.subscriptions.errors import (
    AlreadyClaimed,
    Fenced,
    InvalidOffset,
    InvalidRequest,
    NoPendingWork,
    SubscriptionExists,
    SubscriptionNotFound,
    TokenExpired,
    TokenInvalid,
    WebhookUrlRejected,
)
from durable_sessions.streams.subscriptions.leases import Claim

__all__ = [
    "AlreadyClaimed",
    "Claim",
    "Fenced",
    "Info",
    "InvalidOffset",
    "InvalidRequest",
    "NoPendingWork",
    "SubscriptionExists",
    "SubscriptionNotFound",
    "TokenExpired",
    "TokenInvalid",
    "Wake",
    "WebhookUrlRejected",
    "aack",
    "aadd_streams",
    "ack",
    "aclaim",
    "add_streams",
    "adelete",
    "aensure",
    "aget",
    "aheartbeat",
    "arelease",
    "aremove_stream",
    "claim",
    "delete",
    "ensure",
    "get",
    "heartbeat",
    "heartbeat_many",
    "release",
    "remove_stream",
    "wakes",
]
