"""Group commit of sends (``chatsite.async_db.fetchone_grouped``, issue 16): the sends a node has
in hand while a statement is in flight are stored together, in one transaction, and each is
still acked only after that commit, with a gapless ``seq`` per room and its broadcast in order."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from chatsite import async_db, db_batch
from rooms.models import Message
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

ROOMS = 6
SENDS = 5  # per room


@pytest.fixture(autouse=True)
def no_send_limit(settings):
    settings.WS_SEND_RATE = "0"  # one user sends 30 messages at once here


@pytest.fixture
def rooms(user):
    return [factories.make_room(created_by=user, slug=f"g{n}") for n in range(ROOMS)]


@database_sync_to_async
def stored(room):
    return list(Message.objects.filter(room=room).order_by("seq").values_list("seq", "client_msg_id"))


def grouped() -> db_batch.Batcher | None:
    return db_batch._batchers.get(asyncio.get_running_loop(), {}).get("chatsite.async_db.grouped")


async def open_all(ws, rooms, user):
    sockets = []
    for room in rooms:
        conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
        assert await conn.connect()
        await conn.receive_type("hello")
        sockets.append(conn)
    return sockets


async def acks_and_messages(conn, count):
    acks, messages = {}, []
    while len(acks) < count or len(messages) < count:
        frame = await conn.receive()
        assert frame["type"] in ("ack", "message"), frame
        if frame["type"] == "ack":
            acks[frame["client_msg_id"]] = frame["seq"]
        else:
            messages.append(frame["message"])
    return acks, messages


async def test_sends_arriving_together_are_stored_in_groups_acked_in_seq_order_with_no_gap(ws, rooms, user):
    sockets = await open_all(ws, rooms, user)
    before = grouped()
    statements, items = (before.statements, before.items) if before else (0, 0)
    for n in range(SENDS):  # every socket's frames at once: the consumers' sends overlap
        for r, conn in enumerate(sockets):
            await conn.send({"type": "message.send", "body": f"m{n}", "client_msg_id": f"r{r}-{n}"})
    for r, (room, conn) in enumerate(zip(rooms, sockets)):
        acks, messages = await acks_and_messages(conn, SENDS)
        assert await stored(room) == [(n + 1, f"r{r}-{n}") for n in range(SENDS)]
        assert acks == {f"r{r}-{n}": n + 1 for n in range(SENDS)}
        assert [m["seq"] for m in messages] == list(range(1, SENDS + 1))  # the broadcasts, in order
    batcher = grouped()
    assert batcher.items - items == ROOMS * SENDS
    assert batcher.statements - statements < ROOMS * SENDS  # some went together


async def test_a_group_holding_a_retry_of_a_stored_send_fails_and_each_send_is_answered_alone(
    ws, rooms, user
):
    """A retried ``client_msg_id`` makes its group's transaction fail (unique violation): none of
    the group is stored by it; each send then runs alone, so the retry gets its first ack and
    every other send is stored once."""
    sockets = await open_all(ws, rooms, user)
    first = sockets[0]
    await first.send({"type": "message.send", "body": "once", "client_msg_id": "dup"})
    acks, _ = await acks_and_messages(first, 1)
    assert acks == {"dup": 1}
    # One send starts a statement; the retry and the others queue behind it and go as one group.
    await sockets[1].send({"type": "message.send", "body": "lead", "client_msg_id": "lead"})
    await first.send({"type": "message.send", "body": "once", "client_msg_id": "dup"})
    for r, conn in enumerate(sockets[2:], start=2):
        await conn.send({"type": "message.send", "body": "new", "client_msg_id": f"new-{r}"})
    assert (await first.receive_type("ack"))["seq"] == 1
    assert await stored(rooms[0]) == [(1, "dup")]
    assert (await acks_and_messages(sockets[1], 1))[0] == {"lead": 1}
    for r, conn in enumerate(sockets[2:], start=2):
        assert (await acks_and_messages(conn, 1))[0] == {f"new-{r}": 1}
        assert await stored(rooms[r]) == [(1, f"new-{r}")]


async def test_a_group_runs_its_statements_in_one_transaction_in_room_order():
    """``fetchone_grouped`` calls made while one is in flight (the first runs alone, in its own
    task): they go as one transaction (the same ``txid_current()``), run in ``order``; a group
    whose transaction fails raises ``GroupFailed`` (not unsure: PostgreSQL answered the error and
    rolled it back) to every caller in it; a lone call's error is its own."""
    sql = "SELECT txid_current(), %(o)s::int, clock_timestamp()"
    lead = "SELECT pg_sleep(0.05)"
    try:
        results = await asyncio.gather(
            async_db.fetchone_grouped(lead, {}, order=0, timeout=5),
            *(async_db.fetchone_grouped(sql, {"o": o}, order=o, timeout=5) for o in (3, 1, 2)),
        )
        together = results[1:]
        assert len({row[0] for row in together}) == 1  # one transaction
        assert [row[1] for row in sorted(together, key=lambda row: row[2])] == [1, 2, 3]
        failing = await asyncio.gather(
            async_db.fetchone_grouped(lead, {}, order=0, timeout=5),
            *(async_db.fetchone_grouped(f"SELECT {n}/0", {}, order=n, timeout=5) for n in (2, 1)),
            async_db.fetchone_grouped("SELECT 3", {}, order=3, timeout=5),
            return_exceptions=True,
        )
        assert not isinstance(failing[0], Exception), failing
        assert all(isinstance(f, async_db.GroupFailed) and not f.unsure for f in failing[1:]), failing
        with pytest.raises(Exception) as alone:
            await async_db.fetchone_grouped("SELECT 1/0", {}, order=1, timeout=5)
        assert type(alone.value).__name__ == "DivisionByZero"
    finally:
        await async_db.aclose()


