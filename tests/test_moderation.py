"""Live effects of REST, admin and service writes on open sockets (in-process, real Redis layer
and PostgreSQL), and the cases BR-05, BR-06, BR-08 and BR-17."""

import asyncio
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from rooms import events, services
from rooms.models import Message
from tests import factories
from tests.conftest import new_client_msg_id
from tests.nodes import free_port

pytestmark = pytest.mark.django_db(transaction=True)

BASE_DIR = Path(__file__).resolve().parent.parent
LOOP_ERRORS = (
    "Event loop is closed",
    "Task exception was never retrieved",
    "AsyncToSync in the same thread",
    "SynchronousOnlyOperation",
)


def sync(fn):
    return database_sync_to_async(fn)


async def open_member(ws, room, user):
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    await conn.receive_type("hello")
    return conn


def rest(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def moderators_group() -> Group:
    """The group migration 0002 makes. Transactional tests empty every table afterwards, data
    migrations' rows included, so it is made again here by the migration's own function."""
    from importlib import import_module

    from django.apps import apps

    import_module("rooms.migrations.0002_moderators_group").create_group(apps, None)
    return Group.objects.get(name="Moderators")


def moderator_staff():
    staff = factories.make_user("mod", is_staff=True)
    staff.groups.add(moderators_group())
    return staff


@pytest.fixture
def layer_mode(request, settings):
    """Run a test on the Redis Pub/Sub layer (default) or the in-memory layer."""
    mode = getattr(request, "param", "redis")
    if mode == "in-memory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
        channel_layers.backends.clear()
    yield mode
    channel_layers.backends.clear()


# --- live effects -----------------------------------------------------------------------------------


async def test_rest_send_reaches_sockets_once(ws, room, user, other_user):
    watcher = await open_member(ws, room, other_user)
    response = await sync(
        lambda: rest(user).post(
            "/api/rooms/lobby/messages/", {"body": "via REST", "client_msg_id": "r1"}, format="json"
        )
    )()
    assert response.status_code == 201
    frame = await watcher.receive_type("message")
    assert frame["message"] == response.data
    await sync(
        lambda: rest(user).post(
            "/api/rooms/lobby/messages/", {"body": "via REST", "client_msg_id": "r1"}, format="json"
        )
    )()
    assert await watcher.nothing_more(0.3)
    await watcher.close()


async def test_edit_and_delete_reach_sockets(ws, room, user, other_user):
    watcher = await open_member(ws, room, other_user)
    message = (
        await sync(services.message_post)(room=room, author=user, body="tpyo", client_msg_id="e")
    ).message
    await watcher.receive_type("message")
    await sync(services.message_edit)(message=message, actor=user, body="typo")
    updated = await watcher.receive_type("message.updated")
    assert updated["message"]["body"] == "typo" and updated["message"]["edited_at"]
    await sync(services.message_delete)(message=message, actor=user)
    deleted = await watcher.receive_type("message.deleted")
    assert deleted == {"type": "message.deleted", "id": message.pk, "room": "lobby", "seq": message.seq}
    await sync(services.message_delete)(message=message, actor=user)  # again: nothing more
    assert await watcher.nothing_more(0.3)
    await watcher.close()


async def test_ban_closes_the_members_sockets_4403_and_others_stay(ws, room, user, other_user):
    bob_tab1 = await open_member(ws, room, other_user)
    bob_tab2 = await open_member(ws, room, other_user)
    alice = await open_member(ws, room, user)
    await sync(services.member_ban)(room=room, actor=user, user=other_user)
    assert await bob_tab1.close_code() == 4403
    assert await bob_tab2.close_code() == 4403
    again = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    assert await again.connect()
    assert await again.close_code() == 4403
    ack = await alice_sends(alice, "still here")
    assert ack["seq"] == 1
    await alice.close()


async def alice_sends(conn, body):
    await conn.send({"type": "message.send", "body": body, "client_msg_id": new_client_msg_id()})
    frames = [await conn.receive(), await conn.receive()]
    return next(f for f in frames if f["type"] == "ack")


async def test_mute_answers_muted_with_until_and_socket_stays(ws, room, user, other_user):
    from datetime import timedelta

    from django.utils import timezone

    bob = await open_member(ws, room, other_user)
    until = timezone.now() + timedelta(minutes=5)
    await sync(services.member_mute)(room=room, actor=user, user=other_user, until=until)
    await bob.send({"type": "message.send", "body": "hi", "client_msg_id": "m1"})
    error = await bob.receive_type("error")
    assert (
        error["code"] == "muted"
        and error["until"].startswith(until.strftime("%Y-%m-%dT%H:%M"))
        and error["client_msg_id"] == "m1"
    )
    await sync(services.member_mute)(room=room, actor=user, user=other_user, until=None)
    assert (await alice_sends(bob, "unmuted"))["seq"] == 1
    await bob.close()


async def test_archiving_tells_and_closes_every_socket_4410(ws, room, user, other_user):
    bob = await open_member(ws, room, other_user)
    await sync(services.room_archive)(room=room, actor=user)
    assert await bob.receive_type("room.archived") == {"type": "room.archived", "room": "lobby"}
    assert await bob.close_code() == 4410
    late = await ws(f"/ws/rooms/{room.slug}/", user=other_user)
    assert await late.connect()
    assert await late.close_code() == 4410


async def test_private_room_socket_is_4404_for_non_members(ws, user, other_user):
    secret = await sync(factories.make_room)(created_by=user, slug="secret", is_private=True)
    outsider = await ws("/ws/rooms/secret/", user=other_user)
    assert await outsider.connect()
    assert await outsider.close_code() == 4404
    await sync(services.member_add)(room=secret, actor=user, user=other_user)
    member = await open_member(ws, secret, other_user)
    await member.close()


# --- cases --------------------------------------------------------------------------------------


async def test_BR05_broadcast_from_sync_code_exactly_once(ws, room, user, other_user, caplog):
    """100 REST posts (sync view), a management command posting 50 and exiting, and a worker
    thread posting 50: a member's socket gets each stored message once; no event-loop errors."""
    caplog.set_level(logging.WARNING)
    watcher = await open_member(ws, room, other_user)

    def rest_posts():
        client = rest(user)
        for i in range(100):
            assert (
                client.post(
                    "/api/rooms/lobby/messages/",
                    {"body": f"rest {i}", "client_msg_id": f"r{i}"},
                    format="json",
                ).status_code
                == 201
            )

    await sync(rest_posts)()

    env = {
        **os.environ,
        "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "DATABASE_URL": _test_database_url(),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "post_messages",
        "lobby",
        "alice",
        "from the command",
        "--count",
        "50",
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "posted 50 message(s)" in out.decode()
    assert not any(e in err.decode() for e in LOOP_ERRORS), err.decode()

    def worker():
        for i in range(50):
            services.message_post(room=room, author=user, body=f"thread {i}", client_msg_id=f"t{i}")
        from django.db import connections

        connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.to_thread(thread.join, 60)

    got = []
    while len(got) < 200:
        got.append((await watcher.receive_type("message", timeout=10))["message"]["seq"])
    assert sorted(got) == list(range(1, 201))
    assert await watcher.nothing_more(0.5)
    assert await sync(Message.objects.count)() == 200
    assert not any(e in caplog.text for e in LOOP_ERRORS), caplog.text
    await watcher.close()


def _test_database_url():
    from tests.nodes import database_url_for_tests

    return database_url_for_tests()


def test_BR05_failed_broadcast_still_answers_201_and_is_logged_and_counted(room, user, settings, caplog):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": f"redis://127.0.0.1:{free_port()}/0", "socket_connect_timeout": 1}]
            },
        }
    }
    channel_layers.backends.clear()
    before = events.broadcast_failures
    try:
        response = rest(user).post(
            "/api/rooms/lobby/messages/", {"body": "stored", "client_msg_id": "f1"}, format="json"
        )
    finally:
        channel_layers.backends.clear()
    assert response.status_code == 201
    assert Message.objects.filter(body="stored").count() == 1
    assert events.broadcast_failures == before + 1
    assert "broadcast of room.message" in caplog.text and "failed" in caplog.text


