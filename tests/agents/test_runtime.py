"""The agent runtime in one process: a real worker, real Python agents, the real log.

Posting writes only the message; the worker, woken through the session's subscription, claims
the session and answers. Each test reads what a client would: the materialized messages, and
the job rows.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from django.contrib.auth.models import User

from durable_sessions.agents import links
from durable_sessions.agents.models import Job
from durable_sessions.sessions import service
from durable_sessions.streams import subscriptions
from tests.agents import scripted
from tests.agents.runtime import (
    agent,
    answers,
    idle,
    jobs_of,
    messages,
    pending,
    post,
    running_worker,
    session_with,
    text,
    wait_for_answers,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("scripts")]


def test_a_user_message_is_answered_by_the_registered_agent(alice):
    sid = session_with(alice, agent("echo", "echo"))
    with running_worker():
        mid = post(alice, sid, "hello there")
        [answer] = wait_for_answers(alice, sid, "echo")
    assert text(answer).strip() == "echo: hello there"
    assert answer["role"] == "assistant" and answer["status"] == "done"
    [job] = jobs_of(sid)
    assert job.trigger == "user-messages" and job.trigger_message_id == mid
    assert job.status == "done" and job.message_id == answer["id"]
    assert job.first_token_at is not None and job.ended_at is not None
    assert job.tokens_out and job.usage_counted  # the script reports no usage: counted
    # the worker acked its own writes too: nothing is pending, nothing answered twice
    assert not pending(sid)
    assert [m["role"] for m in messages(alice, sid)] == ["user", "assistant"]


def test_a_message_posted_while_no_worker_runs_is_answered_when_one_starts(alice):
    sid = session_with(alice, agent("echo", "echo"))
    post(alice, sid, "anyone?")  # nobody listens to the wake stream yet
    with running_worker():
        [answer] = wait_for_answers(alice, sid, "echo")
    assert text(answer).strip() == "echo: anyone?"


def test_history_before_the_agent_was_registered_is_not_answered(alice):
    sid = session_with(alice)
    post(alice, sid, "before any agent")
    service.agent_register(user=alice, session_id=sid, specs=[])  # (nothing)
    from durable_sessions.sessions import agents as registry
    from durable_sessions.sessions.models import Session

    registry.register(Session.objects.get(pk=sid), [agent("echo", "echo")], by=alice, trusted=True)
    with running_worker():
        post(alice, sid, "after")
        [answer] = wait_for_answers(alice, sid, "echo")
    assert text(answer).strip() == "echo: after"
    assert len(jobs_of(sid)) == 1


def test_plain_strings_are_text_and_a_stream_without_done_is_completed(alice):
    sid = session_with(alice, agent("plain", "plain"))
    with running_worker():
        post(alice, sid, "hi")
        [answer] = wait_for_answers(alice, sid, "plain")
    assert text(answer) == "plain text reply "
    assert answer["status"] == "done"


def test_stop_aborts_the_agent_within_100_ms_and_keeps_the_partial_answer(alice):
    sid = session_with(alice, agent("slow", "slow"))
    with running_worker():
        post(alice, sid, "go on")
        [streaming] = wait_for_answers(alice, sid, "slow", complete=False)
        wait_until(lambda: len(text(answers(alice, sid, "slow")[0])) > 20, 10, what="tokens")
        asked = time.monotonic()
        stopped = service.generation_stop(user=alice, session_id=sid)
        assert stopped == [streaming["id"]]
        [answer] = wait_for_answers(alice, sid, "slow")
    aborted = scripted.CANCELLED[streaming["id"]] - asked
    print(f"stop to agent cancelled: {aborted * 1000:.1f} ms")
    assert aborted < 0.1
    assert answer["status"] == "stop" and text(answer).startswith("t0 t1 ")
    [job] = jobs_of(sid)
    assert job.status == "stop" and job.stopped_by == "alice"


def test_an_agent_that_never_answers_ends_with_a_timeout_error(alice):
    sid = session_with(alice, agent("silent", "silent", timeouts={"firstToken": 0.3}, retries=0))
    with running_worker():
        post(alice, sid, "hello?")
        [answer] = wait_for_answers(alice, sid, "silent")
    assert answer["status"] == "error"
    assert answer["error"]["code"] == "timeout_first_event"
    assert jobs_of(sid)[0].status == "error"


def test_a_failing_agent_is_retried_then_ends_with_an_error(alice):
    sid = session_with(alice, agent("broken", "broken", retries=2))
    with running_worker():
        post(alice, sid, "try")
        [answer] = wait_for_answers(alice, sid, "broken")
    assert answer["status"] == "error" and "broke" in answer["error"]["message"]
    assert len(scripted.CALLS) == 3  # the first call and two retries
    assert jobs_of(sid)[0].attempts == 3


def test_malformed_output_ends_the_generation_with_an_error_not_silence(alice):
    sid = session_with(alice, agent("garbage", "garbage", format="tanstack"))
    with running_worker():
        post(alice, sid, "x")
        [answer] = wait_for_answers(alice, sid, "garbage")
    assert answer["status"] == "error" and answer["error"]["code"] == "malformed_output"
    assert text(answer) == "fine "  # what came before is kept


def test_queue_policy_answers_the_next_message_when_the_current_answer_ends(alice):
    sid = session_with(alice, agent("slow", "slow", policy="queue"))
    with running_worker():
        post(alice, sid, "first")
        wait_for_answers(alice, sid, "slow", complete=False)
        second = post(alice, sid, "second")
        wait_until(lambda: Job.objects.filter(trigger_message_id=second).exists(), 10)
        assert Job.objects.get(trigger_message_id=second).status == "queued"
        assert len(answers(alice, sid, "slow")) == 1  # it waits: nothing of it is written
        service.generation_stop(user=alice, session_id=sid)  # ends the first
        wait_for_answers(alice, sid, "slow", 2, complete=False)
        service.generation_stop(user=alice, session_id=sid)
        found = wait_for_answers(alice, sid, "slow", 2)
    assert [m["status"] for m in found] == ["stop", "stop"]
    assert [j.status for j in jobs_of(sid)] == ["stop", "stop"]


def test_interrupt_policy_stops_the_current_answer_for_the_new_message(alice):
    sid = session_with(alice, agent("slow", "slow", policy="interrupt"))
    with running_worker():
        post(alice, sid, "first")
        wait_for_answers(alice, sid, "slow", complete=False)
        post(alice, sid, "second, now")
        [first] = wait_for_answers(alice, sid, "slow")  # stopped by the second message
        wait_for_answers(alice, sid, "slow", 2, complete=False)
        service.generation_stop(user=alice, session_id=sid)
        found = wait_for_answers(alice, sid, "slow", 2)
    assert first["status"] == "stop" and first["finishReason"] == "interrupted"
    assert [m["status"] for m in found] == ["stop", "stop"]
    assert jobs_of(sid)[0].stopped_by == "alice"


def test_parallel_policy_answers_both_at_once(alice):
    sid = session_with(alice, agent("slow", "slow", policy="parallel"))
    with running_worker():
        post(alice, sid, "first")
        wait_for_answers(alice, sid, "slow", complete=False)
        post(alice, sid, "second")
        both = wait_for_answers(alice, sid, "slow", 2, complete=False)
        assert not any(m["isComplete"] for m in both)  # two answers streaming side by side
        service.generation_stop(user=alice, session_id=sid)
        found = wait_for_answers(alice, sid, "slow", 2)
    assert [m["status"] for m in found] == ["stop", "stop"]


def test_reject_policy_records_the_refusal_and_writes_nothing(alice):
    sid = session_with(alice, agent("slow", "slow", policy="reject"))
    with running_worker():
        post(alice, sid, "first")
        wait_for_answers(alice, sid, "slow", complete=False)
        second = post(alice, sid, "second")
        wait_until(lambda: Job.objects.filter(trigger_message_id=second).exists(), 10)
        service.generation_stop(user=alice, session_id=sid)
        wait_for_answers(alice, sid, "slow")
    assert len(answers(alice, sid, "slow")) == 1
    assert Job.objects.get(trigger_message_id=second).status == "rejected"


def test_agents_answering_agents_stop_at_the_chain_limit(alice, settings):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "AGENT_MAX_CHAIN": 3}
    sid = session_with(
        alice, agent("ping", "echo", triggers="all"), agent("pong", "echo", triggers="all")
    )
    with running_worker():
        post(alice, sid, "start")
        wait_until(lambda: len(jobs_of(sid)) >= 2 and idle(sid), 30, what="the chain's end")
    jobs = jobs_of(sid)
    # both answer the user (depth 1), each answers the other (2), and once more (3): no 4th
    assert sorted(j.depth for j in jobs) == [1, 1, 2, 2, 3, 3]
    assert all(j.agent_id != _author(alice, sid, j.trigger_message_id) for j in jobs)


def _author(user, sid, message_id):
    return next(m["actorId"] for m in messages(user, sid) if m["id"] == message_id)


def test_a_mention_is_answered_by_the_agents_it_names_only(alice):
    sid = session_with(
        alice,
        agent("echo", "echo"),
        agent("helper", "echo", name="Helper", triggers="mention"),
    )
    with running_worker():
        post(alice, sid, "no names here")
        wait_for_answers(alice, sid, "echo")
        post(alice, sid, "@helper what do you say?")
        wait_for_answers(alice, sid, "helper")
        wait_until(lambda: all(j.ended_at for j in jobs_of(sid)), 10)
    assert [j.agent_id for j in jobs_of(sid)] == ["echo", "helper"]
    assert jobs_of(sid)[1].trigger == "mention"


def test_an_approval_round_trip_reinvokes_the_agent(alice):
    sid = session_with(alice, agent("approver", "approver"))
    with running_worker():
        post(alice, sid, "launch it")
        [asking] = wait_for_answers(alice, sid, "approver")
        call = next(p for p in asking["parts"] if p["type"] == "tool-call")
        assert call["approval"]["needsApproval"] and "approved" not in call["approval"]
        service.approval_respond(
            user=alice, session_id=sid, approval_id=call["approval"]["id"], approved=True
        )
        found = wait_for_answers(alice, sid, "approver", 2)
    assert "decision:" in text(found[1]) and "true" in text(found[1]).lower()
    assert [j.trigger for j in jobs_of(sid)] == ["user-messages", "approval"]


def test_a_tool_result_reinvokes_the_agent_that_called_the_tool(alice):
    sid = session_with(alice, agent("approver", "approver"))
    with running_worker():
        post(alice, sid, "launch it")
        [asking] = wait_for_answers(alice, sid, "approver")
        call = next(p for p in asking["parts"] if p["type"] == "tool-call")
        service.tool_result_post(
            user=alice, session_id=sid, tool_call_id=call["id"], output={"launched": True}
        )
        found = wait_for_answers(alice, sid, "approver", 2)
    assert "launched" in text(found[1])
    assert [j.trigger for j in jobs_of(sid)] == ["user-messages", "tool-result"]


def test_regenerate_asks_the_agent_for_a_new_answer(alice):
    sid = session_with(alice, agent("echo", "echo"))
    with running_worker():
        mid = post(alice, sid, "say it")
        [first] = wait_for_answers(alice, sid, "echo")
        service.message_regenerate(
            user=alice, session_id=sid, from_message_id=first["id"], content=""
        )
        found = wait_for_answers(alice, sid, "echo", 2)
    assert text(found[1]) == text(first)
    assert (
        jobs_of(sid)[1].trigger == "regenerate"
        and jobs_of(sid)[1].trigger_message_id == first["id"]
    )
    assert mid


# -- HTTP agents (the fake upstream: real SSE over a real socket) ------------------------------


@pytest.fixture
def fake(settings):
    from tests.agents.fake_upstream import FakeUpstream

    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "AGENT_ALLOW_PRIVATE": True}
    upstream = FakeUpstream()
    upstream.start()
    yield upstream
    upstream.stop()


def http_agent(fake, path: str = "/tanstack", **options) -> dict:
    return {"id": "remote", "endpoint": fake.url + path, **options}


def test_stop_closes_the_upstream_connection_within_100_ms(alice, fake):
    fake.script(tokens=[f"w{n} " for n in range(500)], delay=0.02)
    sid = session_with(alice, http_agent(fake))
    with running_worker():
        post(alice, sid, "talk")
        wait_until(lambda: answers(alice, sid, "remote"), 10, what="the first tokens")
        asked = time.monotonic()
        service.generation_stop(user=alice, session_id=sid)
        closed = fake.wait_closed(timeout=5)
        [answer] = wait_for_answers(alice, sid, "remote")
    print(f"stop to upstream connection closed: {(closed - asked) * 1000:.1f} ms")
    assert closed - asked < 0.1
    assert answer["status"] == "stop" and text(answer).startswith("w0 ")


def test_an_upstream_500_is_retried_then_ends_with_an_error_naming_it(alice, fake):
    for _ in range(2):
        fake.script(status=500, body="upstream exploded")
    sid = session_with(alice, http_agent(fake, retries=1))
    with running_worker():
        post(alice, sid, "hi")
        [answer] = wait_for_answers(alice, sid, "remote")
    assert answer["status"] == "error" and answer["error"]["code"] == "upstream_status"
    assert "500" in answer["error"]["message"]
    assert len(fake.requests) == 2  # the call and one retry


def test_malformed_sse_ends_the_generation_with_an_error(alice, fake):
    fake.script(tokens=["good", " start"], malformed="data: {oops")
    sid = session_with(alice, http_agent(fake, retries=0))
    with running_worker():
        post(alice, sid, "hi")
        [answer] = wait_for_answers(alice, sid, "remote")
    assert answer["status"] == "error" and answer["error"]["code"] == "malformed_sse"
    assert text(answer) == "good start"


def test_an_upstream_that_stops_mid_stream_times_out_between_tokens(alice, fake):
    fake.script(tokens=["half", " an"], hang="mid_stream")
    sid = session_with(alice, http_agent(fake, retries=0, timeouts={"betweenTokens": 0.3}))
    with running_worker():
        post(alice, sid, "hi")
        [answer] = wait_for_answers(alice, sid, "remote")
    assert answer["status"] == "error" and answer["error"]["code"] == "timeout_between_events"
    assert text(answer) == "half an"


def test_an_empty_reply_writes_nothing(alice, fake):
    fake.script(status=204)
    sid = session_with(alice, http_agent(fake))
    with running_worker():
        post(alice, sid, "hi")
        wait_until(lambda: idle(sid) and jobs_of(sid), 10, what="the job's end")
    assert answers(alice, sid, "remote") == []
    assert jobs_of(sid)[0].status == "done"


def test_usage_through_the_api_for_members_and_for_me(alice):
    from rest_framework.test import APIClient

    bob = User.objects.create_user("bob", password="pw-bob")
    sid = session_with(alice, agent("echo", "echo"))
    with running_worker():
        post(alice, sid, "count me")
        wait_for_answers(alice, sid, "echo")
        wait_until(lambda: idle(sid), 10, what="the job's end")
    me, outsider = APIClient(), APIClient()
    me.force_authenticate(alice)
    outsider.force_authenticate(bob)
    usage = me.get(f"/v1/sessions/{sid}/usage")
    assert usage.status_code == 200, usage.content
    totals = usage.json()["totals"]
    assert totals["generations"] == 1 and totals["tokensOut"] == 3  # counted: three deltas
    assert usage.json()["agents"]["echo"]["generations"] == 1
    assert me.get("/v1/usage").json()["totals"]["generations"] == 1  # my message started it
    assert outsider.get("/v1/usage").json()["totals"]["generations"] == 0
    assert outsider.get(f"/v1/sessions/{sid}/usage").status_code in (403, 404)
    assert APIClient().get("/v1/usage").status_code == 401


def _stopping_run(session_id: str) -> None:
    """Claim the session and run it as a worker does that is already shutting down."""
    from durable_sessions.agents.session_run import SessionRun
    from durable_sessions.agents.worker import AgentWorker
    from durable_sessions.agents.writer import close_pools, db, lease_db
    from durable_sessions.sessions.models import Session

    async def main() -> None:
        worker = AgentWorker("stopping-worker")
        claim = await lease_db(subscriptions.claim, links.subscription_id(session_id), worker.name)
        session = await db(lambda: Session.objects.get(pk=session_id))
        run = SessionRun(worker.name, worker, claim, session)
        run.stop()
        await run.run()
        await asyncio.to_thread(close_pools)

    asyncio.run(main())


def test_a_run_stopping_acks_what_needs_no_answer_and_leaves_what_does(alice):
    # what a shutting-down worker reads on to the tail: its own writes, presence; a message
    # an agent should answer stops it there, unacked, for the next claim
    sid = session_with(alice, agent("echo", "echo"))
    service.presence_login(user=alice, session_id=sid, device_id="laptop")
    assert pending(sid)
    _stopping_run(sid)
    assert not pending(sid)
    assert not jobs_of(sid)

    service.presence_login(user=alice, session_id=sid, device_id="phone")
    post(alice, sid, "answer me after the restart")
    _stopping_run(sid)
    assert pending(sid) and not jobs_of(sid)
    with running_worker():
        [answer] = wait_for_answers(alice, sid, "echo")
        wait_until(lambda: idle(sid), 30, what="the run to ack")
    assert text(answer).strip() == "echo: answer me after the restart"
