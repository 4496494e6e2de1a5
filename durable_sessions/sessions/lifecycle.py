"""Forking and resetting sessions (``POST .../fork``, ``POST .../reset``, WIRE.md 6).

**Fork** copies a session into a new one the caller owns, with the streams layer's fork (the new
stream reads the source's entries below the fork point; nothing is copied). The fork point:

- ``atMessageId``: right after the *last* chunk of that message, to the event: the fork holds
  every event of the source up to and including it, and nothing after it (the streams layer's
  sub-offset cuts an append that holds more). Chunks of other messages written before that
  point come along, so a generation that was streaming meanwhile is in the fork as far as it
  had got;
- ``atOffset`` (ours): that offset of the source's stream;
- neither: the whole session as it is now.

A message still streaming at the fork point gets a ``stop`` chunk (reason ``fork``) in the fork:
nothing continues it there. Presence does not come along (the fork's presence rows are
deleted: nobody is in it yet). The fork continues the source's per-message producers where its
data stops, so a seq is never reused in the fork either, and its clock continues after the
source's (``createdAt`` never decreases within it).

Who may fork: members and owners (viewers may not). The source's registered agents (secrets
included, copied server-side) come along only when the caller may manage the source (owners,
staff): an agent's secrets never move to someone who could repoint it; a member's fork has no
agents (its stream's agent rows are deleted). An archived session may be forked.

**Reset** (owners) appends the ``reset`` control event and, in the same append, the current
``agent`` rows and (unless ``clearPresence``) the online ``presence`` rows from the Agent and
Device tables, so a client that materializes from the reset is complete. Seqs are not reset:
the producers in ``writes.py`` keep counting, so a generation in flight continues at its next
seq and never writes one twice.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from durable_sessions import state, streams
from durable_sessions.sessions import cache, errors, roles, writes
from durable_sessions.sessions.agent_specs import public_row
from durable_sessions.sessions.agents import spec_of
from durable_sessions.sessions.guard import as_uuid, session_access
from durable_sessions.sessions.models import OWNER, Agent, Membership, Session
from durable_sessions.sessions.presence import presence_events

Event = dict[str, Any]


RESET_ATTEMPTS = 5


# -- the rows a reset re-appends -----------------------------------------------------------------


def agent_row(agent: Agent) -> dict[str, Any]:
    """The ``agent`` row of a registered agent (WIRE.md 3: never its secrets)."""
    return public_row(spec_of(agent))


def agent_events(session: Session) -> list[Event]:
    """Upserts of the session's registered agents, in registration order."""
    agents = Agent.objects.filter(session=session).order_by("id")
    return [state.upsert("agent", a.agent_id, agent_row(a)) for a in agents]


def session_reset(*, user: Any, session_id: Any, clear_presence: bool = False) -> dict[str, Any]:
    """Reset a session's stream (owners): the ``reset`` control event, then the current agents
    and (unless ``clear_presence``) the online presence, in one append."""
    session = session_access(user=user, session_id=session_id, action=roles.MANAGE).session
    restored = agent_events(session)
    if not clear_presence:
        restored.extend(presence_events(session))
    for _attempt in range(RESET_ATTEMPTS):
        # The rows the reset deletes for StreamDB are those of the state at the tail it lands
        # on: if anything is written meanwhile, fold again.
        with cache.caught_up(session.stream_path) as (session_state, offset):
            existing = writes.existing_rows(session_state)
        try:
            writes.append_events(
                session, writes.reset_batch(existing, restored), expect_tail=_tail(offset)
            )
        except errors.Conflict as exc:
            if exc.get_codes() == "tail_moved":
                continue
            raise
        return {"success": True, "sessionId": str(session.pk), "message": "Session reset"}
    raise errors.Unavailable("the session kept changing during the reset; retry")


def _tail(offset: str) -> str:
    return str(streams.START) if offset == "-1" else offset


# -- fork --------------------------------------------------------------------------------------


def _read(path: str, offset: str, max_bytes: int | None = None) -> streams.ReadResult:
    try:
        return streams.read(path, offset, max_bytes=max_bytes)
    except streams.BadRequest as exc:
        raise errors.Invalid(str(exc), code="invalid_offset") from exc
    except streams.StreamGone as exc:
        raise errors.Invalid(str(exc), code="offset_gone") from exc
    except streams.StreamNotFound as exc:
        raise errors.NotFound("the session's stream is gone") from exc


def _is_chunk_of(event: Any, message_id: str) -> bool:
    value = event.get("value") if isinstance(event, dict) else None
    return (
        event.get("type") == state.CHUNK_TYPE
        and isinstance(value, dict)
        and value.get("messageId") == message_id
    )


def _events_to(path: str, target: streams.Position | None) -> tuple[list[Event], str]:
    """The events of ``path`` from its first retained entry up to ``target`` (None: the tail),
    and the offset they end at."""
    events: list[Event] = []
    try:
        offset = str(streams.retention(path).first)
    except streams.StreamNotFound as exc:
        raise errors.NotFound("the session's stream is gone") from exc
    if target == streams.START:
        return events, offset
    while True:
        if target is not None:
            here = streams.parse_offset(offset)
            if here.seq >= target.seq:
                if here != target:
                    raise errors.Invalid("atOffset is not an offset of this session")
                return events, offset
            result = _read(path, offset, max_bytes=max(1, target.bytes - here.bytes))
        else:
            result = _read(path, offset)
        events.extend(result.messages())
        offset = str(result.next)
        if target is None and result.up_to_date:
            return events, offset
        if target is not None and result.up_to_date and result.next.seq < target.seq:
            raise errors.Invalid("atOffset is beyond the end of the session's stream")