async def test_a_group_is_one_round_trip_under_its_lock_limit_and_an_error_at_its_commit_is_unsure():
    """A group's statements run under ``GROUP_LOCK_TIMEOUT_MS`` (the transaction's own setting:
    the next statement on the pool has the server's default again). An error that comes once every
    statement was answered came with the commit at the pipeline's sync (here a deferred unique
    constraint, checked at commit): the callers are told ``unsure``, so none of them takes the
    group's outcome for a rollback; nothing of the group was stored."""
    lead = "SELECT pg_sleep(0.05)"
    pool = await async_db.pool()
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE group_commit_deferred (id int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    try:
        limits = await asyncio.gather(
            async_db.fetchone_grouped(lead, {}, order=0, timeout=5),
            *(
                async_db.fetchone_grouped("SELECT current_setting('lock_timeout')", {}, order=n, timeout=5)
                for n in (1, 2)
            ),
        )
        assert [row[0] for row in limits[1:]] == [f"{async_db.GROUP_LOCK_TIMEOUT_MS}ms"] * 2
        for _ in range(pool.max_size + 1):  # the pool hands its connections out in turn
            alone = await async_db.fetchone("SELECT current_setting('lock_timeout')", {})
            assert alone[0] != f"{async_db.GROUP_LOCK_TIMEOUT_MS}ms"
        insert = "INSERT INTO group_commit_deferred VALUES (1) RETURNING id"
        failing = await asyncio.gather(
            async_db.fetchone_grouped(lead, {}, order=0, timeout=5),
            *(async_db.fetchone_grouped(insert, {}, order=n, timeout=5) for n in (1, 2)),
            return_exceptions=True,
        )
        assert all(isinstance(f, async_db.GroupFailed) and f.unsure for f in failing[1:]), failing
        assert await async_db.fetchone("SELECT count(*) FROM group_commit_deferred", {}) == (0,)
    finally:
        async with pool.connection() as conn:
            await conn.execute("DROP TABLE group_commit_deferred")
        await async_db.aclose()


async def test_a_failed_group_stores_nothing_even_half_sent_and_the_statements_after_it_run():
    """A group that fails stores nothing: when PostgreSQL refuses one statement, and when this
    process cannot send one (a parameter psycopg cannot adapt, after the first statement went):
    the sync that ends the pipeline must not commit the half. And the statements after it run,
    prepared ones included: psycopg prepares a statement at its sixth use, and a group that fails
    must not leave it a name the server does not have (every later send then failed with
    "prepared statement does not exist")."""
    lead = "SELECT pg_sleep(0.05)"
    insert = "INSERT INTO group_commit_failed VALUES (%(id)s) RETURNING id"
    pool = await async_db.pool()
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE group_commit_failed (id int PRIMARY KEY)")
    try:
        for n in range(1, 4):  # groups that fail at a duplicate, psycopg preparing on the way
            await async_db.fetchone(insert, {"id": -n})
            failing = await asyncio.gather(
                async_db.fetchone_grouped(lead, {}, order=0, timeout=5),
                async_db.fetchone_grouped(insert, {"id": 100 + n}, order=1, timeout=5),
                async_db.fetchone_grouped(insert, {"id": -n}, order=2, timeout=5),
                async_db.fetchone_grouped(insert, {"id": 200 + n}, order=3, timeout=5),
                return_exceptions=True,
            )
            assert all(isinstance(f, async_db.GroupFailed) and not f.unsure for f in failing[1:]), failing
        half = await asyncio.gather(
            async_db.fetchone_grouped(lead, {}, order=0, timeout=5),
            async_db.fetchone_grouped(insert, {"id": 300}, order=1, timeout=5),
            async_db.fetchone_grouped(insert, {"id": object()}, order=2, timeout=5),
            return_exceptions=True,
        )
        assert all(isinstance(f, async_db.GroupFailed) for f in half[1:]), half
        rows = await async_db.fetchall("SELECT id FROM group_commit_failed ORDER BY id", {})
        assert [row[0] for row in rows] == [-3, -2, -1]
        for n in range(8):  # alone and grouped, on the pool's connections, well past preparing
            together = await asyncio.gather(
                async_db.fetchone_grouped(lead, {}, order=0, timeout=5),
                async_db.fetchone_grouped(insert, {"id": 400 + n}, order=1, timeout=5),
                async_db.fetchone_grouped(insert, {"id": 500 + n}, order=2, timeout=5),
            )
            assert together[1:] == [(400 + n,), (500 + n,)]
            assert await async_db.fetchone(insert, {"id": 600 + n}) == (600 + n,)
    finally:
        async with pool.connection() as conn:
            await conn.execute("DROP TABLE group_commit_failed")
        await async_db.aclose()


@pytest.mark.multinode
async def test_sends_of_the_same_users_in_the_same_rooms_on_two_nodes_all_land_once_in_order():
    """Two nodes grouping sends at once, over the same rooms and the same users (each user has a
    socket in every room on both nodes, so two groups can want the same rows): every send is
    acked once, each room's seqs are gapless, and every socket gets each of its room's messages
    once, those of one node in seq order. (A group that loses a deadlock to another is followed by each send alone.)"""
    import os
    import uuid

    from tests.nodes import Client, cluster, database_url_for_tests

    users = await database_sync_to_async(lambda: [factories.make_user(f"u{n}") for n in range(3)])()
    slugs = [f"x{n}" for n in range(4)]
    await database_sync_to_async(lambda: [factories.make_room(created_by=users[0], slug=s) for s in slugs])()
    tokens = await database_sync_to_async(lambda: [factories.token_for(u) for u in users])()
    database_url = await database_sync_to_async(database_url_for_tests)()
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    sends = 8
    with cluster(
        2,
        redis_url=os.environ["REDIS_URL"],
        database_url=database_url,
        prefix=prefix,
        extra_env={"WS_SEND_RATE": "1000/s"},  # the statement that also counts the user's window
    ) as nodes:
        clients = [
            await Client(node, slug, token).connect() for node in nodes for slug in slugs for token in tokens
        ]
        for n in range(sends):
            await asyncio.gather(
                *(c.send(f"m{n}", f"{id(c)}-{n}") for c in (clients if n % 2 else reversed(clients)))
            )
        per_room = len(nodes) * len(tokens) * sends
        for c in clients:
            assert await c.wait_for(lambda c: len(c.acks) == sends and len(c.messages) == per_room, 30), (
                [f for f in c.frames if f["type"] == "error"],
                [node.log()[-3000:] for node in nodes],
                len(c.acks),
                len(c.messages),
            )
            assert sorted(m["seq"] for m in c.messages) == list(range(1, per_room + 1))
            for node in nodes:  # one node's messages of a room arrive in seq order (across
                # nodes a later seq may be published first: docs/protocol.md)
                mine = [m["seq"] for m in c.messages if m["server_id"] == node.server_id]
                assert mine == sorted(mine) and mine, node.server_id
        for slug, room_clients in ((s, [c for c in clients if c.room == s]) for s in slugs):
            acked = sorted(a["seq"] for c in room_clients for a in c.acks.values())
            assert acked == list(range(1, per_room + 1)), slug
        for c in clients:
            await c.close()
        for node in nodes:
            assert "Traceback" not in node.log(), node.log()
