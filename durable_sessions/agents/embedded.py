"""The agent runtime inside the server process (the embedded default).

With SQLite and the in-memory channel layer a separate worker process cannot share the
server's live fan-out, and the demo must answer with one command: the server runs an
``AgentWorker`` on a thread of its own (its own event loop), started by the ASGI router on its
first call. ``AGENT_EMBEDDED`` (or the env ``DS_AGENTS_EMBEDDED``) turns it on or off; by default
it is on exactly in that embedded configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

from django.conf import settings

from durable_sessions.conf import ds_settings

logger = logging.getLogger("durable_sessions.agents")

_lock = threading.Lock()
_started: threading.Thread | None = None
_TRUE = {"1", "true", "yes", "on"}


def enabled() -> bool:
    """Whether this process runs the agent runtime itself."""
    configured = ds_settings.AGENT_EMBEDDED
    if configured is not None:
        return bool(configured)
    env = os.environ.get("DS_AGENTS_EMBEDDED")
    if env is not None and env.strip():
        return env.strip().lower() in _TRUE
    database = settings.DATABASES.get(ds_settings.DATABASE_ALIAS, {})
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {})
    return "sqlite" in str(database.get("ENGINE", "")) and "InMemory" in str(
        layer.get("BACKEND", "")
    )


def _main() -> None:
    from durable_sessions.agents.worker import AgentWorker

    try:
        asyncio.run(AgentWorker().run())
    except Exception:
        logger.exception("the embedded agent runtime stopped")


def ensure_started() -> None:
    """Start the runtime's thread once, if ``enabled()`` (cheap after the first call)."""
    global _started
    if _started is not None:
        return
    with _lock:
        if _started is not None:
            return
        if not enabled():
            _started = threading.Thread()  # (a marker: checked, and off)
            return
        _started = threading.Thread(target=_main, name="durable-sessions-agents", daemon=True)
        _started.start()
        logger.info("the agent runtime runs inside this server process")
