"""The agents registry: routes, strict AgentSpecs, secrets, URL rules, roles, defaults, inline."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import override_settings

from durable_sessions import streams
from durable_sessions.sessions import errors, service
from durable_sessions.sessions.agent_specs import AgentUrlRefused, resolve_agent_url
from durable_sessions.sessions.models import Agent, Session
from tests.sessions.conftest import make_user, token_client

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-very-secret-value"
PUBLIC = "https://8.8.8.8/v1/chat?key=query-secret"


def spec(**extra):
    base = {"id": "helper", "name": "Helper", "endpoint": PUBLIC}
    base.update(extra)
    return base


def agents_url(sid):
    return f"/v1/sessions/{sid}/agents"


def post(client, url, body):
    return client.post(url, body, format="json")


def raw(sid) -> str:
    """The session stream's bytes, as any reader gets them."""
    return streams.read(f"sessions/{sid}", "-1").body.decode()


def agent_events(sid):
    return [e for e in json.loads(raw(sid)) if e.get("type") == "agent"]


@pytest.fixture
def members(session_id, as_alice, bob, carol):
    assert (
        post(
            as_alice, f"/v1/sessions/{session_id}/members", {"username": "bob", "role": "member"}
        ).status_code
        == 201
    )
    assert (
        post(
            as_alice, f"/v1/sessions/{session_id}/members", {"username": "carol", "role": "viewer"}
        ).status_code
        == 201
    )
    return session_id


@pytest.fixture
def as_staff(transactional_db):
    return token_client(make_user("root", is_staff=True))


def test_register_list_and_mirror_without_secrets(as_alice, session_id):
    body = {
        "agents": [
            spec(
                headers={"Authorization": f"Bearer {SECRET}"},
                triggers="all",
                bodyTemplate={"model": "m1"},
            )
        ]
    }
    answer = post(as_alice, agents_url(session_id), body)
    assert answer.status_code == 200, answer.content
    assert answer.json() == {"success": True}
    listed = as_alice.get(agents_url(session_id))
    assert listed.status_code == 200
    assert listed.json() == {
        "agents": [
            {
                "id": "helper",
                "name": "Helper",
                "endpoint": "https://8.8.8.8/v1/chat",
                "triggers": "all",
                "method": "POST",
                "bodyTemplate": {"model": "m1"},
                "headerNames": ["Authorization"],
            }
        ]
    }
    assert SECRET not in listed.content.decode() and "query-secret" not in listed.content.decode()
    stream = raw(session_id)
    assert SECRET not in stream and "query-secret" not in stream
    [event] = agent_events(session_id)
    assert event["key"] == "helper" and event["headers"]["operation"] == "upsert"
    assert event["value"] == {
        "agentId": "helper",
        "name": "Helper",
        "endpoint": "https://8.8.8.8/v1/chat",
        "triggers": "all",
    }
    row = Agent.objects.get(session_id=session_id, agent_id="helper")
    assert row.headers == {"Authorization": f"Bearer {SECRET}"} and row.endpoint == PUBLIC


def test_defaults_of_a_spec(as_alice, session_id):
    assert (
        post(
            as_alice,
            agents_url(session_id),
            {"agents": [{"id": "a1", "endpoint": "https://8.8.4.4/"}]},
        ).status_code
        == 200
    )
    [event] = agent_events(session_id)
    assert event["value"] == {
        "agentId": "a1",
        "name": "a1",
        "endpoint": "https://8.8.4.4/",
        "triggers": "user-messages",
    }


BAD_SPECS = [
    "not an object",
    ["a list"],
    {"endpoint": PUBLIC},  # no id
    spec(id=7),
    spec(id=""),
    spec(id="a:b"),
    spec(id="a/b"),
    spec(id=" lead"),
    spec(id="x" * 201),
    spec(name=3),
    spec(name="bad\nname"),
    spec(endpoint=5),
    spec(endpoint=None),
    spec(endpoint="/relative/path"),
    spec(endpoint="ftp://8.8.8.8/"),
    spec(endpoint="https://user:pw@8.8.8.8/"),
    spec(endpoint="https://8.8.8.8/#frag"),
    spec(endpoint="https://8.8.8.8/ space"),
    spec(endpoint="https://2130706433/"),
    spec(endpoint="python:"),
    spec(endpoint="python:nodots"),
    spec(endpoint="python:os.system; rm"),
    spec(method="GET"),
    spec(method=1),
    spec(headers=["Authorization"]),
    spec(headers="Authorization: x"),
    spec(headers={"Authorization": 5}),
    spec(headers={"Bad Name": "x"}),
    spec(headers={"X-Ok": "line\r\nInjected: 1"}),
    spec(headers={"Host": "evil"}),
    spec(headers={"Content-Length": "1"}),
    spec(headers={"X-A": "1", "x-a": "2"}),
    spec(triggers="sometimes"),
    spec(triggers=True),
    spec(bodyTemplate=["x"]),
    spec(bodyTemplate="x"),
    spec(bodyTemplate={"big": "x" * 70_000}),
]