async def test_BR06_every_entry_point_broadcasts_exactly_once(ws, room, user, other_user, caplog):
    """Consumer, REST create, REST edit, admin delete and async code: one frame each."""
    caplog.set_level(logging.WARNING)
    watcher = await open_member(ws, room, other_user)
    sender = await open_member(ws, room, user)

    await alice_sends(sender, "from the socket")
    assert (await watcher.receive_type("message"))["message"]["body"] == "from the socket"

    await sync(
        lambda: rest(user).post(
            "/api/rooms/lobby/messages/", {"body": "from REST", "client_msg_id": "r"}, format="json"
        )
    )()
    assert (await watcher.receive_type("message"))["message"]["body"] == "from REST"
    await sender.receive_type("message")

    result = await sync(services.message_post)(
        room=room, author=user, body="from async code", client_msg_id="a"
    )
    assert (await watcher.receive_type("message"))["message"]["body"] == "from async code"
    await sender.receive_type("message")

    response = await sync(
        lambda: rest(user).patch(
            f"/api/rooms/lobby/messages/{result.message.pk}/", {"body": "edited by its author"}, format="json"
        )
    )()
    assert response.status_code == 200, response.content[:500]
    assert (await watcher.receive_type("message.updated"))["message"]["body"] == "edited by its author"
    await sender.receive_type("message.updated")

    staff = await sync(moderator_staff)()
    admin = Client()
    await sync(admin.force_login)(staff)

    response = await sync(
        lambda: admin.post(
            "/admin/rooms/message/", {"action": "soft_delete", "_selected_action": [str(result.message.pk)]}
        )
    )()
    assert response.status_code == 302
    assert (await watcher.receive_type("message.deleted"))["id"] == result.message.pk
    await sender.receive_type("message.deleted")

    assert await watcher.nothing_more(0.3)
    assert not any(e in caplog.text for e in LOOP_ERRORS), caplog.text
    assert await sync(Message.objects.filter(deleted_at__isnull=False).count)() == 1
    await watcher.close()
    await sender.close()


