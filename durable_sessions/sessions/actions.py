"""What members do to a conversation besides posting: stop, tool results, approvals, regenerate
(WIRE.md 3 and 6; re-exported by service.py).

Every one is a write of the acting user (members, owners, staff; viewers and outsiders 403;
archived sessions 409) through ``writes.append_chunk``, so its seq is never reused:

- **stop** of a generation the agent runtime holds writes a ``stop-request`` row (key: the
  messageId; ``actorId``, ``requestedAt``): the worker holding it, in whatever process, aborts
  the agent's call, keeps the partial answer and writes the ``stop`` chunk naming who stopped it
  (a worker that takes a dead one's session over does the same). A generation nobody holds (no
  runtime, or written by hand) gets ``{"type": "stop", "reason": "user"}`` as its next seq at
  once. A duplicate or a gap means someone else wrote meanwhile: the state is read again, and
  the stop is written at the new next seq, or not at all when the message completed meanwhile.
  When nothing is active any more, the session's ``generating_since`` is cleared.
- **tool results** write a ``whole-message`` under the client's messageId (a new one when it
  sends none), role ``assistant``, with one ``tool-result`` part, and the client's txid; 404
  when no message of the session holds that tool call. The same post again (same id, same
  author, same result) is answered as the first.
- **approvals** write ``{"type": "approval-response", "approvalId", "approved"}`` as the next
  seq of the assistant message whose tool call asked for it; 404 for an unknown approval. An
  approval already answered is answered again only with the same answer (a retry: nothing is
  written); the other answer is 409 ``approval_answered``.
- **regenerate** checks the message and that an agent is registered (400 ``no_agents``, as the
  reference) and writes a ``regenerate-request`` row (``fromMessageId``, ``agentId``,
  ``actorId``): the runtime invokes the agent, whose reply comes as a new assistant message, as
  the reference's does. Nothing is deleted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from durable_sessions import state
from durable_sessions.conf import ds_settings
from durable_sessions.sessions import cache, errors, roles, writes
from durable_sessions.sessions.agents import registered
from durable_sessions.sessions.guard import session_access
from durable_sessions.sessions.models import Session

MAX_ATTEMPTS = 8
STOP_REQUEST = "stop-request"
REGENERATE_REQUEST = "regenerate-request"

# Whether a generation (session, messageId) is held by the agent runtime, which then writes its
# stop itself; the runtime adds its check here (agents/signals.py: the layers above register
# with the ones below, never the other way round).
runtime_holds: list[Callable[[Session, str], bool]] = []


def _held(session: Session, message_id: str) -> bool:
    return any(check(session, message_id) for check in runtime_holds)


def _append_next(
    session: Session,
    message_id: str,
    *,
    actor_id: str,
    chunk: dict[str, Any],
    wanted: Callable[[Any], bool],
    txid: str | None = None,
) -> bool:
    """Append ``chunk`` as the next seq of ``message_id`` while ``wanted(message)`` holds.
    True when written, False when it no longer holds; a seq taken meanwhile is looked at
    again (up to ``MAX_ATTEMPTS``, then 409)."""
    for _ in range(MAX_ATTEMPTS):
        with cache.caught_up(session.stream_path) as (session_state, _offset):
            message = session_state.message(message_id)
            if message is None or not wanted(message):
                return False
            seq, role = session_state.next_seq(message_id), message.role
        try:
            writes.append_chunk(
                session,
                message_id=message_id,
                seq=seq,
                actor_id=actor_id,
                role=role,
                chunk=chunk,
                txid=txid,
            )
        except errors.Conflict:  # another writer took that seq: read again
            continue
        return True
    raise errors.Conflict(f"message {message_id} keeps changing; retry", code="busy")


def _active(message: Any) -> bool:
    return bool(message.role == "assistant" and not message.complete)


def generation_stop(*, user: Any, session_id: Any, message_id: str | None = None) -> list[str]:
    """Stop the generation ``message_id`` (None: every active one). The ids stopped; a message
    that is not generating is left as it is, an unknown one is 404."""
    access = session_access(user=user, session_id=session_id, action=roles.WRITE)
    session = access.session
    with cache.caught_up(session.stream_path) as (session_state, _offset):
        active = session_state.active_generations()
        if message_id is not None and session_state.message(message_id) is None:
            raise errors.NotFound(f"no message {message_id[:200]!r} in this session")
    targets = active if message_id is None else [m for m in active if m == message_id]
    held = [mid for mid in targets if _held(session, mid)]
    if held:
        now = state.timestamp(time.time())
        writes.append_events(
            session,
            [
                state.upsert(
                    STOP_REQUEST,
                    mid,
                    {"messageId": mid, "actorId": access.actor_id, "requestedAt": now},
                )
                for mid in held
            ],
        )
    stopped = held + [
        mid
        for mid in targets
        if mid not in held
        and _append_next(
            session, mid, actor_id=access.actor_id, chunk=state.stop_chunk("user"), wanted=_active
        )
    ]
    still = cache.read(session.stream_path, lambda st, _o: bool(st.active_generations()))
    if not still:
        Session.objects.filter(pk=session.pk).update(generating_since=None)
    return stopped


def _tool_result_part(tool_call_id: str, output: Any, error: str | None) -> dict[str, Any]:
    try:
        part = state.tool_result_part(tool_call_id, output, error=error)
    except state.InvalidEvent as exc:
        raise errors.Invalid(str(exc)) from None
    if len(part["content"]) > ds_settings.MAX_MESSAGE_CHARS:
        raise errors.Invalid(
            f"a tool result holds at most {ds_settings.MAX_MESSAGE_CHARS} characters"
        )
    return part


def tool_result_post(
    *,
    user: Any,
    session_id: Any,
    tool_call_id: str,
    output: Any,
    error: str | None = None,
    message_id: str | None = None,
    txid: str | None = None,
) -> str:
    """Post the result of the tool call ``tool_call_id`` as a whole assistant message under
    ``message_id`` (new when None): its messageId. 404 when no message holds that tool call;
    409 when the messageId is used by another message."""
    access = session_access(user=user, session_id=session_id, action=roles.WRITE)
    session = access.session
    part = _tool_result_part(tool_call_id, output, error)
    holder = cache.read(session.stream_path, lambda st, _o: st.find_tool_call(tool_call_id))
    if holder is None:
        raise errors.NotFound(f"no message of this session holds tool call {tool_call_id[:200]!r}")
    mid = message_id or str(uuid.uuid4())
    try:
        writes.append_chunk(
            session,
            message_id=mid,
            seq=0,
            actor_id=access.actor_id,
            role="assistant",
            chunk=lambda created_at: state.tool_result_message(
                mid, tool_call_id=tool_call_id, output=output, error=error, created_at=created_at
            ),
            txid=txid,
        )
    except errors.Conflict as exc:
        if getattr(exc, "duplicate", False):

            def same(st: state.SessionState, _offset: str) -> bool:
                message = st.message(mid)
                return message is not None and (message.actor_id, message.parts) == (
                    access.actor_id,
                    [part],
                )

            if cache.read(session.stream_path, same):
                return mid
        raise errors.Conflict(
            f"message id {mid} is already used in this session", code="message_exists"
        ) from exc
    return mid


def _approval(session_state: state.SessionState, approval_id: str) -> tuple[str, Any] | None:
    """``(message id, the answer so far: None, True or False)`` of an approval, or None."""
    found = session_state.find_approval(approval_id)
    if found is None:
        return None
    message = session_state.message(found[0])
    for part in message.parts if message else []:
        approval = part.get("approval")
        if isinstance(approval, dict) and approval.get("id") == approval_id:
            return found[0], approval.get("approved")
    return found[0], None


def approval_respond(
    *, user: Any, session_id: Any, approval_id: str, approved: bool, txid: str | None = None
) -> None:
    """Answer the approval ``approval_id``. 404 when no tool call asked for it; 409
    ``approval_answered`` when it was answered the other way."""
    access = session_access(user=user, session_id=session_id, action=roles.WRITE)
    session = access.session
    if not isinstance(approved, bool):
        raise errors.Invalid("approved is true or false")
    found = cache.read(session.stream_path, lambda st, _o: _approval(st, approval_id))
    if found is None:
        raise errors.NotFound(f"no approval {approval_id[:200]!r} in this session")
    message_id, answer = found

    def unanswered(message: Any) -> bool:
        return not any(
            isinstance(p.get("approval"), dict)
            and p["approval"].get("id") == approval_id
            and isinstance(p["approval"].get("approved"), bool)
            for p in message.parts
        )

    if answer is None and _append_next(
        session,
        message_id,
        actor_id=access.actor_id,
        chunk=state.approval_response(approval_id, approved),
        wanted=unanswered,
        txid=txid,
    ):
        return
    answered = cache.read(session.stream_path, lambda st, _o: _approval(st, approval_id))
    if answered is None or answered[1] != approved:
        raise errors.Conflict(
            f"approval {approval_id[:200]!r} is already answered", code="approval_answered"
        )


def message_regenerate(
    *, user: Any, session_id: Any, from_message_id: str, content: str
) -> dict[str, Any]:
    """Ask for a new reply to the message ``from_message_id`` (``content``: its text, as the
    client sends it). 404 for an unknown message, 400 ``no_agents`` when no agent is
    registered. Writes a ``regenerate-request`` row; the agent runtime invokes the agent, whose
    reply is a new assistant message. Returns what it will invoke: ``{agentId,
    fromMessageId}``."""
    access = session_access(user=user, session_id=session_id, action=roles.WRITE)
    session = access.session
    if len(content) > ds_settings.MAX_MESSAGE_CHARS:
        raise errors.Invalid(f"a message holds at most {ds_settings.MAX_MESSAGE_CHARS} characters")
    known = cache.read(session.stream_path, lambda st, _o: st.message(from_message_id) is not None)
    if not known:
        raise errors.NotFound(f"no message {from_message_id[:200]!r} in this session")
    agents = registered(session)
    if not agents:
        raise errors.Invalid("no agent is registered in this session", code="no_agents")
    author = cache.read(session.stream_path, lambda st, _o: st.message(from_message_id))
    ids = [agent.id for agent in agents]
    agent_id = author.actor_id if author is not None and author.actor_id in ids else ids[0]
    request = {
        "requestId": str(uuid.uuid4()),
        "fromMessageId": from_message_id,
        "agentId": agent_id,
        "actorId": access.actor_id,
        "requestedAt": state.timestamp(time.time()),
    }
    writes.append_events(session, [state.insert(REGENERATE_REQUEST, request["requestId"], request)])
    return {"agentId": agent_id, "fromMessageId": from_message_id}
