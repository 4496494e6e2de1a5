"""Presence: who is in a session, on which device, and whether they are still there.

Each device of a user in a session is a ``Device`` row and a ``presence`` row on the stream
(WIRE.md 3): key ``<actorId>:<deviceId>``, upserted with ``actorId``, ``deviceId``, ``actorType``
``"user"``, ``name`` (the user's display name, the same on every device), ``status``
(``online``, ``away``, ``offline``) and ``lastSeenAt``. It is driven by:

- **login / logout / heartbeat** (``presence_login``, ``presence_logout``,
  ``presence_heartbeat``, ``presence_away``), the API's ``.../login``, ``.../logout`` (also
  sent by ``navigator.sendBeacon``) and ``.../heartbeat``;
- **the websocket** of the session stream opened with ``&deviceId=``: online while a socket of
  the device is open (``socket_opened``, ``socket_closed``; counted in ``Device.connections``),
  offline ``PRESENCE_GRACE`` seconds after its last one closed, unless it comes back;
- **expiry**: a device that says nothing for ``PRESENCE_TTL`` seconds is turned offline by the
  presence sweep that every server process runs (``presence_expire``). The grace period is an
  expiry too (``expires_at`` set to now + grace), and a process renews the expiry of the devices
  whose sockets it holds (``presence_renew``): a process that is killed renews nothing, and its
  devices expire in another process's sweep. Nothing depends on a timer in one process.

A ``deviceId`` is bound, in its session, to the user who first used it: another user naming it
gets 403 (``device_taken``). Presence needs the ``read`` role: viewers are present too. No body
field names the actor: it is the authenticated user.

Announcements are ordered with the changes they announce: on Postgres the ``presence`` row is
appended while the device's row lock is held, so two processes changing one device append in
the order of their changes; on SQLite (one machine, one writer at a time) right after the commit.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from durable_sessions import state
from durable_sessions.conf import ds_settings
from durable_sessions.sessions import errors, roles, writes
from durable_sessions.sessions.identity import actor_id, display_name
from durable_sessions.sessions.models import AWAY, OFFLINE, ONLINE, Device, Membership, Session

PRESENCE = "presence"
MAX_DEVICE_ID = 200
EXPIRE_BATCH = 500  # devices one sweep turns offline per transaction

_connected: Counter[int] = Counter()  # Device pk -> websockets this process holds open
_connected_lock = threading.Lock()


def _seconds(name: str) -> timedelta:
    return timedelta(seconds=float(getattr(ds_settings, name)))


def check_device_id(device_id: Any) -> str:
    """``device_id`` if it is a usable deviceId (1 to 200 characters, no control characters),
    else ``errors.Invalid``."""
    if (
        not isinstance(device_id, str)
        or not 0 < len(device_id) <= MAX_DEVICE_ID
        or any(ord(c) < 32 or ord(c) == 127 for c in device_id)
    ):
        raise errors.Invalid(
            f"deviceId is 1 to {MAX_DEVICE_ID} characters, without control characters",
            code="invalid_device_id",
        )
    return device_id


def presence_value(device: Device) -> dict[str, Any]:
    """The value of a device's ``presence`` row as it stands."""
    return {
        "actorId": device.actor_id,
        "deviceId": device.device_id,
        "actorType": "user",
        "name": display_name(device.user),
        "status": device.status,
        "lastSeenAt": state.timestamp(device.last_seen_at.timestamp()),
    }


def presence_event(device: Device) -> dict[str, Any]:
    """The ``presence`` upsert of a device as it stands."""
    return state.upsert(PRESENCE, f"{device.actor_id}:{device.device_id}", presence_value(device))


def presence_events(session: Session) -> list[dict[str, Any]]:
    """The ``presence`` upserts of the devices present (online or away) in ``session``: what a
    reset appends again after its control event."""
    devices = Device.objects.filter(session=session).exclude(status=OFFLINE)
    return [presence_event(d) for d in devices.select_related("user").order_by("id")]


@contextmanager
def _announcing() -> Iterator[Callable[[Device], None]]:
    """A transaction, and a function that queues the announcement of a changed device."""
    queued: dict[Any, tuple[Session, list[dict[str, Any]]]] = {}

    def announce(device: Device) -> None:
        queued.setdefault(device.session_id, (device.session, []))[1].append(presence_event(device))

    def flush() -> None:
        for session, events in queued.values():
            writes.append_events(session, events)

    inside = connection.vendor != "sqlite"
    with transaction.atomic():
        yield announce
        if inside:  # under the devices' row locks: in the order of the changes
            flush()
    if not inside:  # SQLite: the log cannot write while this connection holds the write lock
        flush()


