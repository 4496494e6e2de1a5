"""The admin: browse streams and the tail of their contents; delete through the log's API.

Streams are read-only here: their rows are the log's bookkeeping, so the admin never writes them
directly. Deleting, from the change page's Delete button or the "Delete selected" action, goes
through ``streams.delete`` (soft-delete while forks read from a stream, cascading clean-up
otherwise), never through the ORM: the confirmation page says what the log will do.

The pages show stored data, which may predate today's input checks: nothing a stream holds may
make them fail (a preview that cannot be parsed is shown as stored, a time that is no date is
shown as a number).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.db import router, transaction
from django.db.models import QuerySet
from django.db.models.functions import Length
from django.http import HttpRequest
from django.utils.html import format_html

from durable_sessions import streams
from durable_sessions.agents import admin as agents_admin  # noqa: F401
from durable_sessions.streams import Position, ReadResult, StreamError
from durable_sessions.streams.models import Stream, as_datetime
from durable_sessions.streams.subscriptions import admin as subscriptions_admin  # noqa: F401

PREVIEW_BYTES = 64 * 1024
PREVIEW_ENTRIES = 1000  # the newest entries the preview looks at to find where to start


def shown_time(epoch: float | None) -> Any:
    """An epoch time for display: a datetime, or words when it is no representable date."""
    if epoch is None:
        return None
    moment = as_datetime(epoch)
    if moment is not None:
        return moment
    if math.isnan(epoch):
        return "not a time (NaN)"
    return f"after 9999-12-31 (epoch {epoch:.0f})" if epoch > 0 else f"before year 1 ({epoch:.0f})"


def preview_text(result: ReadResult) -> str:
    """A read as text: one JSON message per line, or the stored text as it is.

    Stored JSON that cannot be parsed again (nested too deep before ``MAX_JSON_DEPTH`` existed,
    or written around the API) is shown as stored rather than failing the page.
    """
    if result.json_mode:
        try:
            return "\n".join(_message_line(message) for message in result.messages())
        except (ValueError, RecursionError):
            pass
    return result.body.decode("utf-8", errors="replace")


def _message_line(message: Any) -> str:
    line = json.dumps(message, ensure_ascii=False)
    try:
        line.encode()
    except UnicodeEncodeError:  # a lone surrogate (stored as a \\u escape) is no UTF-8 text
        line = json.dumps(message)
    return line


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
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Never: streams are created through the log's API, not here."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never: a stream's rows are the log's bookkeeping (the page is read-only)."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Only for a stream that is not already soft-deleted; deleting goes through the log."""
        if obj is not None and obj.deleted:
            return False  # already deleted: the log removes it when its last fork goes
        return super().has_delete_permission(request, obj)

    @admin.display(description="created")
    def created(self, obj: Stream) -> Any:
        """When the stream was created."""
        return shown_time(obj.created_at)

    @admin.display(description="expires")
    def expires(self, obj: Stream) -> Any:
        """When the stream expires if nobody touches it (in words when it is no date)."""
        return shown_time(obj.expires_epoch)

    @admin.display(description="latest data")
    def preview(self, obj: Stream) -> str:
        """The last ~64 KiB of the stream (JSON: one message per line)."""
        if obj.deleted:
            return "(deleted; kept for its forks)"
        start = Position(0, 0)
        size = 0
        # Sizes from the database: the entries' data (up to MAX_APPEND_BYTES each) stays there.
        latest = obj.entries.order_by("-seq").annotate(size=Length("data"))
        for seq, end_bytes, length in latest.values_list("seq", "end_bytes", "size")[
            :PREVIEW_ENTRIES
        ]:
            if size and size + length > PREVIEW_BYTES:
                break
            size += length
            start = Position(seq, end_bytes - length)
        try:
            result = streams.read(obj.path, start, max_bytes=PREVIEW_BYTES)
        except StreamError as exc:
            return f"({exc.message})"
        if not result.count:
            return "(empty)"
        text = preview_text(result)
        if len(text) > PREVIEW_BYTES:  # one entry larger than the preview: its end
            text = "…" + text[-PREVIEW_BYTES:]
        return format_html(
            "<pre style='white-space: pre-wrap; max-height: 40em; overflow: auto'>{}</pre>", text
        )

    # -- deleting through the log --------------------------------------------------------------

    def get_deleted_objects(self, objs: Iterable[Stream], request: HttpRequest) -> tuple:
        """What the confirmation page lists: what the log will do, stream by stream.

        Not the ORM's cascade: entries and producer states go with their stream, and forks do
        not protect their source, which is kept (soft-deleted) while they read from it.
        """
        lines = [self.deletion_summary(obj) for obj in objs]
        return lines, {Stream._meta.verbose_name_plural: len(lines)}, set(), []

    @staticmethod
    def deletion_summary(obj: Stream) -> str:
        """One line on what deleting ``obj`` through the log does."""
        forks = obj.forks.count()
        if obj.deleted:
            return f"{obj.path}: already deleted, kept while its {forks} fork(s) read from it"
        if forks:
            return (
                f"{obj.path}: marked deleted (410, its path stays taken) and kept, with its data,"
                f" while its {forks} fork(s) read from it"
            )
        line = f"{obj.path}, with its {obj.entries.count()} entries and producer states"
        source = obj.source
        while source is not None and source.deleted and source.forks.count() == 1:
            line += f"; then its deleted source {source.path}, whose last fork it is"
            source = source.source
        return line

    def delete_model(self, request: HttpRequest, obj: Stream) -> None:
        """Delete one stream through the log (after the admin's transaction)."""
        self.delete_through_log(request, [obj.path])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Delete the selected streams through the log, one by one."""
        self.delete_through_log(request, list(queryset.values_list("path", flat=True)))

    def delete_through_log(self, request: HttpRequest, paths: list[str]) -> None:
        """``streams.delete`` each path, once the admin's own transaction (the delete view runs
        in one) has committed: the log writes on its own connection, which on SQLite would wait
        for the admin's lock."""

        def delete() -> None:
            for path in paths:
                try:
                    streams.delete(path)
                except StreamError as exc:
                    self.message_user(request, f"{path}: {exc.message}", messages.WARNING)

        transaction.on_commit(delete, using=router.db_for_write(Stream))
