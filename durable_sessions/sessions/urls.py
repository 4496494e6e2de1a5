"""The session API's URLs, under ``/v1/`` (included by the host project), and its schema.

path("v1/", include("durable_sessions.sessions.urls"))
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from durable_sessions.sessions import api, presence_api

app_name = "durable_sessions"

_session = "sessions/<str:pk>"
urlpatterns = [
    path(
        "sessions/", api.SessionViewSet.as_view({"get": "list", "post": "create"}), name="sessions"
    ),
    path(
        _session,
        api.SessionViewSet.as_view(
            {"get": "retrieve", "put": "update", "patch": "partial_update", "delete": "destroy"}
        ),
        name="session",
    ),
    path(
        f"{_session}/messages",
        api.SessionViewSet.as_view({"get": "messages", "post": "messages"}),
        name="session-messages",
    ),
    path(
        f"{_session}/events",
        api.SessionViewSet.as_view({"get": "events"}),
        name="session-events",
    ),
    path(
        f"{_session}/members",
        api.SessionViewSet.as_view({"get": "members", "post": "members"}),
        name="session-members",
    ),
    path(
        f"{_session}/members/<str:username>",
        api.MemberViewSet.as_view({"patch": "partial_update", "delete": "destroy"}),
        name="session-member",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        f"{_session}/login",
        presence_api.PresenceView.as_view({"post": "login"}),
        name="session-login",
    ),
    path(
        f"{_session}/logout",
        presence_api.LogoutView.as_view({"post": "logout"}),
        name="session-logout",
    ),
    path(
        f"{_session}/heartbeat",
        presence_api.PresenceView.as_view({"post": "heartbeat"}),
        name="session-heartbeat",
    ),
]
