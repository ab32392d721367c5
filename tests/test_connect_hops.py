"""What a room socket's handshake costs the node's one database thread (issue 16, item 3: a
reconnect storm queues handshakes behind each other there), counted hop by hop through
``chatsite.asgi.application`` on the real PostgreSQL and Redis, and why the per-node caches that
save hops cannot let a revoked credential in.

Before (main at fa248d5) a token socket resuming with ``?after_seq=`` cost 5 hops (the session
lookup with no session, the token, ``_join``, the access check with ``last_seq``, the replay);
a session socket 4. Then one (``_enter``) once the node knows the room and the credential,
the credential's lookup (a session: one hop; a token: one statement from the event loop, no
hop) and the room's id (one hop) the first time. Now a member's socket costs no hop once the node
knows the room and the credential: its access row and room come from one statement sent from the
event loop (shared with the handshakes queued meanwhile, ``rooms.entry.enter_async``), its
replay from one more; a new member of a public room still costs one hop (``enter``: the join is
a write with its event).
"""

import asyncio

import pytest
from channels.db import DatabaseSyncToAsync, database_sync_to_async
from django.db import connection

from chatsite import async_db
from rooms import services
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


class Hops:
    """Hops on the database thread (the name of the function each ran) and the statements they
    sent, and statements sent from the event loop (``chatsite.async_db``), while ``on``."""

    def __init__(self):
        self.on = False
        self.hops: list[str] = []
        self.statements = 0
        self.loop_statements = 0

    def start(self) -> None:
        self.hops, self.statements, self.loop_statements, self.on = [], 0, 0, True

    def stop(self) -> None:
        self.on = False

    def statement(self, execute, sql, params, many, context):
        self.statements += 1
        return execute(sql, params, many, context)


@pytest.fixture
def hops(monkeypatch):
    counted = Hops()
    handler = DatabaseSyncToAsync.thread_handler
    run = async_db._run

    def thread_handler(self, loop, *args, **kwargs):
        if not counted.on:
            return handler(self, loop, *args, **kwargs)
        func = getattr(self.func, "func", self.func)  # a functools.partial's function
        counted.hops.append(getattr(func, "__name__", repr(func)))
        with connection.execute_wrapper(counted.statement):
            return handler(self, loop, *args, **kwargs)

    async def counting_run(sql, params, **kwargs):
        if counted.on:
            counted.loop_statements += 1
        return await run(sql, params, **kwargs)

    monkeypatch.setattr(DatabaseSyncToAsync, "thread_handler", thread_handler)
    monkeypatch.setattr(async_db, "_run", counting_run)
    return counted


@database_sync_to_async
def post(room, user, n, start=0):
    for i in range(start, start + n):
        services.message_post(room=room, author=user, body=f"m{i}", client_msg_id=f"h{i}")


async def resume_counted(ws, hops, path, **auth) -> list[dict]:
    """Open ``path``, read up to ``resumed`` with the hops counted; the frames read."""
    conn = await ws(path, **auth)
    hops.start()
    assert await conn.connect()
    frames = [await conn.receive_type("hello")]
    while frames[-1]["type"] != "resumed":
        frames.append(await conn.receive())
    hops.stop()
    await conn.close()
    return frames


async def test_a_token_socket_resuming_with_after_seq_costs_no_hop_once_the_node_knows_room_and_token(
    ws, hops, room, user, other_user
):
    await post(room, user, 5)
    token = await database_sync_to_async(factories.token_for)(other_user)
    path = f"/ws/rooms/{room.slug}/?after_seq=2"

    frames = await resume_counted(ws, hops, path, token=token, origin=None)
    assert [f.get("message", {}).get("seq") for f in frames[1:-1]] == [3, 4, 5]
    # first time on this node: the room's id (one hop), the token and the access row (from the
    # event loop), and as bob is not yet a member, the join on the thread (one hop)
    assert hops.hops == ["_room_id", "enter"], hops.hops
    assert hops.loop_statements == 2

    await post(room, user, 3, start=5)
    frames = await resume_counted(ws, hops, f"/ws/rooms/{room.slug}/?after_seq=5", token=token, origin=None)
    assert frames[0]["last_seq"] == 8
    assert [f["type"] for f in frames] == ["hello", "message", "message", "message", "resumed"]
    assert [f["message"]["seq"] for f in frames[1:4]] == [6, 7, 8]
    assert frames[-1] == {"type": "resumed", "last_seq": 8}
    # a member now, the token and the room id known: no hop; the access row with the room, then
    # the replay's messages (with their mentions, reactions and attachments: rooms.message_shape)
    assert hops.hops == [], hops.hops
    assert hops.loop_statements == 2


