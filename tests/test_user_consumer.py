"""The user socket ``/ws/user/`` (``rooms.user_consumer``) and the sidebar it sends
(``rooms.sidebar``), on the real PostgreSQL and Redis: the snapshot in a constant number of
statements, live frames of the user's rooms only, ``user.rooms_changed``, every end of access,
the shared socket rules (4401, 4429, error frames)."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from rooms import access, dms, reads, services
from rooms.models import Membership, Message
from rooms.sidebar import sidebar_for
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

USER_PATH = "/ws/user/"


def post(room, author, body):
    return services.message_post(room=room, author=author, body=body, client_msg_id=body).message


apost = database_sync_to_async(post)


@pytest.fixture
def setup(room, user, other_user):
    """alice owns ``lobby``; bob joined it, and alice sent 3 messages, the last mentioning bob;
    bob has a DM with carol; dave owns ``elsewhere``, where bob is not a member."""
    services.member_join(room=room, user=other_user)
    post(room, user, "one")
    post(room, user, "two")
    post(room, user, "hi @bob")
    carol = factories.make_user("carol")
    dm = dms.dm_open(user=other_user, username="carol").room
    dave = factories.make_user("dave")
    elsewhere = factories.make_room(created_by=dave, slug="elsewhere")
    return {"lobby": room, "dm": dm, "carol": carol, "dave": dave, "elsewhere": elsewhere}


async def open_user_socket(ws, user, **options):
    conn = await ws(USER_PATH, user=user, **options)
    assert await conn.connect()
    frame = await conn.receive_type("sidebar")
    return conn, frame


def by_slug(frame):
    return {r["slug"]: r for r in frame["rooms"]}


# --- the snapshot ----------------------------------------------------------------------------------


def test_the_sidebar_lists_rooms_then_dms_by_the_other_persons_name_with_read_state(setup, other_user):
    snapshot = sidebar_for(other_user)
    assert snapshot.rooms == [
        {
            "slug": "lobby",
            "name": "Lobby",
            "kind": "room",
            "dm_with": None,
            "last_seq": 3,
            "last_read_seq": 0,
            "unread_count": 3,
            "mention_count": 1,
        },
        {
            "slug": setup["dm"].slug,
            "name": "carol",
            "kind": "dm",
            "dm_with": {"id": setup["carol"].pk, "username": "carol"},
            "last_seq": 0,
            "last_read_seq": 0,
            "unread_count": 0,
            "mention_count": 0,
        },
    ]
    assert snapshot.room_ids == {setup["lobby"].pk: "lobby", setup["dm"].pk: setup["dm"].slug}
    # carol sees the DM by bob's name; a banned or archived room is not listed
    assert [r["name"] for r in sidebar_for(setup["carol"]).rooms] == ["bob"]
    services.member_ban(room=setup["lobby"], actor=setup["lobby"].created_by, user=other_user)
    assert [r["kind"] for r in sidebar_for(other_user).rooms] == ["dm"]


def test_the_sidebar_takes_the_same_number_of_statements_for_2_rooms_or_40(
    setup, other_user, django_assert_num_queries
):
    with django_assert_num_queries(2):
        sidebar_for(other_user)
    for i in range(30):
        room = factories.make_room(created_by=setup["dave"], slug=f"r{i}")
        services.member_join(room=room, user=other_user)
        post(room, setup["dave"], f"hello {i} @bob")
    for i in range(8):
        dms.dm_open(user=other_user, username=factories.make_user(f"u{i}").username)
    with django_assert_num_queries(2):
        snapshot = sidebar_for(other_user)
    assert len(snapshot.rooms) == 40
    r7 = {r["slug"]: r for r in snapshot.rooms}["r7"]
    assert r7["unread_count"] == 1 and r7["mention_count"] == 1


async def test_a_user_socket_starts_with_the_sidebar(ws, setup, other_user):
    conn, frame = await open_user_socket(ws, other_user)
    assert frame["server_id"] == "test-node"
    assert by_slug(frame)["lobby"]["unread_count"] == 3
    assert by_slug(frame)[setup["dm"].slug]["name"] == "carol"
    assert await conn.nothing_more()
    await conn.close()


async def test_a_socket_without_a_session_is_closed_4401(ws, setup):
    conn = await ws(USER_PATH)
    assert await conn.connect()
    assert await conn.close_code() == 4401
    await conn.close()


# --- live ------------------------------------------------------------------------------------------


async def test_a_message_in_a_room_of_the_user_comes_as_room_activity_and_nothing_of_other_rooms(
    ws, setup, user, other_user
):
    conn, _ = await open_user_socket(ws, other_user)
    await apost(setup["elsewhere"], setup["dave"], "not for bob")
    await apost(setup["lobby"], user, "four")
    assert await conn.receive() == {
        "type": "room.activity",
        "rooms": [{"room": "lobby", "last_seq": 4, "unread_added": 1}],
    }
    await apost(setup["dm"], setup["carol"], "psst")
    assert await conn.receive() == {
        "type": "room.activity",
        "rooms": [{"room": setup["dm"].slug, "last_seq": 1, "unread_added": 1}],
    }
    assert await conn.nothing_more()
    await conn.close()


async def applied_activity(conn, room: str, upto: int) -> tuple[int, int, int]:
    """Reads ``room.activity`` frames of ``room`` until one reaches ``upto`` and applies them as
    the sidebar does: ``(unread added since the last read_seq, last read_seq or 0, frames)``."""
    unread, read_seq, frames = 0, 0, 0
    while True:
        frame = await conn.receive_type("room.activity")
        (entry,) = frame["rooms"]
        assert entry["room"] == room
        frames += 1
        if entry.get("read_seq"):
            unread, read_seq = 0, entry["read_seq"]
        unread += entry["unread_added"]
        if entry["last_seq"] == upto:
            return unread, read_seq, frames


async def test_activity_counts_each_message_once_and_the_users_own_message_says_where_they_read(
    ws, setup, user, other_user
):
    conn, _ = await open_user_socket(ws, other_user)
    for body in ("a", "b", "c"):
        await apost(setup["lobby"], user, body)
    unread, read_seq, frames = await applied_activity(conn, "lobby", 6)
    assert (unread, read_seq) == (3, 0) and frames <= 3  # one frame a second at most
    await apost(setup["lobby"], user, "d")
    await apost(setup["lobby"], other_user, "bob's own")  # seq 8: bob has read up to it
    await apost(setup["lobby"], user, "e")
    assert (await applied_activity(conn, "lobby", 9))[:2] == (1, 8)
    assert await conn.nothing_more()
    await conn.close()


async def test_pending_activity_goes_out_before_a_read_updated(ws, setup, user, other_user):
    """The client adds activity, then replaces its counts with read.updated's."""
    conn, _ = await open_user_socket(ws, other_user)
    await apost(setup["lobby"], user, "four")
    await database_sync_to_async(reads.read_report)(room=setup["lobby"], user=other_user, seq=4)
    assert (await conn.receive())["type"] == "room.activity"
    assert await conn.receive() == {
        "type": "read.updated",
        "room": "lobby",
        "last_read_seq": 4,
        "unread_count": 0,
        "mention_count": 0,
    }
    await conn.close()


