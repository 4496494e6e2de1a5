"""``manage.py rotate_webhook_key``: replace the key that signs webhook deliveries."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from durable_sessions.conf import ds_settings
from durable_sessions.streams.subscriptions import signing


class Command(BaseCommand):
    """Make a new active webhook signing key; the old one stays published for a while."""

    help = (
        "Make a new webhook signing key and retire the current one. The retired key stays in "
        "the JWKS for WEBHOOK_REPLAY_WINDOW seconds and a minute more."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        """Rotate, and say which key signs from now on."""
        key = signing.rotate()
        kept = ds_settings.WEBHOOK_REPLAY_WINDOW + signing.RETIRED_KEY_MARGIN
        self.stdout.write(f"New webhook signing key: {key.kid}")
        self.stdout.write(f"Retired keys stay published for {kept:g} seconds.")
