"""``python manage.py run_agents``: the agent runtime as a process of its own.

Run as many as needed, on as many machines: they share the sessions out through the claims of
the sessions' subscriptions. SIGTERM (or Ctrl-C) ends it gracefully: the generations under way
finish (up to ``AGENT_SHUTDOWN_GRACE`` seconds), the rest are handed over.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from durable_sessions.agents.worker import AgentWorker


class Command(BaseCommand):
    """Run an agent worker until SIGTERM or SIGINT."""

    help = "Run the agent runtime: answer sessions' messages with their registered agents."

    def add_arguments(self, parser: CommandParser) -> None:
        """``--name`` and ``--concurrency``."""
        parser.add_argument("--name", help="the worker's name in claims and job rows")
        parser.add_argument(
            "--concurrency", type=int, help="generations at once (AGENT_CONCURRENCY)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the worker's loop."""
        worker = AgentWorker(options.get("name"), concurrency=options.get("concurrency"))
        layer = str(getattr(settings, "CHANNEL_LAYERS", {}).get("default", {}).get("BACKEND", ""))
        if "InMemory" in layer:
            self.stderr.write(
                "warning: the in-memory channel layer does not reach the server processes: their"
                " subscribers see this worker's tokens only at their LIVE_RECHECK_INTERVAL. Set"
                " REDIS_URL (channels-redis), or run the agents inside the server"
                " (AGENT_EMBEDDED)."
            )

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop)
            await worker.run()

        self.stdout.write(f"agent worker {worker.name} starting", ending="\n")
        self.stdout.flush()
        asyncio.run(main())
        self.stdout.write(f"agent worker {worker.name} stopped")
