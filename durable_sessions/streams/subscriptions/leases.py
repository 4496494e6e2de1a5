"""Wakes, claims, acks and leases (PROTOCOL.md section 7): who works on a subscription now.

A subscription is idle when no wake is in flight and no lease is held. When an idle
subscription has pending work, ``wake`` gives it a new ``generation`` and ``wake_id`` and
either appends a wake event to its wake stream (pull-wake) or schedules a webhook delivery.
A pull-wake worker ``claim``s it (a claim finds pending work by itself, so it succeeds right
after an append, whether a wake was made yet or not), heartbeats and acks with ``ack``, and
ends with ``ack(done=True)`` or ``release``. Every call after the claim must carry the token,
generation and wake id of the current wake: anything else is ``FENCED`` and changes nothing.
Cursors only move forward and never past a stream's tail. When a lease or an unclaimed wake
lapses, the sweep clears it and wakes again if work is pending: duplicate wakes are harmless,
the claim decides.

The wake event of a pull-wake subscription is appended after the transaction that made the
wake commits (the log commits on its own connection). A crash in between leaves a wake without
its event; it lapses after ``lease_ttl_ms`` and the sweep makes another.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from durable_sessions.streams.errors import BadRequest, StreamError
from durable_sessions.streams.offsets import Position, parse_offset
from durable_sessions.streams.subscriptions import cursors, tokens
from durable_sessions.streams.subscriptions.errors import (
    AlreadyClaimed,
    Fenced,
    InvalidOffset,
    InvalidRequest,
    NoPendingWork,
    SubscriptionNotFound,
    TokenExpired,
    TokenInvalid,
)
from durable_sessions.streams.subscriptions.models import (
    PULL_WAKE,
    WEBHOOK,
    Subscription,
    SubscriptionLink,
)
from durable_sessions.streams.subscriptions.service import clear_wake

logger = logging.getLogger("durable_sessions.streams.subscriptions")

TOKEN_TTL = 24 * 3600.0  # seconds; fencing (generation, wake id, lease) does the real work

# Called after a commit that scheduled a webhook delivery: the worker sends it at once.
delivery_listeners: list[Callable[[], None]] = []


@dataclass(frozen=True, slots=True)
class Claim:
    """A granted claim: the wake it is for, the token to show, the streams to work on."""

    subscription_id: str
    wake_id: str
    generation: int
    token: str
    streams: list[cursors.LinkState]
    lease_ttl_ms: int

    def as_json(self) -> dict[str, Any]:
        """The claim as the protocol answers it."""
        return {
            "wake_id": self.wake_id,
            "generation": self.generation,
            "token": self.token,
            "streams": [state.as_json() for state in self.streams],
            "lease_ttl_ms": self.lease_ttl_ms,
        }


@dataclass(frozen=True, slots=True)
class Ack:
    """One cursor move asked for: stream ``path`` processed up to ``offset`` (inclusive)."""

    path: str
    offset: Position


def _db() -> str:
    return cursors.alias()


def _locked(subscription_id: str) -> Subscription:
    found = Subscription.objects.using(_db()).select_for_update().filter(id=subscription_id)
    subscription = found.first()
    if subscription is None or subscription.deleted:
        raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
    return subscription


def _links(subscription: Subscription) -> list[SubscriptionLink]:
    return list(SubscriptionLink.objects.using(_db()).filter(subscription=subscription))


def _lapsed(subscription: Subscription, now: float) -> bool:
    """Whether the current wake or lease has run out (the sweep may not have cleared it yet)."""
    if subscription.wake_id is None:
        return False
    if subscription.holder is not None or subscription.kind == WEBHOOK:
        return subscription.lease_expires_at is not None and subscription.lease_expires_at <= now
    return subscription.wake_expires_at is not None and subscription.wake_expires_at <= now


def _ttl(subscription: Subscription) -> float:
    return subscription.lease_ttl_ms / 1000


def _wake(subscription: Subscription, states: list[cursors.LinkState], now: float) -> None:
    """Make a new wake (the caller holds the row lock, and saves): generation, wake id,
    snapshot; its event or delivery follows the commit."""
    subscription.generation += 1
    subscription.wake_id = "w_" + secrets.token_urlsafe(12)
    subscription.snapshot = {
        state.path: [state.stream_id, state.tail.seq, state.tail.bytes]
        for state in states
        if state.tail is not None and state.stream_id is not None
    }
    subscription.holder = None
    if subscription.kind == WEBHOOK:
        subscription.lease_expires_at = now + _ttl(subscription)
        subscription.wake_expires_at = None
        subscription.next_attempt_at = now
        transaction.on_commit(_deliveries_due, using=_db())
        return
    subscription.lease_expires_at = None
    subscription.wake_expires_at = now + _ttl(subscription)
    first = next((state.path for state in states if state.has_pending), "")
    event = {
        "type": "wake",
        "subscription_id": subscription.id,
        "stream": first,
        "generation": subscription.generation,
        "ts": int(now * 1000),
    }
    wake_stream = subscription.wake_stream
    transaction.on_commit(lambda: _append_wake(wake_stream, event), using=_db())


def _append_wake(wake_stream: str | None, event: dict[str, Any]) -> None:
    from durable_sessions.streams import api  # (the log's API: a layer below, no circle)

    if wake_stream is None:
        return
    try:
        api.append_json(wake_stream, [event])
    except StreamError as exc:  # no wake stream (yet): the wake lapses and is made again
        logger.warning(
            "could not append the wake of %s to %s: %s",
            event["subscription_id"],
            wake_stream,
            exc.message,
        )


def _deliveries_due() -> None:
    for listener in list(delivery_listeners):
        listener()


def wake_locked(subscription: Subscription, now: float) -> bool:
    """Wake ``subscription`` (locked by the caller, who saves it) if it has pending work."""
    states = cursors.states(_links(subscription), now)
    if not any(state.has_pending for state in states):
        return False
    _wake(subscription, states, now)
    return True


def wake_if_pending(subscription_ids: list[str]) -> int:
    """Wake each idle subscription among these that has pending work (after a commit, and from
    the sweep); each in its own transaction. Returns how many were woken."""
    woken = 0
    for subscription_id in sorted(set(subscription_ids)):
        now = time.time()
        with transaction.atomic(using=_db()):
            try:
                subscription = _locked(subscription_id)
            except SubscriptionNotFound:
                continue
            if subscription.wake_id is not None and not _lapsed(subscription, now):
                continue  # a wake in flight or a lease held: whoever has it sees the new data
            clear_wake(subscription)
            if wake_locked(subscription, now):
                woken += 1
            subscription.save(using=_db())
    return woken


def claim(subscription_id: str, worker: str) -> Claim:
    """Take the lease of a pull-wake subscription for ``worker``.

    ``AlreadyClaimed`` (409) while another worker's lease runs; ``NoPendingWork`` (409) when
    every stream is acked to its tail. A lapsed lease is taken over under a new generation, so
    the worker that had it is fenced.
    """
    if not isinstance(worker, str) or not worker or len(worker) > 255:
        raise InvalidRequest("worker must be a string of 1 to 255 characters")
    now = time.time()
    with transaction.atomic(using=_db()):
        subscription = _locked(subscription_id)
        if subscription.kind != PULL_WAKE:
            raise InvalidRequest("only pull-wake subscriptions are claimed")
        if subscription.holder is not None and not _lapsed(subscription, now):
            raise AlreadyClaimed(
                f"subscription {subscription_id!r} is claimed by {subscription.holder!r}",
                details={
                    "current_holder": subscription.holder,
                    "generation": subscription.generation,
                },
            )
        if subscription.holder is not None or _lapsed(subscription, now):
            clear_wake(subscription)
        states = cursors.states(_links(subscription), now)
        if not any(state.has_pending for state in states):
            subscription.save(using=_db())
            raise NoPendingWork(f"subscription {subscription_id!r} has no pending work")
        if subscription.wake_id is None:
            _wake(subscription, states, now)
        subscription.holder = worker
        subscription.wake_expires_at = None
        subscription.lease_expires_at = now + _ttl(subscription)
        subscription.save(using=_db())
        assert subscription.wake_id is not None
        token = tokens.issue(
            subscription.id, subscription.generation, subscription.wake_id, TOKEN_TTL
        )
        return Claim(
            subscription.id,
            subscription.wake_id,
            subscription.generation,
            token,
            states,
            subscription.lease_ttl_ms,
        )


def parse_acks(body: Any) -> tuple[str, int, list[Ack], bool]:
    """``(wake_id, generation, acks, done)`` from an ack, callback or release body."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - {"wake_id", "generation", "acks", "done"})
    if unknown:
        raise InvalidRequest(f"unknown fields: {', '.join(unknown)}")
    wake_id, generation = body.get("wake_id"), body.get("generation")
    if not isinstance(wake_id, str) or not wake_id:
        raise InvalidRequest("wake_id must be a string")
    if isinstance(generation, bool) or not isinstance(generation, int):
        raise InvalidRequest("generation must be an integer")
    done = body.get("done", False)
    if not isinstance(done, bool):
        raise InvalidRequest("done must be true or false")
    raw = body.get("acks", [])
    if not isinstance(raw, list):
        raise InvalidRequest("acks must be an array")
    acks = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"stream", "path", "offset"}:
            raise InvalidRequest('an ack is {"stream": <path>, "offset": <offset>}')
        path = item.get("stream", item.get("path"))
        offset = item.get("offset")
        if not isinstance(path, str) or not isinstance(offset, str):
            raise InvalidRequest("an ack's stream and offset are strings")
        if offset == "-1":
            raise InvalidOffset("an ack's offset is a position, not -1")
        try:
            acks.append(Ack(path.strip("/"), parse_offset(offset)))
        except BadRequest:
            raise InvalidRequest(f"malformed offset {offset[:80]!r}") from None
    return wake_id, generation, acks, done