async def test_a_session_socket_resuming_costs_no_hop_once_the_node_knows_its_session(
    ws, hops, room, user, other_user
):
    await post(room, user, 3)
    key = await database_sync_to_async(factories.session_key_for)(other_user)
    cookie = f"sessionid={key}"
    await resume_counted(ws, hops, f"/ws/rooms/{room.slug}/?after_seq=0", cookie=cookie)
    assert hops.hops == ["get_user", "_room_id", "enter"], hops.hops

    frames = await resume_counted(ws, hops, f"/ws/rooms/{room.slug}/?after_seq=1", cookie=cookie)
    assert [f["type"] for f in frames] == ["hello", "message", "message", "resumed"]
    assert hops.hops == [], hops.hops
    assert hops.loop_statements == 2


async def test_a_socket_without_after_seq_costs_one_statement_and_no_hop(ws, hops, room, user, other_user):
    token = await database_sync_to_async(factories.token_for)(other_user)
    first = await ws(f"/ws/rooms/{room.slug}/", token=token, origin=None)
    assert await first.connect()
    await first.receive_type("hello")
    await first.close()
    again = await ws(f"/ws/rooms/{room.slug}/", token=token, origin=None)
    hops.start()
    assert await again.connect()
    assert (await again.receive_type("hello"))["last_seq"] == 0
    hops.stop()
    assert hops.hops == [], hops.hops
    assert hops.loop_statements == 1
    await again.close()


async def connect_code(ws, path, **auth):
    """The socket's close code (refused), or "hello"."""
    conn = await ws(path, **auth)
    assert await conn.connect()
    output = await conn.communicator.receive_output(timeout=3)
    if output["type"] == "websocket.close":
        code = output.get("code")
    else:
        code = "hello" if '"hello"' in output.get("text", "") else output
    await conn.close()
    return code


async def test_a_cached_token_revoked_or_its_user_deactivated_is_refused_at_once(ws, room, user, other_user):
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from rooms import auth

    token = await database_sync_to_async(factories.token_for)(other_user)
    path = f"/ws/rooms/{room.slug}/?after_seq=0"
    assert await connect_code(ws, path, token=token, origin=None) == "hello"
    assert auth.token_users.get(token) is not None  # cached on this node

    await database_sync_to_async(lambda: Token.objects.filter(key=token).delete())()
    assert auth.token_users.get(token) is not None  # still cached ...
    assert await connect_code(ws, path, token=token, origin=None) == 4401  # ... and refused
    assert await connect_code(ws, "/ws/user/", token=token, origin=None) == 4401

    token = await database_sync_to_async(factories.token_for)(other_user)
    assert await connect_code(ws, path, token=token, origin=None) == "hello"
    await database_sync_to_async(
        lambda: get_user_model().objects.filter(pk=other_user.pk).update(is_active=False)
    )()
    assert await connect_code(ws, path, token=token, origin=None) == 4401


async def test_a_cached_session_ended_or_outdated_by_a_password_change_is_refused_at_once(
    ws, room, user, other_user
):
    from django.contrib.sessions.models import Session

    from rooms import auth

    key = await database_sync_to_async(factories.session_key_for)(other_user)
    cookie = f"sessionid={key}"
    path = f"/ws/rooms/{room.slug}/?after_seq=0"
    assert await connect_code(ws, path, cookie=cookie) == "hello"
    assert await connect_code(ws, "/ws/user/", cookie=cookie) != 4401
    assert auth.session_users.get(key) is not None

    await database_sync_to_async(lambda: Session.objects.filter(session_key=key).delete())()
    assert auth.session_users.get(key) is not None  # still cached: refused all the same
    assert await connect_code(ws, path, cookie=cookie) == 4401
    assert await connect_code(ws, "/ws/user/", cookie=cookie) == 4401

    key = await database_sync_to_async(factories.session_key_for)(other_user)
    cookie = f"sessionid={key}"
    assert await connect_code(ws, path, cookie=cookie) == "hello"

    def change_password():
        other_user.set_password("a whole new secret 42")
        other_user.save(update_fields=["password"])

    await database_sync_to_async(change_password)()
    assert await connect_code(ws, path, cookie=cookie) == 4401


