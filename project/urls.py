"""URLs of the host project. The stream protocol is served in front of Django (project/asgi.py)."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from project import views

urlpatterns = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    path("v1/", include("durable_sessions.sessions.urls")),
    path("v1/", include("durable_sessions.agents.urls")),
]

# DS_BENCHMARK_VIEWS=1 (project/settings.py): the floor of benchmarks/session_messages.py.
if getattr(settings, "BENCHMARK_VIEWS", False):
    from project.benchmark_views import FloorView

    urlpatterns.append(path("bench/floor", FloorView.as_view(), name="bench-floor"))
