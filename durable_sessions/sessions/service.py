"""The sessions service: every entry point (the API, websockets, the admin, the agents, the
management commands) creates, reads and changes sessions through these functions.

They take the acting user and a session id, check the user's role (``roles.py``) and raise
``errors.*`` (each with its HTTP status). The actor of every write is that user: no body field
or header names it. Writes to the session's stream go through ``writes.py``; reads of its
materialized state through ``cache.py``. Flows that grew their own module (presence, agents,
lifecycle) are re-exported here.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from durable_sessions import state, streams
from durable_sessions.conf import ds_settings
from durable_sessions.sessions import cache, errors, roles, writes
from durable_sessions.sessions.guard import Access, role_of, session_access
from durable_sessions.sessions.guard import as_uuid as _uuid
from durable_sessions.sessions.identity import actor_id
from durable_sessions.sessions.models import OWNER, ROLES, Membership, Session

# -- sessions ----------------------------------------------------------------------------------


def session_create(*, owner: Any, session_id: Any = None, title: str = "") -> tuple[Session, bool]:
    """Create a session owned by ``owner`` (or find the one under ``session_id`` that
    ``owner`` may read): ``(session, created)``. Its stream is created first, so a session row
    never exists without its stream."""
    sid = uuid.uuid4() if session_id is None else _uuid(session_id)
    if Session.objects.filter(pk=sid).exists():
        return session_access(user=owner, session_id=sid, action=roles.READ).session, False
    path = f"sessions/{sid}"
    try:
        streams.create(path, content_type="application/json")
    except streams.Conflict as exc:
        raise errors.Conflict("that session id is taken", code="session_exists") from exc
    except streams.Unavailable as exc:
        raise errors.Unavailable(str(exc)) from exc
    try:
        with transaction.atomic():
            session = Session.objects.create(id=sid, title=title, owner=owner)
            Membership.objects.create(session=session, user=owner, role=OWNER)
    except IntegrityError:  # created meanwhile by another request
        return session_access(user=owner, session_id=sid, action=roles.READ).session, False
    register_configured(session, owner=owner)
    return session, True


def session_get(*, user: Any, session_id: Any) -> Access:
    """The session ``user`` may read, with their role."""
    return session_access(user=user, session_id=session_id, action=roles.READ)


def session_list(*, user: Any, archived: bool = False) -> QuerySet[Session]:
    """The sessions ``user`` belongs to, most recently active first, each annotated with
    ``role``; archived ones only when ``archived`` is true."""
    role = Membership.objects.filter(session=OuterRef("pk"), user=user).values("role")[:1]
    sessions = Session.objects.filter(memberships__user=user, archived_at__isnull=not archived)
    return sessions.annotate(role=Subquery(role)).order_by("-last_activity_at", "-created_at")


def session_update(*, user: Any, session_id: Any, title: str) -> Session:
    """Rename a session (owners)."""
    session = session_access(user=user, session_id=session_id, action=roles.MANAGE).session
    session.title = title
    session.save(update_fields=["title", "updated_at"])
    return session


def session_archive(*, user: Any, session_id: Any, archived: bool = True) -> Session:
    """Archive (hidden from lists, every write refused) or unarchive a session (owners)."""
    sid = _uuid(session_id)
    try:
        session = session_access(user=user, session_id=sid, action=roles.MANAGE).session
    except errors.Conflict:  # archived already: only unarchiving is a write it takes
        session = session_access(user=user, session_id=sid, action=roles.READ).session
        if not roles.allowed(role_of(user, session), roles.MANAGE, staff=user.is_staff):
            raise
    session.archived_at = timezone.now() if archived else None
    session.save(update_fields=["archived_at", "updated_at"])
    return session


def session_delete(*, user: Any, session_id: Any) -> None:
    """Delete a session and its stream (owners). The stream goes first: a failure leaves the
    row, and deleting again finishes the job."""
    session = session_access(user=user, session_id=session_id, action=roles.MANAGE).session
    try:
        streams.delete(session.stream_path)
    except streams.StreamNotFound:
        pass
    except streams.Unavailable as exc:
        raise errors.Unavailable(str(exc)) from exc
    cache.forget(session.stream_path)
    session.delete()


# -- members -----------------------------------------------------------------------------------


def _member_row(membership: Membership) -> dict[str, str]:
    return {
        "username": membership.user.get_username(),
        "actorId": actor_id(membership.user),
        "role": membership.role,
    }


def member_list(*, user: Any, session_id: Any) -> list[dict[str, str]]:
    """The members of a session: username, actorId, role."""
    session = session_access(user=user, session_id=session_id, action=roles.READ).session
    rows = Membership.objects.filter(session=session).select_related("user").order_by("id")
    return [_member_row(m) for m in rows]


def _target(username: str) -> Any:
    model = get_user_model()
    try:
        return model._default_manager.get(**{model.USERNAME_FIELD: username}, is_active=True)
    except model.DoesNotExist:
        raise errors.NotFound(f"no user {username!r}") from None


def member_add(*, user: Any, session_id: Any, username: str, role: str) -> dict[str, str]:
    """Invite ``username`` with ``role`` (owners). ``Conflict`` when already a member."""
    if role not in ROLES:
        raise errors.Invalid(f"role is one of {', '.join(ROLES)}")
    session = session_access(user=user, session_id=session_id, action=roles.MANAGE).session
    try:
        membership = Membership.objects.create(session=session, user=_target(username), role=role)
    except IntegrityError:
        raise errors.Conflict(f"{username!r} is already a member", code="member_exists") from None
    return _member_row(membership)


def _membership(session: Session, username: str) -> Membership:
    model = get_user_model()
    found = (
        Membership.objects.select_for_update()
        .select_related("user")
        .filter(session=session, **{f"user__{model.USERNAME_FIELD}": username})
        .first()
    )
    if found is None:
        raise errors.NotFound(f"{username!r} is not a member")
    return found


def _keep_an_owner(session: Session, leaving: Membership) -> None:
    owners = Membership.objects.select_for_update().filter(session=session, role=OWNER)
    if leaving.role == OWNER and not owners.exclude(pk=leaving.pk).exists():
        raise errors.Conflict("a session keeps at least one owner", code="last_owner")


def member_update(*, user: Any, session_id: Any, username: str, role: str) -> dict[str, str]:
    """Change a member's role (owners); the last owner stays an owner."""
    if role not in ROLES:
        raise errors.Invalid(f"role is one of {', '.join(ROLES)}")
    session = session_access(user=user, session_id=session_id, action=roles.MANAGE).session
    with transaction.atomic():
        membership = _membership(session, username)
        if role != OWNER:
            _keep_an_owner(session, membership)
        changed = membership.role != role
        membership.role = role
        membership.save(update_fields=["role"])
    if changed:  # what their live readers may do changed: they are authorized again
        _revoke(session)
    return _member_row(membership)


