"""Pull-wake subscriptions through the Python API: wakes, claims, acks, leases, fencing."""

from __future__ import annotations

import json
import time

import pytest

from durable_sessions import streams
from durable_sessions.streams import subscriptions
from durable_sessions.streams.subscriptions.models import Subscription, SubscriptionLink
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

WAKE = "wake/pool"


@pytest.fixture
def wake_stream():
    streams.create(WAKE, content_type="application/json")
    return WAKE


def wake_events(subscription_id: str) -> list[dict]:
    return [e for e in streams.read(WAKE).messages() if e["subscription_id"] == subscription_id]


def pull(subscription_id: str, **options) -> subscriptions.Info:
    return subscriptions.ensure(
        subscription_id, type="pull-wake", wake_stream=WAKE, lease_ttl_ms=1000, **options
    )


def state(info: subscriptions.Info, path: str):
    return next(s for s in info.streams if s.path == path)


def test_create_confirm_and_a_different_configuration(wake_stream):
    first = pull("s1", streams=["jobs/a"])
    assert first.created and [s.path for s in first.streams] == ["jobs/a"]
    again = pull("s1", streams=["jobs/a", "jobs/a"])
    assert not again.created
    with pytest.raises(subscriptions.SubscriptionExists):
        pull("s1", streams=["jobs/b"])
    with pytest.raises(subscriptions.InvalidRequest):
        subscriptions.ensure("s2", type="pull-wake", streams=["jobs/a"])  # no wake stream
    with pytest.raises(subscriptions.InvalidRequest):
        subscriptions.ensure("s3", type="pull-wake", wake_stream=WAKE)  # no streams, no pattern


def test_an_append_to_a_linked_stream_wakes_the_subscription_once(wake_stream):
    streams.create("jobs/a", content_type="text/plain", data="old")
    info = pull("s-wake", streams=["jobs/a"])
    assert not state(info, "jobs/a").has_pending  # linked at its tail: no replay
    streams.append("jobs/a", "new")
    wait_until(lambda: wake_events("s-wake"), what="a wake event")
    streams.append("jobs/a", "newer")  # a wake is in flight: no second one
    [event] = wake_events("s-wake")
    assert event["stream"] == "jobs/a" and event["generation"] == 1
    claim = subscriptions.claim("s-wake", "w1")
    assert claim.generation == 1 and claim.wake_id
    [link] = claim.streams
    assert link.has_pending and str(link.acked) == "0000000000000001_0000000000000003"
    assert subscriptions.ack(claim, {"jobs/a": link.tail}, done=True) is False
    assert not state(subscriptions.get("s-wake"), "jobs/a").has_pending


def test_a_claim_right_after_an_append_succeeds_without_waiting_for_a_wake(wake_stream):
    streams.create("jobs/now", content_type="text/plain")
    pull("s-now", streams=["jobs/now"])
    streams.append("jobs/now", "x")
    claim = subscriptions.claim("s-now", "w1")  # whether or not the worker has woken it yet
    assert claim.streams[0].has_pending


def test_claims_are_exclusive_and_nothing_to_do_is_said(wake_stream):
    streams.create("jobs/c", content_type="text/plain")
    pull("s-c", streams=["jobs/c"])
    with pytest.raises(subscriptions.NoPendingWork):
        subscriptions.claim("s-c", "w1")
    streams.append("jobs/c", "x")
    claim = subscriptions.claim("s-c", "w1")
    with pytest.raises(subscriptions.AlreadyClaimed) as busy:
        subscriptions.claim("s-c", "w2")
    assert busy.value.details == {"current_holder": "w1", "generation": claim.generation}
    assert busy.value.as_json()["error"]["current_holder"] == "w1"