def test_moderators_group_has_exactly_the_moderation_permissions(db):
    perms = set(moderators_group().permissions.values_list("codename", flat=True))
    assert perms == {"view_room", "view_message", "change_message", "view_membership", "change_membership"}


def test_staff_outside_moderators_see_no_moderation_in_admin(db, room):
    staff = factories.make_user("plainstaff", is_staff=True)
    client = Client()
    client.force_login(staff)
    assert client.get("/admin/rooms/message/").status_code == 403
    assert "rooms" not in client.get("/admin/").content.decode().lower().split("site administration")[-1]


@pytest.mark.parametrize("layer_mode", ["redis", "in-memory"], indirect=True)
async def test_BR08_cleanup_is_idempotent(ws, room, user, other_user, layer_mode, caplog):
    caplog.set_level(logging.WARNING)
    # (a) refused before joining any group: disconnect still runs, without error.
    refused = await ws("/ws/rooms/no-such-room/", user=user)
    assert await refused.connect()
    assert await refused.close_code() == 4404
    await refused.close()
    # (b) leave twice, then disconnect.
    bob = await open_member(ws, room, other_user)
    for _ in range(2):
        await sync(services.member_leave)(room=room, user=other_user)
    assert await bob.close_code() == 4000
    await bob.close()
    await bob.close()
    # (c) one user in two tabs closes one: the other keeps receiving.
    tab1 = await open_member(ws, room, other_user)
    tab2 = await open_member(ws, room, other_user)
    await tab1.close()
    await sync(services.message_post)(room=room, author=user, body="still there?", client_msg_id="c")
    assert (await tab2.receive_type("message"))["message"]["body"] == "still there?"
    await tab2.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_BR17_token_auth_for_native_clients(ws, room, user, other_user):
    key = await sync(factories.token_for)(user)
    # (a) a valid token: accepted as that user.
    conn = await ws(f"/ws/rooms/{room.slug}/", token=key, origin=None)
    assert await conn.connect()
    await conn.receive_type("hello")
    assert (await alice_sends(conn, "token user"))["seq"] == 1
    # (b) a wrong token: refused.
    wrong = await ws(f"/ws/rooms/{room.slug}/", token="f" * 40, origin=None)
    assert await wrong.connect()
    assert await wrong.close_code() == 4401
    # (c) revoked through the API while open: the socket is closed with 4401 at once.
    response = await sync(lambda: APIClient(HTTP_AUTHORIZATION=f"Token {key}").delete("/api/auth/token/"))()
    assert response.status_code == 204
    assert await conn.close_code(timeout=2) == 4401
    # (c') even when the revocation event is lost, the next send is refused and the socket closed.
    key2 = await sync(factories.token_for)(user)
    conn2 = await ws(f"/ws/rooms/{room.slug}/", token=key2, origin=None)
    assert await conn2.connect()
    await conn2.receive_type("hello")
    await sync(Token.objects.filter(key=key2).delete)()  # no event
    await conn2.send({"type": "message.send", "body": "after revoke", "client_msg_id": "x"})
    assert (await conn2.receive_type("error"))["code"] == "unauthenticated"
    assert await conn2.close_code() == 4401
    # (d) a cookie of one user and a token of another: the token decides.
    bob_key = await sync(factories.token_for)(other_user)
    both = await ws(f"/ws/rooms/{room.slug}/", user=user, token=bob_key)
    assert await both.connect()
    await both.receive_type("hello")
    await both.send({"type": "message.send", "body": "who am i", "client_msg_id": "w"})
    frames = [await both.receive(), await both.receive()]
    message = next(f for f in frames if f["type"] == "message")
    assert message["message"]["author"]["username"] == "bob"
    await both.close()
    # A token in the URL is not a credential (tokens never go in URLs or access logs).
    in_url = await ws(f"/ws/rooms/{room.slug}/?token={bob_key}")
    assert await in_url.connect()
    assert await in_url.close_code() == 4401
    assert await sync(Message.objects.filter(body="after revoke").exists)() is False