def member_remove(*, user: Any, session_id: Any, username: str) -> None:
    """Remove a member (owners), or leave (any member removing themself); the last owner
    cannot go. The removed user stops receiving the session's stream."""
    leaving = username == user.get_username()
    action = roles.READ if leaving else roles.MANAGE
    session = session_access(user=user, session_id=session_id, action=action).session
    with transaction.atomic():
        membership = _membership(session, username)
        _keep_an_owner(session, membership)
        membership.delete()
    presence_forget(session=session, user=membership.user)
    _revoke(session)


def _revoke(session: Session) -> None:
    """Have every live reader of the session's stream, in every process, authorized again once
    the change is committed: a member removed stops receiving it within a second."""
    path = session.stream_path
    transaction.on_commit(lambda: streams.revoke(path))


# -- messages ----------------------------------------------------------------------------------


def message_post(
    *,
    user: Any,
    session_id: Any,
    content: str,
    message_id: Any = None,
    role: str = "user",
    txid: str | None = None,
    agent: AgentSpec | dict[str, Any] | None = None,
) -> str:
    """Post a whole message as ``user``: one ``chunk`` row at seq 0 carrying a
    ``whole-message``, with ``txid`` in its headers. Returns the messageId.

    An inline ``agent`` is registered first, under the rules of every registration
    (``agents.register``), so the message triggers it as a registered agent.

    A messageId already used is ``Conflict``, except a retry of the same post (same author,
    same content), which returns the id again without writing anything twice.
    """
    access = session_access(user=user, session_id=session_id, action=roles.WRITE)
    if role != "user" and not getattr(user, "is_staff", False):
        raise errors.Forbidden("only staff may post as a role other than user")
    if len(content) > ds_settings.MAX_MESSAGE_CHARS:
        raise errors.Invalid(f"a message holds at most {ds_settings.MAX_MESSAGE_CHARS} characters")
    if agent is not None:
        register(access.session, [agent], by=user)
    mid = str(uuid.uuid4() if message_id is None else message_id)
    me = access.actor_id
    try:
        writes.append_chunk(
            access.session,
            message_id=mid,
            seq=0,
            actor_id=me,
            role=role,
            chunk=lambda created_at: state.whole_message(
                mid, role=role, created_at=created_at, content=content
            ),
            txid=txid,
        )
    except errors.Conflict as exc:
        if getattr(exc, "duplicate", False) and _same_message(access.session, mid, me, content):
            return mid
        raise errors.Conflict(
            f"message id {mid} is already used in this session", code="message_exists"
        ) from exc
    return mid