def test_acks_move_forward_only_and_never_past_the_tail(wake_stream):
    streams.create("jobs/d", content_type="text/plain")
    pull("s-d", streams=["jobs/d", "jobs/other"])
    first = streams.append("jobs/d", "aa").next
    second = streams.append("jobs/d", "bb").next
    claim = subscriptions.claim("s-d", "w1")
    subscriptions.ack(claim, {"jobs/d": first})
    for bad in (
        {"jobs/d": "0000000000000000_0000000000000000"},  # backwards
        {"jobs/d": "0000000000000003_0000000000000006"},  # past the tail
        {"jobs/d": "0000000000000002_0000000000000003"},  # no position of the stream
        {"jobs/nope": str(second)},  # not linked
        {"jobs/other": "0000000000000001_0000000000000001"},  # linked, but no stream there
        {"jobs/d": str(second), "jobs/nope": str(second)},  # all or nothing
    ):
        with pytest.raises(subscriptions.InvalidOffset):
            subscriptions.ack(claim, bad)
        assert state(subscriptions.get("s-d"), "jobs/d").acked == first
    with pytest.raises(subscriptions.InvalidOffset):
        subscriptions.ack(claim, {"jobs/d": "-1"})
    subscriptions.ack(claim, {"jobs/d": second}, done=True)
    assert state(subscriptions.get("s-d"), "jobs/d").acked == second


def test_done_with_new_data_meanwhile_wakes_again(wake_stream):
    streams.create("jobs/e", content_type="text/plain")
    pull("s-e", streams=["jobs/e"])
    seen = streams.append("jobs/e", "1").next
    claim = subscriptions.claim("s-e", "w1")
    streams.append("jobs/e", "2")  # arrives while the worker works
    assert subscriptions.ack(claim, {"jobs/e": seen}, done=True) is True
    wait_until(lambda: any(e["generation"] == claim.generation + 1 for e in wake_events("s-e")))
    again = subscriptions.claim("s-e", "w2")
    assert again.generation == claim.generation + 1 and again.streams[0].acked == seen


def test_a_stale_worker_is_fenced_and_changes_nothing(wake_stream):
    streams.create("jobs/f", content_type="text/plain")
    pull("s-f", streams=["jobs/f"])
    tail = streams.append("jobs/f", "x").next
    stale = subscriptions.claim("s-f", "w1")
    # Its lease runs out (the worker hung): the sweep clears it and wakes again.
    Subscription.objects.filter(id="s-f").update(lease_expires_at=time.time() - 1)
    wait_until(
        lambda: len(wake_events("s-f")) >= 2 or Subscription.objects.get(id="s-f").holder is None,
        what="the lapsed lease to be cleared",
    )
    fresh = subscriptions.claim("s-f", "w2")
    assert fresh.generation > stale.generation
    for call in (
        lambda: subscriptions.ack(stale, {"jobs/f": tail}, done=True),
        lambda: subscriptions.heartbeat(stale),
        lambda: subscriptions.release(stale),
    ):
        with pytest.raises(subscriptions.Fenced):
            call()
    assert not state(subscriptions.get("s-f"), "jobs/f").acked.seq  # the stale ack moved nothing
    assert Subscription.objects.get(id="s-f").holder == "w2"
    subscriptions.ack(fresh, {"jobs/f": tail}, done=True)


def test_heartbeats_keep_the_lease_and_release_hands_the_work_on(wake_stream):
    streams.create("jobs/g", content_type="text/plain")
    pull("s-g", streams=["jobs/g"])
    streams.append("jobs/g", "x")
    claim = subscriptions.claim("s-g", "w1")
    before = Subscription.objects.get(id="s-g").lease_expires_at
    subscriptions.heartbeat(claim)
    assert Subscription.objects.get(id="s-g").lease_expires_at >= before
    assert subscriptions.release(claim) is True  # still pending: woken again
    other = subscriptions.claim("s-g", "w2")
    assert other.generation == claim.generation + 1


