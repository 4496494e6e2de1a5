"""System checks for what can be misconfigured. Every id is listed in docs/checks.md."""

from __future__ import annotations

import difflib
import math
from numbers import Real
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.utils.module_loading import import_string

from durable_sessions.conf import DEFAULTS, SQLITE_SYNCHRONOUS_VALUES

POSITIVE_NUMBERS = {
    "SESSION_CACHE_SIZE",
    "MAX_MESSAGE_CHARS",
    "LONG_POLL_TIMEOUT",
    "SSE_RECONNECT_INTERVAL",
    "WEBSOCKET_SEND_TIMEOUT",
    "MAX_READ_BYTES",
    "MAX_APPEND_BYTES",
    "MAX_PATH_LENGTH",
    "MAX_JSON_DEPTH",
    "WRITER_MAX_BATCH",
    "WRITER_THREADS",
    "READER_THREADS",
    "LIVE_RECHECK_INTERVAL",
    "EXPIRY_SWEEP_INTERVAL",
    "SUBSCRIPTION_SWEEP_INTERVAL",
    "WEBHOOK_THREADS",
    "AUTH_RECHECK_INTERVAL",
    "WEBHOOK_TIMEOUT",
    "WEBHOOK_REPLAY_WINDOW",
}
BOOLEANS = {"WEBHOOK_ALLOW_LOOPBACK", "AGENT_ALLOW_PRIVATE"}
PATH_COLUMN_LENGTH = 1024  # Stream.path is a varchar(1024)
# Python's JSON parser and encoder recurse once per level, within the interpreter's recursion
# limit (1000 by default) minus the frames already on the stack: stay well below it.
JSON_DEPTH_CEILING = 512
UPPER_BOUNDS = {"MAX_PATH_LENGTH": PATH_COLUMN_LENGTH, "MAX_JSON_DEPTH": JSON_DEPTH_CEILING}
CORP_VALUES = ("same-origin", "same-site", "cross-origin")
INTEGERS = {key for key in POSITIVE_NUMBERS if isinstance(DEFAULTS[key], int)}


def vendor_of(engine: str) -> str:
    """The vendor of a database backend module (PostGIS is "postgresql"), or "" if unknown."""
    try:
        return import_string(f"{engine}.base.DatabaseWrapper").vendor
    except Exception:  # not importable here (GeoDjango without GDAL): go by its name
        for vendor, names in (
            ("postgresql", ("postgresql", "postgis")),
            ("sqlite", ("sqlite3", "spatialite")),
        ):
            if engine.rsplit(".", 1)[-1] in names:
                return vendor
        return ""


def _user_settings() -> Any:
    return getattr(settings, "DURABLE_SESSIONS", {})


def _bad_number(key: str, value: Any) -> str | None:
    """What ``value`` should have been for ``key``, or None when it is fine."""
    if key in INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return "a positive integer"
        if key in UPPER_BOUNDS and value > UPPER_BOUNDS[key]:
            return f"a positive integer up to {UPPER_BOUNDS[key]}"
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        return "a positive, finite number"
    number = float(value)
    return None if math.isfinite(number) and number > 0 else "a positive, finite number"


def _policy_problems(policy: Any) -> list:
    if isinstance(policy, str):
        try:
            policy = import_string(policy)
        except ImportError as exc:
            return [
                Error(
                    f"PERMISSION_POLICY {policy!r} cannot be imported: {exc}.",
                    hint="Give the dotted path of a class with has_permission().",
                    id="durable_sessions.E004",
                )
            ]
    if not callable(getattr(policy, "has_permission", None)):
        return [
            Error(
                "PERMISSION_POLICY must be a class with a has_permission() method.",
                hint="Subclass durable_sessions.streams.permissions.BasePermission.",
                id="durable_sessions.E009",
            )
        ]
    return []


