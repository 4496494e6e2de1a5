"""ASGI entry point of the host project: ``daphne project.asgi:application``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from durable_sessions.asgi import DurableSessionsRouter  # noqa: E402

application = DurableSessionsRouter(ProtocolTypeRouter({"http": django_asgi_app}))
