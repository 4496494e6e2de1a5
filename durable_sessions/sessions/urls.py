"""The session API's URLs, under ``/v1/`` (included by the host project), and its schema.

path("v1/", include("durable_sessions.sessions.urls"))
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from durable_sessions.sessions import actions_api, agents_api, api, lifecycle_api, presence_api

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
        f"{_session}/fork",
        lifecycle_api.LifecycleViewSet.as_view({"post": "fork"}),
        name="session-fork",
    ),
    path(
        f"{_session}/reset",
        lifecycle_api.LifecycleViewSet.as_view({"post": "reset"}),
        name="session-reset",
    ),
    # -- agents and actions
    path(
        f"{_session}/agents",
        agents_api.AgentsView.as_view({"get": "index", "post": "create"}),
        name="session-agents",
    ),
    path(
        f"{_session}/agents/<str:agent_id>",
        agents_api.AgentView.as_view({"patch": "partial_update", "delete": "destroy"}),
        name="session-agent",
    ),
    path(
        f"{_session}/stop", actions_api.ActionsView.as_view({"post": "stop"}), name="session-stop"
    ),
    path(
        f"{_session}/tool-results",
        actions_api.ActionsView.as_view({"post": "tool_results"}),
        name="session-tool-results",
    ),
    path(
        f"{_session}/regenerate",
        actions_api.ActionsView.as_view({"post": "regenerate"}),
        name="session-regenerate",
    ),
    path(
        f"{_session}/approvals/<str:approval_id>",
        actions_api.ApprovalView.as_view({"post": "create"}),
        name="session-approval",
    ),
    # -- presence
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
