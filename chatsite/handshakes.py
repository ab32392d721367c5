"""A bound on the WebSocket handshakes one node works on at once (``WS_HANDSHAKES_IN_FLIGHT``).

Why: when a node stops, its members all reconnect to the other nodes within a second (the room
page reconnects within 0-2 s on 1012, and after 1 s ±20 % on a dropped connection). A handshake costs
a node several database hops on its one database thread (the token, the room and membership,
the access check and ``last_seq``) and a few Redis calls. Unbounded, thousands of them queue
behind each other past daphne's 5 s handshake timeout: daphne drops the client ("did not receive
a valid HTTP response"), the consumer still does its work for nobody, and the client retries
into a longer queue. ``python -m bench reconnect-storm`` measured that collapse: 3,000 members of
a stopped node, 2,561 not back after 80 s (bench/RESULTS.md).

What: ``HandshakeLimit`` wraps the WebSocket side of ``chatsite.asgi``. A handshake is *in
flight* from its ``websocket.connect`` until the application accepts or closes the socket.
Beyond ``WS_HANDSHAKES_IN_FLIGHT`` in flight on this node, a new one is accepted and closed at
once with 1013 (RFC 6455 "Try Again Later"), before any database or Redis work: the client
reconnects with backoff and jitter (the room page does), and the handshakes already admitted
finish inside the timeout. Refusals are counted in
``chatsite_rate_limited_total{scope="ws_handshakes"}``. 0 (the default) turns the bound off:
with 50 the storm still did not come back within 10 s (bench/RESULTS.md), so it is opt-in.
"""

from django.conf import settings

from rooms import metrics

CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 registry: "Try Again Later"


class HandshakeLimit:
    """ASGI middleware for the ``websocket`` scope: at most ``WS_HANDSHAKES_IN_FLIGHT`` handshakes
    in flight in this process (read per handshake, so tests may change it); others get close
    1013 (see the module docstring)."""

    _asgi_single_callable = True  # chatsite.asgi_chain: returns the app's awaitable

    def __init__(self, app):
        self.app = app
        self.in_flight = 0

    def __call__(self, scope, receive, send):
        limit = settings.WS_HANDSHAKES_IN_FLIGHT
        if scope["type"] != "websocket" or limit <= 0:
            return self.app(scope, receive, send)  # off: nothing of this stays under the socket
        return self.limited(scope, receive, send, limit)

    async def limited(self, scope, receive, send, limit: int):
        """The socket's application with the bound: refused with 1013 over ``limit``; else
        counted in flight until it accepts or closes the socket, or ends."""
        if self.in_flight >= limit:
            metrics.RATE_LIMITED.labels(scope="ws_handshakes").inc()
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})
            return None
        self.in_flight += 1
        counted = True

        def done() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.in_flight -= 1

        async def counting_send(message):
            if message["type"] in ("websocket.accept", "websocket.close", "websocket.http.response.start"):
                done()
            await send(message)

        try:
            return await self.app(scope, receive, counting_send)
        finally:
            done()