async def test_read_updated_mention_and_deleted_reach_the_user_socket(ws, setup, user, other_user):
    conn, _ = await open_user_socket(ws, other_user)
    await database_sync_to_async(reads.read_report)(room=setup["lobby"], user=other_user, seq=2)
    assert await conn.receive() == {
        "type": "read.updated",
        "room": "lobby",
        "last_read_seq": 2,
        "unread_count": 1,
        "mention_count": 1,
    }
    await apost(setup["lobby"], user, "again @bob")
    # two layer events on two Redis channels (the room's, the user's): either may come first
    frames = {f["type"]: f for f in [await conn.receive(), await conn.receive()]}
    assert frames["room.activity"]["rooms"] == [{"room": "lobby", "last_seq": 4, "unread_added": 1}]
    mention = frames["mention"]
    assert mention["room"] == "lobby" and mention["message"]["seq"] == 4
    message = await database_sync_to_async(Message.objects.get)(room=setup["lobby"], seq=4)
    await database_sync_to_async(services.message_delete)(message=message, actor=user)
    assert await conn.receive() == {
        "type": "message.deleted",
        "id": message.pk,
        "room": "lobby",
        "seq": 4,
        "author_id": user.pk,
    }
    await conn.close()


async def test_joining_a_room_sends_a_fresh_sidebar_and_its_messages_follow(ws, setup, other_user):
    conn, first = await open_user_socket(ws, other_user)
    assert "elsewhere" not in by_slug(first)
    await database_sync_to_async(services.member_join)(room=setup["elsewhere"], user=other_user)
    fresh = await conn.receive_type("sidebar")
    assert by_slug(fresh)["elsewhere"]["unread_count"] == 0
    await apost(setup["elsewhere"], setup["dave"], "welcome")
    assert (await conn.receive_type("room.activity"))["rooms"][0]["room"] == "elsewhere"
    await conn.close()


