"""Presence through the API and the service: login, logout (also by sendBeacon), heartbeat,
deviceId bound to its user, strict bodies, the presence rows on the stream, and expiry by the
sweep (``presence_expire``), with websockets in process for the grace period."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from durable_sessions import streams
from durable_sessions.sessions import presence, service
from durable_sessions.sessions.models import Device
from tests.streams.apps import APP
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def presence_rows(session_id: str) -> dict[str, dict]:
    """The presence rows of the session stream as a client materializes them."""
    rows: dict[str, dict] = {}
    for event in json.loads(streams.read(f"sessions/{session_id}").body):
        if event.get("type") == "presence":
            rows[event["key"]] = event["value"]
    return rows


def login(client: APIClient, session_id: str, **body):
    return client.post(f"/v1/sessions/{session_id}/login", body, format="json")


def test_login_announces_the_device_online(as_alice, alice, session_id):
    alice.first_name, alice.last_name = "Alice", "Liddell"
    alice.save()
    answer = login(as_alice, session_id, actorId="alice", deviceId="laptop", name="My laptop")
    assert answer.status_code == 200, answer.content
    assert answer.json() == {
        "success": True,
        "actorId": "alice",
        "deviceId": "laptop",
        "status": "online",
    }
    row = presence_rows(session_id)["alice:laptop"]
    assert {k: row[k] for k in ("actorId", "deviceId", "actorType", "name", "status")} == {
        "actorId": "alice",
        "deviceId": "laptop",
        "actorType": "user",
        "name": "Alice Liddell",  # the user's name on every device, not the device's label
        "status": "online",
    }
    assert len(row["lastSeenAt"]) == 24 and row["lastSeenAt"].endswith("Z")
    device = Device.objects.get(device_id="laptop")
    assert device.name == "My laptop" and device.expires_at is not None


def test_a_forged_actor_id_acts_as_the_caller(as_bob, bob, as_alice, session_id):
    as_alice.post(f"/v1/sessions/{session_id}/members", {"username": "bob", "role": "member"})
    answer = login(as_bob, session_id, actorId="alice", deviceId="phone")
    assert answer.status_code == 200 and answer.json()["actorId"] == "bob"
    assert set(presence_rows(session_id)) == {"bob:phone"}


def test_a_device_id_is_bound_to_its_user(as_alice, as_bob, session_id):
    as_alice.post(f"/v1/sessions/{session_id}/members", {"username": "bob", "role": "member"})
    assert login(as_alice, session_id, deviceId="shared").status_code == 200
    for path in ("login", "heartbeat", "logout"):
        answer = as_bob.post(
            f"/v1/sessions/{session_id}/{path}", {"deviceId": "shared"}, format="json"
        )
        assert answer.status_code == 403, (path, answer.content)
        assert answer.json()["detail"].startswith("that deviceId belongs to another user")
    assert presence_rows(session_id)["alice:shared"]["status"] == "online"


def test_viewers_are_present_outsiders_and_anonymous_are_not(as_alice, as_bob, carol, session_id):
    as_alice.post(f"/v1/sessions/{session_id}/members", {"username": "bob", "role": "viewer"})
    assert login(as_bob, session_id, deviceId="tablet").status_code == 200
    outsider = APIClient()
    outsider.force_authenticate(carol)
    assert login(outsider, session_id, deviceId="x").status_code == 403
    assert login(APIClient(), session_id, deviceId="x").status_code == 401
    assert login(as_alice, "00000000-0000-0000-0000-000000000000", deviceId="x").status_code == 404


@pytest.mark.parametrize(
    "path, body",
    [
        ("login", {}),
        ("login", {"deviceId": 7}),
        ("login", {"deviceId": ""}),
        ("login", {"deviceId": "d" * 201}),
        ("login", {"deviceId": "a\nb"}),
        ("login", {"deviceId": "d", "name": 1}),
        ("login", {"deviceId": "d", "actorId": ["alice"]}),
        ("login", {"deviceId": "d", "defaultAgents": "agent"}),
        ("login", {"deviceId": "d", "defaultAgents": [1]}),
        ("login", {"deviceId": "d", "defaultAgents": {"id": "a"}}),
        ("logout", {}),
        ("logout", {"allDevices": False}),
        ("logout", {"allDevices": "true"}),
        ("logout", {"deviceId": None}),
        ("heartbeat", {"deviceId": "d", "status": "offline"}),
        ("heartbeat", {"deviceId": "d", "status": 1}),
        ("heartbeat", {"status": "away"}),
    ],
)
def test_bad_bodies_are_400(as_alice, session_id, path, body):
    answer = as_alice.post(f"/v1/sessions/{session_id}/{path}", body, format="json")
    assert answer.status_code == 400, answer.content
    assert presence_rows(session_id) == {}


def test_non_object_bodies_are_400(as_alice, session_id):
    for path in ("login", "logout", "heartbeat"):
        for body in ("[]", '"x"', "3", "{"):
            answer = as_alice.post(
                f"/v1/sessions/{session_id}/{path}", body, content_type="application/json"
            )
            assert answer.status_code == 400, (path, body, answer.content)


def test_heartbeat_renews_and_announces_only_changes(as_alice, session_id):
    url = f"/v1/sessions/{session_id}/heartbeat"
    assert as_alice.post(url, {"deviceId": "d"}, format="json").json()["status"] == "online"
    before = Device.objects.get(device_id="d").expires_at
    assert as_alice.post(url, {"deviceId": "d"}, format="json").status_code == 200
    assert Device.objects.get(device_id="d").expires_at > before
    answer = as_alice.post(url, {"deviceId": "d", "status": "away"}, format="json")
    assert answer.json()["status"] == "away"
    statuses = [
        e["value"]["status"]
        for e in json.loads(streams.read(f"sessions/{session_id}").body)
        if e.get("type") == "presence"
    ]
    assert statuses == ["online", "away"]


def test_logout_one_device_or_all(as_alice, session_id):
    for device in ("a", "b", "c"):
        login(as_alice, session_id, deviceId=device)
    answer = as_alice.post(f"/v1/sessions/{session_id}/logout", {"deviceId": "a"}, format="json")
    assert answer.json() == {
        "success": True,
        "actorId": "alice",
        "deviceId": "a",
        "status": "offline",
    }
    assert {k: v["status"] for k, v in presence_rows(session_id).items()} == {
        "alice:a": "offline",
        "alice:b": "online",
        "alice:c": "online",
    }
    answer = as_alice.post(
        f"/v1/sessions/{session_id}/logout", {"actorId": "alice", "allDevices": True}, format="json"
    )
    assert answer.status_code == 200 and answer.json()["status"] == "offline"
    assert {v["status"] for v in presence_rows(session_id).values()} == {"offline"}
    # A device that never logged in: nothing to do, nothing written.
    before = len(json.loads(streams.read(f"sessions/{session_id}").body))
    answer = as_alice.post(f"/v1/sessions/{session_id}/logout", {"deviceId": "z"}, format="json")
    assert answer.status_code == 200
    assert len(json.loads(streams.read(f"sessions/{session_id}").body)) == before


@pytest.fixture
def cookie_client(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


@pytest.mark.parametrize(
    "headers, status",
    [({"Sec-Fetch-Site": "same-origin"}, 200), ({"Sec-Fetch-Site": "cross-site"}, 403), ({}, 403)],
)
def test_send_beacon_logout_as_text_plain(cookie_client, as_alice, session_id, headers, status):
    login(as_alice, session_id, deviceId="tab")
    answer = cookie_client.post(
        f"/v1/sessions/{session_id}/logout",
        json.dumps({"actorId": "alice", "deviceId": "tab"}),
        content_type="text/plain;charset=UTF-8",
        headers=headers,
    )
    assert answer.status_code == status, answer.content
    expected = "offline" if status == 200 else "online"
    assert presence_rows(session_id)["alice:tab"]["status"] == expected


def test_text_plain_that_is_not_json_is_400(cookie_client, session_id):
    for body in ("deviceId=tab", "\xff", "[1]"):
        answer = cookie_client.post(
            f"/v1/sessions/{session_id}/logout",
            body,
            content_type="text/plain",
            headers={"Sec-Fetch-Site": "same-origin"},
        )
        assert answer.status_code == 400, answer.content
    answer = cookie_client.post(
        f"/v1/sessions/{session_id}/login",
        json.dumps({"deviceId": "tab"}),
        content_type="text/plain",
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 415  # only logout takes text/plain


def test_archived_sessions_take_no_login_but_a_logout(as_alice, session_id):
    login(as_alice, session_id, deviceId="d")
    as_alice.patch(f"/v1/sessions/{session_id}", {"archived": True}, format="json")
    assert login(as_alice, session_id, deviceId="d").status_code == 409
    answer = as_alice.post(f"/v1/sessions/{session_id}/logout", {"deviceId": "d"}, format="json")
    assert answer.status_code == 200


def test_a_silent_device_expires(settings, as_alice, session_id):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "PRESENCE_TTL": 0.2}
    login(as_alice, session_id, deviceId="d")
    assert presence.presence_expire() == 0  # not yet
    wait_until(lambda: presence.presence_expire() or Device.objects.get().status == "offline")
    assert presence_rows(session_id)["alice:d"]["status"] == "offline"
    assert service.presence_expire() == 0  # once


def test_a_removed_member_goes_offline_and_their_devices_are_forgotten(
    as_alice, as_bob, session_id
):
    as_alice.post(f"/v1/sessions/{session_id}/members", {"username": "bob", "role": "member"})
    login(as_bob, session_id, deviceId="bob-phone")
    assert as_alice.delete(f"/v1/sessions/{session_id}/members/bob").status_code == 204
    assert presence_rows(session_id)["bob:bob-phone"]["status"] == "offline"
    assert not Device.objects.filter(device_id="bob-phone").exists()


# -- websockets in process ---------------------------------------------------------------------


async def _socket(user, session_id: str, device_id: str | None) -> WebsocketCommunicator:
    token, _ = await sync_to_async(Token.objects.get_or_create)(user=user)
    query = "offset=-1" + ("" if device_id is None else f"&deviceId={device_id}")
    ws = WebsocketCommunicator(
        APP,
        f"/ws/v1/stream/sessions/{session_id}?{query}",
        headers=[(b"host", b"localhost"), (b"authorization", f"Token {token.key}".encode())],
    )
    connected, _ = await ws.connect()
    assert connected
    return ws


async def eventually(check, timeout: float = 10.0, what: str = "") -> None:
    """Poll the async ``check()`` until it is true (``tests.waiting.until`` for conditions that
    need the database)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def _device(device_id: str) -> Device | None:
    return Device.objects.filter(device_id=device_id).first()