@pytest.mark.parametrize("bad", BAD_SPECS, ids=repr)
def test_bad_specs_are_400(as_alice, session_id, bad):
    answer = post(as_alice, agents_url(session_id), {"agents": [bad]})
    assert answer.status_code == 400, answer.content
    assert Agent.objects.count() == 0 and agent_events(session_id) == []


@pytest.mark.parametrize(
    "body",
    [{}, {"agents": "x"}, {"agents": {"id": "a"}}, {"agents": [spec(), spec()]}, ["x"]],
    ids=repr,
)
def test_bad_bodies_are_400(as_alice, session_id, body):
    assert post(as_alice, agents_url(session_id), body).status_code == 400
    assert agent_events(session_id) == []


def test_not_json_is_400(as_alice, session_id):
    answer = as_alice.post(agents_url(session_id), "{nope", content_type="application/json")
    assert answer.status_code == 400


REFUSED = [
    "https://127.0.0.1/agent",
    "https://localhost/agent",
    "https://[::1]/agent",
    "https://10.0.0.1/agent",
    "https://192.168.1.20/agent",
    "https://172.16.0.3/agent",
    "https://100.64.0.1/agent",
    "https://[fd00::1]/agent",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::ffff:169.254.169.254]/",
    "https://224.0.0.1/",
    "https://0.0.0.0/",
    "http://8.8.8.8/agent",  # plain http to a public address: the headers would travel in clear
]
STILL_REFUSED = [
    "https://169.254.169.254/latest/meta-data/",
    "https://[fe80::1]/",
    "https://224.0.0.1/",
    "https://0.0.0.0/",
    "http://8.8.8.8/agent",
]
ALLOWED_PRIVATE = [
    "http://127.0.0.1:9/agent",
    "http://localhost:9/agent",
    "https://[::1]/agent",
    "http://10.0.0.1/agent",
    "http://192.168.1.20:8000/agent",
    "https://[fd00::1]/agent",
]


@pytest.mark.parametrize("url", REFUSED)
def test_private_urls_are_refused(as_alice, session_id, url):
    answer = post(as_alice, agents_url(session_id), {"agents": [spec(endpoint=url)]})
    assert answer.status_code == 400, answer.content
    assert answer.json()["detail"].startswith("agent endpoint refused")
    assert Agent.objects.count() == 0 and agent_events(session_id) == []


@pytest.mark.parametrize("url", ALLOWED_PRIVATE)
def test_the_setting_allows_private_urls(as_alice, session_id, url):
    with override_settings(DURABLE_SESSIONS={"AGENT_ALLOW_PRIVATE": True}):
        answer = post(as_alice, agents_url(session_id), {"agents": [spec(endpoint=url)]})
    assert answer.status_code == 200, answer.content


@pytest.mark.parametrize("url", STILL_REFUSED)
def test_the_setting_still_refuses_metadata_multicast_and_clear_public(as_alice, session_id, url):
    with override_settings(DURABLE_SESSIONS={"AGENT_ALLOW_PRIVATE": True}):
        answer = post(as_alice, agents_url(session_id), {"agents": [spec(endpoint=url)]})
    assert answer.status_code == 400, answer.content


def test_resolve_agent_url_checks_again_and_pins(settings):
    assert resolve_agent_url("https://8.8.8.8:8443/x?k=1") == ("8.8.8.8", 8443, "8.8.8.8")
    with pytest.raises(AgentUrlRefused, match="loopback"):
        resolve_agent_url("http://localhost:9/agent")
    with override_settings(DURABLE_SESSIONS={"AGENT_ALLOW_PRIVATE": True}):
        host, port, pinned = resolve_agent_url("http://localhost:9/agent")  # the system resolver
    assert (host, port) == ("localhost", 9) and pinned in {"127.0.0.1", "::1"}

    def rebound(host: str, port: int) -> list[str]:  # the name points elsewhere by now
        return ["8.8.8.8", "10.1.2.3"]

    with pytest.raises(AgentUrlRefused, match=r"resolves to 10\.1\.2\.3"):
        resolve_agent_url("https://agents.example.com/", resolver=rebound)
    assert resolve_agent_url("https://agents.example.com/", resolver=lambda h, p: ["8.8.8.8"]) == (
        "agents.example.com",
        443,
        "8.8.8.8",
    )


