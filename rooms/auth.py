"""WebSocket authentication and Origin checks, wrapped around the consumer in ``chatsite.asgi``.

Who a socket belongs to:

- Browsers: Django's session cookie (``SocketAuth``: what channels' ``AuthMiddlewareStack`` does
  without the per-frame session wrapper).
- Scripts and native clients: the header ``Authorization: Token <key>`` with a DRF token
  (``rest_framework.authtoken``; ``python manage.py drf_create_token <username>`` makes one).

Precedence: when an ``Authorization`` header is present it alone decides, so a wrong or revoked
token is anonymous (close 4401) even beside a valid session cookie.

Origin: a socket that carries a cookie must come from a page of ours. Its ``Origin`` must be
the same origin as the socket itself (scheme, host and port equal to the ``Host`` header's, as
Django's CSRF check does), or be listed in ``CSRF_TRUSTED_ORIGINS``; and its host must be in
``ALLOWED_HOSTS`` (channels' ``AllowedHostsOriginValidator``). A foreign, other-port, ``null`` or
missing Origin is refused before accept (HTTP 403 at the handshake). A token client may omit
Origin: a browser page cannot set that header on a WebSocket, so it cannot be used for
cross-site hijacking.
"""

import copy
import logging
import time
from importlib import import_module
from urllib.parse import urlparse, urlsplit

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from channels.security.websocket import OriginValidator as ChannelsOriginValidator
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

from . import metrics

logger = logging.getLogger(__name__)


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class CredentialCache:
    """Per node: who a credential (an API token key, a session key) belonged to when it was last
    looked up, for at most ``ttl`` seconds and ``size`` credentials (the oldest go first), so
    that a client reconnecting to this node (a page's second socket, a native client after a
    restart) costs its handshake no lookup.

    Why a revoked credential still cannot get in: this cache only says who the socket claims to
    be. Before any socket is accepted, its consumer checks the same credential again in SQL, in
    the statement it needs anyway: ``RoomConsumer`` in ``rooms.entry`` (``rooms.access``:
    user active, token still the user's, session row present and unexpired, its auth hash
    still the password's) and ``UserConsumer`` in ``rooms.user_consumer._room_ids`` (the same
    statement), and refuses it with 4401 before anything else; the other paths only refuse. A
    revocation therefore takes effect on the next handshake, whether it hit the cache or not.
    Only credentials that were valid are kept (an unknown key is looked up every time), and
    each hit gets its own copy of the user, so no socket sees another's changes."""

    def __init__(self, *, ttl: float = 60.0, size: int = 10_000):
        self.ttl = ttl
        self.size = size
        self.entries: dict[str, tuple[float, object, object]] = {}

    def get(self, key: str) -> tuple[object, object] | None:
        """``(a copy of the user, the extra value stored)`` for ``key``, or None (unknown, or
        looked up over ``ttl`` seconds ago)."""
        found = self.entries.get(key)
        if found is None:
            return None
        if time.monotonic() - found[0] > self.ttl:
            self.entries.pop(key, None)
            return None
        return copy.copy(found[1]), found[2]

    def put(self, key: str, user, extra=None) -> None:
        """Remember ``user`` (signed in, active) for ``key`` with ``extra`` (a session's auth hash)."""
        self.entries.pop(key, None)
        self.entries[key] = (time.monotonic(), copy.copy(user), extra)
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))

    def clear(self) -> None:
        """Forget everything (tests)."""
        self.entries.clear()


token_users = CredentialCache()  # API token key -> user
session_users = CredentialCache()  # session key -> (user, the session's auth hash)


def _token_user_sql() -> tuple[str, list[str]]:
    from django.db import connection
    from rest_framework.authtoken.models import Token

    user_model = get_user_model()
    fields = user_model._meta.concrete_fields
    quote = connection.ops.quote_name
    columns = ", ".join(f"u.{quote(f.column)}" for f in fields)
    sql = (
        f"SELECT t.key, {columns} FROM {quote(Token._meta.db_table)} t"
        f" JOIN {quote(user_model._meta.db_table)} u ON u.{quote(user_model._meta.pk.column)} = t.user_id"
        " WHERE t.key = ANY(%(keys)s) AND u.is_active"
    )
    return sql, ["key"] + [f.attname for f in fields]


@database_sync_to_async
def _user_for_token_orm(key: str):
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


