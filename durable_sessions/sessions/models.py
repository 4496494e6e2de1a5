"""The tables of sessions: the session row, who belongs to it, its agents and its devices.

The session's content (messages, token chunks, presence, agents as clients see them) lives on
its stream, ``sessions/<id>``; these rows hold what the server must know without reading the
stream: who may do what, the agents' secrets (never on the stream), the devices whose presence
expires, and the clock that gives every chunk its ``createdAt``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

OWNER = "owner"
MEMBER = "member"
VIEWER = "viewer"
ROLES = (OWNER, MEMBER, VIEWER)

ONLINE = "online"
AWAY = "away"
OFFLINE = "offline"
STATUSES = (ONLINE, AWAY, OFFLINE)

TRIGGERS = ("all", "user-messages", "mention")
MESSAGE_ROLES = ("user", "assistant", "system")


class Session(models.Model):
    """A collaborative chat session, whose events live on the stream ``sessions/<id>``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200, blank=True, default="")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    last_activity_at = models.DateTimeField(null=True, blank=True, db_index=True)
    clock_ms = models.BigIntegerField(
        default=0, help_text="The last createdAt given to a chunk, in epoch milliseconds."
    )
    generating_since = models.DateTimeField(
        null=True, blank=True, help_text="Set while an agent generates in the session."
    )
    forked_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks"
    )

    class Meta:
        db_table = "durable_sessions_session"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title or str(self.id)

    @property
    def stream_path(self) -> str:
        """The path of the session's stream."""
        return f"sessions/{self.id}"

    @property
    def archived(self) -> bool:
        """Whether the session is archived (hidden from lists, read-only)."""
        return self.archived_at is not None


class Membership(models.Model):
    """A user's role in a session: ``owner``, ``member`` or ``viewer``."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ds_memberships"
    )
    role = models.CharField(max_length=16, choices=[(r, r) for r in ROLES])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "durable_sessions_membership"
        constraints = [
            models.UniqueConstraint(fields=["session", "user"], name="ds_membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.session_id}"


class Agent(models.Model):
    """An agent registered on a session. ``headers`` hold its secrets: they never leave the
    server (not on the stream, not in any answer)."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="agents")
    agent_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True, default="")
    endpoint = models.TextField()
    method = models.CharField(max_length=8, default="POST")
    headers = models.JSONField(default=dict, blank=True)
    triggers = models.CharField(max_length=32, default="user-messages")
    body_template = models.JSONField(default=dict, blank=True)
    # The runtime's options (format, policy, onInterrupt, retries, timeouts): not secrets.
    options = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "durable_sessions_agent"
        constraints = [
            models.UniqueConstraint(fields=["session", "agent_id"], name="ds_agent_unique")
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} in {self.session_id}"


class Device(models.Model):
    """A device of a user in a session, as its presence stands: bound to the user who logged
    it in, and expired by the presence sweep when it stops saying anything."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="devices")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    actor_id = models.CharField(max_length=200)
    device_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=16, choices=[(s, s) for s in STATUSES], default=ONLINE)
    last_seen_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    connections = models.IntegerField(default=0, help_text="Open websockets of this device.")

    class Meta:
        db_table = "durable_sessions_device"
        constraints = [
            models.UniqueConstraint(fields=["session", "device_id"], name="ds_device_unique")
        ]

    def __str__(self) -> str:
        return f"{self.actor_id}:{self.device_id} in {self.session_id}"
