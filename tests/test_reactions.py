"""Reactions (``rooms.reactions``): the emoji rule, add/remove idempotence, the rules of who may
react, the broadcast after commit, the message shape in history with a fixed number of queries,
REST and WebSocket, and across real nodes."""

import asyncio
import json
import urllib.parse
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from rooms import reactions, selectors, services
from rooms.models import Reaction
from rooms.serializers import MessageSerializer
from tests import factories
from tests.test_reads import two_nodes  # noqa: F401 (the module's two-node cluster fixture)

THUMBS = "👍"


def post(room, author, body="hi", client_msg_id=None):
    return services.message_post(
        room=room, author=author, body=body, client_msg_id=client_msg_id or body
    ).message


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def url(message):
    return f"/api/rooms/{message.room.slug}/messages/{message.pk}/reactions/"


# --- the emoji rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["👍", "👍🏽", "👨‍👩‍👧", "🇰🇷", "#️⃣", "❤️", "🏳️‍🌈", "🎉"])
def test_one_emoji_is_an_emoji(value):
    assert reactions.normalize_emoji(value) == value


def test_the_unqualified_form_is_the_same_reaction():
    assert reactions.normalize_emoji("❤") == reactions.normalize_emoji("❤️") == "❤️"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a",
        "ok",
        "👍👍",
        "👍 ",
        " 👍",
        ":thumbsup:",
        ":)",
        "\u200d",
        "<script>",
        "1",
        None,
        5,
        ["👍"],
        "👍" * 40,
    ],
)
def test_anything_but_one_emoji_is_refused(value):
    with pytest.raises(reactions.InvalidEmoji):
        reactions.normalize_emoji(value)


# --- the service ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_adding_twice_counts_once_and_broadcasts_once_after_commit(
    room, user, other_user, django_capture_on_commit_callbacks
):
    message = post(room, user)
    services.member_join(room=room, user=other_user)
    with django_capture_on_commit_callbacks() as callbacks:
        first = reactions.reaction_add(message=message, user=user, emoji=THUMBS)
        again = reactions.reaction_add(message=message, user=user, emoji=THUMBS)
        reactions.reaction_add(message=message, user=other_user, emoji=THUMBS)
        reactions.reaction_add(message=message, user=other_user, emoji="🎉")
    assert first.changed and not again.changed
    assert len(callbacks) == 3  # the second add changed nothing: no broadcast
    assert Reaction.objects.filter(message=message).count() == 3
    shape = MessageSerializer(selectors.room_history(room=room)[-1]).data["reactions"]
    assert shape == [
        {
            "emoji": THUMBS,
            "count": 2,
            "users": [{"id": user.pk, "username": "alice"}, {"id": other_user.pk, "username": "bob"}],
        },
        {"emoji": "🎉", "count": 1, "users": [{"id": other_user.pk, "username": "bob"}]},
    ]
    json.loads(json.dumps(shape))


@pytest.mark.django_db
def test_removing_one_you_do_not_have_changes_nothing(
    room, user, other_user, django_capture_on_commit_callbacks
):
    message = post(room, user)
    services.member_join(room=room, user=other_user)
    reactions.reaction_add(message=message, user=other_user, emoji=THUMBS)
    with django_capture_on_commit_callbacks() as callbacks:
        result = reactions.reaction_remove(message=message, user=user, emoji=THUMBS)  # bob's, not alice's
    assert not result.changed and callbacks == []
    assert result.reactions[0]["count"] == 1
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert reactions.reaction_remove(message=message, user=other_user, emoji=THUMBS).reactions == []
    assert len(callbacks) == 1


@pytest.mark.django_db
def test_the_broadcast_waits_for_the_commit_and_a_rollback_sends_nothing(
    room, user, django_capture_on_commit_callbacks
):
    from django.db import transaction

    message = post(room, user)
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        reactions.reaction_add(message=message, user=user, emoji=THUMBS)
        raise RuntimeError("rolled back")
    assert callbacks == [] and not Reaction.objects.exists()


@pytest.mark.django_db
def test_who_may_react(room, user, other_user):
    message = post(room, user)
    carol = factories.make_user("carol")
    # a public room's visitor becomes a member by reacting
    reactions.reaction_add(message=message, user=carol, emoji=THUMBS)
    assert room.memberships.filter(user=carol).exists()
    # muted: no new reaction, but may take theirs back
    services.member_mute(room=room, actor=user, user=carol, until=timezone.now() + timedelta(hours=1))
    with pytest.raises(services.Muted):
        reactions.reaction_add(message=message, user=carol, emoji="🎉")
    assert reactions.reaction_remove(message=message, user=carol, emoji=THUMBS).changed
    # banned: refused both ways
    services.member_ban(room=room, actor=user, user=carol)
    with pytest.raises(services.Banned):
        reactions.reaction_remove(message=message, user=carol, emoji=THUMBS)
    # a deleted message, an archived room
    gone = post(room, user, "gone")
    services.message_delete(message=gone, actor=user)
    with pytest.raises(services.Conflict):
        reactions.reaction_add(message=gone, user=user, emoji=THUMBS)
    services.room_archive(room=room, actor=user)
    with pytest.raises(services.Archived):
        reactions.reaction_add(message=message, user=user, emoji=THUMBS)
    assert not Reaction.objects.filter(user=carol, emoji="🎉").exists()


