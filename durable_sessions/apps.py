"""The app's configuration: ready() only registers the system checks, the subscriptions'
worker (which starts with the log's store, on first use), the sessions' stream policy and the
signals that keep the agents' subscriptions in step."""

from __future__ import annotations

from django.apps import AppConfig


class DurableSessionsConfig(AppConfig):
    """Durable Streams and collaborative AI chat sessions."""

    name = "durable_sessions"
    verbose_name = "Durable sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the system checks, the subscriptions' worker beside the log's store
        (registered only: nothing runs, nothing touches the database, until the log is used),
        the policy of the ``sessions/`` streams, and the agents' signal receivers."""
        from durable_sessions import checks  # noqa: F401  (registers the checks)
        from durable_sessions.agents import links, signals
        from durable_sessions.sessions import access
        from durable_sessions.streams.subscriptions import worker

        worker.install()
        access.install()
        signals.install()
        links.install()
