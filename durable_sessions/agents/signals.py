"""Keeping the agents subscriptions in step with the sessions' agents, from the models' signals.

The sessions layer does not know the runtime above it: a session that gets an agent gets its
subscription here, once the agent's row is committed (the log writes on connections of its own,
which must not wait for the registering transaction), and a deleted session loses it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from durable_sessions.agents import links
from durable_sessions.sessions.models import Agent, Session

logger = logging.getLogger("durable_sessions.agents")


def _agent_saved(sender: Any, instance: Agent, created: bool, **kwargs: Any) -> None:
    session = instance.session
    transaction.on_commit(lambda: links.ensure(session))


def _session_deleted(sender: Any, instance: Session, **kwargs: Any) -> None:
    session_id = instance.pk
    transaction.on_commit(lambda: links.drop(session_id))


def install() -> None:
    """Connect the receivers, and tell the session actions which generations the runtime holds
    (it writes their stop itself). Called at app ready."""
    from durable_sessions.agents import jobs
    from durable_sessions.sessions import actions

    if jobs.running_message not in actions.runtime_holds:
        actions.runtime_holds.append(jobs.running_message)
    post_save.connect(_agent_saved, sender=Agent, dispatch_uid="ds-agents-subscription")
    post_delete.connect(_session_deleted, sender=Session, dispatch_uid="ds-agents-unsubscribe")
