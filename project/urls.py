"""URLs of the host project. The stream protocol is served in front of Django (project/asgi.py)."""

from django.contrib import admin
from django.urls import include, path

from project import views

urlpatterns = [
    path("", views.index, name="index"),
    path("admin/", admin.site.urls),
    path("v1/", include("durable_sessions.sessions.urls")),
]