def test_a_moderator_archives_a_room_in_admin(db, room):
    client = Client()
    client.force_login(moderator_staff())
    response = client.post(
        "/admin/rooms/room/", {"action": "archive_rooms", "_selected_action": [str(room.pk)]}
    )
    assert response.status_code == 302
    room.refresh_from_db()
    assert room.is_archived


def _admin_edit(client, message, body):
    """POST a new body to the admin's change page of ``message``, as an edited form would."""
    return client.post(f"/admin/rooms/message/{message.pk}/change/", {"body": body, "_save": "Save"})


@pytest.mark.parametrize("who", ["site moderator", "superuser", "author (staff)"])
def test_no_one_rewrites_a_message_in_admin_the_body_is_read_only(db, room, user, who):
    author = (
        staff_with("bob", "view_message", "change_message")
        if who == "author (staff)"
        else factories.make_user("bob")
    )
    services.member_join(room=room, user=author)
    message = services.message_post(room=room, author=author, body="original", client_msg_id="x").message
    editor = {
        "site moderator": moderator_staff,
        "author (staff)": lambda: author,
        "superuser": lambda: factories.make_user("root", is_staff=True, is_superuser=True),
    }[who]()
    client = admin_client(editor)
    before = _rows()
    page = client.get(f"/admin/rooms/message/{message.pk}/change/")
    assert page.status_code == 200 and b"original" in page.content
    assert b'name="body"' not in page.content and b'name="_save"' not in page.content  # read-only
    response = _admin_edit(client, message, "rewritten")
    assert response.status_code == 403
    assert _rows() == before


