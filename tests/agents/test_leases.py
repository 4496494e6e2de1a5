"""A worker's leases: its heartbeats keep every claim it holds (one transaction for all of
them), and a claim another worker took over stops the run at the next heartbeat."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import User

from durable_sessions.agents import links
from durable_sessions.streams import subscriptions
from durable_sessions.streams.subscriptions.models import Subscription
from tests.agents.runtime import (
    agent,
    answers,
    jobs_of,
    post,
    running_worker,
    session_with,
    text,
    wait_for_answers,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scripts")]


def lease_ttl(settings, seconds: float) -> None:
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "AGENT_LEASE_TTL": seconds}


def test_answers_longer_than_the_lease_are_kept_by_the_heartbeats(alice, settings):
    # two sessions answered at once for 5 s each, with a 2 s lease: without a heartbeat each
    # claim would lapse mid-answer, be claimed again and its answer ended as interrupted
    lease_ttl(settings, 2.0)
    sids = [session_with(alice, agent("steady", "steady")) for _ in range(2)]
    with running_worker():
        for sid in sids:
            post(alice, sid, "a long answer")
        wait_until(lambda: all(_written(alice, sid, "steady") for sid in sids), 20, what="tokens")
        answering = _generations(sids)
        found = [wait_for_answers(alice, sid, "steady") for sid in sids]
    for sid, [answer] in zip(sids, found, strict=True):
        assert answer["status"] == "done"
        assert text(answer) == "".join(f"t{n} " for n in range(250))
        [job] = jobs_of(sid)
        assert job.status == "done" and job.attempts == 1
    assert _generations(sids) == answering  # the claims held from first token to done


def _ids(sids: list[str]) -> list[str]:
    return [links.subscription_id(sid) for sid in sids]


def _generations(sids: list[str]) -> dict[str, int]:
    return {s.id: s.generation for s in Subscription.objects.filter(id__in=_ids(sids))}


def _written(user: User, sid: str, agent_id: str = "slow") -> int:
    found = answers(user, sid, agent_id)
    return len(text(found[0])) if found else 0


def test_a_claim_taken_over_stops_its_run_at_the_next_heartbeat(alice, settings):
    # a 30 s lease: a heartbeat every 7.5 s, the run's own deadline 22.5 s after one. The run
    # leaves within one heartbeat of the takeover because the heartbeat is refused, not at its
    # deadline (15 s or more after the takeover)
    lease_ttl(settings, 30.0)
    sid = session_with(alice, agent("slow", "slow"))
    [sub_id] = _ids([sid])
    with running_worker() as worker:
        post(alice, sid, "go on")
        wait_until(lambda: _written(alice, sid) > 20, 20, what="tokens")
        Subscription.objects.filter(id=sub_id).update(lease_expires_at=time.time() - 1)
        intruder = subscriptions.claim(sub_id, "intruder")
        taken = time.monotonic()
        wait_until(lambda: not worker.runs, 20, what="the run to leave")
        left = time.monotonic() - taken
        assert Subscription.objects.get(id=sub_id).holder == "intruder"
    print(f"takeover to the run gone: {left:.2f} s (a heartbeat every 7.5 s)")
    assert left < 12
    # The cut generation did not end itself (a chunk in flight when it was cut may still have
    # landed after the run left): its end is the new holder's to write, as is its job's.
    [answer] = answers(alice, sid, "slow")
    assert answer["status"] == "streaming"
    assert [job.status for job in jobs_of(sid)] == ["running"]
    subscriptions.release(intruder)