async def test_a_new_dm_comes_as_dm_created_then_a_sidebar_with_it_on_both_sides(ws, setup, other_user):
    bob, _ = await open_user_socket(ws, other_user)
    dave, _ = await open_user_socket(ws, setup["dave"])
    result = await database_sync_to_async(dms.dm_open)(user=setup["dave"], username="bob")
    for conn, name in ((bob, "dave"), (dave, "bob")):
        assert (await conn.receive_type("dm.created"))["room"]["name"] == name
        assert by_slug(await conn.receive_type("sidebar"))[result.room.slug]["name"] == name
        await conn.close()


# --- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["ban", "leave", "remove", "archive", "delete"])
async def test_a_room_whose_access_ended_leaves_the_sidebar_and_sends_nothing_more(
    ws, setup, user, other_user, how
):
    conn, _ = await open_user_socket(ws, other_user)
    lobby = setup["lobby"]
    change = {
        "ban": lambda: services.member_ban(room=lobby, actor=user, user=other_user),
        "leave": lambda: services.member_leave(room=lobby, user=other_user),
        "remove": lambda: services.member_remove(room=lobby, actor=user, user=other_user),
        "archive": lambda: services.room_archive(room=lobby, actor=user),
        "delete": lambda: services.room_delete(room=lobby, actor=user),
    }[how]
    await database_sync_to_async(change)()
    assert "lobby" not in by_slug(await conn.receive_type("sidebar"))
    if how in ("ban", "leave", "remove"):
        await apost(lobby, user, "after")
    assert await conn.nothing_more(0.5)
    await conn.close()


async def test_a_room_made_private_leaves_only_the_sidebars_of_non_members(ws, setup, user, other_user):
    """bob stays a member of a room made private: his sidebar keeps it."""
    conn, _ = await open_user_socket(ws, other_user)
    lobby = setup["lobby"]
    await database_sync_to_async(services.room_update)(room=lobby, actor=user, is_private=True)
    assert "lobby" in by_slug(await conn.receive_type("sidebar"))
    await apost(lobby, user, "still here")
    assert (await conn.receive_type("room.activity"))["rooms"][0]["room"] == "lobby"
    await conn.close()


async def test_the_access_watch_drops_a_room_changed_behind_the_services_back(ws, setup, user, other_user):
    conn, _ = await open_user_socket(ws, other_user)
    await database_sync_to_async(Membership.objects.filter(room=setup["lobby"], user=other_user).update)(
        banned_at=timezone.now()
    )
    assert await access.watch().round() == 0  # the socket stays, without the room
    assert "lobby" not in by_slug(await conn.receive_type("sidebar"))
    await apost(setup["lobby"], user, "unseen")
    assert await conn.nothing_more(0.5)
    await conn.close()


