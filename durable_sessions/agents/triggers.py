"""Which agents answer what: the triggers, read off the events a worker has not handled yet.

``arrivals(events)`` finds, among a batch of the session stream's events, what can start a
generation: a message that became complete (a ``whole-message``, or an agent's ``done``), a
tool result, an approval answered. ``plans(...)`` turns those into generations to run:

- ``user-messages`` agents answer every user message; ``all`` agents answer every complete
  message, other agents' included, but never their own, and a chain of agent replies stops at
  ``AGENT_MAX_CHAIN`` replies in a row (a user message starts a new chain); ``mention`` agents
  answer only when named.
- A message that names agents (``@<agentId>`` or ``@<name>``, case-insensitive) is answered by
  the agents it names only, whatever their triggers.
- An agent answers only what was written after it was registered: history, and what
  compaction writes again, is not answered again.
- A tool result re-invokes the agent whose tool call it answers; an approval re-invokes the
  agent that asked, once every approval that message asked for is answered.

Each plan has a key (``Job.key``): a trigger is answered once, whoever reads it, however often.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from durable_sessions import state
from durable_sessions.sessions.agent_specs import AgentSpec

MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9][A-Za-z0-9._-]*)")
WHOLE = ("whole-message", "user-message")
REGENERATE_REQUEST = "regenerate-request"
# The triggers whose agent is shown the history up to the triggering message (the others see
# it all: an approval or a tool result answers the agent's own last message).
MESSAGE_TRIGGERS = ("user-messages", "all", "mention", "retry", "regenerate")


@dataclass(frozen=True, slots=True)
class Arrival:
    """Something that may start generations: ``kind`` is ``message`` (a complete message),
    ``tool-result`` (a tool result message) or ``approval`` (an approval answered on the
    message ``message_id``; ``approval_id`` names it)."""

    kind: str
    message_id: str
    created_at: str
    approval_id: str = ""
    agent_id: str = ""  # (regenerate: the agent asked for)
    request_id: str = ""  # (regenerate: the request's id)


@dataclass(frozen=True, slots=True)
class Plan:
    """A generation to run: ``agent`` answers ``trigger_message_id`` because of ``trigger``."""

    agent: AgentSpec
    trigger: str
    trigger_message_id: str  # a message id; for an approval, the approval id
    depth: int
    source_message_id: str  # the message that asks for it (for an approval: the agent's)
    request_id: str = ""  # a regenerate request: each is answered once

    @property
    def key(self) -> str:
        """The job key: one job per agent, trigger and triggering message (or request)."""
        key = f"{self.agent.id} {self.trigger} {self.trigger_message_id}"
        return f"{key} {self.request_id}" if self.request_id else key


def arrivals(events: Iterable[Any]) -> list[Arrival]:
    """What in ``events`` (state events of a session stream, in order) may start generations."""
    found: list[Arrival] = []
    for event in events:
        if not isinstance(event, dict):
            continue
        if event.get("type") == REGENERATE_REQUEST and isinstance(event.get("value"), dict):
            request = event["value"]
            if all(isinstance(request.get(k), str) for k in ("fromMessageId", "agentId")):
                found.append(
                    Arrival(
                        "regenerate",
                        request["fromMessageId"],
                        str(request.get("requestedAt", "")),
                        agent_id=request["agentId"],
                        request_id=str(event.get("key", "")),
                    )
                )
            continue
        if event.get("type") != state.CHUNK_TYPE:
            continue
        headers, value = event.get("headers"), event.get("value")
        if not isinstance(headers, dict) or headers.get("operation") not in ("insert", "upsert"):
            continue
        if not isinstance(value, dict):
            continue
        try:
            chunk = state.decode_chunk_row(str(event.get("key")), value)
        except (state.InvalidEvent, TypeError, AttributeError):
            continue  # the materializer skips it too
        message_id, created_at = value["messageId"], value["createdAt"]
        kind = chunk["type"]
        if kind in WHOLE and value["seq"] == 0:
            parts = chunk["message"].get("parts", [])
            is_result = any(isinstance(p, dict) and p.get("type") == "tool-result" for p in parts)
            found.append(Arrival("tool-result" if is_result else "message", message_id, created_at))
        elif kind == "done":
            found.append(Arrival("message", message_id, created_at))
        elif kind == "approval-response" and isinstance(chunk.get("approvalId"), str):
            found.append(Arrival("approval", message_id, created_at, chunk["approvalId"]))
    return found


def _moment(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def mentioned(text: str, agents: Sequence[AgentSpec]) -> list[AgentSpec]:
    """The agents ``text`` names (``@id`` or ``@name``), in registration order."""
    names = {name.lower() for name in MENTION.findall(text)}
    if not names:
        return []
    return [a for a in agents if a.id.lower() in names or (a.name and a.name.lower() in names)]


def text_of(message: state.Message) -> str:
    """The text parts of ``message``, joined."""
    return "".join(
        str(part.get("content", "")) for part in message.parts if part.get("type") == "text"
    )


def _approvals_open(message: state.Message) -> bool:
    for part in message.parts:
        approval = part.get("approval")
        if (
            part.get("type") == "tool-call"
            and isinstance(approval, dict)
            and "approved" not in approval
        ):
            return True
    return False


def _tool_call_owner(session_state: state.SessionState, message: state.Message) -> str | None:
    for part in message.parts:
        if part.get("type") == "tool-result":
            holder = session_state.find_tool_call(str(part.get("toolCallId", "")))
            if holder is not None:
                owner = session_state.message(holder)
                return owner.actor_id if owner is not None else None
    return None


def plans(
    arrived: Iterable[Arrival],
    *,
    session_state: state.SessionState,
    agents: Sequence[AgentSpec],
    registered_at: Mapping[str, datetime],
    depth_of: Mapping[str, int],
    max_chain: int,
) -> list[Plan]:
    """The generations ``arrived`` asks for. ``registered_at`` is when each agent was
    registered; ``depth_of`` the chain depth of the agent messages the runtime wrote."""
    by_id = {agent.id: agent for agent in agents}
    planned: list[Plan] = []

    def after_registration(agent: AgentSpec, created_at: str) -> bool:
        when, since = _moment(created_at), registered_at.get(agent.id)
        return when is not None and (since is None or when > since)

    for arrival in arrived:
        message = session_state.message(arrival.message_id)
        if message is None or not message.complete:
            continue
        if arrival.kind == "regenerate":
            agent = by_id.get(arrival.agent_id)
            if agent is not None:
                depth = depth_of.get(message.id, 0)
                planned.append(
                    Plan(agent, "regenerate", message.id, depth, message.id, arrival.request_id)
                )
            continue
        if arrival.kind == "approval":
            owner = by_id.get(message.actor_id)
            if (
                owner is not None
                and not _approvals_open(message)
                and after_registration(owner, arrival.created_at)
            ):
                depth = depth_of.get(message.id, 1)
                planned.append(Plan(owner, "approval", arrival.approval_id, depth, message.id))
            continue
        if arrival.kind == "tool-result":
            owner = by_id.get(_tool_call_owner(session_state, message) or "")
            if owner is not None and after_registration(owner, arrival.created_at):
                depth = depth_of.get(message.id, 1)
                planned.append(Plan(owner, "tool-result", message.id, depth, message.id))
            continue
        if message.status != "done" or message.role == "system":
            continue
        author = by_id.get(message.actor_id) if message.role == "assistant" else None
        depth = depth_of.get(message.id, 1) + 1 if author is not None else 1
        named = mentioned(text_of(message), agents)
        for agent in agents:
            if agent is author or not after_registration(agent, message.started_at):
                continue
            if named:
                trigger = "mention" if agent in named else None
            elif agent.triggers == "all":
                trigger = "all"
            elif agent.triggers == "user-messages" and author is None and message.role == "user":
                trigger = "user-messages"
            else:
                trigger = None
            if trigger is None or (author is not None and depth > max_chain):
                continue
            planned.append(Plan(agent, trigger, message.id, depth, message.id))
    return planned
