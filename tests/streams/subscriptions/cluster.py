"""Server processes for the subscription crash tests, and the HTTP calls a consumer makes.

``Node`` wraps one ``ServerProcess`` with an HTTP client for its stream routes and its
``__ds/subscriptions`` routes, as a worker or a webhook receiver would call them. ``Cursors``
watches what ``GET`` says a subscription's cursors are, and fails the test the moment one moves
backwards. ``state()`` reads a subscription's whole row and links from the database: what a
fenced call must leave as it was.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
from django.db import connection

from durable_sessions.streams.offsets import parse_offset
from durable_sessions.streams.subscriptions.models import Subscription, SubscriptionLink
from tests.servers import ServerProcess, database_env

TIMEOUT = 30.0  # seconds any wait of these tests may take before it fails
# What every server process of these tests runs with: a fast sweep, webhooks to loopback.
ENV = {"DS_SUBSCRIPTION_SWEEP_INTERVAL": "0.2", "DS_WEBHOOK_ALLOW_LOOPBACK": "1"}


def server_env(name: str) -> dict[str, str]:
    """``ENV``, and on Postgres the process's connections named ``name`` in
    ``pg_stat_activity`` (so a test can see what that process is waiting for)."""
    env = dict(ENV)
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = database_env()["DATABASE_URL"] + f"?application_name={name}"
    return env


class Node:
    """One server process and an HTTP client for its routes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server = ServerProcess(env=server_env(name))
        self.http = httpx.Client(base_url=f"{self.server.url}/v1/stream/", timeout=TIMEOUT)

    def start(self) -> Node:
        self.server.start()
        return self

    def stop(self) -> None:
        self.http.close()
        self.server.stop()

    def freeze(self) -> None:
        """SIGSTOP the process (see ``ServerProcess.freeze``)."""
        self.server.freeze()

    def thaw(self) -> None:
        """SIGCONT a frozen process: it carries on where it stopped."""
        self.server.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the process."""
        self.server.kill()

    # -- streams -------------------------------------------------------------------------------

    def create(self, path: str) -> None:
        """Create a JSON stream."""
        response = self.http.put(path, headers={"content-type": "application/json"})
        assert response.status_code == 201, response.text

    def append(self, path: str, *messages: Any) -> str:
        """Append ``messages`` in one request; returns the acknowledged next offset."""
        response = self.http.post(path, json=list(messages))
        assert response.status_code in (200, 204), response.text
        return response.headers["stream-next-offset"]

    def read(self, path: str, offset: str = "-1") -> tuple[list[Any], str]:
        """Every message after ``offset``, and the offset after the last."""
        messages: list[Any] = []
        while True:
            response = self.http.get(path, params={"offset": offset})
            assert response.status_code == 200, response.text
            messages += response.json()
            offset = response.headers["stream-next-offset"]
            if response.headers.get("stream-up-to-date") == "true":
                return messages, offset

    def tail(self, path: str) -> str:
        """The stream's next offset now."""
        response = self.http.head(path)
        assert response.status_code == 200, response.text
        return response.headers["stream-next-offset"]

    def wait_for_wake(
        self,
        wake_stream: str,
        subscription_id: str,
        after: int,
        offset: str = "-1",
        timeout: float = TIMEOUT,
    ) -> dict[str, Any]:
        """Follow ``wake_stream`` (long-polls, as a live worker does) from ``offset`` until a wake
        of ``subscription_id`` with a generation above ``after``; returns that event."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.http.get(wake_stream, params={"offset": offset, "live": "long-poll"})
            assert response.status_code in (200, 204), response.text
            if response.status_code == 200:
                for event in response.json():
                    if event["subscription_id"] == subscription_id and event["generation"] > after:
                        return event
            offset = response.headers["stream-next-offset"]
        raise AssertionError(f"no wake of {subscription_id} above generation {after}")

    def wakes(self, wake_stream: str, subscription_id: str) -> list[dict[str, Any]]:
        """Every wake event of ``subscription_id`` on ``wake_stream`` so far."""
        events, _ = self.read(wake_stream)
        return [event for event in events if event["subscription_id"] == subscription_id]

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, subscription_id: str, **config: Any) -> dict[str, Any]:
        response = self.http.put(f"__ds/subscriptions/{subscription_id}", json=config)
        assert response.status_code == 201, response.text
        return response.json()

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        response = self.http.get(f"__ds/subscriptions/{subscription_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def claim(self, subscription_id: str, worker: str) -> httpx.Response:
        return self.http.post(
            f"__ds/subscriptions/{subscription_id}/claim", json={"worker": worker}
        )

    def ack(
        self,
        subscription_id: str,
        claim: dict[str, Any],
        acks: dict[str, str] | None = None,
        *,
        done: bool = False,
    ) -> httpx.Response:
        """An ack (a heartbeat without ``acks`` and ``done``) with the claim's token and wake."""
        body = {
            "wake_id": claim["wake_id"],
            "generation": claim["generation"],
            "acks": [{"stream": path, "offset": offset} for path, offset in (acks or {}).items()],
            "done": done,
        }
        return self.http.post(
            f"__ds/subscriptions/{subscription_id}/ack", json=body, headers=bearer(claim)
        )

    def release(self, subscription_id: str, claim: dict[str, Any]) -> httpx.Response:
        body = {"wake_id": claim["wake_id"], "generation": claim["generation"]}
        return self.http.post(
            f"__ds/subscriptions/{subscription_id}/release", json=body, headers=bearer(claim)
        )

    def jwks(self) -> dict[str, Any]:
        response = self.http.get("__ds/jwks.json")
        assert response.status_code == 200, response.text
        return response.json()


def bearer(claim: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {claim['token']}"}


def error_code(response: httpx.Response) -> tuple[int, str]:
    """``(status, error code)`` of an answer (the code None when it is no error)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    return response.status_code, error.get("code") if isinstance(error, dict) else None


def link(subscription: dict[str, Any] | list[dict[str, Any]], path: str) -> dict[str, Any]:
    """The entry for ``path`` in a subscription's (or a claim's, or a delivery's) streams."""
    streams = subscription if isinstance(subscription, list) else subscription["streams"]
    return next(entry for entry in streams if entry["path"] == path)


class Cursors:
    """Every cursor ``GET`` has shown for a subscription; ``see`` fails on a backward move."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def see(self, subscription: dict[str, Any]) -> dict[str, str]:
        now = {entry["path"]: entry["acked_offset"] for entry in subscription["streams"]}
        for path, offset in now.items():
            if path in self.seen:
                before, after = parse_offset(self.seen[path]), parse_offset(offset)
                assert (after.seq, after.bytes) >= (before.seq, before.bytes), (
                    f"the cursor of {path} moved backwards: {self.seen[path]} -> {offset}"
                )
            self.seen[path] = offset
        return now


def state(subscription_id: str) -> dict[str, Any]:
    """The subscription's row and links as stored (everything a call could change)."""
    row = Subscription.objects.filter(id=subscription_id).values().get()
    row["links"] = list(
        SubscriptionLink.objects.filter(subscription_id=subscription_id)
        .order_by("path")
        .values("path", "stream_id", "acked_seq", "acked_bytes", "explicit", "glob")
    )
    return row
