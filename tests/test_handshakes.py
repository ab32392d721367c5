"""chatsite.handshakes: at most WS_HANDSHAKES_IN_FLIGHT WebSocket handshakes in flight per node;
one more is closed with 1013 before any work, and a slot frees when a handshake ends."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from chatsite import asgi
from chatsite.handshakes import CLOSE_TRY_AGAIN_LATER, HandshakeLimit
from rooms import metrics
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _limit():
    """The HandshakeLimit in chatsite.asgi's websocket route."""
    router = asgi.application.app if hasattr(asgi.application, "app") else asgi.application
    app = router.application_mapping["websocket"]
    assert isinstance(app, HandshakeLimit)
    return app


def _refused():
    return metrics.RATE_LIMITED.labels(scope="ws_handshakes")._value.get()


async def test_a_handshake_over_the_bound_is_closed_1013_and_a_freed_slot_admits_again(
    ws, room, user, settings
):
    settings.WS_HANDSHAKES_IN_FLIGHT = 2
    limit = _limit()
    key = await database_sync_to_async(factories.token_for)(user)
    path = f"/ws/rooms/{room.slug}/"
    limit.in_flight += 2  # two handshakes of other clients, still being worked on
    try:
        before = _refused()
        conn = await ws(path, token=key, origin=None)
        assert await conn.connect()
        assert await conn.close_code() == CLOSE_TRY_AGAIN_LATER
        assert _refused() == before + 1
    finally:
        limit.in_flight -= 2
    conn = await ws(path, token=key, origin=None)
    assert await conn.connect()
    assert (await conn.receive_type("hello"))["room"] == room.slug
    assert limit.in_flight == 0  # accepted: no longer in flight


async def test_refused_and_finished_handshakes_free_their_slot(ws, room, user, settings):
    settings.WS_HANDSHAKES_IN_FLIGHT = 1
    limit = _limit()
    conn = await ws("/ws/rooms/no-such-room/", user=user)
    assert await conn.connect()
    assert await conn.close_code() == 4404
    assert limit.in_flight == 0
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    await conn.receive_type("hello")
    assert limit.in_flight == 0


async def test_zero_turns_the_bound_off(ws, room, user, settings):
    settings.WS_HANDSHAKES_IN_FLIGHT = 0
    limit = _limit()
    limit.in_flight += 1000
    try:
        conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
        assert await conn.connect()
        await conn.receive_type("hello")
    finally:
        limit.in_flight -= 1000


async def test_handshakes_held_in_flight_count_until_accepted():
    """With an application that holds its handshakes, the one over the bound is refused while
    the others are waiting, and they are all admitted once released."""
    from django.test import override_settings

    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await release.wait()
        await send({"type": "websocket.accept"})
        await receive()

    limit = HandshakeLimit(slow_app)
    with override_settings(WS_HANDSHAKES_IN_FLIGHT=2):
        held = [WebsocketCommunicator(limit, "/ws/x/") for _ in range(2)]
        tasks = [asyncio.ensure_future(c.connect(timeout=5)) for c in held]
        await asyncio.sleep(0.1)
        assert limit.in_flight == 2
        extra = WebsocketCommunicator(limit, "/ws/x/")
        assert (await extra.connect())[0]
        closed = await extra.receive_output()
        assert closed == {"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER}
        release.set()
        assert all(ok for ok, _ in await asyncio.gather(*tasks))
        assert limit.in_flight == 0
        for c in held:
            await c.disconnect()


def test_autobahns_per_connection_debug_text_is_made_only_when_written():
    """``chatsite.serve.lazy_handshake_debug``: the same text when formatted, none made otherwise."""
    import pprint

    from autobahn.websocket import protocol

    from chatsite import serve

    original = protocol.pformat
    try:
        serve.lazy_handshake_debug()
        settings = [("autoPingInterval", 20, "Factory"), ("maxMessagePayloadSize", 65536, "Factory")]
        lazy = protocol.pformat(settings)
        assert not isinstance(lazy, str)
        assert f"\n{lazy}" == "\n" + pprint.pformat(settings)  # txaio formats it so
    finally:
        protocol.pformat = original


def test_websocket_settings_live_on_the_protocol_class_not_in_each_connection():
    """``chatsite.serve.shared_protocol_options``: a new connection copies none of autobahn's 29
    settings into its own ``__dict__`` (about 1.8 KB per idle socket, bench.socket_memory) and
    still runs with the factory's values."""
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet.testing import StringTransport

    from chatsite import serve

    def connected(share: bool):
        factory = WebSocketServerFactory()
        factory.protocol = type("Protocol", (WebSocketServerProtocol,), {})
        factory.setProtocolOptions(autoPingInterval=7, maxMessagePayloadSize=1234, failByDrop=False)
        if share:
            serve.shared_protocol_options(factory)
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        return protocol

    copied = set(connected(share=False).CONFIG_ATTRS) & set(vars(connected(share=False)))
    assert len(copied) == len(WebSocketServerProtocol.CONFIG_ATTRS)  # autobahn's own way
    protocol = connected(share=True)
    assert not set(protocol.CONFIG_ATTRS) & set(vars(protocol))
    assert (protocol.autoPingInterval, protocol.maxMessagePayloadSize, protocol.failByDrop) == (
        7,
        1234,
        False,
    )
    # a function among them stays a plain function, not a method of the connection
    offers = ["an offer"]
    plain = connected(share=False)
    assert protocol.perMessageCompressionAccept(offers) == plain.perMessageCompressionAccept(offers)


def test_an_open_sockets_protocol_lets_go_of_its_handshake_but_keeps_the_path_daphne_logs():
    """``chatsite.serve.handshake_state_dropped``: once open, autobahn's handshake-only state is
    gone and daphne's request is reduced to its path (read by its access log on close)."""
    import types

    from chatsite import serve

    class Opened:  # as daphne's onOpen: logs the request's path
        def onOpen(self):
            self.logged = self.request.path

    protocol = serve.handshake_state_dropped(Opened)()
    for name in serve.HANDSHAKE_ONLY_STATE:
        setattr(protocol, name, b"GET /ws/rooms/lobby/ HTTP/1.1")
    protocol.request = types.SimpleNamespace(path="/ws/rooms/lobby/", headers={"host": "x"}, peer="tcp:1")
    protocol.onOpen()
    assert protocol.logged == "/ws/rooms/lobby/"
    assert [name for name in serve.HANDSHAKE_ONLY_STATE if hasattr(protocol, name)] == []
    assert protocol.request.path == "/ws/rooms/lobby/" and not hasattr(protocol.request, "headers")
