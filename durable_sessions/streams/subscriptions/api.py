"""The subscriptions' Python API, for consumers in the same project (the agent runtime).

The same models and rules as the ``__ds`` routes, without HTTP and without the permission
policy (the caller is the project's own code). Each function exists twice, ``claim`` and
``aclaim``; the async ones run the work on a thread (``database_sync_to_async``).

    from durable_sessions.streams import subscriptions

    subscriptions.ensure("chat-1", type="pull-wake", streams=["sessions/1"],
                         wake_stream="agents/wake")
    async for wake in subscriptions.wakes("agents/wake"):
        claim = await subscriptions.aclaim(wake.subscription_id, "worker-1")
        ...                                      # read from each stream's acked offset
        await subscriptions.aack(claim, {"sessions/1": offset}, done=True)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from durable_sessions.streams.offsets import Position
from durable_sessions.streams.store import get_store
from durable_sessions.streams.subscriptions import config, leases, service
from durable_sessions.streams.subscriptions.cursors import LinkState
from durable_sessions.streams.subscriptions.leases import Claim


@dataclass(frozen=True, slots=True)
class Info:
    """A subscription and where it stands on each of its streams."""

    id: str
    type: str
    pattern: str | None
    wake_stream: str | None
    webhook_url: str | None
    lease_ttl_ms: int
    generation: int
    holder: str | None
    status: str
    streams: list[LinkState]
    created: bool = False  # (``ensure``: whether this call created it)


@dataclass(frozen=True, slots=True)
class Wake:
    """A wake event read from a wake stream, and the offset after it."""

    subscription_id: str
    stream: str
    generation: int
    ts: int
    next: Position


def _info(subscription_id: str, created: bool = False) -> Info:
    subscription, states = service.get(subscription_id)
    return Info(
        subscription.id,
        subscription.kind,
        subscription.pattern,
        subscription.wake_stream,
        subscription.webhook_url,
        subscription.lease_ttl_ms,
        subscription.generation,
        subscription.holder,
        subscription.status,
        states,
        created,
    )


def ensure(
    subscription_id: str,
    *,
    type: str,
    pattern: str | None = None,
    streams: Iterable[str] = (),
    webhook_url: str | None = None,
    wake_stream: str | None = None,
    lease_ttl_ms: int = config.DEFAULT_LEASE_TTL_MS,
    description: str | None = None,
    base_url: str = "",
) -> Info:
    """Create the subscription, or confirm it has this configuration (``Info.created`` says
    which); ``SubscriptionExists`` (409) when it has another. ``base_url`` (the stream root's
    absolute URL) is needed for a webhook subscription's callback URL."""
    body: dict[str, Any] = {"type": type, "lease_ttl_ms": lease_ttl_ms}
    if pattern is not None:
        body["pattern"] = pattern
    if streams:
        body["streams"] = list(streams)
    if webhook_url is not None:
        body["webhook"] = {"url": webhook_url}
    if wake_stream is not None:
        body["wake_stream"] = wake_stream
    if description is not None:
        body["description"] = description
    wanted = config.parse(body)
    get_store()  # (this process's subscriptions thread runs beside the log's store)
    _subscription, created = service.create_or_confirm(subscription_id, wanted, base_url=base_url)
    return _info(subscription_id, created)


def get(subscription_id: str) -> Info:
    """The subscription and its streams; ``SubscriptionNotFound`` (404)."""
    return _info(subscription_id)


def delete(subscription_id: str) -> None:
    """Delete the subscription (idempotent)."""
    service.delete(subscription_id)


def add_streams(subscription_id: str, paths: Iterable[str]) -> None:
    """Link ``paths`` explicitly, at their current tails."""
    service.add_streams(subscription_id, config.stream_paths(list(paths)))


def remove_stream(subscription_id: str, path: str) -> None:
    """Remove the explicit link to ``path`` (the pattern's stays)."""
    service.remove_stream(subscription_id, config.stream_path(path, "path"))


def claim(subscription_id: str, worker: str) -> Claim:
    """Take the subscription's lease for ``worker``: ``AlreadyClaimed``, ``NoPendingWork``."""
    get_store()
    return leases.claim(subscription_id, worker)


def _body(claim: Claim, acks: Mapping[str, str | Position] | None, done: bool) -> dict[str, Any]:
    return {
        "wake_id": claim.wake_id,
        "generation": claim.generation,
        "acks": [{"stream": path, "offset": str(offset)} for path, offset in (acks or {}).items()],
        "done": done,
    }


def ack(
    claim: Claim, acks: Mapping[str, str | Position] | None = None, *, done: bool = False
) -> bool:
    """Move cursors (``{path: offset processed, inclusive}``); ``done`` ends the wake and
    returns whether a new one was made for what came meanwhile. ``Fenced`` (409) when the
    claim is no longer the current one: then nothing moved."""
    return leases.ack(claim.subscription_id, claim.token, _body(claim, acks, done))


def heartbeat(claim: Claim) -> None:
    """Extend the lease (an ack without acks and without ``done``)."""
    leases.ack(claim.subscription_id, claim.token, _body(claim, None, False))


def heartbeat_many(claims: Iterable[Claim]) -> list[Claim]:
    """Extend the leases of many claims in one transaction; the claims it could not extend
    (fenced: another worker has the subscription now, or it is gone)."""
    claims = list(claims)
    refused = leases.heartbeat_many(claims)
    return [claim for claim in claims if claim.subscription_id in refused]


def release(claim: Claim) -> bool:
    """Give the lease up without acking; returns whether a new wake was made."""
    body = {"wake_id": claim.wake_id, "generation": claim.generation}
    return leases.release(claim.subscription_id, claim.token, body)


aensure = database_sync_to_async(ensure)
aget = database_sync_to_async(get)
adelete = database_sync_to_async(delete)
aadd_streams = database_sync_to_async(add_streams)
aremove_stream = database_sync_to_async(remove_stream)
aclaim = database_sync_to_async(claim)
aack = database_sync_to_async(ack)
aheartbeat = database_sync_to_async(heartbeat)
arelease = database_sync_to_async(release)


async def wakes(wake_stream: str, offset: str | Position | None = "now") -> AsyncIterator[Wake]:
    """Follow a wake stream from ``offset`` (default: from now on) and yield its wake events.

    A wake is a hint: claim the subscription it names; a claim that finds the work taken or
    done (``AlreadyClaimed``, ``NoPendingWork``) simply means another worker was quicker.
    """
    from durable_sessions.streams.live import subscribe

    async for batch in subscribe(wake_stream, offset):
        for event in batch.messages():
            if isinstance(event, dict) and event.get("type") == "wake":
                yield Wake(
                    str(event.get("subscription_id")),
                    str(event.get("stream", "")),
                    int(event.get("generation", 0)),
                    int(event.get("ts", 0)),
                    batch.next,
                )
