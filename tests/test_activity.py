"""The per-node room activity hub (``rooms.activity``), on the real PostgreSQL and Redis: one
channel per node per room whatever the number of user sockets following it, exact counts from
its log (others' and own messages, deletes after the activity that counted them), the fresh
sidebar when the log no longer reaches back, and nothing of a room's other traffic reaching the
user sockets."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from rooms import activity, events, services
from rooms.models import Message
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

USER_PATH = "/ws/user/"


def post(room, author, body):
    return services.message_post(room=room, author=author, body=body, client_msg_id=body).message


apost = database_sync_to_async(post)


@pytest.fixture
def members(room, user):
    """Five users besides ``user`` (alice, the owner), all members of ``room`` (``lobby``)."""
    people = [factories.make_user(f"member{i}") for i in range(5)]
    for person in people:
        services.member_join(room=room, user=person)
    return people


async def open_user_socket(ws, user):
    conn = await ws(USER_PATH, user=user)
    assert await conn.connect()
    await conn.receive_type("sidebar")
    return conn


def hub_channels_in(group: str) -> list[str]:
    """The hub channels of this node (this test's loop) in ``group``."""
    layer = get_channel_layer()._get_layer()
    members = layer.groups.get(layer._get_group_channel_name(group), set())
    return [c for c in members if "activity." in c]


async def wait_for(predicate, timeout: float = 3.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_one_hub_channel_per_room_per_node_whatever_the_number_of_user_sockets(ws, room, members):
    conns = [await open_user_socket(ws, person) for person in members]
    conns.append(await open_user_socket(ws, members[0]))  # a second tab of one user
    hub = activity.hub()
    assert hub.following(room.pk) == 6
    group = events.room_group_name(room.pk)
    assert len(hub_channels_in(group)) == 1
    received = hub.received
    await apost(room, members[1], "one message")
    for conn in conns:
        assert (await conn.receive_type("room.activity"))["rooms"][0]["last_seq"] == 1
    assert hub.received == received + 1  # taken once on this node, not once per socket
    for conn in conns[:-1]:
        await conn.close()
    assert hub.following(room.pk) == 1 and len(hub_channels_in(group)) == 1
    await conns[-1].close()
    assert await wait_for(lambda: not hub_channels_in(group) and room.pk not in hub.rooms)


async def applied(conn, upto: int) -> tuple[int, int]:
    """Applies ``room.activity`` frames of one room as the sidebar does until ``upto``:
    ``(unread added since the last read_seq, the last read_seq or 0)``."""
    unread, read_seq = 0, 0
    while True:
        (entry,) = (await conn.receive_type("room.activity"))["rooms"]
        if entry.get("read_seq"):
            unread, read_seq = 0, entry["read_seq"]
        unread += entry["unread_added"]
        if entry["last_seq"] == upto:
            return unread, read_seq


async def test_counts_are_exact_for_every_follower_with_own_and_others_messages(ws, room, user, members):
    a, b, c = members[:3]
    conns = {p.pk: await open_user_socket(ws, p) for p in (a, b, c)}
    for author, body in ((a, "1"), (b, "2"), (a, "3"), (c, "4"), (c, "5")):
        await apost(room, author, body)
    assert await applied(conns[a.pk], 5) == (2, 3)  # a wrote 3: read there, then c's 4 and 5
    assert await applied(conns[b.pk], 5) == (3, 2)
    assert await applied(conns[c.pk], 5) == (0, 5)
    await apost(room, user, "6")
    for conn in conns.values():
        assert await applied(conn, 6) == (1, 0)
        assert await conn.nothing_more()
        await conn.close()


async def test_a_delete_comes_after_the_activity_that_counted_its_message(ws, room, user, members):
    conn = await open_user_socket(ws, members[0])
    message = await apost(room, user, "oops")
    await database_sync_to_async(services.message_delete)(
        message=await database_sync_to_async(Message.objects.get)(pk=message.pk), actor=user
    )
    # without the activity first, the client would drop the delete (seq beyond its last_seq)
    first = await conn.receive()
    assert first.get("rooms") == [{"room": room.slug, "last_seq": 1, "unread_added": 1}], first
    deleted = await conn.receive_type("message.deleted")
    assert (deleted["seq"], deleted["author_id"]) == (1, user.pk)
    await conn.close()


async def test_when_the_log_no_longer_reaches_back_a_fresh_sidebar_comes_instead(
    ws, room, user, members, monkeypatch
):
    monkeypatch.setattr(activity, "LOG_SIZE", 2)
    conn = await open_user_socket(ws, members[0])
    for body in ("1", "2", "3", "4", "5"):  # within one tick: the log keeps 4 and 5 only
        await apost(room, user, body)
    frame = await conn.receive()
    assert frame["type"] == "sidebar", frame
    (lobby,) = [r for r in frame["rooms"] if r["slug"] == room.slug]
    assert (lobby["last_seq"], lobby["unread_count"]) == (5, 5)
    await apost(room, user, "6")  # counted from the fresh sidebar on
    assert (await conn.receive_type("room.activity"))["rooms"] == [
        {"room": room.slug, "last_seq": 6, "unread_added": 1}
    ]
    await conn.close()


async def test_typing_presence_and_edits_stop_at_the_hub(ws, room, user, members):
    conn = await open_user_socket(ws, members[0])
    hub = activity.hub()
    received = hub.received
    await events.typing(room_id=room.pk, user={"id": user.pk, "username": user.username})
    message = await apost(room, user, "hello")
    await database_sync_to_async(services.message_edit)(message=message, actor=user, body="hello!")
    assert (await conn.receive_type("room.activity"))["rooms"][0]["last_seq"] == 1
    assert await conn.nothing_more(timeout=0.5)
    assert hub.received >= received + 3
    await conn.close()
