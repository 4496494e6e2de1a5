"""The agents registry of a session: register, list, update, delete (re-exported by service.py).

An agent's registration is a row of ``Agent`` (its secrets, headers, stay there) mirrored on the
session stream as an ``agent`` row (WIRE.md 3: ``agentId``, ``name``, ``endpoint`` without
credentials or query string, ``triggers``), upserted when it is registered or changed and
deleted when it is removed. Every way in follows the same rules (``register()``):

- the API (``agent_register``, ``agent_update``, ``agent_delete``), an inline ``agent`` on a
  message (``service.message_post``), ``defaultAgents`` on login (``register_defaults``), and
  ``DEFAULT_AGENTS`` in settings on every new session (``register_configured``, trusted);
- registering or changing an agent that points at a URL takes an owner or staff (members get
  403); a Python agent (``python:<dotted.path>``) takes staff, or the settings; restating a
  registration exactly as it stands changes nothing and takes only a member's role, so a
  member's client may send the agent it was configured with;
- a new or changed URL is resolved and checked (``agent_specs.check_url``) before anything is
  written; the runtime checks it again when it connects (``agent_specs.resolve_agent_url``).

The database row is written first, then the stream row. A stream row that is missing or stale
(the append failed after the row was saved) is written again by the next registration of the
same agent, even an unchanged one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from durable_sessions import state
from durable_sessions.conf import ds_settings
from durable_sessions.sessions import cache, errors, roles, writes
from durable_sessions.sessions.agent_specs import (
    AgentSpec,
    SpecInvalid,
    check_url,
    parse,
    public_row,
    public_spec,
)
from durable_sessions.sessions.guard import role_of, session_access
from durable_sessions.sessions.models import OWNER, Agent, Session

logger = logging.getLogger(__name__)

AGENT_TYPE = "agent"


def spec_of(agent: Agent) -> AgentSpec:
    """The AgentSpec an ``Agent`` row holds."""
    return AgentSpec(
        id=agent.agent_id,
        endpoint=agent.endpoint,
        name=agent.name,
        method=agent.method,
        headers=dict(agent.headers or {}),
        triggers=agent.triggers,
        body_template=dict(agent.body_template or {}),
        options=dict(agent.options or {}),
    )


def _wire(spec: AgentSpec) -> dict[str, Any]:
    """``spec`` as an AgentSpec dict, secrets included (to merge a partial update into)."""
    return {
        "id": spec.id,
        "name": spec.name,
        "endpoint": spec.endpoint,
        "method": spec.method,
        "headers": spec.headers,
        "triggers": spec.triggers,
        "bodyTemplate": spec.body_template,
        **spec.options,
    }


def _authorize(
    spec: AgentSpec, old: AgentSpec | None, *, role: str | None, staff: bool, trusted: bool
) -> None:
    """Refuse (403) a registration or change that ``role`` may not make."""
    if trusted:
        return
    moved = old is None or old.endpoint != spec.endpoint
    if moved and spec.is_python and not staff:
        raise errors.Forbidden("only staff may register a Python agent")
    if staff or role == OWNER:
        return
    if moved:
        raise errors.Forbidden("only owners or staff may register an agent that points at a URL")
    raise errors.Forbidden("only owners or staff may change an agent")


def _stream_agents(session: Session) -> dict[str, dict[str, Any]]:
    return cache.read(session.stream_path, lambda st, _offset: dict(st.agents()))


def register(
    session: Session, specs: Iterable[AgentSpec | dict[str, Any]], *, by: Any, trusted: bool = False
) -> list[AgentSpec]:
    """Register or update ``specs`` on ``session`` as ``by`` (``trusted``: the settings, which
    may do anything). All or nothing: every spec is checked (syntax, permission, URL) before
    any is written. Returns the specs that were written (to the database or the stream)."""
    parsed = [spec if isinstance(spec, AgentSpec) else parse(spec) for spec in specs]
    ids = [spec.id for spec in parsed]
    if len(set(ids)) != len(ids):
        raise SpecInvalid("id", "the same agent id is given twice")
    if not parsed:
        return []
    existing = {a.agent_id: a for a in Agent.objects.filter(session=session, agent_id__in=ids)}
    on_stream = _stream_agents(session)
    role = None if trusted else role_of(by, session)
    staff = trusted or bool(getattr(by, "is_staff", False))
    saves: list[AgentSpec] = []
    heals: list[AgentSpec] = []
    for spec in parsed:
        old = spec_of(existing[spec.id]) if spec.id in existing else None
        if old == spec:
            if on_stream.get(spec.id) != public_row(spec):
                heals.append(spec)
            continue
        _authorize(spec, old, role=role, staff=staff, trusted=trusted)
        saves.append(spec)
    for spec in saves:
        old_row = existing.get(spec.id)
        if not spec.is_python and (old_row is None or old_row.endpoint != spec.endpoint):
            check_url(spec.endpoint)
    with transaction.atomic():
        for spec in saves:
            Agent.objects.update_or_create(
                session=session,
                agent_id=spec.id,
                defaults={
                    "name": spec.name,
                    "endpoint": spec.endpoint,
                    "method": spec.method,
                    "headers": spec.headers,
                    "triggers": spec.triggers,
                    "body_template": spec.body_template,
                    "options": spec.options,
                },
                create_defaults={
                    "name": spec.name,
                    "endpoint": spec.endpoint,
                    "method": spec.method,
                    "headers": spec.headers,
                    "triggers": spec.triggers,
                    "body_template": spec.body_template,
                    "options": spec.options,
                    "created_by": None if trusted else by,
                },
            )
    written = saves + heals
    if written:
        events = [state.upsert(AGENT_TYPE, spec.id, public_row(spec)) for spec in written]
        writes.append_events(session, events)
    return written


def registered(session: Session) -> list[AgentSpec]:
    """The agents of ``session``, in the order they were registered (secrets included: for the
    server's own use, never for an answer)."""
    rows = Agent.objects.filter(session=session).order_by("created_at", "id")
    return [spec_of(row) for row in rows]


# -- the service's functions ---------------------------------------------------------------


def agent_register(*, user: Any, session_id: Any, specs: list[Any]) -> list[dict[str, Any]]:
    """Register (or update) agents on a session (``POST .../agents``); the public specs of
    those written."""
    access = session_access(user=user, session_id=session_id, action=roles.WRITE)
    return [public_spec(spec) for spec in register(access.session, specs, by=user)]


def agent_list(*, user: Any, session_id: Any) -> list[dict[str, Any]]:
    """The agents of a session, without their secrets (``GET .../agents``)."""
    access = session_access(user=user, session_id=session_id, action=roles.READ)
    return [public_spec(spec) for spec in registered(access.session)]


def _agent(session: Session, agent_id: str) -> Agent:
    found = Agent.objects.filter(session=session, agent_id=agent_id).first()
    if found is None:
        raise errors.NotFound(f"no agent {agent_id[:200]!r} in this session")
    return found


def agent_update(
    *, user: Any, session_id: Any, agent_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change some fields of an agent (owners, staff; ``PATCH .../agents/<agentId>``): the
    fields given replace the stored ones (``headers`` as a whole, ``null`` clears). Its public
    spec."""
    access = session_access(user=user, session_id=session_id, action=roles.MANAGE)
    if not isinstance(changes, dict):
        raise SpecInvalid("spec", "must be a JSON object")
    if "id" in changes and changes["id"] != agent_id:
        raise SpecInvalid("id", "cannot change (register a new agent and delete this one)")
    current = spec_of(_agent(access.session, agent_id))
    merged = {**_wire(current), **{k: v for k, v in changes.items() if k != "id"}}
    spec = parse(merged)
    register(access.session, [spec], by=user)
    return public_spec(spec)


def agent_delete(*, user: Any, session_id: Any, agent_id: str) -> None:
    """Remove an agent (owners, staff; ``DELETE .../agents/<agentId>``): its row, then its
    stream row. ``NotFound`` when it is in neither."""
    access = session_access(user=user, session_id=session_id, action=roles.MANAGE)
    deleted, _ = Agent.objects.filter(session=access.session, agent_id=agent_id).delete()
    if not deleted and agent_id not in _stream_agents(access.session):
        raise errors.NotFound(f"no agent {agent_id[:200]!r} in this session")
    writes.append_events(access.session, [state.delete(AGENT_TYPE, agent_id)])


def register_defaults(*, user: Any, session_id: Any, specs: list[Any]) -> list[AgentSpec]:
    """Register the ``defaultAgents`` a client sends on login, under the rules of every other
    registration (a member may restate registered agents, not add or change one)."""
    access = session_access(user=user, session_id=session_id, action=roles.WRITE)
    return register(access.session, specs, by=user)


def register_configured(session: Session, *, owner: Any) -> list[AgentSpec]:
    """Register ``DEFAULT_AGENTS`` on a new session (trusted: the settings may name Python
    agents). One that cannot be registered (its name does not resolve now, its URL is refused)
    is logged and skipped: the session is created without it."""
    done: list[AgentSpec] = []
    for spec in ds_settings.DEFAULT_AGENTS or []:
        try:
            done += register(session, [spec], by=owner, trusted=True)
        except errors.SessionError as exc:
            logger.error("DEFAULT_AGENTS: not registered on session %s: %s", session.pk, exc)
    return done