def test_the_site_moderators_soft_delete_stays_available_in_admin(db, room, user):
    message = services.message_post(room=room, author=user, body="rude", client_msg_id="x").message
    client = admin_client(moderator_staff())
    listing = client.get("/admin/rooms/message/")
    assert listing.status_code == 200 and b"soft_delete" in listing.content and b"rude" in listing.content
    client.post("/admin/rooms/message/", {"action": "soft_delete", "_selected_action": [str(message.pk)]})
    assert Message.objects.get(pk=message.pk).deleted_at is not None


def test_a_dms_messages_are_not_shown_nor_searchable_as_text_in_admin_but_can_be_deleted(
    db, user, other_user
):
    from rooms import dms

    dm = dms.dm_open(user=user, username="bob").room
    message = services.message_post(room=dm, author=user, body="private words", client_msg_id="x").message
    factories.make_room(created_by=user, slug="lobby2", name="Lobby 2")
    for staff in (moderator_staff(), factories.make_user("root", is_staff=True, is_superuser=True)):
        client = admin_client(staff)
        for url in ("/admin/rooms/message/", f"/admin/rooms/message/{message.pk}/change/"):
            page = client.get(url)
            assert page.status_code == 200 and b"private words" not in page.content, url
            assert b"a direct message: not shown" in page.content, url
        for term in ("private words", "private", "words"):  # the search box echoes the term itself
            assert client.get("/admin/rooms/message/", {"q": term}).context["cl"].result_count == 0, term
    client.post("/admin/rooms/message/", {"action": "soft_delete", "_selected_action": [str(message.pk)]})
    assert Message.objects.get(pk=message.pk).deleted_at is not None


def test_the_admin_search_still_finds_group_rooms_messages_by_body(db, room, user):
    services.message_post(room=room, author=user, body="findable text", client_msg_id="x")
    page = admin_client(moderator_staff()).get("/admin/rooms/message/?q=findable")
    assert page.context["cl"].result_count == 1


# --- the moderation hierarchy in admin ---------------------------------------------------------------


def _rows():
    from rooms.models import Membership, Room

    return (
        list(Membership.objects.order_by("pk").values()),
        list(Message.objects.order_by("pk").values()),
        list(Room.objects.order_by("pk").values()),
    )


def staff_with(username, *codenames):
    """A staff user with only these permissions: in admin, but not a site moderator."""
    from django.contrib.auth.models import Permission

    moderators_group()  # makes the permissions too (transactional tests empty their table)
    staff = factories.make_user(username, is_staff=True)
    permissions = Permission.objects.filter(content_type__app_label="rooms", codename__in=codenames)
    assert len(permissions) == len(codenames)
    staff.user_permissions.add(*permissions)
    return staff


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_staff_room_moderator_cannot_mute_ban_or_unban_a_fellow_moderator_or_the_owner_in_admin(
    db, room, user
):
    from rooms.models import Membership

    bob = staff_with("bob", "view_membership", "change_membership")
    carol = factories.make_user("carol")
    services.member_add(room=room, actor=user, user=bob, role="moderator")
    services.member_add(room=room, actor=user, user=carol, role="moderator")
    assert not services.is_site_moderator(bob)
    client = admin_client(bob)
    targets = [str(Membership.objects.get(room=room, user=u).pk) for u in (carol, user)]
    before = _rows()
    for action in ("mute_1h", "mute_24h", "unmute", "ban", "unban"):
        response = client.post(
            "/admin/rooms/membership/", {"action": action, "_selected_action": targets}, follow=True
        )
        content = response.content.decode()
        assert response.status_code == 200 and "Only the owner may act on a moderator." in content, action
        assert "The owner cannot be muted" in content and "member(s)" not in content, action
        assert _rows() == before, action


