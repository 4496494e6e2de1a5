"""The runtime's URLs, under ``/v1/`` beside the session API's:

path("v1/", include("durable_sessions.agents.urls"))
"""

from __future__ import annotations

from django.urls import path

from durable_sessions.agents.api import UsageViewSet

app_name = "durable_sessions_agents"

urlpatterns = [
    path("sessions/<str:pk>/usage", UsageViewSet.as_view({"get": "session"}), name="session-usage"),
    path("usage", UsageViewSet.as_view({"get": "mine"}), name="usage"),
]
