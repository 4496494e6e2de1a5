"""Django discovers the app's models here; each layer keeps its own in its subpackage."""

from durable_sessions.streams.models import Entry, Producer, Stream

__all__ = ["Entry", "Producer", "Stream"]