def test_a_site_moderator_acts_on_moderators_but_not_on_the_owner_in_admin(db, room, user, other_user):
    from rooms.models import Membership

    services.member_add(room=room, actor=user, user=other_user, role="moderator")
    client = admin_client(moderator_staff())
    owner = str(Membership.objects.get(room=room, user=user).pk)
    before = _rows()
    response = client.post(
        "/admin/rooms/membership/", {"action": "ban", "_selected_action": [owner]}, follow=True
    )
    assert "The owner cannot be muted" in response.content.decode() and _rows() == before
    moderator = str(Membership.objects.get(room=room, user=other_user).pk)
    client.post("/admin/rooms/membership/", {"action": "mute_1h", "_selected_action": [moderator]})
    assert Membership.objects.get(room=room, user=other_user).muted_now()


def test_a_staff_room_moderator_cannot_soft_delete_the_owners_or_a_moderators_messages_in_admin(
    db, room, user
):
    bob = staff_with("bob", "view_message", "change_message")
    carol = factories.make_user("carol")
    services.member_add(room=room, actor=user, user=bob, role="moderator")
    services.member_add(room=room, actor=user, user=carol, role="moderator")
    ids = [
        str(services.message_post(room=room, author=u, body="x", client_msg_id="x").message.pk)
        for u in (user, carol)
    ]
    before = _rows()
    response = admin_client(bob).post(
        "/admin/rooms/message/", {"action": "soft_delete", "_selected_action": ids}, follow=True
    )
    content = response.content.decode()
    assert "delete the owner&#x27;s messages" in content and "delete a moderator&#x27;s messages" in content
    assert _rows() == before


def test_a_moderator_editing_someone_elses_message_is_refused_forbidden_over_rest_and_the_page(
    db, room, user, other_user
):
    """Room moderators, the owner and site moderators delete others' messages; they never edit
    them: REST (token, and the session the room page uses) answers 403 ``forbidden``."""
    from rooms.models import Membership

    services.member_join(room=room, user=other_user)
    message = services.message_post(room=room, author=other_user, body="rude", client_msg_id="x").message
    carol = factories.make_user("carol")
    services.member_add(room=room, actor=user, user=carol, role=Membership.Role.MODERATOR)
    site = moderator_staff()
    owners = services.message_post(room=room, author=user, body="owner's words", client_msg_id="o").message
    before = _rows()
    for editor, target in ((user, message), (carol, message), (site, message), (site, owners)):
        url = f"/api/rooms/lobby/messages/{target.pk}/"
        response = rest(editor).patch(url, {"body": "[removed]"}, format="json")
        assert response.status_code == 403 and response.json()["code"] == "forbidden", editor
        page = Client()  # the room page's own edit: the session and its CSRF token
        page.force_login(editor)
        response = page.patch(url, '{"body": "[removed]"}', content_type="application/json")
        assert response.status_code == 403 and response.json()["code"] == "forbidden", editor
        with pytest.raises(services.Forbidden):
            services.message_edit(message=target, actor=editor, body="[removed]")
    assert _rows() == before
    assert services.message_delete(message=message, actor=site).deleted_at is not None


async def test_the_websocket_has_no_edit_frame_a_moderators_edit_changes_nothing(ws, room, user, other_user):
    message = (
        await sync(services.message_post)(room=room, author=other_user, body="rude", client_msg_id="x")
    ).message
    staff = await sync(moderator_staff)()
    conn = await open_member(ws, room, staff)
    await conn.send({"type": "message.edit", "id": message.pk, "body": "[removed]"})
    assert (await conn.receive_type("error"))["code"] == "unknown_type"
    assert (await sync(Message.objects.get)(pk=message.pk)).body == "rude"
    await conn.close()


