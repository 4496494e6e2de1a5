"""Test settings: the app on SQLite + in-memory layer, or on Postgres + Redis.

``DATABASE_URL`` and ``REDIS_URL`` select Postgres and Redis, as in the host project; the test
command runs the whole suite once each way.
"""

import os
import tempfile
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
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
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
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
            ]
        },
    }
]
STATIC_URL = "static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
else:
    # A file, not SQLite's in-memory database: the log and the test servers open their own
    # connections to it.
    _dir = Path(os.environ.get("DS_TEST_DIR") or tempfile.mkdtemp(prefix="ds-tests-"))
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(_dir / "db.sqlite3"),
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
            "TEST": {"NAME": str(_dir / "test.sqlite3")},
        }
    }

if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

DURABLE_SESSIONS = {
    # The tests run the presence sweep themselves (presence_expire); a sweep thread of this
    # process would race them, and Postgres TRUNCATEs between transactional tests (it was
    # chosen a deadlock victim against a flush). Server processes get theirs from the env.
    "PRESENCE_SWEEP_INTERVAL": 3600.0,
    "LONG_POLL_TIMEOUT": 1.0,
    "EXPIRY_SWEEP_INTERVAL": 0.5,
    "SUBSCRIPTION_SWEEP_INTERVAL": 0.2,
    # The tests start agent workers themselves (a worker of this process, or run_agents).
    "AGENT_EMBEDDED": False,
}
if os.environ.get("DS_AGENT_ALLOW_PRIVATE", "").lower() in {"1", "true", "yes", "on"}:
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
    "VERSION": "1",
    "ENUM_NAME_OVERRIDES": {
        "MemberRoleEnum": "durable_sessions.sessions.models.ROLES",
        "MessageRoleEnum": "durable_sessions.sessions.models.MESSAGE_ROLES",
    },
}
