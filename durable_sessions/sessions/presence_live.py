"""Presence kept by the server itself: websockets of session streams, and the sweep.

- ``DeviceSockets`` observes the websockets of ``sessions/`` (``streams.sockets``): a socket
  opened with ``?deviceId=`` keeps that device of its user online while it is open
  (``presence.socket_opened`` / ``socket_closed``). A socket without ``deviceId`` is only a
  reader. A ``deviceId`` held by another user refuses the socket (4403), a malformed one too
  (4400); when presence cannot be written (the log unavailable) the socket still reads.
- ``PresenceSweeper`` runs beside every process's store (a store extension, as the
  subscriptions' worker does): every ``PRESENCE_SWEEP_INTERVAL`` it renews the expiry of the
  devices whose sockets this process holds, and turns offline the devices whose expiry has
  passed, whoever saw them last (a killed process included).

``install()`` registers both, from ``access.install()`` at app ready: nothing runs and nothing
touches the database until the log is used.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError, close_old_connections, connections

from durable_sessions import streams
from durable_sessions.conf import ds_settings
from durable_sessions.sessions import errors, presence
from durable_sessions.streams.sockets import OpenSocket, SocketObserver

logger = logging.getLogger("durable_sessions.sessions.presence")


class DeviceSockets(SocketObserver):
    """Counts the websockets of each device on a session stream."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def opened(self, socket: OpenSocket) -> Any:
        """The device named by ``?deviceId=`` is online while the socket is open."""
        device_id = socket.query.get("deviceId")
        if device_id is None:
            return None
        session_id = socket.path[len(self.prefix) :]
        try:
            return await database_sync_to_async(presence.socket_opened)(
                user=socket.user, session_id=session_id, device_id=device_id
            )
        except errors.Forbidden as exc:
            raise streams.PermissionDenied(str(exc.detail), code="device_taken") from None
        except errors.Invalid as exc:
            raise streams.BadRequest(str(exc.detail), code="invalid_device_id") from None
        except errors.NotFound:  # a stream without its session row (staff may read it)
            return None
        except errors.Unavailable:
            logger.warning(
                "presence of a websocket on %s not recorded: log unavailable", socket.path
            )
            return None

    async def closed(self, socket: OpenSocket, handle: Any) -> None:
        """The device's socket closed: offline after the grace period, unless it comes back."""
        if handle is not None:
            await database_sync_to_async(presence.socket_closed)(device_pk=handle)


class PresenceSweeper:
    """One process's presence sweep (a store extension: see the module docstring)."""

    def __init__(self, store: Any = None) -> None:
        self._stop = threading.Event()
        self._logged_at = -60.0
        self._thread = threading.Thread(
            target=self._run, name="durable-sessions-presence", daemon=True
        )
        self._thread.start()

    def committed(self, changes: list[Any]) -> None:
        """Commits need nothing of the sweep."""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the sweep thread."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stop.wait(float(ds_settings.PRESENCE_SWEEP_INTERVAL)):
                try:
                    close_old_connections()
                    self.sweep()
                except Exception:  # a database outage, say: the next round tries again
                    self._failed()
        finally:
            connections.close_all()

    def sweep(self) -> None:
        """Renew this process's connected devices, then expire the silent ones."""
        presence.presence_renew(presence.connected_devices())
        while presence.presence_expire() >= presence.EXPIRE_BATCH:
            pass

    def _failed(self) -> None:
        """Log a failed round at most once a minute: the database being unreachable in one
        line (an outage fails every round), anything else with its traceback."""
        now = time.monotonic()
        if now - self._logged_at < 60:
            logger.debug("presence sweep failed", exc_info=True)
            return
        self._logged_at = now
        error = sys.exc_info()[1]
        if isinstance(error, OperationalError | InterfaceError):
            logger.warning("presence sweep failed, the database is unavailable: %s", error)
        else:
            logger.exception("presence sweep failed (logged once a minute)")


def install(prefix: str) -> None:
    """Observe the websockets under ``prefix`` and sweep beside every store of this process."""
    from durable_sessions.streams.sockets import observe_sockets
    from durable_sessions.streams.store import register_extension

    observe_sockets(prefix, DeviceSockets(prefix))
    register_extension(PresenceSweeper)
