"""Access is checked on every read, not only on send (issue 17, item 1), on real daphne nodes
sharing PostgreSQL and Redis: every way access ends (a membership deleted in admin, a user
deactivated in admin, a token deleted in admin, a room made private over REST or deleted in
admin, leaving from a signed-in page's session, a change made behind the services' back) stops
live frames at once on every node, and ``fetch``, ``resume`` and ``?after_seq`` refuse history.

The change is made through node-1 (or straight in the database); the socket under test is on
node-2. The module's nodes run with ``ACCESS_RECHECK`` of an hour, so a close seen here came
from the event, not from the periodic backstop; the backstop has a test of its own."""

import asyncio
import json
import os
import uuid

import pytest
import websockets
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from rooms import services
from rooms.models import Membership, Room
from tests import factories
from tests.nodes import (
    TEST_SECRET_KEY,
    Client,
    Http,
    cluster,
    database_url_for_tests,
    start_node,
    wait_healthy,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.multinode]

User = get_user_model()


@pytest.fixture(scope="module")
def nodes(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with cluster(
        2,
        redis_url=os.environ["REDIS_URL"],
        database_url=database_url,
        prefix=prefix,
        extra_env={"ACCESS_RECHECK": "3600"},
    ) as started:
        yield started
        for node in started:
            assert "Traceback" not in node.log(), node.log()


def node_user(username: str, **flags):
    """A user whose password the nodes can check (they verify with PBKDF2; tests hash with MD5
    for speed)."""
    user = factories.make_user(username, **flags)
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(factories.PASSWORD, hasher.salt(), iterations=1000)
    user.save(update_fields=["password"])
    return user


@pytest.fixture
def setup(db):
    """alice owns the private room ``secret`` and the public room ``lobby``; bob is a member of
    both; root is a superuser; tokens for alice and bob."""
    alice, bob = factories.make_user("alice"), node_user("bob")
    node_user("root", is_staff=True, is_superuser=True)
    secret = factories.make_room(created_by=alice, slug="secret", is_private=True)
    lobby = factories.make_room(created_by=alice, slug="lobby")
    services.member_add(room=secret, actor=alice, user=bob)
    services.member_join(room=lobby, user=bob)
    return {
        "alice": factories.token_for(alice),
        "bob": factories.token_for(bob),
        "bob_user": bob,
        "secret": secret,
        "lobby": lobby,
    }


class SessionClient(Client):
    """A client signed in with a session cookie, as the room page's socket is."""

    def __init__(self, node, room, session_key):
        super().__init__(node, room, token="")
        self.session_key = session_key

    async def connect(self) -> "SessionClient":
        self._socket = await websockets.connect(
            f"{self.node.ws}/ws/rooms/{self.room}/",
            additional_headers={"Cookie": f"sessionid={self.session_key}", "Origin": self.node.http},
            open_timeout=10,
        )
        self.hello = json.loads(await asyncio.wait_for(self._socket.recv(), 10))
        assert self.hello["type"] == "hello", self.hello
        self._reader = asyncio.ensure_future(self._read())
        return self


async def page_login(node, username: str) -> tuple[Http, str]:
    """Sign in through the log-in page of ``node``; returns the browser and its session key."""
    page = Http(node)
    await asyncio.to_thread(page.request, "GET", "/accounts/login/")
    status, _, _ = await asyncio.to_thread(
        page.request, "POST", "/accounts/login/", form={"username": username, "password": factories.PASSWORD}
    )
    assert status == 302
    return page, next(c.value for c in page.jar if c.name == "sessionid")


async def frame(client: Client, payload: dict) -> None:
    await client._socket.send(json.dumps(payload))


async def closed_with(client: Client, timeout: float = 10.0) -> int | None:
    assert await client.wait_for(lambda c: c.close_code is not None, timeout=timeout), client.frames[-3:]
    return client.close_code


async def send_after(node, token: str, body: str) -> int:
    """alice sends ``body`` over REST through ``node``; returns its seq."""
    status, _, raw = await asyncio.to_thread(
        Http(node, token).request,
        "POST",
        f"/api/rooms/{ROOM[0]}/messages/",
        json_body={"body": body, "client_msg_id": uuid.uuid4().hex},
    )
    assert status == 201, raw
    return json.loads(raw)["seq"]


ROOM = ["secret"]  # the room send_after posts to


async def admin_login(node) -> Http:
    admin = Http(node)
    await asyncio.to_thread(admin.login_admin, "root", factories.PASSWORD)
    return admin


async def admin_delete(admin: Http, path: str) -> None:
    """Confirm Django admin's delete page at ``path`` (``/admin/<app>/<model>/<id>/delete/``)."""
    status, _, _ = await asyncio.to_thread(admin.request, "GET", path)
    assert status == 200, path
    status, _, body = await asyncio.to_thread(admin.request, "POST", path, form={"post": "yes"})
    assert status == 302, body[:500]


async def assert_gets_nothing_after_close(client: Client, node, token: str, room: str) -> None:
    """A message sent right after the change never reaches the closed socket."""
    ROOM[0] = room
    seq = await send_after(node, token, "after the change")
    await closed_with(client)
    assert all(m["seq"] < seq for m in client.messages), client.messages


# --- admin ------------------------------------------------------------------------------------------


async def test_admin_deleting_a_membership_closes_the_members_socket_on_another_node_4404(nodes, setup):
    node1, node2 = nodes
    bob = await Client(node2, "secret", setup["bob"]).connect()
    pk = await database_sync_to_async(
        lambda: Membership.objects.get(room__slug="secret", user__username="bob").pk
    )()
    admin = await admin_login(node1)
    await admin_delete(admin, f"/admin/rooms/membership/{pk}/delete/")
    await assert_gets_nothing_after_close(bob, node1, setup["alice"], "secret")
    assert bob.close_code == 4404
    # And bob is not let back in, nor read anything.
    again = Client(node2, "secret", setup["bob"])
    with pytest.raises((AssertionError, websockets.ConnectionClosed)):
        await again.connect()


async def test_admin_deactivating_a_user_closes_their_token_and_page_sockets_on_another_node_4401(
    nodes, setup
):
    node1, node2 = nodes
    bob_user = setup["bob_user"]
    by_token = await Client(node2, "secret", setup["bob"]).connect()
    _, session = await page_login(node1, "bob")
    by_page = await SessionClient(node2, "lobby", session).connect()  # the room page's socket
    alice_lobby = await Client(node2, "lobby", setup["alice"]).connect()

    admin = await admin_login(node1)
    path = f"/admin/auth/user/{bob_user.pk}/change/"
    assert (await asyncio.to_thread(admin.request, "GET", path))[0] == 200
    status, _, body = await asyncio.to_thread(
        admin.request,
        "POST",
        path,
        form={
            "username": "bob",
            "first_name": "",
            "last_name": "",
            "email": "",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
            # is_active left out: unticked
        },
    )
    assert status == 302, body[:2000]
    assert not (await database_sync_to_async(lambda: User.objects.get(pk=bob_user.pk).is_active)())
    await assert_gets_nothing_after_close(by_token, node1, setup["alice"], "secret")
    assert by_token.close_code == 4401
    await assert_gets_nothing_after_close(by_page, node1, setup["alice"], "lobby")
    assert by_page.close_code == 4401
    assert alice_lobby.close_code is None  # others stay
    await alice_lobby.close()


async def test_admin_deleting_a_token_closes_sockets_opened_with_it_4401(nodes, setup):
    node1, node2 = nodes
    bob = await Client(node2, "secret", setup["bob"]).connect()
    admin = await admin_login(node1)
    await admin_delete(admin, f"/admin/authtoken/tokenproxy/{setup['bob_user'].pk}/delete/")
    await assert_gets_nothing_after_close(bob, node1, setup["alice"], "secret")
    assert bob.close_code == 4401


async def test_admin_making_a_room_private_then_deleting_it_closes_sockets_4404(nodes, setup):
    """The room's change form, then its delete page, in admin on node-1 (``services.room_save``,
    ``room_delete``); sockets on both nodes. One test for both: a node caches content-type ids,
    which the flush between transactional tests renews, and admin logs every change with one."""
    node1, node2 = nodes
    carol = await database_sync_to_async(lambda: factories.token_for(factories.make_user("carol")))()
    stranger = await Client(node2, "lobby", carol).connect()
    bob = await Client(node2, "lobby", setup["bob"]).connect()
    alice = await Client(node1, "lobby", setup["alice"]).connect()
    await database_sync_to_async(  # carol's membership goes without an event: the room is public
        lambda: Membership.objects.filter(room__slug="lobby", user__username="carol").delete()
    )()
    admin = await admin_login(node1)
    lobby = setup["lobby"]
    path = f"/admin/rooms/room/{lobby.pk}/change/"
    assert (await asyncio.to_thread(admin.request, "GET", path))[0] == 200
    alice_pk = await database_sync_to_async(lambda: User.objects.get(username="alice").pk)()
    status, _, body = await asyncio.to_thread(
        admin.request,
        "POST",
        path,
        form={
            "slug": "lobby",
            "name": "lobby",
            "description": "",
            "created_by": str(alice_pk),
            "is_private": "on",
        },
    )
    assert status == 302, body[:2000]
    await assert_gets_nothing_after_close(stranger, node1, setup["alice"], "lobby")
    assert stranger.close_code == 4404
    await asyncio.sleep(0.5)
    assert bob.close_code is None and alice.close_code is None  # members stay

    await admin_delete(admin, f"/admin/rooms/room/{lobby.pk}/delete/")
    assert await closed_with(bob) == 4404
    assert await closed_with(alice) == 4404


# --- REST and pages ---------------------------------------------------------------------------------


async def test_room_made_private_over_rest_closes_sockets_of_non_members_on_another_node_4404(nodes, setup):
    node1, node2 = nodes
    bob = await Client(node2, "lobby", setup["bob"]).connect()
    alice = await Client(node2, "lobby", setup["alice"]).connect()
    # bob's membership went away without an event (a public room can still be read by anyone).
    await database_sync_to_async(
        lambda: Membership.objects.filter(room__slug="lobby", user__username="bob").delete()
    )()
    await asyncio.sleep(0.5)
    assert bob.close_code is None
    status, _, body = await asyncio.to_thread(
        Http(node1, setup["alice"]).request, "PATCH", "/api/rooms/lobby/", json_body={"is_private": True}
    )
    assert status == 200, body
    await assert_gets_nothing_after_close(bob, node1, setup["alice"], "lobby")
    assert bob.close_code == 4404
    await asyncio.sleep(0.5)
    assert alice.close_code is None  # the owner is a member: stays
    await alice.close()


async def test_leaving_from_a_signed_in_page_closes_the_page_socket_on_another_node_4000(nodes, setup):
    """The page's session (log-in page on node-1), its socket on node-2, the leave through the
    REST route the page's scripts call with the session cookie and CSRF token."""
    node1, node2 = nodes
    page, session = await page_login(node1, "bob")
    socket = await SessionClient(node2, "secret", session).connect()
    status, _, body = await asyncio.to_thread(page.request, "DELETE", "/api/rooms/secret/members/me/")
    assert status == 204, body
    await assert_gets_nothing_after_close(socket, node1, setup["alice"], "secret")
    assert socket.close_code == 4000


# --- WebSocket reads: checked at the read, even when no event came ------------------------------------


async def test_fetch_resume_and_after_seq_refuse_history_once_access_ended_without_an_event(nodes, setup):
    """Changes made behind the services' back (no event): the socket stays open until the
    backstop, but its very next read is refused with an error frame and a close."""
    node1, node2 = nodes
    ROOM[0] = "secret"
    await send_after(node1, setup["alice"], "history")
    fetcher = await Client(node2, "secret", setup["bob"]).connect()
    resumer = await Client(node2, "secret", setup["bob"]).connect()
    await frame(fetcher, {"type": "fetch", "after_seq": 0})
    assert await fetcher.wait_for(lambda c: any(f["type"] == "history" for f in c.frames))

    await database_sync_to_async(
        lambda: Membership.objects.filter(room__slug="secret", user__username="bob").delete()
    )()
    await frame(fetcher, {"type": "fetch", "after_seq": 0})
    await frame(resumer, {"type": "resume", "after_seq": 0})
    assert await closed_with(fetcher) == 4404
    assert await closed_with(resumer) == 4404
    for client in (fetcher, resumer):
        assert [f["code"] for f in client.frames if f["type"] == "error"] == ["not_found"]
    assert sum(f["type"] == "history" for f in fetcher.frames) == 1  # the one before
    assert not resumer.messages

    # ?after_seq at connect: refused before any history.
    raw = await websockets.connect(
        f"{node2.ws}/ws/rooms/secret/?after_seq=0",
        additional_headers={"Authorization": f"Token {setup['bob']}"},
    )
    frames = []
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            frames.append(json.loads(await asyncio.wait_for(raw.recv(), 10)))
    assert raw.close_code == 4404 and not any(f["type"] == "message" for f in frames), frames

    # A user deactivated with a queryset update: the next read is refused with 4401.
    alice = await Client(node2, "secret", setup["alice"]).connect()
    await database_sync_to_async(lambda: User.objects.filter(username="alice").update(is_active=False))()
    await frame(alice, {"type": "fetch", "after_seq": 0})
    assert await closed_with(alice) == 4401
    assert not any(f["type"] == "history" for f in alice.frames)


async def test_backstop_closes_a_socket_whose_access_ended_behind_the_services_back(setup, tmp_path):
    """``ACCESS_RECHECK`` (1 s here): a user deactivated by a queryset update (no event) has
    their socket closed 4401 by the node's periodic check, within a bounded wait."""
    env = {
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "CHANNEL_LAYER_PREFIX": f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        "DEBUG": "0",
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_POOL_MAX_SIZE": "4",
        "ACCESS_RECHECK": "1",
    }
    node = start_node("node-b", env=env, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        bob = await Client(node, "lobby", setup["bob"]).connect()
        alice = await Client(node, "lobby", setup["alice"]).connect()
        await asyncio.sleep(1.5)
        assert bob.close_code is None  # rounds pass while access holds
        await database_sync_to_async(lambda: User.objects.filter(username="bob").update(is_active=False))()
        assert await closed_with(bob, timeout=10) == 4401
        await database_sync_to_async(lambda: Room.objects.filter(slug="lobby").update(is_private=True))()
        await asyncio.sleep(2.5)
        assert alice.close_code is None  # the owner is a member
        await alice.close()
        assert "Traceback" not in node.log(), node.log()
    finally:
        node.stop()


# --- rooms.access itself ------------------------------------------------------------------------------


def test_one_statement_gives_every_sockets_verdict(setup, django_assert_num_queries):
    from django.utils import timezone

    from rooms import access

    secret, lobby, bob = setup["secret"], setup["lobby"], setup["bob_user"]
    alice = User.objects.get(username="alice")
    carol = factories.make_user("carol")
    archived = factories.make_room(created_by=alice, slug="old")
    Room.objects.filter(pk=archived.pk).update(archived_at=timezone.now())
    Membership.objects.filter(room=lobby, user=bob).update(banned_at=timezone.now())
    keys = [
        (secret.pk, alice.pk, None),  # owner: allowed
        (secret.pk, bob.pk, setup["bob"]),  # member with his token: allowed
        (secret.pk, bob.pk, "0" * 40),  # a token that is not his: unauthenticated
        (secret.pk, carol.pk, None),  # not a member of a private room: not_found
        (lobby.pk, carol.pk, None),  # public room, no membership: allowed
        (lobby.pk, bob.pk, None),  # banned
        (archived.pk, alice.pk, None),  # archived: the socket ends, reads go on
        (999_999, alice.pk, None),  # no such room
        (lobby.pk, 999_999, None),  # no such user
    ] * 20
    with django_assert_num_queries(1):
        found = access.verdicts(keys)
    assert found[:9] == [
        None,
        None,
        "unauthenticated",
        "not_found",
        None,
        "banned",
        "archived",
        "not_found",
        "unauthenticated",
    ]
    assert found == found[:9] * 20
    assert access.verdict(room_id=archived.pk, user_id=alice.pk, token_key=None, reading=True) is None
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert access.verdict(room_id=secret.pk, user_id=alice.pk, token_key=None) == "unauthenticated"


def test_services_broadcast_an_access_event_after_commit_only_when_access_can_end(setup):
    """On the real layer: a change that can end someone's access is announced to the affected
    group after commit; a change that cannot is not announced at all."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from rooms import events

    secret, lobby, bob = setup["secret"], setup["lobby"], setup["bob_user"]
    alice = User.objects.get(username="alice")
    groups = [
        events.room_group_name(secret.pk),
        events.room_group_name(lobby.pk),
        events.user_group_name(bob.pk),
    ]

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        for group in groups:
            await layer.group_add(group, channel)
        call = database_sync_to_async
        await call(services.user_save)(user=bob)  # nothing changed
        await call(services.room_update)(room=lobby, actor=alice, name="Lobby 2")  # still public
        await call(services.room_update)(room=lobby, actor=alice, is_private=True)
        await call(services.user_set_active)(user=bob, active=False)
        await call(services.member_remove)(room=secret, actor=alice, user=bob)
        received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(5)]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.5)
        for group in groups:
            await layer.group_discard(group, channel)
        return received

    received = async_to_sync(scenario)()
    # the two saves of the room are announced to its pages (room.updated), which ends no access
    updates = [json.loads(e["text"])["room"] for e in received if e["type"] == "room.updated"]
    assert updates == [
        {"slug": "lobby", "name": "Lobby 2", "description": lobby.description, "is_private": False},
        {"slug": "lobby", "name": "Lobby 2", "description": lobby.description, "is_private": True},
    ]
    removed_text = json.dumps(
        {
            "type": "member.removed",
            "room": secret.slug,
            "user": {"id": bob.pk, "username": bob.username},
            "reason": "removed",
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    assert [e for e in received if e["type"] != "room.updated"] == [
        {"type": "room.access_changed"},
        {"type": "user.access_changed"},
        {"type": "room.member_removed", "user_id": bob.pk, "reason": "removed", "text": removed_text},
    ]
    assert not Membership.objects.filter(room=secret, user=bob).exists()
    with pytest.raises(services.Forbidden):
        services.member_remove(room=secret, actor=alice, user=alice)  # never the owner
    with pytest.raises(services.Forbidden):
        services.room_delete(room=secret, actor=bob)


def test_admin_cannot_delete_the_owners_membership(setup):
    """Refused with a 403 page (``services.member_remove``), not "deleted successfully"."""
    from django.test import Client as PageClient

    page = PageClient()
    page.force_login(User.objects.get(username="root"))
    owner = Membership.objects.get(room=setup["secret"], role=Membership.Role.OWNER)
    response = page.post(f"/admin/rooms/membership/{owner.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert Membership.objects.filter(pk=owner.pk).exists()
