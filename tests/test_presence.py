"""Presence and typing: in-process through chatsite.asgi (real Redis store and layer), and a dead
node's users going offline on real processes."""

import asyncio
import os
import time
import uuid
from contextlib import asynccontextmanager
from urllib.parse import urlencode

import pytest
import redis
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from tests import factories
from tests.nodes import Client, cluster, database_url_for_tests

pytestmark = pytest.mark.django_db(transaction=True)


async def member(ws, room, user):
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user, keep_presence=True)
    assert await conn.connect()
    await conn.receive_type("hello")
    return conn


async def next_of(conn, frame_type, timeout=3):
    """The next frame of ``frame_type``, skipping presence frames of other types."""
    while True:
        frame = await conn.receive(timeout=timeout)
        if frame["type"] == frame_type:
            return frame
        assert frame["type"] in ("presence", "presence.diff"), frame


async def drain(conn) -> list[dict]:
    frames = []
    while not await conn.communicator.receive_nothing(timeout=0.2):
        frames.append(await conn.receive())
    return frames


def names(users):
    return sorted(u["username"] for u in users)


async def room_r0_tokens(*usernames) -> list[str]:
    """The room r0 and an API token for each of ``usernames``."""

    def make():
        owner = factories.make_user("owner")
        factories.make_room(created_by=owner, slug="r0")
        return [factories.token_for(factories.make_user(n)) for n in usernames]

    return await database_sync_to_async(make)()


@asynccontextmanager
async def two_nodes(**extra_env):
    """Two real nodes on the shared Redis, with a prefix of their own."""
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    database_url = await database_sync_to_async(database_url_for_tests)()
    with cluster(
        2, redis_url=os.environ["REDIS_URL"], database_url=database_url, prefix=prefix, extra_env=extra_env
    ) as nodes:
        yield nodes


def online_names(client) -> set[str]:
    """The online set a real client's presence frames add up to."""
    online = set()
    for f in client.frames:
        if f["type"] == "presence":
            online = {u["username"] for u in f["online"]}
        elif f["type"] == "presence.diff":
            online |= {u["username"] for u in f["joins"]}
            online -= {u["username"] for u in f["leaves"]}
    return online


async def sees_online(conn, expected: set[str], timeout: float = 5) -> bool:
    """Apply the presence frames ``conn`` receives until its online set is ``expected``."""
    if not hasattr(conn, "online"):
        conn.online = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while set(conn.online.values()) != expected:
        remaining = deadline - loop.time()
        if remaining <= 0 or await conn.communicator.receive_nothing(timeout=min(remaining, 0.2)):
            if loop.time() >= deadline:
                return False
            continue
        frame = await conn.receive()
        if frame["type"] == "presence":
            conn.online = {u["id"]: u["username"] for u in frame["online"]}
        elif frame["type"] == "presence.diff":
            conn.diffs = getattr(conn, "diffs", 0) + 1
            conn.online.update({u["id"]: u["username"] for u in frame["joins"]})
            for u in frame["leaves"]:
                conn.online.pop(u["id"], None)
    return True


async def test_online_list_on_join_and_diffs_count_a_user_with_two_tabs_once(ws, room, user, other_user):
    alice = await member(ws, room, user)
    assert await sees_online(alice, {"alice"})
    bob1 = await member(ws, room, other_user)
    assert await sees_online(bob1, {"alice", "bob"})
    assert await sees_online(alice, {"alice", "bob"})

    bob2 = await member(ws, room, other_user)  # a second tab: nobody new came online
    assert await sees_online(bob2, {"alice", "bob"})
    await bob1.close()  # one tab closed: bob is still online
    await asyncio.sleep(1.5)  # past one presence batch
    assert await sees_online(alice, {"alice", "bob"}, timeout=0.5)
    response = await database_sync_to_async(lambda: _api(user).get("/api/rooms/lobby/presence/"))()
    assert response.status_code == 200 and names(response.data["online"]) == ["alice", "bob"]

    await bob2.close()  # the last tab: bob goes offline
    assert await sees_online(alice, {"alice"})
    response = await database_sync_to_async(lambda: _api(user).get("/api/rooms/lobby/presence/"))()
    assert names(response.data["online"]) == ["alice"]
    await alice.close()


