"""Managing subscriptions: create or re-confirm, read, delete, add and remove linked streams.

Every entry point (the ``__ds`` routes, the Python API) goes through these functions; they run
in a transaction of the streams database that locks the subscription row first. A new
subscription links the streams it names, and the existing streams its pattern matches, at their
current tails: it does not replay history. Streams created later are linked by the commit hook
(``links_for_new_streams``) at their start, so their first data is pending.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.db import IntegrityError, transaction

from durable_sessions.streams.models import Stream
from durable_sessions.streams.offsets import Position
from durable_sessions.streams.subscriptions import cursors, patterns
from durable_sessions.streams.subscriptions.config import Config, check_id
from durable_sessions.streams.subscriptions.errors import SubscriptionExists, SubscriptionNotFound
from durable_sessions.streams.subscriptions.models import Subscription, SubscriptionLink


def _locked(subscription_id: str, *, deleted: bool = False) -> Subscription:
    found = (
        Subscription.objects.using(cursors.alias())
        .select_for_update()
        .filter(id=check_id(subscription_id))
        .first()
    )
    if found is None or (found.deleted and not deleted):
        raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
    return found


def _link(
    subscription: Subscription, path: str, *, explicit: bool, at: cursors.Tail | None
) -> None:
    """Link ``path`` (explicitly, or by the pattern), its cursor at ``at`` (None: the start of
    whatever stream comes there). An existing link keeps its cursor."""
    db = cursors.alias()
    link = SubscriptionLink.objects.using(db).filter(subscription=subscription, path=path).first()
    if link is None:
        link = SubscriptionLink(subscription=subscription, path=path)
        if at is not None:
            link.stream_id = at.stream_id
            link.acked_seq, link.acked_bytes = at.position.seq, at.position.bytes
    if explicit:
        link.explicit = True
    else:
        link.glob = True
    link.save(using=db)


def _backfill(subscription: Subscription, pattern: str, now: float) -> None:
    """Link the existing streams the pattern matches, at their tails."""
    candidates = Stream.objects.using(cursors.alias()).filter(
        path__startswith=patterns.literal_prefix(pattern), deleted=False
    )
    paths = [p for p in candidates.values_list("path", flat=True) if patterns.matches(pattern, p)]
    found = cursors.tails(paths, now)
    for path in paths:
        if path in found:
            _link(subscription, path, explicit=False, at=found[path])


def create_or_confirm(
    subscription_id: str, config: Config, *, base_url: str = ""
) -> tuple[Subscription, bool]:
    """Create the subscription, or confirm one with the same configuration (``created`` False).

    ``SubscriptionExists`` (409) when it exists with another configuration. A deleted one (a
    tombstone) is created anew under its id, its generation going on from where it was, so
    that no token of the old one is ever valid again.
    """
    now = time.time()
    try:
        with transaction.atomic(using=cursors.alias()):
            return _create_or_confirm(check_id(subscription_id), config, base_url, now)
    except IntegrityError:  # created concurrently by another process: judge that one
        with transaction.atomic(using=cursors.alias()):
            return _create_or_confirm(subscription_id, config, base_url, now)


def _create_or_confirm(
    subscription_id: str, config: Config, base_url: str, now: float
) -> tuple[Subscription, bool]:
    db = cursors.alias()
    existing = Subscription.objects.using(db).select_for_update().filter(id=subscription_id).first()
    if existing is not None and not existing.deleted:
        if existing.config_hash != config.hash:
            raise SubscriptionExists(
                f"subscription {subscription_id!r} exists with another configuration"
            )
        return existing, False
    subscription = existing or Subscription(id=subscription_id)
    subscription.kind = config.kind
    subscription.pattern = config.pattern
    subscription.webhook_url = config.webhook_url
    subscription.wake_stream = config.wake_stream
    subscription.lease_ttl_ms = config.lease_ttl_ms
    subscription.description = config.description
    subscription.config_hash = config.hash
    subscription.created_at = now
    subscription.base_url = base_url
    subscription.deleted = False
    clear_wake(subscription)
    subscription.status = "active"
    subscription.attempts = 0
    subscription.last_error = ""
    if existing is None:
        subscription.save(using=db, force_insert=True)
    else:
        subscription.save(using=db)
        SubscriptionLink.objects.using(db).filter(subscription=subscription).delete()
    found = cursors.tails(config.streams, now)
    for path in config.streams:
        _link(subscription, path, explicit=True, at=found.get(path))
    if config.pattern is not None:
        _backfill(subscription, config.pattern, now)
    return subscription, True


def clear_wake(subscription: Subscription) -> None:
    """Forget the wake and lease (the caller saves): the subscription is idle."""
    subscription.wake_id = None
    subscription.wake_expires_at = None
    subscription.holder = None
    subscription.lease_expires_at = None
    subscription.snapshot = None
    subscription.next_attempt_at = None


def get(subscription_id: str) -> tuple[Subscription, list[cursors.LinkState]]:
    """The subscription and the state of its links; ``SubscriptionNotFound`` (404)."""
    db = cursors.alias()
    found = Subscription.objects.using(db).filter(id=check_id(subscription_id)).first()
    if found is None or found.deleted:
        raise SubscriptionNotFound(f"no subscription {subscription_id!r}")
    links = SubscriptionLink.objects.using(db).filter(subscription=found)
    return found, cursors.states(links)


def delete(subscription_id: str) -> None:
    """Delete (tombstone) the subscription: its wake, lease and links go; calls for it fail.

    Idempotent: deleting an unknown or deleted subscription does nothing.
    """
    with transaction.atomic(using=cursors.alias()):
        try:
            subscription = _locked(subscription_id)
        except SubscriptionNotFound:
            return
        subscription.deleted = True
        clear_wake(subscription)
        subscription.save(using=cursors.alias())
        SubscriptionLink.objects.using(cursors.alias()).filter(subscription=subscription).delete()


def add_streams(subscription_id: str, paths: Iterable[str]) -> None:
    """Link ``paths`` explicitly, at their current tails (a path already linked keeps its
    cursor)."""
    paths = sorted(set(paths))
    with transaction.atomic(using=cursors.alias()):
        subscription = _locked(subscription_id)
        found = cursors.tails(paths)
        for path in paths:
            _link(subscription, path, explicit=True, at=found.get(path))


def remove_stream(subscription_id: str, path: str) -> None:
    """Remove the explicit link to ``path``; a link the pattern makes stays. Idempotent."""
    db = cursors.alias()
    with transaction.atomic(using=db):
        subscription = _locked(subscription_id)
        link = (
            SubscriptionLink.objects.using(db).filter(subscription=subscription, path=path).first()
        )
        if link is None:
            return
        still_matched = subscription.pattern is not None and patterns.matches(
            subscription.pattern, path
        )
        if link.glob and still_matched:
            link.explicit = False
            link.save(using=db)
        else:
            link.delete()


def links_for_new_streams(created: list[tuple[str, int, Position]]) -> set[str]:
    """After streams were created, ``(path, stream id, where data begins to count)`` each:
    link them to the subscriptions whose pattern matches, their cursor at that position (the
    start of a new stream, whose first data is then pending; a fork's tail, the point it forked
    at). Returns the ids of the subscriptions that gained a link.

    Explicit links need nothing: a cursor on a stream that is not there any more is the start of
    the one that is (``cursors.cursor``).
    """
    db = cursors.alias()
    touched: set[str] = set()
    with_patterns = [
        (subscription_id, pattern)
        for subscription_id, pattern in Subscription.objects.using(db)
        .filter(deleted=False, pattern__isnull=False)
        .values_list("id", "pattern")
        if pattern is not None
    ]
    for path, stream_id, start in created:
        for subscription_id, pattern in with_patterns:
            if not patterns.matches(pattern, path):
                continue
            with transaction.atomic(using=db):
                try:
                    subscription = _locked(subscription_id)
                except SubscriptionNotFound:
                    continue
                link = SubscriptionLink.objects.using(db).filter(
                    subscription=subscription, path=path
                )
                if not link.exists():
                    _link(subscription, path, explicit=False, at=cursors.Tail(stream_id, start))
                    touched.add(subscription_id)
    return touched