@pytest.mark.django_db
def test_a_private_room_answers_a_non_member_as_missing(user, other_user):
    private = factories.make_room(created_by=user, slug="secret", is_private=True)
    message = post(private, user)
    with pytest.raises(services.NotFound):
        reactions.reaction_add(message=message, user=other_user, emoji=THUMBS)
    response = api(other_user).post(url(message), {"emoji": THUMBS}, format="json")
    assert response.status_code == 404
    assert response.json() == api(other_user).get("/api/rooms/no-such-room/").json()
    assert not Reaction.objects.exists()


@pytest.mark.django_db
def test_a_history_page_reads_reactions_in_a_fixed_number_of_queries(room, user, other_user):
    services.member_join(room=room, user=other_user)
    for i in range(3):
        post(room, user, f"m{i} @bob", f"c{i}")

    def page_queries():
        with CaptureQueriesContext(connection) as queries:
            response = api(user).get(f"/api/rooms/{room.slug}/messages/", {"limit": 200})
        assert response.status_code == 200
        return len(queries), response.data["results"]

    few, _ = page_queries()
    for i in range(3, 30):
        message = post(room, user, f"m{i} @bob", f"c{i}")
        reactions.reaction_add(message=message, user=user, emoji=THUMBS)
        reactions.reaction_add(message=message, user=other_user, emoji="🎉")
    many, results = page_queries()
    assert many == few
    assert results[-1]["reactions"][1] == {
        "emoji": "🎉",
        "count": 1,
        "users": [{"id": other_user.pk, "username": "bob"}],
    }


# --- REST -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rest_post_and_delete_a_reaction(room, user):
    message = post(room, user)
    client = api(user)
    added = client.post(url(message), {"emoji": THUMBS}, format="json")
    assert added.status_code == 201
    assert added.json() == {
        "room": "lobby",
        "seq": message.seq,
        "reactions": [{"emoji": THUMBS, "count": 1, "users": [{"id": user.pk, "username": "alice"}]}],
    }
    assert client.post(url(message), {"emoji": THUMBS}, format="json").status_code == 200  # counted once
    one = client.get(f"/api/rooms/lobby/messages/{message.pk}/").json()
    assert one["reactions"][0]["count"] == 1
    removed = client.delete(url(message) + "?emoji=" + urllib.parse.quote(THUMBS))
    assert removed.status_code == 200 and removed.json()["reactions"] == []
    assert client.delete(url(message) + "?emoji=" + urllib.parse.quote(THUMBS)).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{"emoji": "lol"}, {"emoji": "👍👍"}, {"emoji": ""}, {}, {"emoji": 1}])
def test_rest_refuses_what_is_not_one_emoji(room, user, body):
    message = post(room, user)
    response = api(user).post(url(message), body, format="json")
    assert response.status_code == 400
    assert not Reaction.objects.exists()
    if body.get("emoji") in ("lol", "👍👍"):
        assert response.json()["code"] == "invalid_emoji"


@pytest.mark.django_db
def test_rest_codes_for_muted_deleted_and_a_message_of_another_room(room, user, other_user):
    message = post(room, user)
    elsewhere = factories.make_room(created_by=user, slug="elsewhere")
    services.member_join(room=room, user=other_user)
    services.member_mute(room=room, actor=user, user=other_user, until=timezone.now() + timedelta(hours=1))
    muted = api(other_user).post(url(message), {"emoji": THUMBS}, format="json")
    assert muted.status_code == 403 and muted.json()["code"] == "muted" and "until" in muted.json()
    wrong_room = api(user).post(
        f"/api/rooms/elsewhere/messages/{message.pk}/reactions/", {"emoji": THUMBS}, format="json"
    )
    assert wrong_room.status_code == 404
    services.message_delete(message=message, actor=user)
    deleted = api(user).post(url(message), {"emoji": THUMBS}, format="json")
    assert deleted.status_code == 409 and deleted.json()["code"] == "conflict"
    assert elsewhere.messages.count() == 0 and not Reaction.objects.exists()