def _events_at_message(path: str, message_id: str) -> tuple[list[Event], str, int]:
    """The events up to and including the last chunk of ``message_id``, the offset of the
    entry holding it, and how many of that entry's events the fork keeps (0: all of it)."""
    batches: list[tuple[str, int, list[Event]]] = []  # (start offset, first index, events)
    events: list[Event] = []
    offset, last = "-1", -1
    while True:
        result = _read(path, offset)
        batch = result.messages()
        for index, event in enumerate(batch):
            if _is_chunk_of(event, message_id):
                last = len(events) + index
        batches.append((offset, len(events), batch))
        events.extend(batch)
        offset = str(result.next)
        if result.up_to_date:
            break
    if last < 0:
        raise errors.NotFound(f"no message {message_id!r} in this session")
    start, first, _batch = next(b for b in reversed(batches) if b[1] <= last)
    while True:  # that batch again, one entry per read, to find the entry that holds it
        entry = _read(path, start, max_bytes=1)
        count = len(entry.messages())
        if first + count > last:
            keep = last - first + 1
            if keep == count:
                return events[: last + 1], str(entry.next), 0
            return events[: last + 1], start, keep
        first += count
        start = str(entry.next)


def _fork_events(
    events: list[Event], with_agents: bool, source: Session
) -> tuple[state.SessionState, dict[str, int], list[Event]]:
    """The fork's state at the fork point, the highest seq of every message there, and the
    events that fix its agents and presence."""
    fork_state = state.SessionState()
    highs: dict[str, int] = {}
    for event in events:
        value = event.get("value")
        if event.get("type") == state.CHUNK_TYPE and isinstance(value, dict):
            mid, seq = value.get("messageId"), value.get("seq")
            if isinstance(mid, str) and isinstance(seq, int) and seq > highs.get(mid, -1):
                highs[mid] = seq
        with contextlib.suppress(state.InvalidEvent):  # the materializer skips it too
            fork_state.apply(event)
    fixes = [state.delete("presence", key) for key in fork_state.presence()]
    registry = {a.agent_id: a for a in Agent.objects.filter(session=source)} if with_agents else {}
    fixes += [state.delete("agent", key) for key in fork_state.agents() if key not in registry]
    for agent_id, agent in registry.items():
        if fork_state.agents().get(agent_id) != agent_row(agent):
            fixes.append(state.upsert("agent", agent_id, agent_row(agent)))
    return fork_state, highs, fixes


def _copy_rows(fork: Session, source: Session, with_agents: bool, user: Any) -> None:
    clock = Session.objects.filter(pk=source.pk).values_list("clock_ms", flat=True).first()
    fork.clock_ms = max(clock or 0, source.clock_ms)
    fork.save(update_fields=["clock_ms"])
    Membership.objects.create(session=fork, user=user, role=OWNER)
    if with_agents:
        for agent in Agent.objects.filter(session=source).order_by("id"):
            agent.pk = None
            agent.session = fork
            agent.save(force_insert=True)


def session_fork(
    *,
    user: Any,
    session_id: Any,
    at_message_id: str | None = None,
    at_offset: str | None = None,
    new_session_id: Any = None,
) -> Session:
    """Fork a session into a new one owned by ``user`` (see the module's docstring)."""
    access = session_access(user=user, session_id=session_id, action=roles.READ)
    staff = bool(getattr(user, "is_staff", False))
    if not roles.allowed(access.role, roles.WRITE, staff=staff):
        raise errors.Forbidden("your role in this session does not allow forking it")
    if at_message_id is not None and at_offset is not None:
        raise errors.Invalid("give atMessageId or atOffset, not both")
    with_agents = roles.allowed(access.role, roles.MANAGE, staff=staff)
    source = access.session
    sid = uuid.uuid4() if new_session_id is None else as_uuid(new_session_id)
    if Session.objects.filter(pk=sid).exists():
        raise errors.Conflict("that session id is taken", code="session_exists")
    sub_offset = 0
    if at_message_id is not None:
        events, offset, sub_offset = _events_at_message(source.stream_path, at_message_id)
    else:
        target = None if at_offset is None else streams.START
        if at_offset is not None and at_offset != "-1":
            try:
                target = streams.parse_offset(at_offset)
            except streams.BadRequest as exc:
                raise errors.Invalid(str(exc), code="invalid_offset") from exc
        events, offset = _events_to(source.stream_path, target)
    fork_state, highs, fixes = _fork_events(events, with_agents, source)
    fork = Session(id=sid, title=source.title, owner=user, forked_from=source)
    try:
        streams.fork(
            fork.stream_path,
            source.stream_path,
            offset=offset,
            sub_offset=sub_offset,
            producers={f"chunk:{mid}": (0, seq) for mid, seq in highs.items()},
        )
    except streams.Conflict as exc:
        raise errors.Conflict("that session id is taken", code="session_exists") from exc
    except streams.BadRequest as exc:
        raise errors.Invalid(str(exc), code="invalid_offset") from exc
    except streams.Unavailable as exc:
        raise errors.Unavailable(str(exc)) from exc
    try:
        with transaction.atomic():
            fork.last_activity_at = timezone.now()
            fork.save(force_insert=True)
            _copy_rows(fork, source, with_agents, user)
    except IntegrityError as exc:
        streams.delete(fork.stream_path)
        raise errors.Conflict("that session id is taken", code="session_exists") from exc
    for mid in fork_state.active_generations():
        message = fork_state.message(mid)
        actor = message.actor_id if message is not None else "agent"
        writes.append_chunk(
            fork,
            message_id=mid,
            seq=highs.get(mid, -1) + 1,
            actor_id=actor,
            role="assistant",
            chunk=state.stop_chunk("fork"),
        )
    if fixes:
        writes.append_events(fork, fixes)
    return fork
