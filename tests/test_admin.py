"""The admin pages for streams (durable_sessions/admin.py), through the real admin views."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db.models import F

from durable_sessions import streams
from durable_sessions.admin import shown_time
from durable_sessions.streams.errors import StreamGone, StreamNotFound
from durable_sessions.streams.models import Entry, Stream

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/durable_sessions/stream/"


@pytest.fixture
def admin_client(client):
    User.objects.create_superuser("root", "root@example.com", "pw")
    client.login(username="root", password="pw")
    return client


def change_page(stream: Stream) -> str:
    return f"{CHANGELIST}{stream.pk}/change/"


def delete_page(stream: Stream) -> str:
    return f"{CHANGELIST}{stream.pk}/delete/"


def store_directly(path: str, data: bytes, count: int = 1) -> None:
    """An entry written with the ORM, as data stored before today's input checks would be."""
    stream = Stream.objects.get(path=path)
    Entry.objects.create(
        stream=stream,
        seq=stream.tail_seq,
        end_bytes=stream.tail_bytes + len(data),
        count=count,
        data=data,
    )
    Stream.objects.filter(pk=stream.pk).update(
        tail_seq=F("tail_seq") + 1, tail_bytes=F("tail_bytes") + len(data)
    )


def test_list_search_and_detail_show_the_latest_data(admin_client):
    streams.create("admin/json", content_type="application/json", data='[{"hello": "world"}]')
    streams.create("admin/text", content_type="text/plain", data="<b>not html</b>")
    page = admin_client.get(f"{CHANGELIST}?q=admin")
    assert page.status_code == 200
    assert b"admin/json" in page.content and b"admin/text" in page.content
    detail = admin_client.get(change_page(Stream.objects.get(path="admin/json")))
    assert detail.status_code == 200
    assert b"{&quot;hello&quot;: &quot;world&quot;}" in detail.content
    detail = admin_client.get(change_page(Stream.objects.get(path="admin/text")))
    assert b"&lt;b&gt;not html&lt;/b&gt;" in detail.content
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


# -- stored data never breaks a page -------------------------------------------------------


def test_json_too_deep_to_parse_again_is_shown_as_stored(admin_client):
    streams.create("admin/deep", content_type="application/json", data='[{"ok": 1}]')
    store_directly("admin/deep", b"[" * 980 + b'"<i>"' + b"]" * 980)
    detail = admin_client.get(change_page(Stream.objects.get(path="admin/deep")))
    assert detail.status_code == 200
    assert b"[[[[[[[[&quot;&lt;i&gt;&quot;]]]]]]]]" in detail.content  # raw, escaped


def test_json_that_is_not_json_any_more_is_shown_as_stored(admin_client):
    streams.create("admin/broken", content_type="application/json")
    store_directly("admin/broken", b'{"a": <script>')
    detail = admin_client.get(change_page(Stream.objects.get(path="admin/broken")))
    assert detail.status_code == 200
    assert b"{&quot;a&quot;: &lt;script&gt;" in detail.content


def test_a_lone_surrogate_in_a_message_is_shown_escaped(admin_client):
    streams.create("admin/surrogate", content_type="application/json")
    streams.append("admin/surrogate", '["\\ud800 and \\u00e9"]')  # valid JSON, stored escaped
    detail = admin_client.get(change_page(Stream.objects.get(path="admin/surrogate")))
    assert detail.status_code == 200
    assert b"\\ud800 and \\u00e9" in detail.content


def test_an_entry_larger_than_the_preview_shows_its_end(admin_client):
    streams.create("admin/big", content_type="text/plain", data="a" * 100_000 + "THE END")
    detail = admin_client.get(change_page(Stream.objects.get(path="admin/big")))
    assert detail.status_code == 200
    assert b"THE END" in detail.content
    assert b"a" * 70_000 not in detail.content


@pytest.mark.parametrize(
    "fields",
    [
        {"ttl_seconds": 999_999_999_999},  # a 12-digit Stream-TTL, accepted before it was bounded
        {"ttl_seconds": 2**62},
        {"expires_at": 1e300},
        {"expires_at": float("inf")},
        {"expires_at": float("nan")},  # Postgres keeps NaN (SQLite stores NULL: no expiry)
        {"created_at": float("inf")},
        {"created_at": -1e12},
        {"touched_at": float("inf"), "ttl_seconds": 60},
    ],
)
def test_times_that_are_no_dates_do_not_break_the_list_or_the_page(admin_client, fields):
    """(Times in the past would expire the stream: the sweep could remove it mid-test.)"""
    streams.create("admin/times", content_type="text/plain", data="x")
    streams.create("admin/neighbour", content_type="text/plain")
    Stream.objects.filter(path="admin/times").update(**fields)
    page = admin_client.get(CHANGELIST)
    assert page.status_code == 200
    assert b"admin/times" in page.content and b"admin/neighbour" in page.content
    detail = admin_client.get(change_page(Stream.objects.get(path="admin/times")))
    assert detail.status_code == 200


def test_times_before_year_one_and_nan_are_shown_in_words():
    assert shown_time(-1e12) == "before year 1 (-1000000000000)"
    assert shown_time(float("nan")) == "not a time (NaN)"
    assert shown_time(float("inf")) == "after 9999-12-31 (epoch inf)"
    assert shown_time(None) is None
    assert shown_time(0).year == 1970