def _locked(session: Session, device_id: str) -> Device | None:
    return (
        Device.objects.select_for_update()
        .select_related("session", "user")
        .filter(session=session, device_id=device_id)
        .first()
    )


def _device(user: Any, session: Session, device_id: str, *, create: bool) -> Device | None:
    """The device ``device_id`` of ``user`` in ``session``, locked (made, offline, if ``create``);
    ``Forbidden`` when another user holds that deviceId."""
    device = _locked(session, device_id)
    if device is None and create:
        try:
            with transaction.atomic():
                Device.objects.create(
                    session=session,
                    user=user,
                    actor_id=actor_id(user),
                    device_id=device_id,
                    status=OFFLINE,
                    last_seen_at=timezone.now(),
                )
        except IntegrityError:  # made meanwhile (by whom: checked below)
            pass
        device = _locked(session, device_id)
    if device is not None and device.user_id != user.pk:
        raise errors.Forbidden(
            "that deviceId belongs to another user in this session", code="device_taken"
        )
    return device


def _access(user: Any, session_id: Any, *, writing: bool) -> Session:
    """The session, if ``user`` may read it (``service.session_access``'s rules, which this
    module cannot import: the service re-exports it); ``Conflict`` for an archived one when
    ``writing``."""
    if not getattr(user, "is_authenticated", False):
        raise errors.Forbidden("presence is for signed-in users")
    try:
        session = Session.objects.get(pk=uuid.UUID(str(session_id)))
    except (ValueError, Session.DoesNotExist):
        raise errors.NotFound("no such session") from None
    role = Membership.objects.filter(session=session, user=user).values_list("role", flat=True)
    if not roles.allowed(role.first(), roles.READ, staff=bool(getattr(user, "is_staff", False))):
        raise errors.Forbidden("your role in this session does not allow read")
    if writing and session.archived:
        raise errors.Conflict("the session is archived", code="archived")
    return session


def _answer(user: Any, device_id: str | None, status: str) -> dict[str, Any]:
    return {"success": True, "actorId": actor_id(user), "deviceId": device_id, "status": status}


def _present(device: Device, status: str, now: datetime) -> bool:
    """Mark ``device`` present with ``status`` until now + TTL; whether its status changed."""
    changed = device.status != status
    device.status = status
    device.last_seen_at = now
    device.expires_at = now + _seconds("PRESENCE_TTL")
    device.actor_id = actor_id(device.user)
    return changed


def presence_login(
    *, user: Any, session_id: Any, device_id: str, name: str | None = None, status: str = ONLINE
) -> dict[str, Any]:
    """Log ``device_id`` of ``user`` in: present with ``status`` (announced on the stream) until
    ``PRESENCE_TTL`` from now. ``name`` labels the device (the stream shows the user's name)."""
    if status not in (ONLINE, AWAY):
        raise errors.Invalid("status is online or away")
    device_id = check_device_id(device_id)
    session = _access(user, session_id, writing=True)
    with _announcing() as announce:
        device = _device(user, session, device_id, create=True)
        assert device is not None
        _present(device, status, timezone.now())
        if name is not None:
            device.name = name[:200]
        device.save()
        announce(device)
    return _answer(user, device_id, status)


def presence_heartbeat(
    *, user: Any, session_id: Any, device_id: str, status: str = ONLINE
) -> dict[str, Any]:
    """``device_id`` of ``user`` is still there (``online`` or ``away``): its expiry moves to
    ``PRESENCE_TTL`` from now. Announced only when its status changes (a first heartbeat logs
    the device in)."""
    if status not in (ONLINE, AWAY):
        raise errors.Invalid("status is online or away")
    device_id = check_device_id(device_id)
    session = _access(user, session_id, writing=True)
    with _announcing() as announce:
        device = _device(user, session, device_id, create=True)
        assert device is not None
        if _present(device, status, timezone.now()):
            announce(device)
        device.save()
    return _answer(user, device_id, status)


def presence_away(*, user: Any, session_id: Any, device_id: str) -> dict[str, Any]:
    """A heartbeat saying ``away``."""
    return presence_heartbeat(user=user, session_id=session_id, device_id=device_id, status=AWAY)


def _offline(device: Device, now: datetime, announce: Callable[[Device], None]) -> None:
    if device.status == OFFLINE:
        return
    device.status = OFFLINE
    device.expires_at = None
    device.last_seen_at = now
    device.save()
    announce(device)


