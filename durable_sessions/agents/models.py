"""The record of the agent runtime: a ``Job`` row per generation.

A job is a record, not the queue: the work is the session stream's tail past its subscription's
acked offset (``links.py``). The row says what happened (status, trigger, timings, usage,
error) and, while it runs, which worker under which claim generation holds it, so that the
worker taking a session over knows which generations were cut off and by whom.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from durable_sessions.sessions.models import Session

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
STOPPED = "stop"
ERROR = "error"
INTERRUPTED = "interrupted"  # its worker died; ended with an error, or retried as another job
REJECTED = "rejected"  # the agent was busy and its policy is "reject": nothing was written
STATUSES = (QUEUED, RUNNING, DONE, STOPPED, ERROR, INTERRUPTED, REJECTED)
ENDED = (DONE, STOPPED, ERROR, INTERRUPTED, REJECTED)

# Why a job was started.
TRIGGERS = ("user-messages", "all", "mention", "approval", "tool-result", "retry", "regenerate")


class Job(models.Model):
    """One generation of one agent in one session."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="jobs")
    agent_id = models.CharField(max_length=200)
    message_id = models.CharField(max_length=200, help_text="The generation's messageId.")
    trigger = models.CharField(max_length=32, choices=[(t, t) for t in TRIGGERS])
    trigger_message_id = models.CharField(max_length=200)
    # "<agentId> <trigger> <triggerMessageId>" (plus " #<n>" for a retry): a trigger is answered
    # once, whichever worker reads it, however often the log is read again after a crash.
    key = models.CharField(max_length=700)
    # Replies in a row by agents, this one included (loop protection: AGENT_MAX_CHAIN).
    depth = models.PositiveIntegerField(default=1)
    status = models.CharField(
        max_length=16, choices=[(s, s) for s in STATUSES], default=QUEUED, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True, default="")
    claim_generation = models.BigIntegerField(default=0)
    initiated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The user whose message started the chain, if any.",
    )
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    tokens_in = models.PositiveIntegerField(null=True, blank=True)
    tokens_out = models.PositiveIntegerField(null=True, blank=True)
    usage_counted = models.BooleanField(
        default=False, help_text="Tokens counted by us: the upstream reported no usage."
    )
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    stopped_by = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        db_table = "durable_sessions_job"
        ordering = ["-queued_at"]
        constraints = [
            models.UniqueConstraint(fields=["session", "key"], name="ds_job_once_per_trigger")
        ]
        indexes = [
            models.Index(fields=["session", "status"], name="ds_job_session_status"),
            models.Index(fields=["session", "message_id"], name="ds_job_message"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} on {self.trigger_message_id} ({self.status})"