async def test_a_room_replaced_under_its_slug_is_followed_not_confused(ws, room, user, other_user):
    """The node's slug → id hint is checked in the hop: a room deleted and made again under the
    same slug is the new room (its group, its seqs)."""
    from rooms import consumers
    from rooms.models import Room

    await post(room, user, 2)
    token = await database_sync_to_async(factories.token_for)(other_user)
    assert await connect_code(ws, f"/ws/rooms/{room.slug}/", token=token, origin=None) == "hello"
    old_id = consumers.room_ids.get(room.slug)
    assert old_id == room.pk

    def replace():
        Room.objects.filter(pk=room.pk).delete()
        return factories.make_room(created_by=user, slug="lobby", name="Lobby again")

    new_room = await database_sync_to_async(replace)()
    conn = await ws(f"/ws/rooms/{room.slug}/?after_seq=0", token=token, origin=None)
    assert await conn.connect()
    hello = await conn.receive_type("hello")
    assert hello["last_seq"] == 0
    assert await conn.receive() == {"type": "resumed", "last_seq": 0}
    assert consumers.room_ids.get(room.slug) == new_room.pk
    await post(new_room, user, 1)
    assert (await conn.receive_type("message"))["message"]["seq"] == 1  # the new room's group
    await conn.close()
    await asyncio.sleep(0)


async def test_a_storm_of_member_handshakes_shares_its_statements_and_costs_no_hop(ws, hops, room, user):
    """40 members of a room come back at once (a stopped node's members reconnecting): each gets
    its ``hello``, none costs a hop on the database thread, and their token lookups and access
    rows are read in a few shared statements rather than one each (``chatsite.db_batch``)."""
    from chatsite import db_batch
    from rooms import services

    def members():
        tokens = []
        for i in range(40):
            member = factories.make_user(f"member{i}")
            services.member_join(room=room, user=member)
            tokens.append(factories.token_for(member))
        return tokens

    tokens = await database_sync_to_async(members)()
    await post(room, user, 3)
    # the node has seen the room (another socket is in it), not these tokens
    assert await connect_code(ws, f"/ws/rooms/{room.slug}/", token=tokens[0], origin=None) == "hello"
    conns = [await ws(f"/ws/rooms/{room.slug}/?after_seq=1", token=t, origin=None) for t in tokens[1:]]
    hops.start()
    assert all(await asyncio.gather(*(c.connect() for c in conns)))
    hellos = await asyncio.gather(*(c.receive_type("hello") for c in conns))

    async def replayed(conn) -> list:
        frames = [await conn.receive()]
        while frames[-1]["type"] != "resumed":
            frames.append(await conn.receive())
        return [f["message"]["seq"] for f in frames[:-1]] + [frames[-1]]

    replays = await asyncio.gather(*(replayed(c) for c in conns))
    hops.stop()
    assert {h["last_seq"] for h in hellos} == {3}
    assert all(r == [2, 3, {"type": "resumed", "last_seq": 3}] for r in replays), replays[:3]
    assert hops.hops == [], hops.hops
    loop_batchers = db_batch._batchers[asyncio.get_running_loop()]
    tokens_read, entries_read = loop_batchers["rooms.auth.tokens"], loop_batchers["rooms.entry"]
    assert tokens_read.items == 40 and tokens_read.statements <= 5, vars(tokens_read)
    assert entries_read.items == 40 and entries_read.statements <= 5, vars(entries_read)
    # 39 replays of one statement each, and the shared ones
    assert hops.loop_statements == 39 + tokens_read.statements - 1 + entries_read.statements - 1
    for c in conns:
        await c.close()
