"""Pages of the host project (the demo)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from durable_sessions.conf import ds_settings
from durable_sessions.streams.permissions import AllowAny


def index(request: HttpRequest) -> HttpResponse:
    """The demo's front page: what the server serves, and a console to try a stream."""
    context = {
        "base": request.build_absolute_uri("/").rstrip("/"),
        "public_streams": issubclass(ds_settings.PERMISSION_POLICY, AllowAny),
    }
    return render(request, "index.html", context)