# --- rooms in admin: text rules, slugs, and nothing for non-staff --------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("name", "\u200b"), ("name", "a\x07"), ("description", "\u3164\u3164")]
)
def test_an_admin_edit_of_a_room_follows_the_name_and_description_rules(db, room, field, value):
    superuser = get_user_model_superuser()
    data = {"name": room.name, "slug": room.slug, "description": room.description, field: value}
    before = _rows()
    response = admin_client(superuser).post(f"/admin/rooms/room/{room.pk}/change/", data)
    assert response.status_code == 200 and field in response.context["adminform"].form.errors
    assert _rows() == before


def test_adding_a_room_in_admin_over_a_taken_slug_answers_the_one_unavailable_text(db, room, user):
    factories.make_room(created_by=user, slug="hidden", is_private=True)
    response = admin_client(get_user_model_superuser()).post(
        "/admin/rooms/room/add/", {"name": "Other", "slug": "hidden", "description": ""}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["slug"] == [
        "This slug is not available; choose another."
    ]


def test_the_admin_refuses_a_slug_differing_only_in_case_or_with_the_dm_prefix_adding_or_changing(
    db, room, user
):
    from django.contrib.contenttypes.models import ContentType

    # A transactional test before this one flushed the tables, content types included: the
    # admin's log entry of the change saved below must not use a cached id from before that.
    ContentType.objects.clear_cache()
    client = admin_client(get_user_model_superuser())
    for slug in ("LOBBY", "Lobby", "dm-x", "DM-x", "New"):
        response = client.post("/admin/rooms/room/add/", {"name": "Other", "slug": slug, "description": ""})
        assert response.status_code == 200, slug
        assert response.context["adminform"].form.errors["slug"] == [
            "This slug is not available; choose another."
        ]
    other = factories.make_room(created_by=user, slug="other", name="Other")
    before = _rows()
    for slug in ("Lobby", "DM-other"):
        response = client.post(
            f"/admin/rooms/room/{other.pk}/change/", {"name": "Other", "slug": slug, "description": ""}
        )
        assert response.status_code == 200 and "slug" in response.context["adminform"].form.errors, slug
    assert _rows() == before
    response = client.post(
        f"/admin/rooms/room/{other.pk}/change/", {"name": "Renamed", "slug": "other", "description": ""}
    )
    assert response.status_code == 302  # its own slug is not "taken"


def test_the_admin_answers_a_non_staff_user_alike_for_a_private_room_and_a_missing_one(db, user, other_user):
    secret = factories.make_room(created_by=user, slug="secret", is_private=True)
    client = admin_client(other_user)
    answers = []
    for pk in (secret.pk, secret.pk + 1000):
        for path in (f"/admin/rooms/room/{pk}/change/", f"/admin/rooms/room/{pk}/history/"):
            response = client.get(path)
            answers.append((response.status_code, response["Location"].replace(str(pk), "ID")))
    assert answers[:2] == answers[2:] and all(code == 302 for code, _ in answers)


def get_user_model_superuser():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("root", password=factories.PASSWORD)


async def test_a_muted_member_keeps_reading_the_room_live_and_its_history_over_the_socket(
    ws, room, user, other_user
):
    from datetime import timedelta

    from django.utils import timezone

    bob = await open_member(ws, room, other_user)
    await sync(services.member_mute)(
        room=room, actor=user, user=other_user, until=timezone.now() + timedelta(minutes=5)
    )
    await sync(services.message_post)(room=room, author=user, body="while you are muted", client_msg_id="w")
    assert (await bob.receive_type("message"))["message"]["body"] == "while you are muted"
    await bob.send({"type": "fetch", "after_seq": 0})
    history = await bob.receive_type("history")
    assert [m["body"] for m in history["messages"]] == ["while you are muted"]
    await bob.send({"type": "message.send", "body": "let me talk", "client_msg_id": "t"})
    assert (await bob.receive_type("error"))["code"] == "muted"
    assert await bob.nothing_more(0.3)
    await bob.close()
