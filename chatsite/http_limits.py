"""A bound on the HTTP requests one client has in flight on one node.

Why: Django's ASGI handler runs each request's view in a thread of its own, and every view
that touches the database holds one of the node's pooled connections (``DATABASE_POOL_MAX_SIZE``,
10) while it runs. A script sending 150 requests at once (valid or throttled: authentication
and the throttle need the database too) had 150 threads queue for 10 connections; past
``DATABASE_POOL_TIMEOUT`` (1.5 s) every other user's request on that node answered 503
``unavailable``, and the node logged a database outage. A browser has at most six requests in
flight per host, and the room page far fewer.

What: ``HttpInFlightLimit`` wraps the HTTP side of ``chatsite.asgi``, inside
``TrustedProxyMiddleware`` (so the client address is the real one behind a trusted balancer).
Each request counts, from its start to its end, against two keys on this node:

- its credential: the ``Authorization`` header, else the session cookie, else the client
  address; at most ``HTTP_REQUESTS_IN_FLIGHT`` (default 8);
- its client address, whatever the credential (a script varying made-up tokens); at most
  ``HTTP_REQUESTS_IN_FLIGHT_PER_ADDRESS`` (default 32: offices behind one NAT address).

One more is answered at once, before Django or the database, with 429 and ``Retry-After: 1``:
under ``/api/`` the API's body ``{"detail": str, "code": "rate_limited", "retry_after": 1}``,
elsewhere plain text. Refusals are counted in ``chatsite_rate_limited_total{scope="http_in_flight"}``.
Static files (``STATIC_URL``), ``/healthz`` and ``/metrics`` are not counted. 0 turns a bound off.
"""

import json

from django.conf import settings
from django.http.cookie import parse_cookie

from rooms import metrics

RETRY_AFTER = 1  # second: requests in flight end within milliseconds to a second
REFUSED_DETAIL = "Too many requests at once from this client; wait for the ones in flight."
_UNCOUNTED = ("/healthz", "/metrics")


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def client_keys(scope) -> tuple[str, str]:
    """``(credential key, address key)`` of an HTTP ``scope``: the credential is the
    ``Authorization`` header, else the session cookie (``SESSION_COOKIE_NAME``), else the client
    address; the address is ``scope["client"][0]`` ("" when the server gives none)."""
    client = scope.get("client") or ("",)
    address = f"addr:{client[0]}"
    authorization = _header(scope, b"authorization")
    if authorization:
        return f"auth:{authorization.decode('latin-1')}", address
    cookie = _header(scope, b"cookie")
    if cookie:
        session = parse_cookie(cookie.decode("latin-1")).get(settings.SESSION_COOKIE_NAME)
        if session:
            return f"session:{session}", address
    return address, address


class HttpInFlightLimit:
    """ASGI middleware for the ``http`` scope (see the module docstring). The bounds are read
    per request, so tests may change them."""

    def __init__(self, app):
        self.app = app
        self.in_flight: dict[str, int] = {}

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
        if credential == address:  # no credential: both bounds are the address's, the lower holds
            bounds = [b for b in (per_client, per_address) if b > 0]
            limits = {address: min(bounds)}
        else:
            limits = {k: b for k, b in ((credential, per_client), (address, per_address)) if b > 0}
        if any(limit <= self.in_flight.get(key, 0) for key, limit in limits.items()):
            metrics.RATE_LIMITED.labels(scope="http_in_flight").inc()
            await _refuse(path, send)
            return None
        for key in limits:
            self.in_flight[key] = self.in_flight.get(key, 0) + 1
        try:
            return await self.app(scope, receive, send)
        finally:
            for key in limits:
                left = self.in_flight[key] - 1
                if left:
                    self.in_flight[key] = left
                else:
                    del self.in_flight[key]


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
