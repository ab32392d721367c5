"""ASGI entry point: HTTP through Django, WebSockets through the room consumer.

Run by daphne: ``daphne -b 127.0.0.1 -p 8000 chatsite.asgi:application`` (see Procfile).
"""

import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Django must be set up before the consumers (and their models) are imported.
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

from chatsite import redis_config  # noqa: E402
from chatsite.asgi_chain import ProtocolTypeRouter, URLRouter  # noqa: E402
from chatsite.handshakes import HandshakeLimit  # noqa: E402
from chatsite.http_limits import HttpInFlightLimit  # noqa: E402
from chatsite.proxy import TrustedProxyMiddleware  # noqa: E402
from rooms.auth import OriginValidator, SocketAuth  # noqa: E402
from rooms.routing import websocket_urlpatterns  # noqa: E402

# Outermost: the client address and scheme from X-Forwarded-* headers, believed only from the
# proxies in TRUSTED_PROXIES (chatsite/proxy.py), before anything reads them.
application = TrustedProxyMiddleware(
    ProtocolTypeRouter(
        {
            # HTTP_REQUESTS_IN_FLIGHT per client and per address (chatsite/http_limits.py): one
            # client's burst cannot take the node's database connections from everyone else.
            "http": HttpInFlightLimit(django_asgi_app),
            # HandshakeLimit first: over WS_HANDSHAKES_IN_FLIGHT, close 1013 before any work.
            # Every wrapper down to SocketAuth returns its application's awaitable, and so do the
            # router and the routes below it (chatsite.asgi_chain): an idle socket keeps two
            # coroutine frames (SocketAuth's, its consumer's), not one per wrapper.
            "websocket": HandshakeLimit(OriginValidator(SocketAuth(URLRouter(websocket_urlpatterns)))),
        }
    )
)

if not settings.REDIS_URL:
    logging.getLogger("chatsite").warning(
        "REDIS_URL is not set: node %s uses the in-memory channel layer, so cross-node delivery "
        "is OFF (members connected to other nodes will not get this node's messages live). "
        "Set REDIS_URL to run more than one node.",
        settings.SERVER_ID,
    )

# Reach Redis now (PING, short timeout): a wrong TLS or Sentinel configuration stops the node here
# with a clear error, not at a user's first join (chatsite/redis_config.py).
redis_config.startup_check(getattr(settings, "REDIS", None), settings.SERVER_ID)
