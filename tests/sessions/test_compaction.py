"""Compaction (durable_sessions/sessions/compaction.py, ``manage.py compact_sessions``): fewer
events, the same messages, also for a subscriber reading live from a real server."""

from __future__ import annotations

import io
import json
import threading

import httpx
import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from durable_sessions import state, streams
from durable_sessions.sessions import errors, service, writes
from durable_sessions.sessions.models import Session
from tests.servers import ServerProcess
from tests.sessions.test_lifecycle import (
    add_agent,
    chunk,
    events,
    fork,
    go_online,
    messages,
    post,
    text,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def busy_session(client, sid: str, owner) -> None:
    """User messages, finished generations of every kind, one still streaming, tools,
    agents and presence."""
    add_agent(sid, owner)
    go_online(sid, owner, "laptop")
    post(client, sid, "first")
    steps = [("Hel", "Hel"), ("lo ", "Hello "), ("you", "Hello you")]
    for seq, (delta, so_far) in enumerate(steps):
        text(sid, "plain", seq, delta, so_far)
    chunk(sid, "plain", 3, {"type": "done"})
    post(client, sid, "second")
    text(sid, "usage", 0, "a", "a")
    text(sid, "usage", 1, "b", "ab")
    chunk(sid, "usage", 2, {"type": "done", "finishReason": "stop", "usage": {"total": 3}})
    text(sid, "tools", 0, "Let me", "Let me")
    text(sid, "tools", 1, " look", "Let me look")
    call = {"id": "c1", "type": "function", "function": {"name": "find", "arguments": "{}"}}
    chunk(sid, "tools", 2, {"type": "tool_call", "toolCall": call, "index": 0})
    text(sid, "tools", 3, "Found", "Found")
    text(sid, "tools", 4, " it", "Found it")
    chunk(sid, "tools", 5, {"type": "done", "finishReason": "stop"})
    text(sid, "stopped", 0, "x", "x")
    text(sid, "stopped", 1, "y", "xy")
    chunk(sid, "stopped", 2, state.stop_chunk("user"))
    text(sid, "live", 0, "still ", "still ")
    text(sid, "live", 1, "going", "still going")


def fresh(sid: str) -> state.SessionState:
    session_state = state.SessionState()
    session_state.apply_all(events(sid))
    return session_state


def as_dicts(session_state: state.SessionState) -> list[dict]:
    return [m.as_dict() for m in session_state.messages()]


def test_compaction_keeps_every_message_in_fewer_events(as_alice, alice, session_id):
    busy_session(as_alice, session_id, alice)
    before = fresh(session_id)
    count = len(events(session_id))
    report = service.session_compact(session_id=session_id)
    assert report["compacted"] and report["events"] == count
    assert report["bytes_after"] < report["bytes"]
    log = events(session_id)
    reset_at = log.index({"headers": {"control": "reset"}})
    assert {e["key"] for e in log[:reset_at]} == {state.PRIMER_KEY}  # for StreamDB
    dropped = [e for e in log[reset_at + 1 :] if e["headers"]["operation"] == "delete"]
    log = [e for e in log[reset_at + 1 :] if e["headers"]["operation"] != "delete"]
    assert reset_at + 1 + len(dropped) + len(log) == report["after"]
    # the folded chunks are deleted (for StreamDB, which keeps rows across a reset)
    kept = {e["key"] for e in log if e["type"] == "chunk"}
    assert {e["key"] for e in dropped} == set(before.rows("chunk")) - kept
    after = fresh(session_id)
    assert as_dicts(after) == as_dicts(before)
    assert after.agents() == before.agents() and after.presence() == before.presence()
    assert messages(as_alice, session_id) == [m.as_dict() for m in before.messages()]
    by_key = {e["key"]: json.loads(e["value"]["chunk"]) for e in log if e.get("type") == "chunk"}
    assert by_key["plain:3"]["type"] == "whole-message" and "plain:0" not in by_key
    assert by_key["usage:0"]["delta"] == "ab" and by_key["usage:2"]["type"] == "done"
    assert [k for k in by_key if k.startswith("live:")] == ["live:0", "live:1"]
    created = [e["value"]["createdAt"] for e in log if e.get("type") == "chunk"]
    assert created == sorted(created)
    # the generation in flight continues at its next seq; no seq is taken twice
    text(session_id, "live", 2, "!", "still going!")
    with pytest.raises(errors.Conflict):
        text(session_id, "live", 1, "again", "again")
    with pytest.raises(errors.Conflict):
        chunk(session_id, "plain", 3, {"type": "done"})
    chunk(session_id, "plain", 4, state.approval_response("ap1", True))  # the next seq is free
    assert fresh(session_id).message("live").parts == [{"type": "text", "content": "still going!"}]
    # again (the approval folds into the whole message), then nothing is left to fold
    expected = as_dicts(fresh(session_id))
    assert service.session_compact(session_id=session_id)["compacted"]
    assert as_dicts(fresh(session_id)) == expected
    # the next one drops only the deletes written for StreamDB; then nothing is left
    assert service.session_compact(session_id=session_id)["compacted"]
    assert all(e["key"] == state.PRIMER_KEY for e in events(session_id) if is_delete(e))
    assert as_dicts(fresh(session_id)) == expected
    assert service.session_compact(session_id=session_id)["reason"] == "nothing to compact"


def long_generation(sid: str, message_id: str, chunks: int = 30) -> None:
    """A finished generation of ``chunks`` text chunks: compacting it saves bytes."""
    so_far = ""
    for seq in range(chunks):
        so_far += f"word{seq} "
        text(sid, message_id, seq, f"word{seq} ", so_far)
    chunk(sid, message_id, chunks, {"type": "done"})


def without_primers(log: list[dict]) -> list[dict]:
    """The log without the deletes that open StreamDB's collections before a reset."""
    return [e for e in log if e.get("key") != state.PRIMER_KEY]


def is_delete(event: dict) -> bool:
    return event["headers"].get("operation") == "delete"


def test_a_read_from_before_the_compaction_is_gone(as_alice, session_id):
    post(as_alice, session_id, "one")
    old = streams.read(f"sessions/{session_id}", "-1").next
    long_generation(session_id, "g")
    service.session_compact(session_id=session_id)
    with pytest.raises(streams.StreamGone):
        streams.read(f"sessions/{session_id}", old)
    response = as_alice.get(f"/v1/sessions/{session_id}/events", {"offset": str(old)})
    assert response.status_code == 409
    assert len(messages(as_alice, session_id)) == 2


def test_a_cached_state_behind_the_compaction_folds_again(as_alice, session_id):
    post(as_alice, session_id, "one")
    text(session_id, "g", 0, "a", "a")
    chunk(session_id, "g", 1, {"type": "done"})
    assert len(messages(as_alice, session_id)) == 2  # cached here, at this tail
    post(as_alice, session_id, "two")
    before = fresh(session_id)
    # another process compacts (this process's cache is not told): the cache stands before it
    session = Session.objects.get(pk=session_id)
    path = session.stream_path
    tail = streams.info(path).tail
    writes.append_events(session, service.compacted_events(before), expect_tail=str(tail))
    streams.truncate(path, before=tail)
    assert messages(as_alice, session_id) == [m.as_dict() for m in before.messages()]


def test_the_command(as_alice, alice, session_id):
    busy_session(as_alice, session_id, alice)
    count = len(events(session_id))
    size = streams.retention(f"sessions/{session_id}").tail.bytes
    out = io.StringIO()
    call_command("compact_sessions", "--dry-run", stdout=out)
    assert "dry run" in out.getvalue() and len(events(session_id)) == count
    call_command("compact_sessions", "--older-than", "3600", stdout=out)
    assert len(events(session_id)) == count  # active a moment ago
    out = io.StringIO()
    call_command("compact_sessions", "--session", session_id, stdout=out)
    assert "1 session(s) compacted" in out.getvalue()
    retained = streams.retention(f"sessions/{session_id}")
    assert retained.tail.bytes - retained.first.bytes < size
    with pytest.raises(CommandError):
        call_command("compact_sessions", "--session", "nope")
    with pytest.raises(CommandError):
        call_command("compact_sessions", "--session", "1e0b3a3c-0000-4000-8000-000000000000")
    with pytest.raises(CommandError):
        call_command("compact_sessions", "--older-than", "-1")


def test_a_fork_is_compacted_before_its_source(as_alice, session_id):
    post(as_alice, session_id, "one")
    long_generation(session_id, "g")
    forked = fork(as_alice, session_id)["sessionId"]
    post(as_alice, forked, "in the fork")
    source_before, fork_before = fresh(session_id), fresh(forked)
    report = service.session_compact(session_id=session_id)
    assert not report["compacted"] and "fork" in report["reason"]
    out = io.StringIO()
    call_command("compact_sessions", stdout=out)
    assert "2 session(s) compacted" in out.getvalue(), out.getvalue()
    assert as_dicts(fresh(session_id)) == as_dicts(source_before)
    assert as_dicts(fresh(forked)) == as_dicts(fork_before)
    for sid in (session_id, forked):
        assert without_primers(events(sid))[0] == {"headers": {"control": "reset"}}


# -- a live subscriber on a real server ----------------------------------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        process = ServerProcess(public=False, env={"DS_LIVE_RECHECK_INTERVAL": "0.2"}).start()
    yield process
    process.stop()


class SSEReader(threading.Thread):
    """Follows a stream over SSE and keeps every event and control it receives."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.events: list[dict] = []
        self.controls: list[dict] = []
        self.stop = False
        self.error: BaseException | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Token {self.token}"}
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=30) as response:
                response.raise_for_status()
                kind = None
                for line in response.iter_lines():
                    if self.stop:
                        return
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and kind is not None:
                        data = json.loads(line.split(":", 1)[1])
                        if kind == "data":
                            self.events.extend(data)
                        else:
                            self.controls.append(data)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def up_to_date_after(self, count: int) -> bool:
        return len(self.events) >= count and bool(self.controls) and self.controls[-1]["upToDate"]


def test_a_live_subscriber_sees_the_reset_and_the_same_messages(
    server, as_alice, alice, session_id
):
    busy_session(as_alice, session_id, alice)
    before = as_dicts(fresh(session_id))
    count = len(events(session_id))
    token = Token.objects.get(user=alice).key
    url = f"{server.url}/v1/stream/sessions/{session_id}?offset=-1&live=sse"
    reader = SSEReader(url, token)
    reader.start()
    wait_until(lambda: reader.up_to_date_after(count) or reader.error, what="the catch-up")
    assert reader.error is None and len(reader.events) == count
    report = service.session_compact(session_id=session_id)
    assert report["compacted"]
    wait_until(
        lambda: reader.up_to_date_after(count + report["after"]) or reader.error,
        timeout=20,
        what="the subscriber to see the compacted state",
    )
    text(session_id, "live", 2, " on", "still going on")  # the generation goes on
    wait_until(lambda: len(reader.events) > count + report["after"], what="the next chunk")
    reader.stop = True
    assert reader.error is None
    seen = reader.events
    assert without_primers(seen[count:])[0] == {"headers": {"control": "reset"}}
    assert len(seen) == count + report["after"] + 1  # nothing doubled, nothing lost
    live = state.SessionState()
    live.apply_all(seen[: count + report["after"]])
    assert as_dicts(live) == before
    live.apply_all(seen[count + report["after"] :])
    assert live.message("live").parts == [{"type": "text", "content": "still going on"}]
    # a fresh reader, from the start, over HTTP: begins at the reset, the same messages
    response = httpx.get(
        f"{server.url}/v1/stream/sessions/{session_id}",
        params={"offset": "-1"},
        headers={"Authorization": f"Token {token}"},
    )
    assert response.status_code == 200
    again = state.SessionState()
    again.apply_all(response.json())
    assert without_primers(response.json())[0] == {"headers": {"control": "reset"}}
    assert as_dicts(again) == as_dicts(live)
    assert Session.objects.get(pk=session_id).stream_path == f"sessions/{session_id}"
