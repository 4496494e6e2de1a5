"""The job rows: what the runtime records of each generation (synchronous ORM code; the worker
calls it on its database threads).

``open_job`` is where a trigger is answered once: the row's key is unique per session, so two
workers reading the same trigger (a takeover after a crash reads the log again) make one job.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from durable_sessions.agents import models as m
from durable_sessions.agents.models import Job
from durable_sessions.sessions import identity
from durable_sessions.sessions.models import Agent, Membership, Session


def open_job(
    session: Session,
    *,
    key: str,
    agent_id: str,
    trigger: str,
    trigger_message_id: str,
    message_id: str,
    depth: int,
    initiated_by_id: int | None,
    status: str,
    worker: str,
    generation: int,
) -> Job | None:
    """A new job row, or None when ``key`` was answered (or is being answered) already."""
    try:
        with transaction.atomic():
            return Job.objects.create(
                session=session,
                key=key,
                agent_id=agent_id,
                trigger=trigger,
                trigger_message_id=trigger_message_id,
                message_id=message_id,
                depth=depth,
                initiated_by_id=initiated_by_id,
                status=status,
                worker=worker,
                claim_generation=generation,
            )
    except IntegrityError:
        return None


def update(job: Job, **fields: Any) -> None:
    """Save ``fields`` of ``job`` (and set them on the object)."""
    for name, value in fields.items():
        setattr(job, name, value)
    Job.objects.filter(pk=job.pk).update(**fields)


def now() -> datetime:
    """The time the rows record."""
    return timezone.now()


def orphans(session: Session, generation: int) -> list[Job]:
    """Jobs of ``session`` left running or queued by an earlier claim (its worker died or let
    go): the worker that now holds the session takes them over."""
    return list(
        Job.objects.filter(
            session=session, status__in=(m.RUNNING, m.QUEUED), claim_generation__lt=generation
        ).order_by("queued_at")
    )


def adopt(job: Job, *, worker: str, generation: int) -> None:
    """Record that ``worker`` under ``generation`` holds ``job`` now."""
    update(job, worker=worker, claim_generation=generation)


def running_message(session: Session, message_id: str) -> bool:
    """Whether ``message_id`` is a generation the runtime holds (running, not ended)."""
    return Job.objects.filter(session=session, message_id=message_id, status=m.RUNNING).exists()


def depths(session: Session, message_ids: Iterable[str]) -> dict[str, int]:
    """The chain depth of the runtime's messages among ``message_ids``."""
    rows = Job.objects.filter(session=session, message_id__in=list(message_ids))
    return dict(rows.values_list("message_id", "depth"))


def initiator(session: Session, actor_id: str, message_id: str) -> int | None:
    """The user who started the chain of ``message_id``: its author when a member wrote it,
    else the initiator of the job that wrote it."""
    job = Job.objects.filter(session=session, message_id=message_id).first()
    if job is not None:
        return job.initiated_by_id
    for membership in Membership.objects.filter(session=session).select_related("user"):
        if identity.actor_id(membership.user) == actor_id:
            return int(membership.user.pk)
    return None


def registered_at(session: Session) -> dict[str, datetime]:
    """When each agent of ``session`` was registered."""
    return dict(Agent.objects.filter(session=session).values_list("agent_id", "created_at"))


def _totals() -> dict[str, Any]:
    """The usage totals as aggregate expressions (one set for a whole queryset or per group)."""
    return {
        "generations": Count("id"),
        "tokensIn": Sum("tokens_in"),
        "tokensOut": Sum("tokens_out"),
        "failed": Count("id", filter=Q(status=m.ERROR)),
        "stopped": Count("id", filter=Q(status=m.STOPPED)),
        "interrupted": Count("id", filter=Q(status=m.INTERRUPTED)),
    }


def usage(jobs: Any) -> dict[str, Any]:
    """Totals of a queryset of jobs: generations by status, tokens in and out."""
    return {key: value or 0 for key, value in jobs.aggregate(**_totals()).items()}


def session_usage(session: Session) -> dict[str, Any]:
    """Usage of one session: totals, and per agent (one grouped query)."""
    jobs = Job.objects.filter(session=session)
    per_agent = {}
    for row in jobs.order_by().values("agent_id").annotate(**_totals()):
        per_agent[row["agent_id"]] = {
            key: value or 0 for key, value in row.items() if key != "agent_id"
        }
    return {"totals": usage(jobs), "agents": per_agent}


def user_usage(user: Any) -> dict[str, Any]:
    """Usage of the generations ``user``'s messages started, in every session."""
    return {"totals": usage(Job.objects.filter(initiated_by=user))}