def test_role_matrix(members, as_alice, as_bob, as_carol, as_staff, client):
    sid = members
    url = agents_url(sid)
    body = {"agents": [spec(headers={"X-Key": SECRET})]}
    assert post(as_bob, url, body).status_code == 403  # members may not register a URL agent
    assert post(as_carol, url, body).status_code == 403  # viewers write nothing
    outsider = token_client(make_user("dave"))
    assert post(outsider, url, body).status_code == 403
    assert outsider.get(url).status_code == 403
    assert client.get(url).status_code == 401
    assert client.post(url, body, content_type="application/json").status_code == 401
    assert post(as_alice, url, body).status_code == 200
    assert as_carol.get(url).status_code == 200 and as_bob.get(url).status_code == 200
    # a member's client may restate the agent exactly as registered: nothing is written
    before = len(agent_events(sid))
    assert post(as_bob, url, body).status_code == 200
    assert len(agent_events(sid)) == before
    assert post(as_bob, url, {"agents": [spec(headers={"X-Key": "other"})]}).status_code == 403
    for client_ in (as_bob, as_carol, outsider):
        assert client_.patch(f"{url}/helper", {"name": "x"}, format="json").status_code == 403
        assert client_.delete(f"{url}/helper").status_code == 403
    assert client.delete(f"{url}/helper").status_code == 401
    assert as_staff.patch(f"{url}/helper", {"name": "By staff"}, format="json").status_code == 200
    assert as_staff.delete(f"{url}/helper").status_code == 204
    assert post(as_staff, url, body).status_code == 200


def test_archived_sessions_refuse_registrations(as_alice, session_id):
    assert (
        as_alice.patch(f"/v1/sessions/{session_id}", {"archived": True}, format="json").status_code
        == 200
    )
    assert post(as_alice, agents_url(session_id), {"agents": [spec()]}).status_code == 409
    assert as_alice.get(agents_url(session_id)).status_code == 200


def test_unknown_session_is_404(as_alice):
    assert as_alice.get(agents_url(uuid.uuid4())).status_code == 404
    assert post(as_alice, agents_url(uuid.uuid4()), {"agents": [spec()]}).status_code == 404


def test_python_agents_take_staff(as_alice, as_staff, session_id):
    url = agents_url(session_id)
    python = spec(id="local", endpoint="python:myproject.agents.echo")
    assert post(as_alice, url, {"agents": [python]}).status_code == 403
    assert post(as_staff, url, {"agents": [python]}).status_code == 200
    assert agent_events(session_id)[-1]["value"]["endpoint"] == "python:myproject.agents.echo"
    # the owner manages it, but may not point it at other code
    assert as_alice.patch(f"{url}/local", {"name": "Echo"}, format="json").status_code == 200
    other = {"endpoint": "python:myproject.agents.other"}
    assert as_alice.patch(f"{url}/local", other, format="json").status_code == 403
    assert as_staff.patch(f"{url}/local", other, format="json").status_code == 200