async def test_a_join_storm_is_announced_in_batches_not_one_diff_per_join(ws, room, user, settings):
    """Ten members joining within one batch reach an earlier member as one or two diffs."""
    watcher = await member(ws, room, user)
    assert await sees_online(watcher, {"alice"})
    others = [await database_sync_to_async(factories.make_user)(f"m{i}") for i in range(10)]
    conns = [await member(ws, room, u) for u in others]
    assert await sees_online(watcher, {"alice"} | {f"m{i}" for i in range(10)})
    assert watcher.diffs <= 3, watcher.diffs  # one per batch, not one per join
    for conn in conns:
        await conn.close()
    await watcher.close()


def _api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


async def test_typing_is_relayed_to_others_only_never_stored_and_rate_limited(ws, room, user, other_user):
    from rooms.models import Message

    alice = await member(ws, room, user)
    bob = await member(ws, room, other_user)
    await alice.send({"type": "typing"})
    typing = await next_of(bob, "typing")
    assert typing == {"type": "typing", "user": {"id": user.pk, "username": "alice"}}
    await alice.send({"type": "typing"})  # within 2 s: dropped
    await asyncio.sleep(0.3)
    assert [f for f in await drain(bob) if f["type"] == "typing"] == []
    assert [f for f in await drain(alice) if f["type"] == "typing"] == []  # never echoed to the typist
    assert await database_sync_to_async(Message.objects.count)() == 0
    await alice.close()
    await bob.close()


async def test_the_rest_online_list_is_a_count_and_pages_by_cursor(ws, room, user, other_user):
    """``GET .../presence/``: ``count``, a page in name order and ``next``; each page one
    script whatever the room's size; a bad limit or cursor is a 400 with field errors."""
    third = await database_sync_to_async(factories.make_user)("carol")
    conns = [await member(ws, room, u) for u in (user, other_user, third)]
    assert await sees_online(conns[0], {"alice", "bob", "carol"})
    api = _api(user)
    get = lambda query: database_sync_to_async(lambda: api.get(f"/api/rooms/lobby/presence/{query}"))()  # noqa: E731
    whole = await get("")
    assert whole.status_code == 200
    assert whole.data["count"] == 3 and whole.data["next"] is None
    assert names(whole.data["online"]) == ["alice", "bob", "carol"]
    seen, query = [], "?limit=1"
    for _ in range(5):
        page = await get(query)
        assert page.status_code == 200 and page.data["count"] == 3 and len(page.data["online"]) == 1
        seen += [u["username"] for u in page.data["online"]]
        if page.data["next"] is None:
            break
        query = "?" + urlencode({"limit": 1, "after": page.data["next"]})
    assert seen == ["alice", "bob", "carol"]  # name order, each once
    for bad in ("?limit=0", "?limit=201", "?limit=x", "?" + urlencode({"after": "x" * 401})):
        response = await get(bad)
        assert response.status_code == 400, bad
        assert set(response.data) <= {"limit", "after"}, response.data
    for conn in conns:
        await conn.close()


async def test_presence_of_a_private_room_is_404_for_outsiders(user, other_user):
    await database_sync_to_async(factories.make_room)(created_by=user, slug="secret", is_private=True)
    response = await database_sync_to_async(lambda: _api(other_user).get("/api/rooms/secret/presence/"))()
    assert response.status_code == 404


@pytest.mark.multinode
async def test_a_dead_nodes_users_go_offline_within_the_expiry_without_any_call_from_it(db):
    tokens = await room_r0_tokens("alice", "bob")
    async with two_nodes(PRESENCE_TTL="2", PRESENCE_HEARTBEAT="0.5") as nodes:
        await Client(nodes[0], "r0", tokens[0]).connect()  # alice, online on node 1
        bob = await Client(nodes[1], "r0", tokens[1]).connect()

        assert await bob.wait_for(lambda c: online_names(c) == {"alice", "bob"})
        nodes[0].process.kill()  # SIGKILL: no goodbye from node-1
        killed = time.monotonic()
        assert await bob.wait_for(lambda c: online_names(c) == {"bob"}, timeout=10)
        offline_after = time.monotonic() - killed
        print(
            f"PRESENCE dead node: alice offline for bob after {offline_after:.2f} s "
            "(TTL 2 s, heartbeat 0.5 s, batch 1 s)"
        )
        assert offline_after < 2 + 0.5 + 1 + 1.5  # TTL + heartbeat + one presence batch + slack
        await bob.close()


