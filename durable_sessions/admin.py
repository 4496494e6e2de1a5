"""The admin: browse streams and the tail of their contents; delete through the log's API.

Streams are read-only here: their rows are the log's bookkeeping, so the admin never writes them
directly. Deleting goes through ``streams.delete`` (soft-delete while forks read from a stream,
cascading clean-up otherwise), one stream at a time.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from durable_sessions import streams
from durable_sessions.streams.content import is_json
from durable_sessions.streams.errors import StreamError
from durable_sessions.streams.models import Stream
from durable_sessions.streams.offsets import Position

PREVIEW_BYTES = 64 * 1024


@admin.register(Stream)
class StreamAdmin(admin.ModelAdmin):
    """Read-only list and detail of streams, with a preview of the latest data."""

    list_display = (
        "path",
        "content_type",
        "tail_seq",
        "tail_bytes",
        "closed",
        "deleted",
        "created",
        "expires",
    )
    list_filter = ("closed", "deleted", "content_type")
    search_fields = ("path",)
    ordering = ("-id",)
    readonly_fields = (
        "path",
        "content_type",
        "tail_seq",
        "tail_bytes",
        "closed",
        "deleted",
        "created",
        "expires",
        "ttl_seconds",
        "source",
        "fork_offset",
        "fork_sub_offset",
        "last_stream_seq",
        "preview",
    )
    fields = readonly_fields
    actions = ["delete_streams"]
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="created")
    def created(self, obj: Stream) -> Any:
        return obj.created

    @admin.display(description="expires")
    def expires(self, obj: Stream) -> Any:
        return obj.expires

    @admin.display(description="latest data")
    def preview(self, obj: Stream) -> str:
        """The last ~64 KiB of the stream (JSON: one message per line)."""
        if obj.deleted:
            return "(deleted; kept for its forks)"
        start = Position(0, 0)
        size = 0
        latest = obj.entries.order_by("-seq").values_list("seq", "end_bytes", "data")
        for seq, end_bytes, data in latest[:1000]:
            if size and size + len(data) > PREVIEW_BYTES:
                break
            size += len(data)
            start = Position(seq, end_bytes - len(data))
        try:
            result = streams.read(obj.path, start, max_bytes=PREVIEW_BYTES)
        except StreamError as exc:
            return f"({exc.message})"
        if not result.count:
            return "(empty)"
        if is_json(obj.content_type):
            text = "\n".join(json.dumps(m, ensure_ascii=False) for m in result.messages())
        else:
            text = result.body.decode("utf-8", errors="replace")
        return format_html(
            "<pre style='white-space: pre-wrap; max-height: 40em; overflow: auto'>{}</pre>", text
        )

    @admin.action(description="Delete the selected streams (through the log)")
    def delete_streams(self, request: HttpRequest, queryset: QuerySet) -> None:
        deleted = 0
        for path in queryset.values_list("path", flat=True):
            try:
                streams.delete(path)
                deleted += 1
            except StreamError as exc:
                self.message_user(request, f"{path}: {exc.message}", messages.WARNING)
        self.message_user(request, f"Deleted {deleted} stream(s).", messages.SUCCESS)
