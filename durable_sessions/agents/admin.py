"""The job rows in the Django admin: read-only (they record what happened; the log is the
truth), searchable by session, agent and message, filtered by status, trigger and agent."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from durable_sessions.agents.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Generations: what each agent answered, how it ended, what it cost."""

    list_display = (
        "queued_at",
        "agent_id",
        "trigger",
        "status",
        "session",
        "worker",
        "tokens_in",
        "tokens_out",
        "error_code",
    )
    list_filter = ("status", "trigger", "agent_id")
    search_fields = ("session__id", "agent_id", "message_id", "trigger_message_id", "worker")
    date_hierarchy = "queued_at"
    list_select_related = ("session",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Jobs are made by the runtime only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Read-only: a job records what happened."""
        return False
