"""The log's tables: one row per stream, one row per append, one row per idempotent producer.

The models own the schema (migrations, admin). The hot paths in ``commit.py`` and ``reads.py``
speak SQL to these tables directly, so the column names here are part of that contract.
Times are Unix epoch seconds (floats): the log compares and adds them in SQL on both Postgres and
SQLite, where a native datetime column would need a different expression per database.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import models


def as_datetime(epoch: float | None) -> datetime | None:
    """An epoch time as an aware datetime; None when absent or no date (NaN, past year 9999)."""
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


class Stream(models.Model):
    """A durable, append-only stream addressed by ``path``.

    ``tail_seq``/``tail_bytes`` are the position after the last entry: the next append gets
    ``seq = tail_seq``. A fork reads entries below ``fork_seq`` from ``source`` (recursively) and
    owns the entries from ``fork_seq`` on. A soft-deleted stream (``deleted``) is kept only because
    forks still read from it. ``first_seq``/``first_bytes`` are the first retained position: the
    entries before it were dropped (``streams.truncate``), a read from the start begins there.
    """

    id = models.BigAutoField(primary_key=True)
    path = models.CharField(max_length=1024, unique=True)
    content_type = models.CharField(max_length=255)
    created_at = models.FloatField()
    touched_at = models.FloatField(help_text="Last read or write, for the sliding TTL.")
    ttl_seconds = models.BigIntegerField(null=True, blank=True)
    expires_at = models.FloatField(null=True, blank=True, help_text="Absolute expiry.")
    tail_seq = models.BigIntegerField(default=0)
    tail_bytes = models.BigIntegerField(default=0)
    last_stream_seq = models.TextField(null=True, blank=True)
    closed = models.BooleanField(default=False)
    closed_by_producer = models.CharField(max_length=255, null=True, blank=True)
    closed_by_epoch = models.BigIntegerField(null=True, blank=True)
    closed_by_seq = models.BigIntegerField(null=True, blank=True)
    source = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="forks"
    )
    fork_seq = models.BigIntegerField(default=0)
    fork_offset = models.CharField(max_length=64, blank=True, default="")
    fork_sub_offset = models.BigIntegerField(default=0)
    deleted = models.BooleanField(default=False)
    first_seq = models.BigIntegerField(default=0, db_default=0)
    first_bytes = models.BigIntegerField(default=0, db_default=0)

    class Meta:
        db_table = "durable_sessions_stream"

    def __str__(self) -> str:
        return self.path

    @property
    def created(self) -> datetime | None:
        """Creation time as an aware datetime."""
        return as_datetime(self.created_at)

    @property
    def expires_epoch(self) -> float | None:
        """When the stream expires if nobody touches it, in epoch seconds (None: never)."""
        candidates = []
        if self.ttl_seconds is not None:
            candidates.append(self.touched_at + self.ttl_seconds)
        if self.expires_at is not None:
            candidates.append(self.expires_at)
        return min(candidates) if candidates else None

    @property
    def expires(self) -> datetime | None:
        """``expires_epoch`` as an aware datetime (None also when it is no representable date,
        such as a TTL of centuries stored before ``Stream-TTL`` was bounded)."""
        return as_datetime(self.expires_epoch)


class Entry(models.Model):
    """One append: the bytes of one POST (JSON mode: its messages, comma-joined)."""

    pk = models.CompositePrimaryKey("stream", "seq")
    # The composite primary key (stream_id, seq) already indexes stream_id.
    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, related_name="entries", db_index=False
    )
    seq = models.BigIntegerField()
    end_bytes = models.BigIntegerField(help_text="Stream byte position after this entry.")
    count = models.IntegerField(default=1, help_text="Messages in this entry (JSON mode).")
    data = models.BinaryField()

    class Meta:
        db_table = "durable_sessions_entry"
        verbose_name_plural = "entries"

    def __str__(self) -> str:
        return f"{self.stream_id}#{self.seq}"


class Producer(models.Model):
    """The state of one idempotent producer on one stream: its epoch and last accepted seq."""

    pk = models.CompositePrimaryKey("stream", "producer_id")
    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, related_name="producers", db_index=False
    )
    producer_id = models.CharField(max_length=255)
    epoch = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    updated_at = models.FloatField()

    class Meta:
        db_table = "durable_sessions_producer"

    def __str__(self) -> str:
        return f"{self.producer_id}@{self.epoch}:{self.last_seq}"