# --- WebSocket ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_reaction_frame_is_acked_and_broadcast_to_the_room(ws, room, user, other_user):
    message = await database_sync_to_async(post)(room, user)
    await database_sync_to_async(services.member_join)(room=room, user=other_user)
    alice = await ws(f"/ws/rooms/{room.slug}/", user=user)
    bob = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    for conn in (alice, bob):
        assert await conn.connect()
        await conn.receive_type("hello")
    await alice.send({"type": "reaction.add", "seq": message.seq, "emoji": "❤"})
    frames = [await alice.receive(), await alice.receive()]
    ack = next(f for f in frames if f["type"] == "reaction.ack")
    expected = [{"emoji": "❤️", "count": 1, "users": [{"id": user.pk, "username": "alice"}]}]
    assert ack == {
        "type": "reaction.ack",
        "action": "add",
        "seq": message.seq,
        "emoji": "❤️",
        "changed": True,
        "reactions": expected,
    }
    updated = {"type": "reaction.updated", "room": "lobby", "seq": message.seq, "reactions": expected}
    assert updated in frames
    assert await bob.receive() == updated
    # again: acked, changed nothing, nothing broadcast
    await alice.send({"type": "reaction.add", "seq": message.seq, "emoji": "❤️"})
    assert (await alice.receive())["changed"] is False
    assert await bob.nothing_more()
    await alice.send({"type": "reaction.remove", "seq": message.seq, "emoji": "❤️"})
    assert (await bob.receive())["reactions"] == []
    await alice.close()
    await bob.close()


@pytest.mark.django_db(transaction=True)
async def test_bad_reaction_frames_answer_an_error_and_keep_the_socket(joined, room, user):
    message = await database_sync_to_async(post)(room, user)
    cases = [
        ({"type": "reaction.add", "seq": message.seq, "emoji": "nope"}, "invalid_emoji"),
        ({"type": "reaction.add", "seq": message.seq}, "missing_field"),
        ({"type": "reaction.add", "emoji": THUMBS}, "missing_field"),
        ({"type": "reaction.add", "seq": "1", "emoji": THUMBS}, "invalid_field"),
        ({"type": "reaction.remove", "seq": 999, "emoji": THUMBS}, "message_not_found"),
    ]
    for frame, code in cases:
        await joined.send(frame)
        error = await joined.receive_type("error")
        assert error["code"] == code, (frame, error)
    await joined.send({"type": "reaction.add", "seq": message.seq, "emoji": THUMBS})
    assert (await joined.receive())["type"] in ("reaction.ack", "reaction.updated")  # still open
    assert await database_sync_to_async(Reaction.objects.count)() == 1


# --- real nodes -----------------------------------------------------------------------------------


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
async def test_a_reaction_on_node1_reaches_node2_live_and_is_in_history(two_nodes):
    from tests.nodes import Client, Http

    def setup():
        alice, bob = factories.make_user("alice"), factories.make_user("bob")
        room = factories.make_room(created_by=alice, slug="react")
        services.member_join(room=room, user=bob)
        message = post(room, alice, "react to me")
        return factories.token_for(alice), factories.token_for(bob), message

    alice_token, bob_token, message = await database_sync_to_async(setup)()
    node1, node2 = two_nodes
    watcher = await Client(node2, "react", bob_token).connect()
    reactor = await Client(node1, "react", alice_token).connect()
    await reactor._socket.send(json.dumps({"type": "reaction.add", "seq": message.seq, "emoji": THUMBS}))
    assert await watcher.wait_for(lambda c: any(f["type"] == "reaction.updated" for f in c.frames)), (
        watcher.frames
    )
    updated = next(f for f in watcher.frames if f["type"] == "reaction.updated")
    assert updated["seq"] == message.seq and updated["reactions"][0]["emoji"] == THUMBS
    # and over REST on node 2: in history, then a REST removal on node 2 reaches node 1's socket
    status, _, body = await asyncio.to_thread(
        Http(node2, bob_token).request, "GET", "/api/rooms/react/messages/"
    )
    assert status == 200
    assert json.loads(body)["results"][-1]["reactions"] == updated["reactions"]
    status, _, body = await asyncio.to_thread(
        Http(node2, bob_token).request,
        "POST",
        f"/api/rooms/react/messages/{message.pk}/reactions/",
        json_body={"emoji": "🎉"},
    )
    assert status == 201, body
    assert await reactor.wait_for(
        lambda c: any(f["type"] == "reaction.updated" and len(f["reactions"]) == 2 for f in c.frames)
    ), reactor.frames
    await watcher.close()
    await reactor.close()


@pytest.mark.django_db
def test_a_retried_send_is_found_with_its_reactions_loaded_so_its_broadcast_makes_no_query(
    room, user, django_assert_num_queries
):
    from rooms.serializers import message_data

    message = post(room, user, "sent once", "c-1")
    reactions.reaction_add(message=message, user=user, emoji=THUMBS)
    found = services._find_sent(room=room, author=user, client_msg_id="c-1")
    with django_assert_num_queries(0):  # message_post_async builds it on the event loop
        data = message_data(found)
    assert data["reactions"][0]["emoji"] == THUMBS