def test_one_heartbeat_extends_many_leases_and_refuses_the_stale_and_the_gone(wake_stream):
    claims = {}
    for name in ("h1", "h2", "h3", "h4"):
        streams.create(f"jobs/{name}", content_type="text/plain")
        pull(f"s-{name}", streams=[f"jobs/{name}"])
        streams.append(f"jobs/{name}", "x")
        claims[name] = subscriptions.claim(f"s-{name}", "w1")
    Subscription.objects.filter(id__startswith="s-h").update(lease_expires_at=time.time() + 0.5)
    # s-h2 is taken over (its lease lapsed, another worker claimed it); s-h3 is deleted
    Subscription.objects.filter(id="s-h2").update(lease_expires_at=time.time() - 1)
    taken = subscriptions.claim("s-h2", "w2")
    subscriptions.delete("s-h3")
    before = {s.id: s.lease_expires_at for s in Subscription.objects.all()}

    sent = time.time()
    refused = subscriptions.heartbeat_many(claims.values())

    assert {claim.subscription_id for claim in refused} == {"s-h2", "s-h3"}
    after = {s.id: s.lease_expires_at for s in Subscription.objects.all()}
    for extended in ("s-h1", "s-h4"):
        assert after[extended] >= sent + 1.0  # a whole lease (1 s) from the heartbeat
    assert after["s-h2"] == before["s-h2"]  # the new holder's lease, untouched
    assert Subscription.objects.get(id="s-h2").holder == "w2"
    assert subscriptions.heartbeat_many([]) == []
    subscriptions.heartbeat(taken)  # the new holder's claim is still good
    subscriptions.ack(claims["h1"], done=True)
    assert [c.subscription_id for c in subscriptions.heartbeat_many([claims["h1"]])] == ["s-h1"]


def test_a_pattern_links_existing_streams_at_their_tails_and_new_ones_at_their_start(wake_stream):
    streams.create("events/old", content_type="application/json", data="[1]")
    streams.create("other/x", content_type="application/json", data="[1]")
    info = pull("s-glob", pattern="events/*")
    assert [(s.path, s.link_type, s.has_pending) for s in info.streams] == [
        ("events/old", "glob", False)
    ]
    streams.create("events/new", content_type="application/json", data='{"first": true}')
    streams.create("events/deep/no", content_type="application/json", data="[1]")  # 2 segments
    wait_until(lambda: wake_events("s-glob"), what="the new stream's wake")
    claim = subscriptions.claim("s-glob", "w1")
    pending = [s.path for s in claim.streams if s.has_pending]
    assert pending == ["events/new"]  # its first data counts, and nothing else matched


def test_remove_keeps_the_patterns_link_and_a_tombstone_keeps_its_generation(wake_stream):
    streams.create("events/both", content_type="text/plain")
    pull("s-both", pattern="events/*", streams=["events/both"])
    assert state(subscriptions.get("s-both"), "events/both").link_type == "explicit"
    subscriptions.remove_stream("s-both", "events/both")
    assert state(subscriptions.get("s-both"), "events/both").link_type == "glob"
    streams.append("events/both", "x")
    old = subscriptions.claim("s-both", "w1")
    subscriptions.delete("s-both")
    subscriptions.delete("s-both")  # idempotent
    with pytest.raises(subscriptions.SubscriptionNotFound):
        subscriptions.get("s-both")
    with pytest.raises(subscriptions.SubscriptionNotFound):
        subscriptions.ack(old, done=True)
    assert not SubscriptionLink.objects.filter(subscription_id="s-both").exists()
    pull("s-both", streams=["events/both"])  # created anew under the same id
    streams.append("events/both", "y")
    new = subscriptions.claim("s-both", "w1")
    assert new.generation > old.generation  # no token of the old one is ever valid again


def test_a_stream_deleted_and_created_again_is_pending_from_its_start(wake_stream):
    streams.create("jobs/h", content_type="text/plain", data="old")
    pull("s-h", streams=["jobs/h"])
    streams.delete("jobs/h")
    streams.create("jobs/h", content_type="text/plain", data="new!")
    claim = subscriptions.claim("s-h", "w1")
    [link] = claim.streams
    assert link.has_pending and link.acked.seq == 0 and link.tail.bytes == 4


def test_wake_events_are_json_on_the_wake_stream(wake_stream):
    streams.create("jobs/i", content_type="text/plain")
    pull("s-i", streams=["jobs/i"])
    streams.append("jobs/i", "x")
    wait_until(lambda: wake_events("s-i"))
    [event] = wake_events("s-i")
    assert set(event) == {"type", "subscription_id", "stream", "generation", "ts"}
    assert event["type"] == "wake" and abs(event["ts"] / 1000 - time.time()) < 60
    json.dumps(event)