async def test_a_socket_keeps_its_device_online_until_the_grace_ends(settings, alice, session_id):
    settings.DURABLE_SESSIONS = {**settings.DURABLE_SESSIONS, "PRESENCE_GRACE": 0.3}
    device = sync_to_async(_device)

    async def connections(n: int) -> bool:
        found = await device("desk")
        return found is not None and found.connections == n

    first = await _socket(alice, session_id, "desk")
    second = await _socket(alice, session_id, "desk")
    await eventually(lambda: connections(2), what="two sockets counted")
    assert (await device("desk")).status == "online"
    await first.disconnect()
    await eventually(lambda: connections(1), what="one socket left")
    assert await sync_to_async(presence.presence_expire)() == 0
    await second.disconnect()
    await eventually(lambda: connections(0), what="no socket left")
    left = await device("desk")
    assert left.status == "online" and left.expires_at is not None  # the grace period

    async def offline() -> bool:
        await sync_to_async(presence.presence_expire)()
        return (await device("desk")).status == "offline"

    await eventually(offline, what="offline after the grace period")
    rows = await sync_to_async(presence_rows)(session_id)
    assert rows["alice:desk"]["status"] == "offline"
    statuses = [
        e["value"]["status"]
        for e in json.loads((await streams.aread(f"sessions/{session_id}")).body)
        if e.get("type") == "presence"
    ]
    assert statuses == ["online", "offline"]  # the second socket announced nothing


