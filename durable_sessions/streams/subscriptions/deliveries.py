"""Webhook deliveries: which are due, taking one, and what its answer changes.

A webhook wake is due at once (``next_attempt_at``). Whoever sends it first ``take``s it: the
row lock, and pushing ``next_attempt_at`` past the send's timeout, keep every other process
from sending it too. The body is signed (``signing.sign``) and carries a callback token bound
to the subscription, generation and wake. ``settle`` records the outcome, unless the wake moved
on meanwhile: an answer ``{"done": true}`` acks every stream up to its tail at the wake and
ends the wake (waking again if more came since); a failure schedules a retry with exponential
backoff (``webhooks.backoff``) and marks the subscription ``failed`` until one succeeds. All of
it is in the database: the next process to sweep honours the schedule.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import quote

from django.db import transaction

from durable_sessions.conf import ds_settings
from durable_sessions.streams.offsets import Position
from durable_sessions.streams.subscriptions import cursors, leases, tokens, webhooks
from durable_sessions.streams.subscriptions.models import WEBHOOK, Subscription, SubscriptionLink
from durable_sessions.streams.subscriptions.service import clear_wake


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook request to send: for which wake, where, and its exact body."""

    subscription_id: str
    generation: int
    wake_id: str
    url: str
    body: bytes


def route_url(base_url: str, subscription_id: str, action: str) -> str:
    """The absolute URL of a subscription's route (``callback``, ``claim``...)."""
    return f"{base_url}__ds/subscriptions/{quote(subscription_id, safe='')}/{action}"


def due(limit: int = 100) -> list[str]:
    """The webhook subscriptions whose delivery is due now."""
    rows = Subscription.objects.using(cursors.alias()).filter(
        deleted=False, kind=WEBHOOK, wake_id__isnull=False, next_attempt_at__lte=time.time()
    )
    return list(rows.order_by("next_attempt_at").values_list("id", flat=True)[:limit])


def take(subscription_id: str) -> Delivery | None:
    """Claim the due delivery of ``subscription_id`` for this process; None when it is not due
    (any more) or another process took it."""
    now = time.time()
    db = cursors.alias()
    with transaction.atomic(using=db):
        subscription = (
            Subscription.objects.using(db).select_for_update().filter(id=subscription_id).first()
        )
        if (
            subscription is None
            or subscription.deleted
            or subscription.kind != WEBHOOK
            or subscription.wake_id is None
            or subscription.next_attempt_at is None
            or subscription.next_attempt_at > now
            or not subscription.webhook_url
        ):
            return None
        timeout = float(ds_settings.WEBHOOK_TIMEOUT)
        subscription.next_attempt_at = now + timeout + 5  # ours until the send is over
        subscription.save(using=db, update_fields=["next_attempt_at"])
        links = SubscriptionLink.objects.using(db).filter(subscription=subscription)
        snapshot = subscription.snapshot or {}
        streams = []
        for state in cursors.states(links, now):
            shown = state.as_json()
            taken = snapshot.get(state.path)
            if taken is not None and taken[0] == state.stream_id:
                tail = Position(taken[1], taken[2])
                shown["tail_offset"] = str(tail)
                shown["has_pending"] = tail.seq > state.acked.seq
            streams.append(shown)
        body = {
            "subscription_id": subscription.id,
            "wake_id": subscription.wake_id,
            "generation": subscription.generation,
            "streams": streams,
            "callback_url": route_url(subscription.base_url, subscription.id, "callback"),
            "callback_token": tokens.issue(
                subscription.id, subscription.generation, subscription.wake_id, leases.TOKEN_TTL
            ),
        }
        return Delivery(
            subscription.id,
            subscription.generation,
            subscription.wake_id,
            subscription.webhook_url,
            json.dumps(body, separators=(",", ":")).encode(),
        )


def settle(delivery: Delivery, *, done: bool = False, error: str | None = None) -> None:
    """Record the outcome of a sent delivery: answered (``done`` when the receiver said it
    finished), or failed with ``error``."""
    now = time.time()
    db = cursors.alias()
    with transaction.atomic(using=db):
        subscription = (
            Subscription.objects.using(db)
            .select_for_update()
            .filter(id=delivery.subscription_id)
            .first()
        )
        if (
            subscription is None
            or subscription.deleted
            or subscription.generation != delivery.generation
            or subscription.wake_id != delivery.wake_id
        ):
            return  # the wake moved on (a callback, a lapse, a deletion): nothing to record
        if error is not None:
            subscription.attempts += 1
            subscription.status = "failed"
            subscription.last_error = error[:1000]
            subscription.next_attempt_at = now + webhooks.backoff(subscription.attempts)
            # The lease covers the wait: the same wake is retried, not a new one made.
            subscription.lease_expires_at = subscription.next_attempt_at + (
                subscription.lease_ttl_ms / 1000
            )
            subscription.save(using=db)
            return
        subscription.status = "active"
        subscription.attempts = 0
        subscription.last_error = ""
        subscription.next_attempt_at = None
        if done:
            _ack_snapshot(subscription)
            clear_wake(subscription)
            leases.wake_locked(subscription, now)
        subscription.save(using=db)


def _ack_snapshot(subscription: Subscription) -> None:
    """Move each cursor up to the stream's tail at the wake (never backwards, and only on the
    stream the snapshot was taken of)."""
    db = cursors.alias()
    for path, (stream_id, seq, size) in (subscription.snapshot or {}).items():
        SubscriptionLink.objects.using(db).filter(
            subscription=subscription, path=path, stream_id=stream_id, acked_seq__lt=seq
        ).update(acked_seq=seq, acked_bytes=size)
        SubscriptionLink.objects.using(db).filter(subscription=subscription, path=path).exclude(
            stream_id=stream_id
        ).update(stream_id=stream_id, acked_seq=seq, acked_bytes=size)
