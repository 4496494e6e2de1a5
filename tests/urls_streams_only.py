"""A URLconf without the session API (a project that mounts only the streams layer)."""

urlpatterns: list = []
