"""The host project's pages."""

from __future__ import annotations

from django.test import override_settings


def test_index_page_renders(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b"/v1/stream/" in response.content


@override_settings(
    DURABLE_SESSIONS={"PERMISSION_POLICY": "durable_sessions.streams.permissions.AllowAny"}
)
def test_index_mentions_public_streams(client):
    assert b"open to anonymous clients" in client.get("/").content
