"""ASGI entry point of the host project: ``daphne project.asgi:application``."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from channels.routing import ProtocolTypeRouter
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()
if settings.DEBUG:  # the demo serves the admin's CSS itself; in production a web server does
    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from durable_sessions.asgi import DurableSessionsRouter  # noqa: E402

application = DurableSessionsRouter(ProtocolTypeRouter({"http": django_asgi_app}))

# Everything loaded so far (Django, the apps, the ASGI stack) lives as long as the process: take
# it out of the garbage collector's full passes, which otherwise scan it every time. With a
# thousand websockets open, a full pass paused the loop for about 150 ms instead of 65 ms.
gc.freeze()
