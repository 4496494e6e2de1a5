"""System checks (durable_sessions/checks.py)."""

from __future__ import annotations

from django.core.checks import run_checks
from django.test import override_settings

from durable_sessions.checks import database_problems


def ids(**kwargs) -> set[str]:
    return {
        m.id
        for m in run_checks(tags=["durable_sessions"], include_deployment_checks=False)
        if m.id.startswith("durable_sessions")
    }


def test_the_test_settings_are_clean():
    assert ids() == set()


def test_settings_must_be_a_dict():
    with override_settings(DURABLE_SESSIONS=["LONG_POLL_TIMEOUT"]):
        assert "durable_sessions.E001" in ids()


def test_unknown_keys_are_reported_with_a_suggestion():
    with override_settings(DURABLE_SESSIONS={"LONG_POL_TIMEOUT": 3}):
        [message] = [m for m in run_checks() if m.id == "durable_sessions.E002"]
    assert "LONG_POLL_TIMEOUT" in message.hint


def test_bad_values_are_reported():
    for value in (0, -1, "10", True, None):
        with override_settings(DURABLE_SESSIONS={"LONG_POLL_TIMEOUT": value}):
            assert "durable_sessions.E003" in ids(), value
    for key, value in (
        ("MAX_READ_BYTES", 1.5),
        ("WRITER_THREADS", 2.0),
        ("LONG_POLL_TIMEOUT", float("nan")),
        ("LONG_POLL_TIMEOUT", float("inf")),
        ("MAX_PATH_LENGTH", 4096),
        ("AUTH_RECHECK_INTERVAL", 0),
        ("MAX_JSON_DEPTH", 0),
        ("MAX_JSON_DEPTH", 513),
        ("MAX_JSON_DEPTH", 64.0),
    ):
        with override_settings(DURABLE_SESSIONS={key: value}):
            assert "durable_sessions.E003" in ids(), (key, value)
    for origins in ("*", None, 3, ["ok", 4]):
        with override_settings(DURABLE_SESSIONS={"CORS_ALLOWED_ORIGINS": origins}):
            assert "durable_sessions.E008" in ids(), origins
    with override_settings(DURABLE_SESSIONS={"CROSS_ORIGIN_RESOURCE_POLICY": "anyone"}):
        assert "durable_sessions.E010" in ids()
    for value in ("api.example.com/v1/stream/", 5, ["https://x"]):
        with override_settings(DURABLE_SESSIONS={"SUBSCRIPTION_BASE_URL": value}):
            assert "durable_sessions.E021" in ids(), value
    with override_settings(DURABLE_SESSIONS={"SUBSCRIPTION_BASE_URL": "https://x.test/v1/stream/"}):
        assert "durable_sessions.E021" not in ids()
    for value in ("OFF", "normal?", 2, None):
        with override_settings(DURABLE_SESSIONS={"SQLITE_SYNCHRONOUS": value}):
            assert "durable_sessions.E011" in ids(), value
    with override_settings(DURABLE_SESSIONS={"SQLITE_SYNCHRONOUS": "normal"}):
        assert "durable_sessions.E011" not in ids()


def test_the_json_depth_may_be_raised_up_to_its_ceiling():
    for value in (1, 512):
        with override_settings(DURABLE_SESSIONS={"MAX_JSON_DEPTH": value}):
            assert "durable_sessions.E003" not in ids(), value


def test_permission_policy_must_import_and_have_has_permission():
    with override_settings(DURABLE_SESSIONS={"PERMISSION_POLICY": "no.such.Policy"}):
        assert "durable_sessions.E004" in ids()
    with override_settings(DURABLE_SESSIONS={"PERMISSION_POLICY": "builtins.dict"}):
        assert "durable_sessions.E009" in ids()


def test_database_alias_and_engine():
    sqlite = {"default": {"ENGINE": "django.db.backends.sqlite3"}}
    assert [m.id for m in database_problems(sqlite, "nope", "")] == ["durable_sessions.E005"]
    mysql = {"default": {"ENGINE": "django.db.backends.mysql"}}
    assert [m.id for m in database_problems(mysql, "default", "")] == ["durable_sessions.E006"]
    postgres = {"default": {"ENGINE": "django.db.backends.postgresql"}}
    assert database_problems(postgres, "default", "channels_redis.core.RedisChannelLayer") == []
    postgis = {"default": {"ENGINE": "django.contrib.gis.db.backends.postgis"}}
    assert database_problems(postgis, "default", "") == []


def test_sqlite_shared_by_processes_warns():
    sqlite = {"default": {"ENGINE": "django.db.backends.sqlite3"}}
    problems = database_problems(sqlite, "default", "channels_redis.core.RedisChannelLayer")
    assert [m.id for m in problems] == ["durable_sessions.W002"]


def test_asgi_application_and_channel_layer():
    with override_settings(ASGI_APPLICATION=None):
        assert "durable_sessions.E007" in ids()
    with override_settings(CHANNEL_LAYERS={}):
        assert "durable_sessions.W001" in ids()


def test_webhook_settings():
    for value in ("1", "False", 1, 0, None):  # a string from the environment would be truthy
        with override_settings(DURABLE_SESSIONS={"WEBHOOK_ALLOW_LOOPBACK": value}):
            assert "durable_sessions.E020" in ids(), value
    for value in (True, False):
        with override_settings(DURABLE_SESSIONS={"WEBHOOK_ALLOW_LOOPBACK": value}):
            assert ids() == set(), value
    for key in ("WEBHOOK_TIMEOUT", "WEBHOOK_REPLAY_WINDOW"):
        for value in (0, -5, "10", float("inf")):
            with override_settings(DURABLE_SESSIONS={key: value}):
                assert "durable_sessions.E003" in ids(), (key, value)


def test_the_session_api_needs_drf_spectacular(settings):
    rest = {**settings.REST_FRAMEWORK}
    del rest["DEFAULT_SCHEMA_CLASS"]
    with override_settings(REST_FRAMEWORK=rest):
        assert "durable_sessions.E023" in ids()
    apps = [app for app in settings.INSTALLED_APPS if app != "drf_spectacular"]
    with override_settings(INSTALLED_APPS=apps):
        assert "durable_sessions.E023" in ids()
    with override_settings(ROOT_URLCONF="tests.urls_streams_only"):  # no session API routed
        assert "durable_sessions.E023" not in ids()


def test_agent_settings():
    for value in ("1", 1, None):
        with override_settings(DURABLE_SESSIONS={"AGENT_ALLOW_PRIVATE": value}):
            assert "durable_sessions.E020" in ids(), value
    with override_settings(DURABLE_SESSIONS={"AGENT_ALLOW_PRIVATE": True}):
        assert ids() == set()
    good = {"id": "house", "endpoint": "python:myproject.agents.echo"}
    for value in (
        {"id": "house"},
        [{"id": "house", "endpoint": "ftp://x/"}],
        [{"id": 1, "endpoint": "https://8.8.8.8/"}],
        ["python:myproject.agents.echo"],
        [good, good],
    ):
        with override_settings(DURABLE_SESSIONS={"DEFAULT_AGENTS": value}):
            assert "durable_sessions.E022" in ids(), value
    # the check resolves nothing: a private URL is refused when a session is created
    specs = [good, {"id": "lan", "endpoint": "https://10.0.0.1/"}]
    with override_settings(DURABLE_SESSIONS={"DEFAULT_AGENTS": specs}):
        assert ids() == set()