async def test_a_deactivated_user_is_closed_4401_by_the_event_and_by_the_watch(ws, setup, other_user):
    conn, _ = await open_user_socket(ws, other_user)
    await database_sync_to_async(services.user_set_active)(user=other_user, active=False)
    assert await conn.close_code() == 4401
    await conn.close()
    carol = setup["carol"]
    conn, _ = await open_user_socket(ws, carol)
    await database_sync_to_async(type(carol).objects.filter(pk=carol.pk).update)(is_active=False)
    assert await access.watch().round() == 1
    assert await conn.close_code() == 4401
    await conn.close()


async def test_the_user_socket_counts_under_the_per_user_socket_cap(ws, setup, other_user, settings):
    settings.WS_MAX_SOCKETS_PER_USER = 2
    room_socket = await ws("/ws/rooms/lobby/", user=other_user)
    assert await room_socket.connect()
    await room_socket.receive_type("hello")
    first, _ = await open_user_socket(ws, other_user)
    second = await ws(USER_PATH, user=other_user)
    assert await second.connect()
    assert await second.close_code() == 4429
    await second.close()
    await first.close()
    third, _ = await open_user_socket(ws, other_user)  # a closed socket gave its slot back
    await third.close()
    await room_socket.close()


async def test_bad_frames_get_error_frames_and_the_socket_stays(ws, setup, user, other_user):
    conn, _ = await open_user_socket(ws, other_user)
    await conn.send_text("{not json")
    assert (await conn.receive_type("error"))["code"] == "invalid_json"
    await conn.send({"type": "read", "seq": 1})
    assert (await conn.receive_type("error"))["code"] == "unknown_type"
    await conn.communicator.send_input({"type": "websocket.receive", "bytes": b"\x00"})
    assert (await conn.receive_type("error"))["code"] == "binary_frame"
    await apost(setup["lobby"], user, "still live")
    assert (await conn.receive_type("room.activity"))["rooms"][0]["last_seq"] == 4
    await conn.close()


async def test_room_sockets_ignore_rooms_changed(ws, setup, user, other_user):
    conn = await ws("/ws/rooms/lobby/", user=other_user)
    assert await conn.connect()
    await conn.receive_type("hello")
    await database_sync_to_async(services.member_join)(room=setup["elsewhere"], user=other_user)
    await apost(setup["lobby"], user, "four")
    assert (await conn.receive_type("message"))["message"]["seq"] == 4
    await conn.close()


async def test_two_user_sockets_of_one_user_each_get_every_frame(ws, setup, user, other_user):
    a, _ = await open_user_socket(ws, other_user)
    b, _ = await open_user_socket(ws, other_user)
    await apost(setup["lobby"], user, "four")
    for conn in (a, b):
        assert (await conn.receive_type("room.activity"))["rooms"][0]["last_seq"] == 4
        await conn.close()
    await asyncio.sleep(0)


async def test_a_rename_reaches_the_sidebar_and_member_changes_of_others_do_not(ws, setup, user, other_user):
    conn, _ = await open_user_socket(ws, other_user, keep_members=True)  # no frame skipped
    lobby = setup["lobby"]
    await database_sync_to_async(services.member_join)(
        room=lobby, user=setup["dave"]
    )  # member.updated: ignored
    await database_sync_to_async(services.room_update)(room=lobby, actor=user, name="Hall")
    frame = await conn.receive_type("room.updated")
    assert frame["room"]["slug"] == "lobby" and frame["room"]["name"] == "Hall"
    assert await conn.nothing_more()
    await database_sync_to_async(services.member_leave)(
        room=lobby, user=setup["dave"]
    )  # member.removed of dave
    assert await conn.nothing_more()
    await conn.close()