def _same_message(session: Session, message_id: str, actor: str, content: str) -> bool:
    def check(session_state: state.SessionState, _offset: str) -> bool:
        for message in session_state.messages():
            if message.id == message_id:
                text = "".join(p.get("content", "") for p in message.parts if p["type"] == "text")
                return message.actor_id == actor and text == content
        return False

    return cache.read(session.stream_path, check)


def messages_read(
    *, user: Any, session_id: Any, limit: int = 50, before: str | None = None
) -> dict[str, Any]:
    """The materialized messages of a session, oldest first: the last ``limit`` of them (the
    last ``limit`` before the message ``before``), with the stream offset that state stands
    at (follow the stream live from there and nothing is missed or seen twice)."""
    access = session_access(user=user, session_id=session_id, action=roles.READ)

    def page(session_state: state.SessionState, offset: str) -> dict[str, Any]:
        messages = session_state.messages()
        end = len(messages)
        if before is not None:
            ids = [m.id for m in messages]
            if before not in ids:
                raise errors.NotFound(f"no message {before!r} in this session")
            end = ids.index(before)
        start = max(0, end - limit)
        return {
            "messages": [m.as_dict() for m in messages[start:end]],
            "offset": offset,
            "hasMore": start > 0,
        }

    return cache.read(access.session.stream_path, page)


def events_read(
    *, user: Any, session_id: Any, offset: str = "-1", max_bytes: int | None = None
) -> dict[str, Any]:
    """The raw events of a session's stream from ``offset``: ``{events, offset, upToDate}``,
    where ``offset`` is where to read next."""
    access = session_access(user=user, session_id=session_id, action=roles.READ)
    try:
        result = streams.read(access.session.stream_path, offset, max_bytes=max_bytes)
    except streams.BadRequest as exc:
        raise errors.Invalid(str(exc), code="invalid_offset") from exc
    except streams.StreamGone as exc:
        raise errors.Conflict(str(exc), code="offset_gone") from exc
    except streams.StreamNotFound as exc:
        raise errors.NotFound("the session's stream is gone") from exc
    return {
        "events": json.loads(result.body),
        "offset": str(result.next),
        "upToDate": result.up_to_date,
    }


# -- flows in their own modules ----------------------------------------------------------------

from durable_sessions.sessions.actions import (  # noqa: E402, F401
    approval_respond,
    generation_stop,
    message_regenerate,
    tool_result_post,
)
from durable_sessions.sessions.agent_specs import AgentSpec, resolve_agent_url  # noqa: E402, F401
from durable_sessions.sessions.agents import (  # noqa: E402, F401
    agent_delete,
    agent_list,
    agent_register,
    agent_update,
    register,
    register_configured,
    register_defaults,
)
from durable_sessions.sessions.compaction import (  # noqa: E402, F401
    compacted_events,
    session_compact,
    sessions_to_compact,
)
from durable_sessions.sessions.lifecycle import (  # noqa: E402, F401
    agent_events,
    session_fork,
    session_reset,
)
from durable_sessions.sessions.presence import (  # noqa: E402, F401  (re-exported)
    presence_away,
    presence_events,
    presence_expire,
    presence_forget,
    presence_heartbeat,
    presence_login,
    presence_logout,
)