def presence_logout(
    *, user: Any, session_id: Any, device_id: str | None = None, all_devices: bool = False
) -> dict[str, Any]:
    """Log ``device_id`` (or, ``all_devices``, every device) of ``user`` out: offline, announced.
    Logging out a device that never logged in changes nothing and succeeds."""
    if device_id is None and not all_devices:
        raise errors.Invalid("name a deviceId, or set allDevices")
    if device_id is not None:
        device_id = check_device_id(device_id)
    session = _access(user, session_id, writing=False)
    now = timezone.now()
    with _announcing() as announce:
        if all_devices:
            devices = list(
                Device.objects.select_for_update()
                .select_related("session", "user")
                .filter(session=session, user=user)
                .order_by("id")
            )
        else:
            assert device_id is not None
            found = _device(user, session, device_id, create=False)
            devices = [] if found is None else [found]
        for device in devices:
            _offline(device, now, announce)
    return _answer(user, None if all_devices else device_id, OFFLINE)


def presence_forget(*, session: Session, user: Any) -> None:
    """``user`` left ``session`` (removed): their devices are announced offline and forgotten."""
    now = timezone.now()
    with _announcing() as announce:
        devices = Device.objects.select_for_update().select_related("session", "user")
        for device in devices.filter(session=session, user=user).order_by("id"):
            _offline(device, now, announce)
    Device.objects.filter(session=session, user=user).delete()


# -- websockets and expiry (presence_live.py calls these) -------------------------------------


def socket_opened(*, user: Any, session_id: Any, device_id: str) -> int | None:
    """A websocket of ``device_id`` opened on the session's stream: the device is online (if it
    was offline: announced) while it is open. Returns the device's pk, for ``socket_closed``;
    None for an archived session (nothing is written to it)."""
    device_id = check_device_id(device_id)
    session = _access(user, session_id, writing=False)
    if session.archived:
        return None
    with _announcing() as announce:
        device = _device(user, session, device_id, create=True)
        assert device is not None
        status = ONLINE if device.status == OFFLINE else device.status
        if _present(device, status, timezone.now()):
            announce(device)
        device.connections += 1
        device.save()
    with _connected_lock:
        _connected[device.pk] += 1
    return device.pk


def socket_closed(*, device_pk: int) -> None:
    """A websocket of the device closed; after its last one, the device expires after
    ``PRESENCE_GRACE`` (a reconnect or a heartbeat within it keeps it online)."""
    with _connected_lock:
        _connected[device_pk] -= 1
        if _connected[device_pk] <= 0:
            del _connected[device_pk]
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(pk=device_pk).first()
        if device is None:  # removed from the session meanwhile
            return
        device.connections = max(0, device.connections - 1)
        if device.connections == 0 and device.status != OFFLINE:
            device.expires_at = timezone.now() + _seconds("PRESENCE_GRACE")
        device.save(update_fields=["connections", "expires_at"])


def connected_devices() -> list[int]:
    """The pks of the devices whose websockets this process holds open."""
    with _connected_lock:
        return list(_connected)


def presence_renew(device_pks: list[int]) -> int:
    """Keep the devices whose sockets this process holds present: their expiry moves to
    ``PRESENCE_TTL`` from now once half of it has passed. Returns how many were renewed."""
    if not device_pks:
        return 0
    now = timezone.now()
    ttl = _seconds("PRESENCE_TTL")
    return (
        Device.objects.filter(pk__in=device_pks, expires_at__lt=now + ttl / 2)
        .exclude(status=OFFLINE)
        .update(expires_at=now + ttl, last_seen_at=now)
    )


def presence_expire() -> int:
    """Turn offline (and announce) the devices whose expiry has passed: the sweep. Returns how
    many. Several processes may sweep at once: each device is turned offline by one of them."""
    now = timezone.now()
    due = Device.objects.filter(expires_at__lte=now).exclude(status=OFFLINE)
    if not due.exists():  # the common case, without a transaction (SQLite's write lock)
        return 0
    with _announcing() as announce:
        rows = due.select_related("session", "user").order_by("expires_at")
        if connection.vendor != "sqlite":
            rows = rows.select_for_update(skip_locked=True, of=("self",))
        devices = list(rows[:EXPIRE_BATCH])
        for device in devices:
            device.connections = 0
            device.status = OFFLINE
            device.expires_at = None
            device.save(update_fields=["connections", "status", "expires_at"])
            announce(device)
    return len(devices)