def test_a_huge_ttl_shows_as_a_number(admin_client):
    streams.create("admin/ttl", content_type="text/plain")
    Stream.objects.filter(path="admin/ttl").update(ttl_seconds=999_999_999_999)
    page = admin_client.get(CHANGELIST)
    assert b"after 9999-12-31" in page.content


# -- deleting goes through the log ---------------------------------------------------------


def test_delete_selected_goes_through_the_log(admin_client):
    streams.create("admin/src", content_type="text/plain", data="x")
    streams.fork("admin/fork", "admin/src")
    ids = list(Stream.objects.filter(path__startswith="admin/").values_list("pk", flat=True))
    form = {"action": "delete_selected", "_selected_action": ids}
    confirm = admin_client.post(CHANGELIST, form)
    assert confirm.status_code == 200
    text = confirm.content.decode()
    assert "admin/src: marked deleted" in text and "while its 1 fork(s) read from it" in text
    assert "protected" not in text.lower()
    response = admin_client.post(CHANGELIST, {**form, "post": "yes"})
    assert response.status_code == 302
    with pytest.raises(StreamNotFound):
        streams.info("admin/fork")
    with pytest.raises(StreamNotFound):
        streams.info("admin/src")
    assert not Stream.objects.filter(path__startswith="admin/").exists()


def test_the_delete_button_deletes_the_last_fork_and_its_deleted_source(admin_client):
    streams.create("admin/origin", content_type="text/plain", data="x")
    streams.fork("admin/branch", "admin/origin")
    streams.delete("admin/origin")  # soft: its fork reads from it
    branch = Stream.objects.get(path="admin/branch")
    confirm = admin_client.get(delete_page(branch))
    assert confirm.status_code == 200
    assert "then its deleted source admin/origin" in confirm.content.decode()
    assert admin_client.post(delete_page(branch), {"post": "yes"}).status_code == 302
    with pytest.raises(StreamNotFound):
        streams.info("admin/branch")
    with pytest.raises(StreamNotFound):  # gone for good, not 410 for ever
        streams.info("admin/origin")
    assert streams.create("admin/origin", content_type="text/plain").created  # path free again


def test_the_delete_button_soft_deletes_a_source_that_forks_read_from(admin_client):
    streams.create("admin/base", content_type="text/plain", data="base")
    streams.fork("admin/child", "admin/base")
    base = Stream.objects.get(path="admin/base")
    confirm = admin_client.get(delete_page(base))
    assert confirm.status_code == 200
    assert "Cannot delete" not in confirm.content.decode()  # no ORM protection from the fork
    assert admin_client.post(delete_page(base), {"post": "yes"}).status_code == 302
    with pytest.raises(StreamGone):
        streams.info("admin/base")
    assert streams.read("admin/child").body == b"base"
    # A soft-deleted stream has nothing left to delete: the log removes it with its last fork.
    assert admin_client.get(delete_page(base)).status_code == 403
    detail = admin_client.get(change_page(Stream.objects.get(path="admin/base")))
    assert detail.status_code == 200 and b"/delete/" not in detail.content


def test_selecting_a_stream_already_soft_deleted_warns_and_changes_nothing(admin_client):
    streams.create("admin/kept", content_type="text/plain", data="k")
    streams.fork("admin/reader", "admin/kept")
    streams.delete("admin/kept")
    kept = Stream.objects.get(path="admin/kept")
    form = {"action": "delete_selected", "_selected_action": [kept.pk]}
    confirm = admin_client.post(CHANGELIST, form)
    assert "admin/kept: already deleted" in confirm.content.decode()
    done = admin_client.post(CHANGELIST, {**form, "post": "yes"}, follow=True)
    assert done.status_code == 200
    assert "stream &#x27;admin/kept&#x27; was deleted" in done.content.decode()  # a warning
    with pytest.raises(StreamGone):
        streams.info("admin/kept")
    assert streams.read("admin/reader").body == b"k"


def test_subscriptions_are_browsed_read_only_and_deleted_through_the_api(admin_client):
    from durable_sessions.streams import subscriptions
    from durable_sessions.streams.subscriptions.models import Subscription

    streams.create("admin/wake", content_type="application/json")
    streams.create("admin/job", content_type="text/plain", data="x")
    subscriptions.ensure(
        "admin-sub", type="pull-wake", streams=["admin/job"], wake_stream="admin/wake"
    )
    listing = admin_client.get("/admin/durable_sessions/subscription/")
    assert listing.status_code == 200 and b"admin-sub" in listing.content
    detail = admin_client.get("/admin/durable_sessions/subscription/admin-sub/change/")
    assert detail.status_code == 200 and b"admin/job" in detail.content
    assert admin_client.get("/admin/durable_sessions/subscription/add/").status_code == 403
    deleted = admin_client.post(
        "/admin/durable_sessions/subscription/admin-sub/delete/", {"post": "yes"}
    )
    assert deleted.status_code == 302
    assert Subscription.objects.get(id="admin-sub").deleted  # a tombstone, not a row gone
    with pytest.raises(subscriptions.SubscriptionNotFound):
        subscriptions.get("admin-sub")