def _fence(
    subscription: Subscription, token: str, wake_id: str, generation: int, now: float
) -> None:
    token_generation, token_wake = tokens.verify(token, subscription.id)
    current = (subscription.generation, subscription.wake_id)
    if (
        (token_generation, token_wake) != current
        or (generation, wake_id) != current
        or subscription.wake_id is None
        or _lapsed(subscription, now)
        or (subscription.kind == PULL_WAKE and subscription.holder is None)
    ):
        raise Fenced("the wake is not the current one", details={"generation": current[0]})


def _apply(subscription: Subscription, acks: list[Ack], now: float) -> None:
    """Move cursors; all or nothing. ``InvalidOffset`` for an unlinked stream, a move
    backwards or past the tail, or an offset that is no position of the stream."""
    from durable_sessions.streams import api  # (the log's API: a layer below, no circle)

    if not acks:
        return
    links = {link.path: link for link in _links(subscription)}
    found = cursors.tails(links, now)
    moves = []
    for ack in acks:
        link = links.get(ack.path)
        if link is None:
            raise InvalidOffset(f"{ack.path!r} is not a stream of this subscription")
        tail = found.get(ack.path)
        if tail is None:
            raise InvalidOffset(f"there is no stream at {ack.path!r}")
        if ack.offset.seq < cursors.cursor(link, tail).seq:
            raise InvalidOffset(f"the ack for {ack.path!r} moves its cursor backwards")
        if ack.offset.seq > tail.position.seq:
            raise InvalidOffset(f"the ack for {ack.path!r} is past the stream's tail")
        if ack.offset.seq not in (0, tail.position.seq):
            try:  # a real position of the stream, both halves (the read checks them)
                api.read(ack.path, ack.offset, max_bytes=1)
            except StreamError:
                raise InvalidOffset(f"{ack.offset} is not a position of {ack.path!r}") from None
        elif ack.offset.bytes != (0 if ack.offset.seq == 0 else tail.position.bytes):
            raise InvalidOffset(f"{ack.offset} is not a position of {ack.path!r}")
        moves.append((link, tail.stream_id, ack.offset))
    for link, stream_id, offset in moves:
        link.stream_id, link.acked_seq, link.acked_bytes = stream_id, offset.seq, offset.bytes
        link.save(using=_db(), update_fields=["stream_id", "acked_seq", "acked_bytes"])


