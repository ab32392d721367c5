"""WebSocket authentication and Origin checks, wrapped around the consumer in ``chatsite.asgi``.

Who a socket belongs to:

- Browsers: Django's session cookie (``channels.auth.AuthMiddlewareStack``).
- Scripts and native clients: the header ``Authorization: Token <key>`` with a DRF token
  (``rest_framework.authtoken``; ``python manage.py drf_create_token <username>`` makes one).

Precedence: when an ``Authorization`` header is present it alone decides, so a wrong or revoked
token is anonymous (close 4401) even beside a valid session cookie.

Origin: a socket that carries a cookie must come from a page of ours, so its ``Origin`` must
match ``ALLOWED_HOSTS`` (channels' ``AllowedHostsOriginValidator``); a foreign or missing Origin
is refused before accept (HTTP 403 at the handshake). A token client may omit Origin: a browser
page cannot set that header on a WebSocket, so it cannot be used for cross-site hijacking.
"""

from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.auth.models import AnonymousUser


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


@database_sync_to_async
def _user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


class TokenAuthMiddleware:
    """Sets ``scope["user"]`` from ``Authorization: Token <key>`` when that header is present
    (anonymous when the key is unknown, malformed or its user inactive) and ``scope["auth_token"]``
    to the key it accepted; otherwise leaves the session user that ``AuthMiddlewareStack`` set.
    Must sit inside ``AuthMiddlewareStack``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        raw = _header(scope, b"authorization")
        if raw is not None:
            scheme, _, key = raw.decode("latin-1").strip().partition(" ")
            key = key.strip()
            scope["auth_token"] = None
            if scheme.lower() == "token" and key and len(key) <= 40 and key.isalnum():
                scope["user"] = await _user_for_token(key)
                if scope["user"].is_authenticated:
                    scope["auth_token"] = key
            else:
                scope["user"] = AnonymousUser()
        return await self.app(scope, receive, send)


class OriginValidator:
    """``AllowedHostsOriginValidator``, except that a handshake with an ``Authorization`` header
    and no ``Origin`` header passes (a native client). A present Origin is always checked."""

    def __init__(self, app):
        self.app = app
        self.checked = AllowedHostsOriginValidator(app)

    async def __call__(self, scope, receive, send):
        if _header(scope, b"origin") is None and _header(scope, b"authorization") is not None:
            return await self.app(scope, receive, send)
        return await self.checked(scope, receive, send)
