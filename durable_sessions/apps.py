"""The app's configuration: ready() only registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig


class DurableSessionsConfig(AppConfig):
    """Durable Streams and collaborative AI chat sessions."""

    name = "durable_sessions"
    verbose_name = "Durable sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the system checks (nothing else: no database, no import of the streams)."""
        from durable_sessions import checks  # noqa: F401  (registers the checks)
