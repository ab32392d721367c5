"""Mentions (``rooms.mentions``): parsing, storing with the message on every send path, edits,
the ``mention`` frame on the user's group, ``GET /api/mentions/``, and across real nodes."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from rooms import mentions, services
from rooms.models import Mention, Message
from tests import factories
from tests.test_reads import two_nodes  # noqa: F401 (the module's two-node cluster fixture)

# --- parsing --------------------------------------------------------------------------------------

PARSE_TABLE = [
    # (body, names looked for, @room)
    ("hello", (), False),
    ("@alice", ("alice",), False),
    ("hi @alice, how are you", ("alice",), False),
    ("(@alice)", ("alice",), False),
    ("thanks @alice.", ("alice", "alice."), False),
    ("@ALICE and @Bob", ("alice", "bob"), False),
    ("mail a@alice.com", (), False),
    ("@alice.com", ("alice.com",), False),
    ("x@@alice", (), False),
    ("@ alice", (), False),
    ("@", (), False),
    ("@room", (), True),
    ("hey @ROOM!", (), True),
    ("@room.", (), True),
    ("@roomy", ("roomy",), False),
    ("@jürgen: ok", ("jürgen",), False),
    ("@a_b-c+d", ("a_b-c+d",), False),
    ("line\n@alice\t@bob", ("alice", "bob"), False),
    ("«@alice»", ("alice",), False),
]


@pytest.mark.parametrize(("body", "names", "room"), PARSE_TABLE)
def test_mentions_are_parsed_at_username_boundaries(body, names, room):
    assert mentions.parse(body) == mentions.Parsed(names=names, room=room)


def test_a_body_that_mentions_nobody_is_parsed_as_nothing_so_the_send_keeps_the_plain_statement():
    assert mentions.parse("mail bob@example.com") is mentions.NOTHING
    assert mentions.parse("hello") is mentions.NOTHING


# --- storing --------------------------------------------------------------------------------------


def post(room, author, body, client_msg_id=None):
    return services.message_post(
        room=room, author=author, body=body, client_msg_id=client_msg_id or body
    ).message


@pytest.fixture
def crowd(room, user, other_user):
    """lobby with alice (owner), bob and Carol as members, dave banned, erin not a member."""
    carol = factories.make_user("Carol")
    services.member_join(room=room, user=other_user)
    services.member_join(room=room, user=carol)
    dave = factories.make_user("dave")
    services.member_ban(room=room, actor=user, user=dave)
    factories.make_user("erin")
    return room


def mentioned(message):
    return sorted(Mention.objects.filter(message=message).values_list("user__username", flat=True))


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["one statement", "step by step"])
def test_only_members_other_than_the_author_are_mentioned_on_every_send_path(crowd, user, monkeypatch, path):
    if path == "step by step":
        monkeypatch.setattr(services, "_post_in_one_statement", lambda **kwargs: None)
    message = post(crowd, user, "@bob @carol @dave @erin @alice @nobody and @room")
    assert mentioned(message) == ["Carol", "bob"]
    stored = Message.objects.get(pk=message.pk)
    assert stored.mentions_room is True
    shape = services.message_data(message)
    assert [m["username"] for m in shape["mentions"]] == ["bob", "Carol"] and shape["mentions_room"] is True


@pytest.mark.django_db
def test_a_body_without_mentions_stores_none(crowd, user):
    message = post(crowd, user, "no one here, mail bob@example.com")
    assert mentioned(message) == [] and not Message.objects.get(pk=message.pk).mentions_room


@pytest.mark.django_db
def test_mentions_are_notified_after_commit_once_per_mentioned_user(
    crowd, user, django_capture_on_commit_callbacks
):
    sent = []
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        post(crowd, user, "@bob and @carol and @room")
        post(crowd, user, "only @room")
    for callback in callbacks:
        if getattr(callback, "func", None) is services.events.broadcast_mention:
            sent.append((callback.keywords["room_slug"], sorted(callback.keywords["user_ids"])))
    bob, carol = (get_user_model().objects.get(username=n).pk for n in ("bob", "Carol"))
    assert sent == [("lobby", sorted([bob, carol]))]  # @room notifies nobody one by one


@pytest.mark.django_db
def test_an_edit_parses_again_notifying_new_mentions_once_and_removing_dropped_ones(
    crowd, user, django_capture_on_commit_callbacks
):
    message = post(crowd, user, "hi @bob")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        edited = services.message_edit(message=message, actor=user, body="hi @bob and @carol and @room")
    notified = [
        c.keywords["user_ids"]
        for c in callbacks
        if getattr(c, "func", None) is services.events.broadcast_mention
    ]
    carol = get_user_model().objects.get(username="Carol")
    assert notified == [[carol.pk]]
    assert mentioned(message) == ["Carol", "bob"] and edited.mentions_room
    services.message_edit(message=message, actor=user, body="just @carol")
    assert mentioned(message) == ["Carol"] and not Message.objects.get(pk=message.pk).mentions_room


@pytest.mark.django_db
def test_history_shows_mentions_and_a_deleted_message_shows_none(crowd, user, other_user):
    post(crowd, user, "hi @bob")
    gone = post(crowd, user, "bye @bob @room")
    post(crowd, user, "plain")
    services.message_delete(message=gone, actor=user)
    api = APIClient()
    api.force_authenticate(other_user)
    results = api.get("/api/rooms/lobby/messages/").json()["results"]
    assert [(m["mentions"], m["mentions_room"]) for m in results] == [
        ([{"id": other_user.pk, "username": "bob"}], False),
        ([], False),
        ([], False),
    ]


@pytest.mark.django_db
def test_the_room_counts_unread_mentions_of_the_member_and_of_room(crowd, user, other_user):
    from rooms import reads

    post(crowd, user, "@bob one")
    post(crowd, user, "@room two")
    post(crowd, user, "@carol three")
    assert reads.read_state(room=crowd, user=other_user) == reads.ReadState(0, 3, 2)
    reads.read_report(room=crowd, user=other_user, seq=1)
    assert reads.read_state(room=crowd, user=other_user) == reads.ReadState(1, 2, 1)
    both = post(crowd, user, "@bob and @room: counted once")
    assert reads.read_state(room=crowd, user=other_user) == reads.ReadState(1, 3, 2)
    services.message_delete(message=both, actor=user)
    assert reads.read_state(room=crowd, user=other_user) == reads.ReadState(1, 2, 1)
    post(crowd, other_user, "@bob's own @room")  # moves bob's marker to 5: nothing unread
    assert reads.read_state(room=crowd, user=other_user) == reads.ReadState(5, 0, 0)


# --- GET /api/mentions/ ---------------------------------------------------------------------------


def api_for(user):
    api = APIClient()
    api.force_authenticate(user)
    return api


@pytest.mark.django_db
def test_mentions_are_listed_newest_first_and_paged_by_message_id(crowd, user, other_user):
    ids = [post(crowd, user, f"@bob number {i}").pk for i in range(5)]
    post(crowd, user, "@carol not bob's")
    api = api_for(other_user)
    first = api.get("/api/mentions/", {"limit": 2}).json()
    assert [r["message"]["id"] for r in first["results"]] == [ids[4], ids[3]] and first["has_more"]
    assert (
        first["results"][0]["room"] == "lobby" and first["results"][0]["message"]["body"] == "@bob number 4"
    )
    second = api.get("/api/mentions/", {"limit": 2, "before_id": ids[3]}).json()
    third = api.get("/api/mentions/", {"limit": 2, "before_id": ids[1]}).json()
    assert [r["message"]["id"] for r in second["results"]] == [ids[2], ids[1]] and second["has_more"]
    assert [r["message"]["id"] for r in third["results"]] == [ids[0]] and not third["has_more"]


@pytest.mark.django_db
def test_mentions_list_only_readable_rooms_and_no_deleted_messages(user, other_user, room):
    secret = factories.make_room(created_by=user, slug="secret", is_private=True)
    services.member_add(room=secret, actor=user, user=other_user)
    services.member_join(room=room, user=other_user)
    post(secret, user, "@bob secret")
    deleted = post(room, user, "@bob deleted")
    post(room, user, "@bob public")
    services.message_delete(message=deleted, actor=user)
    api = api_for(other_user)
    assert [r["message"]["body"] for r in api.get("/api/mentions/").json()["results"]] == [
        "@bob public",
        "@bob secret",
    ]
    services.member_remove(room=secret, actor=user, user=other_user)  # removed from the private room
    assert [r["message"]["body"] for r in api.get("/api/mentions/").json()["results"]] == ["@bob public"]
    services.member_ban(room=room, actor=user, user=other_user)  # banned from the public one
    assert api.get("/api/mentions/").json() == {"results": [], "has_more": False}


@pytest.mark.django_db
@pytest.mark.parametrize("query", [{"before_id": "x"}, {"before_id": 0}, {"limit": 0}, {"limit": 201}])
def test_a_bad_mentions_query_is_400(other_user, query):
    assert api_for(other_user).get("/api/mentions/", query).status_code == 400


@pytest.mark.django_db
def test_mentions_need_a_signed_in_user():
    assert APIClient().get("/api/mentions/").status_code == 401


# --- the socket -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_mention_sent_over_a_socket_reaches_the_mentioned_users_sockets_only(
    ws, room, user, other_user
):
    carol = await database_sync_to_async(factories.make_user)("carol")
    await database_sync_to_async(
        lambda: [services.member_join(room=room, user=u) for u in (other_user, carol)]
    )()
    elsewhere = await database_sync_to_async(factories.make_room)(created_by=other_user, slug="elsewhere")
    alice = await ws("/ws/rooms/lobby/", user=user)
    bob = await ws(f"/ws/rooms/{elsewhere.slug}/", user=other_user)  # bob's socket in another room
    carol_socket = await ws("/ws/rooms/lobby/", user=carol)
    for conn in (alice, bob, carol_socket):
        assert await conn.connect()
        await conn.receive_type("hello")
    await alice.send({"type": "message.send", "body": "look @Bob", "client_msg_id": "c-1"})
    frame = await bob.receive_type("mention")
    assert frame["room"] == "lobby" and frame["message"]["body"] == "look @Bob"
    assert frame["message"]["mentions"] == [{"id": other_user.pk, "username": "bob"}]
    live = await carol_socket.receive_type("message")
    assert live["message"] == frame["message"]
    stored = await database_sync_to_async(  # stored by the socket's one-statement send
        lambda: (
            mentioned(Message.objects.get(pk=live["message"]["id"])),
            Message.objects.get(pk=live["message"]["id"]).mentions_room,
        )
    )()
    assert stored == (["bob"], False)
    assert await carol_socket.nothing_more(0.2) and await bob.nothing_more(0.1)
    for conn in (alice, bob, carol_socket):
        await conn.close()


# --- real nodes -----------------------------------------------------------------------------------


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
async def test_a_mention_sent_on_node1_reaches_the_mentioned_users_socket_on_node2(two_nodes):
    from tests.nodes import Client

    def setup():
        alice, bob = factories.make_user("alice"), factories.make_user("bob")
        factories.make_room(created_by=alice, slug="r0")
        other = factories.make_room(created_by=bob, slug="r1")
        services.member_join(room=services.Room.objects.get(slug="r0"), user=bob)
        return factories.token_for(alice), factories.token_for(bob), other.slug

    alice_token, bob_token, bob_room = await database_sync_to_async(setup)()
    node1, node2 = two_nodes
    bob = await Client(node2, bob_room, bob_token).connect()
    alice = await Client(node1, "r0", alice_token).connect()
    await alice.send("ping @bob", "c-1")
    assert await alice.wait_for(lambda c: "c-1" in c.acks)
    assert await bob.wait_for(lambda c: any(f["type"] == "mention" for f in c.frames)), bob.frames
    frame = next(f for f in bob.frames if f["type"] == "mention")
    assert frame["room"] == "r0" and frame["message"]["server_id"] == "node-1"
    assert [m["username"] for m in frame["message"]["mentions"]] == ["bob"]
    await asyncio.gather(alice.close(), bob.close())
    assert json.dumps(frame)