async def test_a_socket_without_device_id_is_only_a_reader(alice, session_id):
    ws = await _socket(alice, session_id, None)
    assert json.loads(await ws.receive_from(5))["event"] in ("data", "control")
    await ws.disconnect()
    assert await Device.objects.acount() == 0


async def test_a_socket_cannot_take_another_users_device(alice, bob, session_id):
    await sync_to_async(service.member_add)(
        user=alice, session_id=session_id, username="bob", role="member"
    )
    mine = await _socket(alice, session_id, "mine")

    async def registered() -> bool:  # the socket's device is recorded after its handshake
        device = await sync_to_async(_device)("mine")
        return device is not None and device.connections == 1

    await eventually(registered, what="alice's socket to hold the device")
    theirs = await _socket(bob, session_id, "mine")
    frames = []
    while True:
        message = await theirs.receive_output(10)
        if message["type"] == "websocket.close":
            break
        frames.append(json.loads(message["text"]))
    assert message["code"] == 4403
    assert [f["code"] for f in frames if f["event"] == "error"] == ["device_taken"]
    await mine.disconnect()


def test_default_agents_on_login_are_registered_under_the_registry_rules(
    as_alice, as_bob, session_id
):
    base = f"/v1/sessions/{session_id}"
    spec = {"id": "helper", "endpoint": "https://8.8.8.8/chat", "headers": {"k": "v"}}
    as_alice.post(f"{base}/members", {"username": "bob", "role": "viewer"}, format="json")
    refused = as_bob.post(
        f"{base}/login", {"deviceId": "b1", "defaultAgents": [spec]}, format="json"
    )
    assert refused.status_code == 200, refused.content
    assert refused.json()["status"] == "online" and "defaultAgentsRefused" in refused.json()
    assert as_alice.get(f"{base}/agents").json()["agents"] == []
    bad = as_alice.post(
        f"{base}/login", {"deviceId": "a1", "defaultAgents": [{"id": 5}]}, format="json"
    )
    assert bad.status_code == 400
    assert Device.objects.filter(device_id="a1").count() == 0
    ok = as_alice.post(f"{base}/login", {"deviceId": "a1", "defaultAgents": [spec]}, format="json")
    assert ok.status_code == 200 and "defaultAgentsRefused" not in ok.json()
    assert [a["id"] for a in as_alice.get(f"{base}/agents").json()["agents"]] == ["helper"]
