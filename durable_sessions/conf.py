"""The ``DURABLE_SESSIONS`` settings dict, read over ``DEFAULTS`` through a lazy object.

Usage: ``from durable_sessions.conf import ds_settings; ds_settings.LONG_POLL_TIMEOUT``.
Dotted paths named in ``IMPORT_STRINGS`` are imported on first access. The cache is dropped
whenever Django's ``setting_changed`` signal fires for ``DURABLE_SESSIONS`` (tests use
``override_settings``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # Seconds a long-poll read waits for new data before answering 204.
    "LONG_POLL_TIMEOUT": 20.0,
    # Seconds a websocket may stay unable to take a frame before it is closed (4008, resume).
    "WEBSOCKET_SEND_TIMEOUT": 30.0,
    # Seconds an SSE response stays open before the server closes it (clients reconnect).
    "SSE_RECONNECT_INTERVAL": 60.0,
    # Upper bound of the body of one catch-up read (one entry larger than this is still served).
    "MAX_READ_BYTES": 1024 * 1024,
    # Largest accepted append body; larger bodies get 413.
    "MAX_APPEND_BYTES": 8 * 1024 * 1024,
    # Deepest nesting of arrays and objects in one JSON message; deeper ones get 400.
    "MAX_JSON_DEPTH": 128,
    # Longest accepted stream path, in characters.
    "MAX_PATH_LENGTH": 1024,
    # Who may do what on the raw stream endpoints (a class with has_permission()).
    "PERMISSION_POLICY": "durable_sessions.streams.permissions.IsAuthenticated",
    # Seconds after which an open websocket's user is authenticated and authorized again.
    "AUTH_RECHECK_INTERVAL": 60.0,
    # Origins allowed by CORS on the stream endpoints; "*" allows any origin (no credentials).
    "CORS_ALLOWED_ORIGINS": ["*"],
    # Value of the Cross-Origin-Resource-Policy header on stream responses.
    "CROSS_ORIGIN_RESOURCE_POLICY": "cross-origin",
    # The database alias that holds streams.
    "DATABASE_ALIAS": "default",
    # Group-commit writer threads per process on Postgres (SQLite always uses one).
    "WRITER_THREADS": 1,
    # Most operations the group-commit writer puts into one transaction.
    "WRITER_MAX_BATCH": 1000,
    # Threads (each with its own connection) that serve catch-up reads.
    "READER_THREADS": 4,
    # Seconds without a notification after which a live reader re-reads the database.
    "LIVE_RECHECK_INTERVAL": 5.0,
    # Seconds between sweeps that delete expired streams.
    "EXPIRY_SWEEP_INTERVAL": 30.0,
    # Seconds between the subscriptions' sweeps: lapsed leases and wakes, missed wakes, retries.
    "SUBSCRIPTION_SWEEP_INTERVAL": 1.0,
    # The stream root's absolute URL for the callback and JWKS URLs that subscriptions hand out
    # (e.g. "https://api.example.com/v1/stream/"); by default taken from the creating request.
    "SUBSCRIPTION_BASE_URL": None,
    # Threads per process that send webhook deliveries.
    "WEBHOOK_THREADS": 4,
    # SQLite's synchronous pragma on the log's connections: "FULL" (an acknowledged append
    # survives power loss), "EXTRA", or "NORMAL" (faster; the last commits may be lost on power
    # loss or an OS crash, never on a process crash).
    "SQLITE_SYNCHRONOUS": "FULL",
    # Whether webhook URLs may point at this machine (http:// or https:// to 127.0.0.0/8, ::1,
    # localhost). For development and tests only: it lets any subscriber reach local services.
    "WEBHOOK_ALLOW_LOOPBACK": False,
    # Seconds a webhook delivery may take (name resolution, connection, request, response).
    "WEBHOOK_TIMEOUT": 10.0,
    # Seconds around its timestamp during which receivers accept a webhook signature; a retired
    # signing key stays published in the JWKS this long (and a minute more) after retirement.
    "WEBHOOK_REPLAY_WINDOW": 300.0,
    # -- sessions
    # A callable (dotted path) giving a user's public actorId on session streams.
    "ACTOR_ID": "durable_sessions.sessions.identity.username",
    # Sessions whose materialized state a process keeps (caught up from where it stood).
    "SESSION_CACHE_SIZE": 256,
    # Longest message a user may post, in characters.
    "MAX_MESSAGE_CHARS": 100_000,
    # Agents registered on every new session: a list of AgentSpec dicts (docs/agents-registry.md).
    # They may name Python agents (python:<dotted.path>), which users may not register.
    "DEFAULT_AGENTS": [],
    # Whether agent endpoints may point at loopback and private networks (RFC 1918, CGNAT, IPv6
    # unique local), checked at registration and at connect time. The host project sets it from
    # DS_AGENT_ALLOW_PRIVATE=1. Link-local (cloud metadata) and multicast stay refused.
    "AGENT_ALLOW_PRIVATE": False,
    # The built-in agent python:durable_sessions.agents.builtin.openai_chat: an OpenAI-compatible
    # Chat Completions API. None reads the environment variable of the same name, else the
    # default: "https://api.openai.com/v1", "" and "gpt-4o-mini" (docs/settings.md).
    "OPENAI_BASE_URL": None,
    "OPENAI_API_KEY": None,
    "OPENAI_MODEL": None,
    # Seconds a device stays present without a word (login, heartbeat, an open websocket renews
    # it); then the presence sweep turns it offline, whichever process saw it last.
    "PRESENCE_TTL": 60.0,
    # Seconds a device stays online after its last websocket closed (a reload reconnects).
    "PRESENCE_GRACE": 10.0,
    # Seconds between presence sweeps (every process runs one).
    "PRESENCE_SWEEP_INTERVAL": 2.0,
    # -- the agent runtime (docs/agents.md) --
    # The stream every session's agents subscription wakes (one for the worker pool).
    "AGENT_WAKE_STREAM": "agents/wake",
    # Seconds a worker's claim of a session lasts without a heartbeat (a dead worker's
    # generations are taken over after this).
    "AGENT_LEASE_TTL": 15.0,
    # Generations one worker runs at once.
    "AGENT_CONCURRENCY": 100,
    # Seconds token deltas are held and joined before they are written (0: every delta).
    "AGENT_FLUSH_INTERVAL": 0.05,
    # Most agent replies in a row (an agent answering an agent answering...) under "all".
    "AGENT_MAX_CHAIN": 3,
    # Defaults of an agent's options (an AgentSpec may set its own).
    "AGENT_POLICY": "queue",
    "AGENT_ON_INTERRUPT": "error",
    "AGENT_RETRIES": 2,
    # Seconds before the first retry of a failure before the first token (doubled each time).
    "AGENT_RETRY_BACKOFF": 0.5,
    "AGENT_TIMEOUTS": {"connect": 10.0, "firstToken": 60.0, "betweenTokens": 60.0, "total": 600.0},
    # Seconds a stopping worker (SIGTERM) lets its generations finish before it hands them over.
    "AGENT_SHUTDOWN_GRACE": 20.0,
    # Run the agent runtime inside the server process: True, False, or None (env
    # DS_AGENTS_EMBEDDED, else: on with SQLite and the in-memory channel layer, the embedded
    # default, where a separate worker could not share the server's layer).
    "AGENT_EMBEDDED": None,
}

IMPORT_STRINGS = {"PERMISSION_POLICY", "ACTOR_ID"}
SQLITE_SYNCHRONOUS_VALUES = ("FULL", "EXTRA", "NORMAL")


class DurableSessionsSettings:
    """Lazy view of ``settings.DURABLE_SESSIONS`` over ``DEFAULTS``."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        """The project's ``DURABLE_SESSIONS`` dict (empty when unset or not a dict)."""
        value = getattr(settings, "DURABLE_SESSIONS", None) or {}
        return value if isinstance(value, dict) else {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid DURABLE_SESSIONS setting: {name!r}")
        cache = self.__dict__["_cache"]
        if name not in cache:
            value = self.user_settings.get(name, DEFAULTS[name])
            if name in IMPORT_STRINGS and isinstance(value, str):
                value = import_string(value)
            cache[name] = value
        return cache[name]

    def reload(self) -> None:
        """Forget cached values (called when the settings change)."""
        self._cache.clear()


ds_settings = DurableSessionsSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in {"DURABLE_SESSIONS", "DATABASES"}:
        ds_settings.reload()


setting_changed.connect(_reload)