def test_patch_replaces_fields_and_keeps_secrets_hidden(as_alice, session_id):
    url = agents_url(session_id)
    assert post(as_alice, url, {"agents": [spec(headers={"X-Key": SECRET})]}).status_code == 200
    answer = as_alice.patch(
        f"{url}/helper", {"triggers": "all", "headers": {"X-Other": "two"}}, format="json"
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["triggers"] == "all" and answer.json()["headerNames"] == ["X-Other"]
    assert Agent.objects.get(agent_id="helper").headers == {"X-Other": "two"}
    events = agent_events(session_id)
    assert len(events) == 2 and events[-1]["value"]["triggers"] == "all"
    assert "two" not in raw(session_id) and SECRET not in raw(session_id)
    assert (
        as_alice.patch(f"{url}/helper", {"headers": None}, format="json").json()["headerNames"]
        == []
    )
    assert as_alice.patch(f"{url}/helper", {"triggers": "never"}, format="json").status_code == 400
    assert (
        as_alice.patch(
            f"{url}/helper", {"endpoint": "https://10.0.0.1/"}, format="json"
        ).status_code
        == 400
    )
    assert as_alice.patch(f"{url}/helper", {"id": "other"}, format="json").status_code == 400
    assert as_alice.patch(f"{url}/helper", ["x"], format="json").status_code == 400
    assert as_alice.patch(f"{url}/missing", {"name": "x"}, format="json").status_code == 404
    assert Agent.objects.get(agent_id="helper").triggers == "all"


def test_delete_removes_the_row_and_the_stream_row(as_alice, session_id):
    url = agents_url(session_id)
    assert post(as_alice, url, {"agents": [spec()]}).status_code == 200
    assert as_alice.delete(f"{url}/helper").status_code == 204
    assert as_alice.get(url).json() == {"agents": []}
    last = agent_events(session_id)[-1]
    assert last["key"] == "helper" and last["headers"]["operation"] == "delete"
    assert as_alice.delete(f"{url}/helper").status_code == 404


def test_a_lost_stream_row_is_written_again(as_alice, alice, session_id):
    session = Session.objects.get(pk=session_id)
    Agent.objects.create(session=session, agent_id="helper", name="Helper", endpoint=PUBLIC)
    assert agent_events(session_id) == []  # as if the append failed after the row was saved
    assert post(as_alice, agents_url(session_id), {"agents": [spec()]}).status_code == 200
    assert [e["key"] for e in agent_events(session_id)] == ["helper"]
    assert post(as_alice, agents_url(session_id), {"agents": [spec()]}).status_code == 200
    assert len(agent_events(session_id)) == 1  # unchanged now: nothing written


def test_default_agents_on_every_new_session(as_alice):
    defaults = [
        {"id": "house", "endpoint": "https://8.8.8.8/agent", "headers": {"X-Key": SECRET}},
        {"id": "local", "endpoint": "python:myproject.agents.echo", "triggers": "all"},
        {"id": "broken", "endpoint": "https://127.0.0.1/agent"},  # refused: logged, skipped
    ]
    with override_settings(DURABLE_SESSIONS={"DEFAULT_AGENTS": defaults}):
        created = post(as_alice, "/v1/sessions/", {"title": "With agents"})
        assert created.status_code == 201, created.content
        sid = created.json()["sessionId"]
        again = as_alice.put(f"/v1/sessions/{sid}")
        assert again.status_code == 200
    listed = as_alice.get(agents_url(sid)).json()["agents"]
    assert [a["id"] for a in listed] == ["house", "local"]
    assert [e["key"] for e in agent_events(sid)] == ["house", "local"]  # once, not per PUT
    assert SECRET not in raw(sid)
    assert Agent.objects.get(agent_id="house").created_by is None


def test_inline_agent_on_a_message(members, as_alice, as_bob):
    sid = members
    messages = f"/v1/sessions/{sid}/messages"
    inline = spec(headers={"X-Key": SECRET})
    answer = post(as_alice, messages, {"content": "hi", "agent": inline})
    assert answer.status_code == 200, answer.content
    assert [a["id"] for a in as_alice.get(agents_url(sid)).json()["agents"]] == ["helper"]
    assert SECRET not in raw(sid)
    assert post(as_bob, messages, {"content": "same agent", "agent": inline}).status_code == 200
    refused = post(as_bob, messages, {"content": "new agent", "agent": spec(id="mine")})
    assert refused.status_code == 403
    assert (
        post(as_alice, messages, {"content": "bad", "agent": spec(endpoint="ftp://x/")}).status_code
        == 400
    )
    assert post(as_alice, messages, {"content": "bad", "agent": "helper"}).status_code == 400
    texts = [m["parts"][0]["content"] for m in as_alice.get(messages).json()["messages"]]
    assert texts == ["hi", "same agent"]  # nothing written for the refused posts


def test_register_defaults_for_login(members, alice, bob):
    sid = members
    service.register_defaults(user=alice, session_id=sid, specs=[spec()])
    assert service.register_defaults(user=bob, session_id=sid, specs=[spec()]) == []
    with pytest.raises(errors.Forbidden):
        service.register_defaults(user=bob, session_id=sid, specs=[spec(id="other")])
    with pytest.raises(errors.Invalid):
        service.register_defaults(user=alice, session_id=sid, specs=[spec(triggers=1)])