# Seconds a handshake's token lookup may wait for its statement (queued behind the other
# handshakes of a storm, ``chatsite.db_batch``): well under daphne's 5 s handshake timeout, so
# that the socket still gets its 4503 when the database is gone.
TOKEN_TIMEOUT = 2.0


async def _users_for_tokens(keys: list[str]) -> list:
    """The active user of each API token key in ``keys``, or ``AnonymousUser`` (one statement
    from the event loop for all of them: ``chatsite.db_batch``)."""
    from chatsite import async_db

    sql, attnames = _token_user_sql()
    rows = await async_db.fetchall(sql, {"keys": list(dict.fromkeys(keys))})
    model = get_user_model()
    found = {row[0]: row for row in rows}
    users = []
    for key in keys:
        row = found.get(key)
        users.append(AnonymousUser() if row is None else model.from_db("default", attnames[1:], row[1:]))
    return users


async def _user_for_token(key: str):
    """The active user whose API token is ``key``, or ``AnonymousUser``: from ``token_users``,
    else one statement sent from the event loop (``chatsite.async_db``: no hop on the node's one
    database thread; a hop elsewhere than PostgreSQL), shared with the other handshakes queued on
    the loop meanwhile (``chatsite.db_batch``; ``TimeoutError`` past ``TOKEN_TIMEOUT``). Raises ``psycopg.Error`` /
    ``psycopg_pool.PoolTimeout`` (Django's ``DatabaseError`` off PostgreSQL) when the database
    cannot be reached."""
    from chatsite import async_db, db_batch

    found = token_users.get(key)
    if found is not None:
        return found[0]
    if not async_db.available():
        user = await _user_for_token_orm(key)
    else:
        user = await db_batch.batcher("rooms.auth.tokens", _users_for_tokens).call(key, timeout=TOKEN_TIMEOUT)
    if user.is_authenticated:
        token_users.put(key, user)
    return user


# Scope entry: the session auth hash (``_auth_user_hash``) the session held when its user was
# resolved (``SocketAuth``); ``SocketConsumer`` checks it against the password.
SESSION_HASH_SCOPE_KEY = "chatsite.session_hash"

# What the database or its pool raises when it cannot be reached (TimeoutError: db_batch's wait).
_UNREACHABLE = None


def _unreachable_errors() -> tuple:
    global _UNREACHABLE
    if _UNREACHABLE is None:
        from django.db import DatabaseError
        from psycopg import Error as PsycopgError
        from psycopg_pool import PoolTimeout

        _UNREACHABLE = (DatabaseError, PsycopgError, PoolTimeout, TimeoutError)
    return _UNREACHABLE


class SocketAuth:
    """ASGI wrapper of the socket routes: who the socket belongs to, in one step.

    It puts in a copy of the scope what channels' ``AuthMiddlewareStack`` and a token check
    did as four middlewares (see the module docstring for the precedence):

    - ``cookies``: the ``Cookie`` header parsed (Django's ``request.COOKIES`` format);
    - ``session``: the session store for the session cookie (not read until used);
    - ``user``: with an ``Authorization`` header, the user of ``Token <key>`` (``AnonymousUser``
      when the key is unknown, malformed or its user inactive) and ``auth_token`` the key it
      accepted (else None); without one, the session's user (``AnonymousUser`` without a session
      cookie, no database hop), from ``session_users`` when this node looked the session up less
      than its ``ttl`` ago, with its auth hash in ``scope[SESSION_HASH_SCOPE_KEY]``; else
      channels' ``get_user`` (one hop: the session row and the user row, the auth hash checked).

    When the database cannot be reached for that, the socket is accepted and closed with 4503
    (try again later) instead of failing its handshake with a server error; past this step the
    consumers answer their own (``rooms.consumers.SocketConsumer``).

    The wrappers below it return their application's awaitable (``chatsite.asgi_chain``), so
    this coroutine is the last frame between the socket's task and its consumer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        try:
            scope = await self.resolve(scope)
        except _unreachable_errors():
            logger.warning("refusing a socket: the database cannot be reached for authentication")
            await refuse_unstarted(receive, send, 4503)
            return None
        inner = self.app(scope, receive, send)
        del scope  # the consumer has its own copy: this frame holds none for the socket's life
        return await inner

    async def resolve(self, scope) -> dict:
        """A copy of ``scope`` with ``cookies``, ``session``, ``user`` (and ``auth_token`` when an
        ``Authorization`` header came). Raises what the database raises when it is unreachable."""
        scope = dict(scope)
        cookie = None
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookie = value
                break
        cookies = parse_cookie(cookie.decode("latin-1")) if cookie is not None else {}
        scope["cookies"] = cookies
        session = _session_store()(cookies.get(settings.SESSION_COOKIE_NAME))
        scope["session"] = session
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
            return scope
        key = session.session_key
        if not key:
            scope["user"] = AnonymousUser()
            return scope
        found = session_users.get(key)
        if found is not None:
            scope["user"], scope[SESSION_HASH_SCOPE_KEY] = found
            return scope
        user = await get_user(scope)
        scope["user"] = user
        if user.is_authenticated:
            auth_hash = session.get(HASH_SESSION_KEY)  # loaded by get_user: no query
            session_users.put(key, user, auth_hash)
            scope[SESSION_HASH_SCOPE_KEY] = auth_hash
        return scope


def _session_store():
    """The ``SessionStore`` class of ``SESSION_ENGINE`` (read each time: tests may change it)."""
    return import_module(settings.SESSION_ENGINE).SessionStore


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _origin_netloc(netloc: str, scheme: str) -> str:
    host, sep, port = netloc.lower().rpartition(":")
    if sep and "]" not in port and port == _DEFAULT_PORTS.get(scheme):
        return host
    return netloc.lower()


def trusted_origin(origin: bytes) -> bool:
    """Whether ``origin`` is listed in ``CSRF_TRUSTED_ORIGINS`` (e.g. a site behind a proxy)."""
    return origin.decode("latin-1") in settings.CSRF_TRUSTED_ORIGINS


def same_origin(scope, origin: bytes) -> bool:
    """Whether ``origin`` (the Origin header) is this socket's own origin: the scheme matching
    ws/wss, and host and port equal to the ``Host`` header's (default ports ignored)."""
    try:
        parsed = urlsplit(origin.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return False
    host = _header(scope, b"host")
    if host is None:
        return False
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    return parsed.scheme == scheme and _origin_netloc(parsed.netloc, scheme) == _origin_netloc(
        host.decode("latin-1"), scheme
    )


class _CountedOriginValidator(ChannelsOriginValidator):
    """channels' Origin check, counting each refusal in ``chatsite_ws_origin_refused_total``."""

    def valid_origin(self, parsed_origin) -> bool:
        if super().valid_origin(parsed_origin):
            return True
        metrics.ORIGIN_REFUSED.inc()
        return False


class OriginValidator:
    """Refuses (HTTP 403 at the handshake) a socket whose Origin is not its own origin or whose
    host is not allowed (see the module docstring); a handshake with an ``Authorization`` header
    and no ``Origin`` header passes (a native client). A present Origin is always checked. Each
    refusal is counted in ``chatsite_ws_origin_refused_total``. Returns the application's (or
    the refusal's) awaitable: ``chatsite.asgi_chain``."""

    _asgi_single_callable = True

    def __init__(self, app):
        self.app = app
        # channels' AllowedHostsOriginValidator (its host list), counting refusals.
        self.checked = _CountedOriginValidator(app, AllowedHostsOriginValidator(app).allowed_origins)

    def __call__(self, scope, receive, send):
        origin = _header(scope, b"origin")
        if origin is None and _header(scope, b"authorization") is not None:
            return self.app(scope, receive, send)
        if origin is not None and trusted_origin(origin):
            return self.app(scope, receive, send)
        if origin is not None and not same_origin(scope, origin):
            metrics.ORIGIN_REFUSED.inc()
            return WebsocketDenier()(scope, receive, send)
        if self.checked.valid_origin(_parsed_origin(scope)):
            return self.app(scope, receive, send)
        return WebsocketDenier()(scope, receive, send)


def _parsed_origin(scope):
    """The last ``Origin`` header parsed (``urlparse``), or None: what channels'
    ``OriginValidator`` gives its ``valid_origin``."""
    parsed = None
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            try:
                parsed = urlparse(value.decode("latin1"))
            except UnicodeDecodeError:
                pass
    return parsed


async def refuse_unstarted(receive, send, close_code: int) -> None:
    """Refuse a socket no consumer could be started for: answer its ``websocket.connect`` with
    an accept and a close with ``close_code`` (a code browsers can read; a refused handshake
    shows them only 1006)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": close_code})