@register("durable_sessions")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list:
    """DURABLE_SESSIONS is a dict of known keys with values of the right kind."""
    user = _user_settings()
    if not isinstance(user, dict):
        return [
            Error(
                "DURABLE_SESSIONS must be a dict.",
                hint="DURABLE_SESSIONS = {...}",
                id="durable_sessions.E001",
            )
        ]
    errors: list = []
    for key in sorted(set(user) - set(DEFAULTS)):
        close = difflib.get_close_matches(key, DEFAULTS, n=1)
        hint = f"Did you mean {close[0]!r}?" if close else "See docs/settings.md."
        errors.append(
            Error(
                f"Unknown DURABLE_SESSIONS setting {key!r}.", hint=hint, id="durable_sessions.E002"
            )
        )
    for key in sorted(POSITIVE_NUMBERS & set(user)):
        expected = _bad_number(key, user[key])
        if expected:
            errors.append(
                Error(
                    f"DURABLE_SESSIONS[{key!r}] must be {expected}, not {user[key]!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="durable_sessions.E003",
                )
            )
    origins = user.get("CORS_ALLOWED_ORIGINS", [])
    if not isinstance(origins, list | tuple) or not all(isinstance(o, str) for o in origins):
        errors.append(
            Error(
                "DURABLE_SESSIONS['CORS_ALLOWED_ORIGINS'] must be a list of origins.",
                hint='For example ["https://app.example.com"] or ["*"].',
                id="durable_sessions.E008",
            )
        )
    corp = user.get("CROSS_ORIGIN_RESOURCE_POLICY", DEFAULTS["CROSS_ORIGIN_RESOURCE_POLICY"])
    if corp not in CORP_VALUES:
        errors.append(
            Error(
                f"DURABLE_SESSIONS['CROSS_ORIGIN_RESOURCE_POLICY'] is {corp!r}.",
                hint=f"Use one of {', '.join(CORP_VALUES)}.",
                id="durable_sessions.E010",
            )
        )
    synchronous = user.get("SQLITE_SYNCHRONOUS", DEFAULTS["SQLITE_SYNCHRONOUS"])
    if not isinstance(synchronous, str) or synchronous.upper() not in SQLITE_SYNCHRONOUS_VALUES:
        errors.append(
            Error(
                f"DURABLE_SESSIONS['SQLITE_SYNCHRONOUS'] is {synchronous!r}.",
                hint=f"Use one of {', '.join(SQLITE_SYNCHRONOUS_VALUES)} (FULL is durable).",
                id="durable_sessions.E011",
            )
        )
    for key in sorted(BOOLEANS & set(user)):
        if not isinstance(user[key], bool):
            errors.append(
                Error(
                    f"DURABLE_SESSIONS[{key!r}] must be True or False, not {user[key]!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="durable_sessions.E020",
                )
            )
    base_url = user.get("SUBSCRIPTION_BASE_URL")
    if base_url is not None and (
        not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
    ):
        errors.append(
            Error(
                f"DURABLE_SESSIONS['SUBSCRIPTION_BASE_URL'] is {base_url!r}.",
                hint='An absolute URL of the stream root, e.g. "https://api.example.com/v1/stream/",'
                " or None.",
                id="durable_sessions.E021",
            )
        )
    errors += default_agents_problems(user.get("DEFAULT_AGENTS", []))
    return errors + _policy_problems(user.get("PERMISSION_POLICY", DEFAULTS["PERMISSION_POLICY"]))


def default_agents_problems(specs: Any) -> list:
    """``DEFAULT_AGENTS`` is a list of valid AgentSpecs (their syntax: no name is resolved)."""
    from durable_sessions.sessions.agent_specs import SpecInvalid, parse

    if not isinstance(specs, list | tuple):
        problems = [f"DURABLE_SESSIONS['DEFAULT_AGENTS'] is {specs!r}, not a list."]
    else:
        problems = []
        seen: set[str] = set()
        for index, spec in enumerate(specs):
            try:
                agent_id = parse(spec).id
            except SpecInvalid as exc:
                problems.append(f"DURABLE_SESSIONS['DEFAULT_AGENTS'][{index}]: {exc.detail}.")
                continue
            if agent_id in seen:
                problems.append(f"DURABLE_SESSIONS['DEFAULT_AGENTS'] names {agent_id!r} twice.")
            seen.add(agent_id)
    hint = "A list of AgentSpec dicts: see docs/agents-registry.md."
    return [Error(problem, hint=hint, id="durable_sessions.E022") for problem in problems]