async def test_a_reload_onto_another_node_never_shows_the_user_offline(db):
    """bob reloads: his socket on node-1 closes and a new one opens on node-2 while node-2 is
    already batching another join (carol's). node-2's diff (joins carol and bob) goes out before
    node-1's (leaves bob). Each batch is checked against the store before it is sent, so
    node-1's leave is dropped: alice never sees bob leave and ends seeing him online. Before,
    the late leave left bob shown offline while connected."""
    alice_token, bob_token, carol_token = await room_r0_tokens("alice", "bob", "carol")
    async with two_nodes() as nodes:
        alice = await Client(nodes[1], "r0", alice_token).connect()
        bob = await Client(nodes[0], "r0", bob_token).connect()

        assert await alice.wait_for(lambda c: online_names(c) == {"alice", "bob"})
        await asyncio.sleep(1.5)  # every batch so far has gone out
        carol = await Client(nodes[1], "r0", carol_token).connect()  # node-2's batch timer starts
        await asyncio.sleep(0.3)
        await bob.close()  # node-1: bob's last connection, a leave in node-1's next batch
        await asyncio.sleep(0.1)
        bob = await Client(nodes[1], "r0", bob_token).connect()  # the reload, on node-2
        await asyncio.sleep(2.5)  # both nodes' batches have gone out
        leaves = [u["username"] for f in alice.frames if f["type"] == "presence.diff" for u in f["leaves"]]
        assert leaves == [] and online_names(alice) == {"alice", "bob", "carol"}, alice.frames
        for client in (alice, bob, carol):
            await client.close()


async def test_a_tab_opened_on_another_node_and_closed_before_its_batch_leaves_the_user_offline(db):
    """alice closes her socket on node-1, opens one on node-2 and closes it again after node-1's
    batch went out but before node-2's (PRESENCE_BATCH 2 s, so each step has 0.3 s or more to
    spare). bob ends seeing alice offline. Before, node-1's batch dropped her leave (she was
    online on node-2 then) and node-2's join and leave cancelled out: she stayed shown online."""
    alice_token, bob_token = await room_r0_tokens("alice", "bob")
    async with two_nodes(PRESENCE_BATCH="2") as nodes:
        alice = await Client(nodes[0], "r0", alice_token).connect()
        bob = await Client(nodes[1], "r0", bob_token).connect()

        assert await bob.wait_for(lambda c: online_names(c) == {"alice", "bob"}, timeout=6)
        await asyncio.sleep(2.5)  # every batch so far has gone out
        started = time.monotonic()
        await alice.close()  # t = 0: a leave in node-1's batch, which goes out at t = 2
        await asyncio.sleep(0.6)
        alice = await Client(nodes[1], "r0", alice_token).connect()  # t = 0.6: node-2's batch, out at 2.6
        await asyncio.sleep(max(0.0, 2.3 - (time.monotonic() - started)))
        await alice.close()  # t = 2.3: between the two batches
        assert await bob.wait_for(lambda c: online_names(c) == {"bob"}, timeout=5), bob.frames[-4:]
        await bob.close()


async def test_a_close_the_store_had_lost_track_of_is_still_announced(ws, room, user, other_user):
    """Redis restarted empty: the store has no record of bob's connection until the next
    heartbeat. bob closes his only socket: alice still sees him leave."""
    from rooms import presence

    alice = await member(ws, room, user)
    bob = await member(ws, room, other_user)
    assert await sees_online(alice, {"alice", "bob"})
    users, conns, _, _ = presence._keys(room.pk, other_user.pk)
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    await asyncio.to_thread(
        lambda: (client.zrem(users, other_user.pk), client.delete(conns))
    )  # bob's, as after a restart
    await bob.close()
    assert await sees_online(alice, {"alice"})
    await alice.close()


async def test_users_the_store_lost_are_announced_again_by_the_next_heartbeat(
    ws, room, user, other_user, settings
):
    """Redis restarted empty (bob's presence entries gone). bob closes one of his two tabs: the
    batch reads him as gone and alice sees him leave; the next heartbeat puts his other tab back
    in the store and announces him, so alice ends seeing him online."""
    from rooms import presence

    settings.PRESENCE_HEARTBEAT = 3600  # no heartbeat on its own: the test runs one below
    alice = await member(ws, room, user)
    bob1 = await member(ws, room, other_user)
    bob2 = await member(ws, room, other_user)
    assert await sees_online(alice, {"alice", "bob"})
    users, conns, names, _ = presence._keys(room.pk, other_user.pk)
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    await asyncio.to_thread(
        lambda: (client.zrem(users, other_user.pk), client.delete(conns), client.hdel(names, other_user.pk))
    )
    await bob1.close()
    assert await sees_online(alice, {"alice"})  # the store says so, for now
    await presence.heartbeat_for_loop().beat()
    assert await sees_online(alice, {"alice", "bob"})  # the heartbeat put bob back
    await bob2.close()
    await alice.close()
