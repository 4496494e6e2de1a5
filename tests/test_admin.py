"""The admin pages for streams (durable_sessions/admin.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from durable_sessions import streams
from durable_sessions.streams.errors import StreamNotFound
from durable_sessions.streams.models import Stream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client(client):
    User.objects.create_superuser("root", "root@example.com", "pw")
    client.login(username="root", password="pw")
    return client


def test_list_search_and_detail_show_the_latest_data(admin_client):
    streams.create("admin/json", content_type="application/json", data='[{"hello": "world"}]')
    streams.create("admin/text", content_type="text/plain", data="<b>not html</b>")
    page = admin_client.get("/admin/durable_sessions/stream/?q=admin")
    assert page.status_code == 200
    assert b"admin/json" in page.content and b"admin/text" in page.content
    stream = Stream.objects.get(path="admin/json")
    detail = admin_client.get(f"/admin/durable_sessions/stream/{stream.pk}/change/")
    assert detail.status_code == 200
    assert b"{&quot;hello&quot;: &quot;world&quot;}" in detail.content
    text = Stream.objects.get(path="admin/text")
    detail = admin_client.get(f"/admin/durable_sessions/stream/{text.pk}/change/")
    assert b"&lt;b&gt;not html&lt;/b&gt;" in detail.content
    assert admin_client.get("/admin/durable_sessions/stream/add/").status_code == 403


def test_delete_action_goes_through_the_log(admin_client):
    streams.create("admin/src", content_type="text/plain", data="x")
    streams.fork("admin/fork", "admin/src")
    ids = list(Stream.objects.filter(path__startswith="admin/").values_list("pk", flat=True))
    response = admin_client.post(
        "/admin/durable_sessions/stream/", {"action": "delete_streams", "_selected_action": ids}
    )
    assert response.status_code == 302
    with pytest.raises(StreamNotFound):
        streams.info("admin/fork")
    assert not Stream.objects.filter(path__startswith="admin/").exists()
