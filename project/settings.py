"""Settings of the host project, driven by the environment.

With no environment set, the project runs on a SQLite file (WAL, immediate transactions) and the
in-memory channel layer. ``DATABASE_URL`` and ``REDIS_URL`` switch to Postgres and Redis.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_flag(name: str, default: bool = False) -> bool:
    """Read a boolean from the environment (1/true/yes/on)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-dev-key-change-me-in-production")
DEBUG = env_flag("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "durable_sessions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

SQLITE_PATH = Path(os.environ.get("DS_SQLITE_PATH", BASE_DIR / "db" / "durable_sessions.sqlite3"))
if os.environ.get("DATABASE_URL"):
    # Connections closed after each request: under ASGI every request's view runs in a thread
    # of its own, so a kept connection is never reused, and under load they pile up until
    # Postgres refuses more ("too many clients"; benchmarks/session_messages.py). Django's docs
    # say so: disable persistent connections under ASGI. (The log has its own connections.)
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=0)}
else:
    SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

DURABLE_SESSIONS: dict = {}
if os.environ.get("DS_LONG_POLL_TIMEOUT"):
    DURABLE_SESSIONS["LONG_POLL_TIMEOUT"] = float(os.environ["DS_LONG_POLL_TIMEOUT"])
if os.environ.get("DS_WEBSOCKET_SEND_TIMEOUT"):
    DURABLE_SESSIONS["WEBSOCKET_SEND_TIMEOUT"] = float(os.environ["DS_WEBSOCKET_SEND_TIMEOUT"])
if os.environ.get("DS_SQLITE_SYNCHRONOUS"):
    DURABLE_SESSIONS["SQLITE_SYNCHRONOUS"] = os.environ["DS_SQLITE_SYNCHRONOUS"]
if os.environ.get("DS_LIVE_RECHECK_INTERVAL"):
    DURABLE_SESSIONS["LIVE_RECHECK_INTERVAL"] = float(os.environ["DS_LIVE_RECHECK_INTERVAL"])
if os.environ.get("DS_WRITER_THREADS"):
    DURABLE_SESSIONS["WRITER_THREADS"] = int(os.environ["DS_WRITER_THREADS"])
if os.environ.get("DS_SUBSCRIPTION_SWEEP_INTERVAL"):
    DURABLE_SESSIONS["SUBSCRIPTION_SWEEP_INTERVAL"] = float(
        os.environ["DS_SUBSCRIPTION_SWEEP_INTERVAL"]
    )
for _name in (
    "PRESENCE_TTL",
    "PRESENCE_GRACE",
    "PRESENCE_SWEEP_INTERVAL",
    "AUTH_RECHECK_INTERVAL",
    "AGENT_LEASE_TTL",
    "AGENT_FLUSH_INTERVAL",
    "AGENT_SHUTDOWN_GRACE",
    "AGENT_RETRY_BACKOFF",
):
    if os.environ.get(f"DS_{_name}"):
        DURABLE_SESSIONS[_name] = float(os.environ[f"DS_{_name}"])
if env_flag("DS_PUBLIC_STREAMS"):
    DURABLE_SESSIONS["PERMISSION_POLICY"] = "durable_sessions.streams.permissions.AllowAny"
# The benchmarks' own views (project/benchmark_views.py), off unless a benchmark asks.
BENCHMARK_VIEWS = env_flag("DS_BENCHMARK_VIEWS")
if env_flag("DS_WEBHOOK_ALLOW_LOOPBACK"):
    # Webhooks to this machine (the conformance suite's receiver): development and tests only.
    DURABLE_SESSIONS["WEBHOOK_ALLOW_LOOPBACK"] = True
if env_flag("DS_DEMO_AGENT"):
    # Every new session gets the offline demo agent (scripts/demo): it answers out of the box,
    # with no network and no key (durable_sessions/agents/builtin.py).
    DURABLE_SESSIONS["DEFAULT_AGENTS"] = [
        {"id": "demo", "name": "Demo", "endpoint": "python:durable_sessions.agents.builtin.demo"}
    ]
if env_flag("DS_AGENT_ALLOW_PRIVATE"):
    # Agents on this machine or the private network (a local model server): see
    # docs/agents-registry.md. Link-local (cloud metadata) and multicast stay refused.
    DURABLE_SESSIONS["AGENT_ALLOW_PRIVATE"] = True

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "durable_sessions.sessions.auth.SameOriginSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "durable_sessions",
    "DESCRIPTION": "Collaborative AI chat sessions on Durable Streams",
    "VERSION": "1",
    "ENUM_NAME_OVERRIDES": {
        "MemberRoleEnum": "durable_sessions.sessions.models.ROLES",
        "MessageRoleEnum": "durable_sessions.sessions.models.MESSAGE_ROLES",
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "build" / "static"
LOGIN_URL = "/admin/login/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "durable_sessions": {
            "handlers": ["console"],
            "level": os.environ.get("DS_LOG_LEVEL", "INFO"),
        }
    },
}