def ack(subscription_id: str, token: str, body: Any, *, kind: str = PULL_WAKE) -> bool:
    """Apply the acks of the current wake; without ``done`` a heartbeat that extends the lease,
    with ``done`` the end of the wake. Returns ``next_wake``: whether pending work remained and
    a new wake was made. ``kind=WEBHOOK`` is the webhook's callback."""
    wake_id, generation, acks, done = parse_acks(body)
    now = time.time()
    with transaction.atomic(using=_db()):
        subscription = _locked(subscription_id)
        if subscription.kind != kind:
            raise InvalidRequest("acks are for pull-wake subscriptions, callbacks for webhook ones")
        _fence(subscription, token, wake_id, generation, now)
        _apply(subscription, acks, now)
        next_wake = False
        if done:
            clear_wake(subscription)
            next_wake = wake_locked(subscription, now)
        else:
            subscription.lease_expires_at = now + _ttl(subscription)
        subscription.save(using=_db())
        return next_wake


def heartbeat_many(claims: Sequence[Claim]) -> set[str]:
    """Extend the leases of many pull-wake claims in one transaction (a worker's heartbeat for
    every session it holds): the ids of the claims it did not extend (fenced, their token no
    good, or the subscription gone), whose rows are left as they were. The rows are locked in
    id order, so two workers' heartbeats never wait on each other crosswise."""
    by_id = {claim.subscription_id: claim for claim in claims}
    if not by_id:
        return set()
    now = time.time()
    refused = set(by_id)
    extend: dict[float, list[str]] = {}  # by lease TTL
    with transaction.atomic(using=_db()):
        rows = Subscription.objects.using(_db()).select_for_update().filter(id__in=list(by_id))
        for subscription in rows.order_by("id"):
            claim = by_id[subscription.id]
            if subscription.deleted or subscription.kind != PULL_WAKE:
                continue
            try:
                _fence(subscription, claim.token, claim.wake_id, claim.generation, now)
            except (Fenced, TokenInvalid, TokenExpired):
                continue
            refused.discard(subscription.id)
            extend.setdefault(_ttl(subscription), []).append(subscription.id)
        for ttl, ids in extend.items():
            Subscription.objects.using(_db()).filter(id__in=ids).update(lease_expires_at=now + ttl)
    return refused


def release(subscription_id: str, token: str, body: Any) -> bool:
    """Give the lease up without acking; pending work gets a new wake (returned)."""
    wake_id, generation, acks, _done = parse_acks(body)
    if acks:
        raise InvalidRequest("release carries no acks (ack first)")
    now = time.time()
    with transaction.atomic(using=_db()):
        subscription = _locked(subscription_id)
        if subscription.kind != PULL_WAKE:
            raise InvalidRequest("only pull-wake subscriptions are released")
        _fence(subscription, token, wake_id, generation, now)
        clear_wake(subscription)
        next_wake = wake_locked(subscription, now)
        subscription.save(using=_db())
        return next_wake


def lapsed(limit: int = 100) -> list[str]:
    """The subscriptions whose lease or unclaimed wake has run out (for the sweep)."""
    now = time.time()
    rows = Subscription.objects.using(_db()).filter(deleted=False, wake_id__isnull=False)
    rows = rows.filter(lease_expires_at__lte=now) | rows.filter(wake_expires_at__lte=now)
    return list(rows.order_by("id").values_list("id", flat=True)[:limit])