@register("durable_sessions", "database")
def check_database(app_configs: Any = None, **kwargs: Any) -> list:
    """The streams database alias exists and is Postgres or SQLite."""
    user = _user_settings() if isinstance(_user_settings(), dict) else {}
    alias = user.get("DATABASE_ALIAS", DEFAULTS["DATABASE_ALIAS"])
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {}).get("BACKEND", "")
    return database_problems(getattr(settings, "DATABASES", {}), alias, layer)


def database_problems(databases: dict[str, Any], alias: str, layer: str) -> list:
    """The checks of ``check_database`` on explicit values (testable without settings)."""
    if alias not in databases:
        return [
            Error(
                f"DURABLE_SESSIONS['DATABASE_ALIAS'] is {alias!r}, which is not in DATABASES.",
                hint=f"Choose one of {sorted(databases)}.",
                id="durable_sessions.E005",
            )
        ]
    engine = databases[alias].get("ENGINE", "")
    if vendor_of(engine) not in {"postgresql", "sqlite"}:
        return [
            Error(
                f"The streams database uses {engine!r}; durable_sessions supports "
                "PostgreSQL and SQLite.",
                hint="Point DATABASE_ALIAS at one of those.",
                id="durable_sessions.E006",
            )
        ]
    warnings = []
    if vendor_of(engine) == "sqlite" and "redis" in layer.lower():
        warnings.append(
            Warning(
                "SQLite with a Redis channel layer: this looks like several server processes "
                "sharing one SQLite file. It works, but every write takes the whole file's lock.",
                hint="Use PostgreSQL (DATABASE_URL) when you run more than one process.",
                id="durable_sessions.W002",
            )
        )
    return warnings


@register("durable_sessions")
def check_asgi(app_configs: Any = None, **kwargs: Any) -> list:
    """The project is served by ASGI and has a channel layer for the other processes."""
    problems: list = []
    if not getattr(settings, "ASGI_APPLICATION", None):
        problems.append(
            Error(
                "ASGI_APPLICATION is not set: live reads (long-poll, SSE, websockets) need an ASGI "
                "server.",
                hint='Set ASGI_APPLICATION = "project.asgi.application" and wrap the application '
                "in durable_sessions.asgi.DurableSessionsRouter.",
                id="durable_sessions.E007",
            )
        )
    if not getattr(settings, "CHANNEL_LAYERS", None):
        problems.append(
            Warning(
                "CHANNEL_LAYERS is not configured: live readers only see appends made by their own "
                "process until they re-read the database.",
                hint="Configure channels_redis (REDIS_URL) when you run several processes.",
                id="durable_sessions.W001",
            )
        )
    return problems


SPECTACULAR_SCHEMA = "drf_spectacular.openapi.AutoSchema"


@register("durable_sessions", "urls")
def check_session_api(app_configs: Any = None, **kwargs: Any) -> list:
    """The session API, when the project routes it, can describe itself (``/v1/schema/``)."""
    from django.urls import NoReverseMatch, reverse

    try:
        reverse("durable_sessions:schema")
    except NoReverseMatch:
        return []  # the project does not serve the session API
    rest = getattr(settings, "REST_FRAMEWORK", {}) or {}
    problems = []
    if "drf_spectacular" not in settings.INSTALLED_APPS or (
        rest.get("DEFAULT_SCHEMA_CLASS") != SPECTACULAR_SCHEMA
    ):
        problems.append(
            Error(
                "The session API's OpenAPI schema needs drf-spectacular.",
                hint=f'Add "drf_spectacular" to INSTALLED_APPS and set REST_FRAMEWORK'
                f'["DEFAULT_SCHEMA_CLASS"] = "{SPECTACULAR_SCHEMA}".',
                id="durable_sessions.E023",
            )
        )
    return problems
