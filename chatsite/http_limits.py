"""A bound on the HTTP requests one client has running at once on one node.

Why: Django's ASGI handler runs each request's view in a thread of its own, and every view
that touches the database holds one of the node's pooled connections (``DATABASE_POOL_MAX_SIZE``,
10) while it runs. A script sending 150 requests at once (valid or throttled: authentication
and the throttle need the database too) had 150 threads queue for 10 connections; past
``DATABASE_POOL_TIMEOUT`` (1.5 s) every other user's request on that node answered 503
``unavailable``, and the node logged a database outage.

What: ``HttpInFlightLimit`` wraps the HTTP side of ``chatsite.asgi``, inside
``TrustedProxyMiddleware`` (so the client address is the real one behind a trusted balancer).
Each request runs under two keys on this node:

- its credential, the ``Authorization`` header or else the session cookie: at most
  ``HTTP_REQUESTS_IN_FLIGHT`` (default 8) running at once;
- its client address (an IPv6 one as its /64, as the log-in throttle counts), whatever the
  credential, none included (a script varying made-up tokens): at most
  ``HTTP_REQUESTS_IN_FLIGHT_PER_ADDRESS`` (default 16; offices behind one NAT address).

A request over a bound waits its turn in the node's event loop (no thread, no database
connection): a page over HTTP/2 asking for 30 thumbnails at once gets them all, 8 at a time. At
most ``QUEUE_FACTOR`` times the bound wait per key, each at most ``QUEUE_WAIT`` seconds; beyond
either, the request is answered at once with 429 and ``Retry-After: 1``: under ``/api/`` the
API's body ``{"detail": str, "code": "rate_limited", "retry_after": 1}``, elsewhere plain text.
Refusals are counted in ``chatsite_rate_limited_total{scope="http_in_flight"}``. Static files
(``STATIC_URL``), ``/healthz`` and ``/metrics`` are not bounded. 0 turns a bound off.
"""

import asyncio
import json

from django.conf import settings
from django.http.cookie import parse_cookie

from chatsite.proxy import address_key
from rooms import metrics
from rooms.auth import _header

RETRY_AFTER = 1  # second: requests in flight end within milliseconds to a second
REFUSED_DETAIL = "Too many requests at once from this client; wait for the ones in flight."
QUEUE_FACTOR = 8  # requests that may wait per key, as a multiple of its bound
QUEUE_WAIT = 10.0  # seconds a request may wait for its turn
_UNCOUNTED = ("/healthz", "/metrics")


def _address(scope) -> str:
    return address_key((scope.get("client") or ("",))[0] or "")


def client_keys(scope) -> tuple[str | None, str]:
    """``(credential key or None, address key)`` of an HTTP ``scope``: the credential is the
    ``Authorization`` header, else the session cookie (``SESSION_COOKIE_NAME``); the address is
    ``scope["client"][0]``, an IPv6 one as its /64 ("" when the server gives none)."""
    address = f"addr:{_address(scope)}"
    authorization = _header(scope, b"authorization")
    if authorization:
        return f"auth:{authorization.decode('latin-1')}", address
    cookie = _header(scope, b"cookie")
    if cookie:
        session = parse_cookie(cookie.decode("latin-1")).get(settings.SESSION_COOKIE_NAME)
        if session:
            return f"session:{session}", address
    return None, address


class _Turns:
    """One key's turns: ``limit`` requests run at once, the others wait in order."""

    def __init__(self, limit: int):
        self.limit = limit
        self.running = 0
        self.waiting: list[asyncio.Future] = []

    @property
    def users(self) -> int:
        return self.running + len(self.waiting)

    async def acquire(self, timeout: float) -> bool:
        if self.running < self.limit and not self.waiting:
            self.running += 1
            return True
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), timeout)
            return True
        except (TimeoutError, asyncio.CancelledError):
            if turn.done() and not turn.cancelled():  # handed over just as it gave up: pass it on
                self.release()
            else:
                turn.cancel()
                self.waiting.remove(turn)
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the request itself is cancelled
                raise
            return False

    def release(self) -> None:
        while self.waiting:
            turn = self.waiting.pop(0)
            if not turn.done():
                turn.set_result(None)  # the running count passes to it
                return
        self.running -= 1


class HttpInFlightLimit:
    """ASGI middleware for the ``http`` scope (see the module docstring). The bounds are read
    per request, so tests may change them."""

    def __init__(self, app):
        self.app = app
        self.turns: dict[str, _Turns] = {}

    async def __call__(self, scope, receive, send):
        per_client = settings.HTTP_REQUESTS_IN_FLIGHT
        per_address = settings.HTTP_REQUESTS_IN_FLIGHT_PER_ADDRESS
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or (per_client <= 0 and per_address <= 0)
            or path.startswith(_static_prefix())
            or path in _UNCOUNTED
        ):
            return await self.app(scope, receive, send)
        credential, address = client_keys(scope)
        bounds = [(k, b) for k, b in ((credential, per_client), (address, per_address)) if k and b > 0]
        held: list[_Turns] = []
        try:
            for key, bound in bounds:
                turns = self.turns.get(key)
                if turns is None:
                    turns = self.turns[key] = _Turns(bound)
                if turns.users >= bound * (1 + QUEUE_FACTOR) or not await turns.acquire(QUEUE_WAIT):
                    self._forget_if_idle(key, turns)
                    metrics.RATE_LIMITED.labels(scope="http_in_flight").inc()
                    await _refuse(path, send)
                    return None
                held.append(turns)
            return await self.app(scope, receive, send)
        finally:
            for (key, _), turns in zip(bounds, held):
                turns.release()
                self._forget_if_idle(key, turns)

    def _forget_if_idle(self, key: str, turns: _Turns) -> None:
        if turns.users == 0 and self.turns.get(key) is turns:
            del self.turns[key]


def _static_prefix() -> str:
    url = settings.STATIC_URL or "/static/"
    return url if url.startswith("/") else f"/{url}"


async def _refuse(path: str, send) -> None:
    if path.startswith("/api/"):
        body = json.dumps(
            {"detail": REFUSED_DETAIL, "code": "rate_limited", "retry_after": RETRY_AFTER}
        ).encode()
        content_type = b"application/json"
    else:
        body, content_type = REFUSED_DETAIL.encode(), b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", content_type),
                (b"retry-after", str(RETRY_AFTER).encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
