"""Who a log line is about: node, request or socket, user, room (issue 15, operators' view).

Context variables hold, for the code running on behalf of one HTTP request or one WebSocket:

- ``request_id``: the ``X-Request-ID`` a trusted proxy sent (``TRUSTED_PROXIES``; kept in the
  ASGI scope by ``chatsite.proxy.TrustedProxyMiddleware``, at most 128 characters of
  ``[A-Za-z0-9._:-]``), else a new 32-hex-digit id. HTTP responses echo it in ``X-Request-ID``.
- ``socket_id``: a WebSocket's id, chosen the same way at its handshake, for its whole life.
- ``user_id``: the signed-in user's primary key (``None`` when anonymous, or on a request whose
  user nothing has loaded yet: a log line never costs a query).
- ``room``: the room's slug, on a socket.

``RequestContextMiddleware`` (Django, after ``AuthenticationMiddleware``) sets them for a request;
``SocketContext`` (wrapping the room consumer in ``rooms/routing.py``) for a socket, in the task
that runs the consumer, so every frame's log lines carry them; ``database_sync_to_async`` copies
them into its thread. ``ContextFilter`` copies them, and ``server_id`` (``SERVER_ID``), onto every
log record; with ``LOG_FORMAT=json`` (chatsite/settings.py) each record is one JSON object:

    {"time": "2026-12-04T18:00:00,123", "level": "INFO", "logger": "chatsite.request",
     "message": "...", "server_id": "node-2", "request_id": "6f1c...", "socket_id": null,
     "user_id": 7, "room": null}

(plus ``exc_info`` with the traceback for an exception).
"""

import contextvars
import logging
import re
import uuid

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.utils.decorators import sync_and_async_middleware

request_id = contextvars.ContextVar("request_id", default=None)
socket_id = contextvars.ContextVar("socket_id", default=None)
user_id = contextvars.ContextVar("user_id", default=None)
room = contextvars.ContextVar("room", default=None)
# The request being served: its user is read from it only once something else loaded it (a log
# line never costs a database query, nor a synchronous one in async code).
current_request = contextvars.ContextVar("current_request", default=None)

FIELDS = ("server_id", "request_id", "socket_id", "user_id", "room")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def valid_request_id(value: str | None) -> str | None:
    """``value`` when it is usable as a request id (a proxy's ``X-Request-ID``), else None."""
    return value if value and _VALID_ID.match(value) else None


def new_id() -> str:
    return uuid.uuid4().hex


class ContextFilter(logging.Filter):
    """Adds ``server_id``, ``request_id``, ``socket_id``, ``user_id`` and ``room`` to each record
    (set on a handler, so records of every logger get them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.server_id = settings.SERVER_ID
        record.request_id = request_id.get()
        record.socket_id = socket_id.get()
        record.user_id = current_user_id()
        record.room = room.get()
        return True


def _user_pk(user) -> int | None:
    return (
        getattr(user, "pk", None) if user is not None and getattr(user, "is_authenticated", False) else None
    )


def current_user_id() -> int | None:
    """The socket's user id, or the request's once its user has been loaded (by the view, a
    permission check, a template), else None."""
    uid = user_id.get()
    request = current_request.get()
    if uid is None and request is not None:
        loaded = request.__dict__.get("_cached_user") or request.__dict__.get("_acached_user")
        uid = _user_pk(loaded)
    return uid


def _begin(request) -> str:
    scope = getattr(request, "scope", None) or {}
    rid = scope.get("request_id") or new_id()
    request_id.set(rid)
    current_request.set(request)
    return rid


@sync_and_async_middleware
def request_context_middleware(get_response):
    """Sets the request's log context and answers with ``X-Request-ID``. Async under daphne,
    sync under WSGI or the test client."""
    if iscoroutinefunction(get_response):

        async def middleware(request):
            rid = _begin(request)
            response = await get_response(request)
            response["X-Request-ID"] = rid
            return response
    else:

        def middleware(request):
            rid = _begin(request)
            response = get_response(request)
            response["X-Request-ID"] = rid
            return response

    return middleware


class SocketContext:
    """ASGI wrapper of a WebSocket consumer: sets ``socket_id``, ``user_id`` and ``room`` (the
    route's ``slug``) for the consumer's whole life, which runs in this same task. Returns the
    consumer's awaitable (``chatsite.asgi_chain``), so it must be called from inside the
    socket's task: below an ``async`` wrapper (``rooms.auth.SocketAuth``), never first."""

    _asgi_single_callable = True

    def __init__(self, app):
        self.app = app

    def __call__(self, scope, receive, send):
        socket_id.set(scope.get("request_id") or new_id())
        user_id.set(_user_pk(scope.get("user")))
        room.set((scope.get("url_route") or {}).get("kwargs", {}).get("slug"))
        return self.app(scope, receive, send)


def json_formatter():
    """The ``LOG_FORMAT=json`` formatter: python-json-logger, one object per line."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        ["asctime", "levelname", "name", "message", *FIELDS],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )
