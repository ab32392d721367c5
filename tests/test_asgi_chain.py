"""chatsite.asgi_chain and the socket route built with it (chatsite.asgi): the wrappers hand a
socket on without staying under it, and route as channels' routers do."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.urls import re_path

from chatsite.asgi_chain import ProtocolTypeRouter, URLRouter, consumer_app
from rooms.consumers import NotFoundConsumer
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def _recorder(name, seen):
    async def app(scope, receive, send):
        seen.append((name, scope))
        return name

    return app


async def test_the_url_router_routes_as_channels_does_and_returns_the_routes_awaitable():
    seen = []
    router = URLRouter(
        [
            re_path(r"^ws/rooms/(?P<slug>[^/]*)/$", _recorder("room", seen)),
            re_path(r"^ws/user/$", _recorder("user", seen)),
        ]
    )
    scope = {"type": "websocket", "path": "/ws/rooms/lobby/", "headers": []}
    handed = router(scope, None, None)
    assert asyncio.iscoroutine(handed) and seen == []  # nothing ran yet: the caller awaits it
    assert await handed == "room"
    name, inner = seen[0]
    assert inner["url_route"] == {"args": (), "kwargs": {"slug": "lobby"}}
    assert inner["path_remaining"] == "" and "url_route" not in scope  # a copy: the caller's unchanged

    assert (
        await router({"type": "websocket", "path": "/chat/ws/user/", "root_path": "/chat"}, None, None)
        == "user"
    )
    with pytest.raises(ValueError, match="No route found"):
        await router({"type": "websocket", "path": "/ws/nowhere/"}, None, None)
    with pytest.raises(ValueError, match="No route found"):  # outside the root path
        await router({"type": "websocket", "path": "/ws/user/", "root_path": "/chat"}, None, None)
    with pytest.raises(ValueError, match="No 'path'"):
        await router({"type": "websocket"}, None, None)


async def test_a_url_router_inside_another_that_finds_nothing_lets_the_outer_try_its_next_route():
    seen = []
    outer = URLRouter(
        [
            re_path(r"^ws/", URLRouter([re_path(r"^rooms/$", _recorder("rooms", seen))])),
            re_path(r"^ws/other/$", _recorder("other", seen)),
        ]
    )
    assert await outer({"type": "websocket", "path": "/ws/rooms/"}, None, None) == "rooms"
    assert await outer({"type": "websocket", "path": "/ws/other/"}, None, None) == "other"
    assert seen[0][1]["url_route"] == {"args": (), "kwargs": {}}


async def test_the_protocol_router_hands_each_scope_type_on_and_fails_an_unknown_one_when_awaited():
    seen = []
    router = ProtocolTypeRouter({"http": _recorder("http", seen), "websocket": _recorder("ws", seen)})
    assert await router({"type": "websocket"}, None, None) == "ws"
    assert await router({"type": "http"}, None, None) == "http"
    handed = router({"type": "lifespan"}, None, None)
    with pytest.raises(ValueError, match="lifespan"):
        await handed
    assert router.application_mapping["http"] is not None  # channels' attribute, for the tests


def test_consumer_app_makes_one_consumer_per_connection_as_as_asgi_does():
    app = consumer_app(NotFoundConsumer)
    assert app.consumer_class is NotFoundConsumer and app.consumer_initkwargs == {}
    first = app({"type": "websocket"}, None, None)
    second = app({"type": "websocket"}, None, None)
    assert (
        asyncio.iscoroutine(first)
        and first.cr_frame.f_locals["self"] is not (second.cr_frame.f_locals["self"])
    )
    first.close()
    second.close()


def _awaited_chain(task) -> list[str]:
    """The qualified names of the coroutines a task is suspended in, outermost first."""
    names, coro = [], task.get_coro()
    while asyncio.iscoroutine(coro):
        names.append(coro.__qualname__)
        coro = coro.cr_await
    return names


@pytest.mark.parametrize("auth", ["session", "token"])
async def test_an_open_room_socket_keeps_only_the_auth_step_and_its_consumer_on_its_stack(
    ws, room, user, auth
):
    """The whole socket route of ``chatsite.asgi``: past the handshake, the socket's task is
    suspended in ``SocketAuth`` and the consumer, not in one coroutine per wrapper (proxy,
    router, handshake bound, Origin check, cookies, session, user, token, URL router, log
    context, ``as_asgi``): fifteen before, about 6 KB per idle socket (bench/RESULTS.md)."""
    if auth == "token":
        key = await database_sync_to_async(factories.token_for)(user)
        conn = await ws(f"/ws/rooms/{room.slug}/", token=key, origin=None)
    else:
        conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    assert (await conn.receive())["type"] == "hello"
    chain = _awaited_chain(conn.communicator.future)
    assert chain[:2] == ["SocketAuth.__call__", "SocketConsumer.__call__"], chain
    assert not any("Middleware" in name or "Router" in name or "Context" in name for name in chain), chain
    await conn.close()
