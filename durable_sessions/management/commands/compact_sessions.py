"""``manage.py compact_sessions``: fold finished token chunks into whole messages and drop the
entries they replace (``durable_sessions.sessions.compaction``)."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from durable_sessions.sessions import errors
from durable_sessions.sessions.service import session_compact, sessions_to_compact


def _session_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"--session takes a session id (a UUID), not {value!r}") from None


class Command(BaseCommand):
    """Compact the streams of sessions, without changing what their clients materialize."""

    help = (
        "Compact session streams: append a reset and the compacted state (finished messages "
        "folded into whole messages), then drop the entries before it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """--session, --older-than, --dry-run."""
        parser.add_argument("--session", type=_session_id, help="only this session")
        parser.add_argument(
            "--older-than",
            type=float,
            metavar="SECONDS",
            help="only sessions without activity for at least this many seconds",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would be compacted, change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Compact each session, forks first, and report one line per session."""
        older_than = options.get("older_than")
        if older_than is not None and older_than < 0:
            raise CommandError("--older-than takes a number of seconds from 0")
        sessions = sessions_to_compact(session_id=options.get("session"), idle_seconds=older_than)
        if options.get("session") is not None and not sessions.exists():
            raise CommandError(f"no session {options['session']}")
        compacted = 0
        for session in sessions:
            try:
                report = session_compact(session_id=session.pk, dry_run=options["dry_run"])
            except errors.SessionError as exc:
                self.stderr.write(f"{session.pk}: {exc.detail}")
                continue
            compacted += bool(report["compacted"])
            reason = f" ({report['reason']})" if report.get("reason") else ""
            verb = "compacted" if report["compacted"] else "kept"
            self.stdout.write(
                f"{session.pk}: {verb}, {report['events']} events ({report.get('bytes', '?')} "
                f"bytes) -> {report['after']} ({report.get('bytes_after', '?')} bytes){reason}"
            )
        self.stdout.write(f"{compacted} session(s) compacted")
