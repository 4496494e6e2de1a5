"""The tables of protocol subscriptions: subscriptions, their stream links, signing keys.

Everything a subscription is lives here, in the streams database, never only in a process's
memory: its configuration, its cursor per linked stream (``SubscriptionLink``), its wake and
lease state (generation, wake id, holder, expiries) and its webhook delivery state (next
attempt, attempts, status). A restart, or another process answering the next call, changes
nothing. Times are epoch seconds (floats), as in the log's own tables.
"""

from __future__ import annotations

from django.db import models

WEBHOOK = "webhook"
PULL_WAKE = "pull-wake"


class Subscription(models.Model):
    """A durable cursor over a set of streams that wakes a consumer when they have new data.

    ``generation`` grows by one with every wake and never goes back (not even when the
    subscription is deleted and created again under the same id): it fences stale workers.
    ``wake_id`` is set while a wake is in flight or held; ``holder`` while a worker holds the
    lease (pull-wake) or a webhook delivery is being answered.
    """

    id = models.CharField(primary_key=True, max_length=255)
    kind = models.CharField(max_length=16, choices=[(WEBHOOK, WEBHOOK), (PULL_WAKE, PULL_WAKE)])
    pattern = models.TextField(null=True, blank=True)
    webhook_url = models.TextField(null=True, blank=True)
    wake_stream = models.CharField(max_length=1024, null=True, blank=True)
    lease_ttl_ms = models.IntegerField()
    description = models.TextField(null=True, blank=True)
    config_hash = models.CharField(max_length=64)
    created_at = models.FloatField()
    base_url = models.TextField(
        blank=True, default="", help_text="Where the routes are, for callback and JWKS URLs."
    )
    deleted = models.BooleanField(default=False, help_text="A tombstone: calls for it fail.")
    generation = models.BigIntegerField(default=0)
    wake_id = models.CharField(max_length=64, null=True, blank=True)
    wake_expires_at = models.FloatField(
        null=True, blank=True, help_text="When an unclaimed wake lapses and another is made."
    )
    holder = models.CharField(max_length=255, null=True, blank=True)
    lease_expires_at = models.FloatField(null=True, blank=True)
    snapshot = models.JSONField(
        null=True, blank=True, help_text="The linked streams' tails when the wake was made."
    )
    status = models.CharField(max_length=16, default="active")
    next_attempt_at = models.FloatField(
        null=True, blank=True, help_text="When the webhook delivery of this wake is due."
    )
    attempts = models.IntegerField(default=0, help_text="Failed webhook deliveries in a row.")
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "durable_sessions_subscription"
        indexes = [
            models.Index(fields=["next_attempt_at"], name="ds_sub_next_attempt"),
            models.Index(fields=["lease_expires_at"], name="ds_sub_lease_expiry"),
            models.Index(fields=["wake_expires_at"], name="ds_sub_wake_expiry"),
        ]

    def __str__(self) -> str:
        return self.id


class SubscriptionLink(models.Model):
    """One stream of a subscription and the subscription's cursor on it.

    The cursor (``acked_seq``, ``acked_bytes``) is a position of the stream ``stream_id``: when
    the path names another stream (deleted and created again, or not created yet), the cursor is
    the start of the stream that is there now. A link may be explicit, matched by the pattern,
    or both.
    """

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="links")
    path = models.CharField(max_length=1024)
    explicit = models.BooleanField(default=False)
    glob = models.BooleanField(default=False)
    stream_id = models.BigIntegerField(null=True, blank=True)
    acked_seq = models.BigIntegerField(default=0)
    acked_bytes = models.BigIntegerField(default=0)

    class Meta:
        db_table = "durable_sessions_subscription_link"
        constraints = [
            models.UniqueConstraint(fields=["subscription", "path"], name="ds_link_unique_path")
        ]
        indexes = [models.Index(fields=["path"], name="ds_link_path")]

    def __str__(self) -> str:
        return f"{self.subscription_id} -> {self.path}"


class SigningKey(models.Model):
    """An Ed25519 key that signs webhook deliveries; its public half is published (JWKS).

    The newest key without ``retired_at`` signs. A retired key stays published until no
    delivery it signed can still be inside a receiver's replay window.
    """

    kid = models.CharField(primary_key=True, max_length=64)
    private_key = models.BinaryField(help_text="The raw 32-byte Ed25519 private key.")
    public_key = models.BinaryField(help_text="The raw 32-byte Ed25519 public key.")
    created_at = models.FloatField()
    retired_at = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "durable_sessions_signing_key"

    def __str__(self) -> str:
        return self.kid
