"""WSGI entry point, for tools that want one. Serving uses ASGI (``chatsite.asgi``): WSGI has no
WebSockets."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

application = get_wsgi_application()
