"""The admin of subscriptions: browse them, their cursors and their wake; delete through the API.

Read-only, as the log's own pages: a subscription's rows are its durable state (generation,
lease, cursors), which only the protocol's rules may change. Deleting goes through
``subscriptions.delete`` (a tombstone that fences every token of the subscription).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from durable_sessions.streams.models import as_datetime
from durable_sessions.streams.subscriptions import service
from durable_sessions.streams.subscriptions.models import Subscription, SubscriptionLink


class LinkInline(admin.TabularInline):
    """A subscription's streams and its cursor on each (read-only)."""

    model = SubscriptionLink
    fields = ("path", "explicit", "glob", "stream_id", "acked_seq", "acked_bytes")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never: links follow the subscription's configuration and the streams."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never: cursors move by acks only."""
        return False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    """Read-only list and detail of subscriptions."""

    list_display = ("id", "kind", "pattern", "generation", "holder", "status", "deleted")
    list_filter = ("kind", "status", "deleted")
    search_fields = ("id", "pattern", "wake_stream", "webhook_url")
    ordering = ("id",)
    readonly_fields = (
        "id",
        "kind",
        "pattern",
        "webhook_url",
        "wake_stream",
        "lease_ttl_ms",
        "description",
        "created",
        "deleted",
        "generation",
        "wake_id",
        "holder",
        "lease_expires",
        "status",
        "attempts",
        "next_attempt",
        "last_error",
    )
    fields = readonly_fields
    inlines = [LinkInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Never: subscriptions are made through their routes or the Python API."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never: the state changes by the protocol's rules only."""
        return False

    @admin.display(description="created")
    def created(self, obj: Subscription) -> Any:
        """When the subscription was created (or created again)."""
        return as_datetime(obj.created_at)

    @admin.display(description="lease expires")
    def lease_expires(self, obj: Subscription) -> Any:
        """When the current lease runs out."""
        return as_datetime(obj.lease_expires_at)

    @admin.display(description="next delivery attempt")
    def next_attempt(self, obj: Subscription) -> Any:
        """When the webhook delivery is due."""
        return as_datetime(obj.next_attempt_at)

    def delete_model(self, request: HttpRequest, obj: Subscription) -> None:
        """Delete through the API: a tombstone, every token fenced."""
        service.delete(obj.id)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Delete each selected subscription through the API."""
        for subscription_id in queryset.values_list("id", flat=True):
            service.delete(subscription_id)
