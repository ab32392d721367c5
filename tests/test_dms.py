"""Direct messages (``rooms.dms``): the service, the REST routes, the pages and the socket, on
the real database and channel layer."""

import threading

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from rest_framework.test import APIClient

from rooms import dms, services
from rooms.models import Membership, Message, Room, UserSettings
from tests import factories
from tests.conftest import new_client_msg_id

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def carol(db):
    return factories.make_user("carol")


@pytest.fixture
def dm(user, other_user):
    return dms.dm_open(user=user, username="bob").room


# --- service --------------------------------------------------------------------------------------


def test_opening_a_dm_from_either_side_gives_the_same_private_room_of_two_plain_members(user, other_user):
    first = dms.dm_open(user=user, username="bob")
    again = dms.dm_open(user=user, username="bob")
    other_side = dms.dm_open(user=other_user, username="alice")
    assert first.created and not again.created and not other_side.created
    assert first.room.pk == again.room.pk == other_side.room.pk
    room = Room.objects.get(pk=first.room.pk)
    assert room.kind == "dm" and room.is_private and room.dm_key == dms.dm_key(user.pk, other_user.pk)
    assert sorted(Membership.objects.filter(room=room).values_list("user__username", "role")) == [
        ("alice", "member"),
        ("bob", "member"),
    ]
    assert Room.objects.filter(kind="dm").count() == 1


def test_a_dm_slug_is_unguessable(user, other_user, carol):
    one = dms.dm_open(user=user, username="bob").room.slug
    two = dms.dm_open(user=user, username="carol").room.slug
    token_length = services.PRIVATE_SLUG_TOKEN_LENGTH
    assert one != two
    assert one.startswith("dm-") and len(one) == 3 + token_length


def test_a_dm_with_oneself_an_unknown_or_an_inactive_user_is_refused_and_makes_nothing(user, other_user):
    with pytest.raises(dms.DmSelf) as self_error:
        dms.dm_open(user=user, username="alice")
    assert (self_error.value.code, self_error.value.status) == ("dm_self", 400)
    with pytest.raises(dms.UserNotFound):
        dms.dm_open(user=user, username="nobody")
    services.user_set_active(user=other_user, active=False)
    with pytest.raises(dms.UserNotFound) as inactive:
        dms.dm_open(user=user, username="bob")
    assert (inactive.value.code, inactive.value.status) == ("not_found", 404)
    assert not Room.objects.filter(kind="dm").exists()


def test_dms_from_shared_rooms_refuses_a_stranger_but_not_a_roommate_nor_an_existing_dm(
    user, other_user, carol
):
    dms.dm_open(user=carol, username="bob")  # before bob turns DMs from strangers off
    dms.user_settings_update(user=other_user, dms_from="shared_rooms")
    with pytest.raises(dms.DmsOff) as off:
        dms.dm_open(user=user, username="bob")
    assert (off.value.code, off.value.status) == ("dms_off", 403)
    assert not Room.objects.filter(dm_key=dms.dm_key(user.pk, other_user.pk)).exists()
    # An existing DM keeps working: opened again, and sent to, from either side.
    existing = dms.dm_open(user=carol, username="bob")
    assert not existing.created
    services.message_post(room=existing.room, author=carol, body="still here", client_msg_id="c1")
    # Sharing a group room lets alice in; a DM does not count as a shared room.
    lobby = factories.make_room(created_by=user, slug="lobby")
    services.member_join(room=lobby, user=other_user)
    assert dms.dm_open(user=user, username="bob").created


def test_a_ban_from_the_only_shared_room_counts_as_sharing_none(user, other_user):
    dms.user_settings_update(user=other_user, dms_from="shared_rooms")
    lobby = factories.make_room(created_by=other_user, slug="lobby")
    services.member_join(room=lobby, user=user)
    services.member_ban(room=lobby, actor=other_user, user=user)
    with pytest.raises(dms.DmsOff):
        dms.dm_open(user=user, username="bob")


@pytest.mark.django_db(transaction=True)
def test_concurrent_opens_from_both_sides_give_one_room():
    pairs = [(factories.make_user(f"a{i}"), factories.make_user(f"b{i}")) for i in range(8)]
    results, errors = [], []
    barrier = threading.Barrier(2)

    def open_dm(user, username):
        try:
            barrier.wait(timeout=10)
            results.append(dms.dm_open(user=user, username=username))
        except Exception as exc:  # pragma: no cover (the assertion shows it)
            errors.append(exc)
        finally:
            connection.close()

    for a, b in pairs:
        threads = [
            threading.Thread(target=open_dm, args=(a, b.username)),
            threading.Thread(target=open_dm, args=(b, a.username)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
    assert errors == []
    assert len(results) == 16
    assert sum(r.created for r in results) == 8  # exactly one creator per pair
    assert Room.objects.filter(kind="dm").count() == 8
    for a, b in pairs:
        rooms = {r.room.pk for r in results if r.room.dm_key == dms.dm_key(a.pk, b.pk)}
        assert len(rooms) == 1
        assert Membership.objects.filter(room_id=rooms.pop()).count() == 2


@pytest.mark.parametrize(
    "action",
    [
        "member_add",
        "member_set_role",
        "member_mute",
        "member_ban",
        "member_unban",
        "member_leave",
        "member_remove",
        "room_update_name",
        "room_update_private",
        "room_archive",
    ],
)
def test_a_dm_refuses_every_group_room_action_even_by_a_site_moderator_and_changes_nothing(
    user, other_user, carol, dm, action
):
    from datetime import timedelta

    from django.utils import timezone

    staff = factories.make_user("staff", is_superuser=True, is_staff=True)
    calls = {
        "member_add": lambda actor: services.member_add(room=dm, actor=actor, user=carol),
        "member_set_role": lambda actor: services.member_set_role(
            room=dm, actor=actor, user=other_user, role="moderator"
        ),
        "member_mute": lambda actor: services.member_mute(
            room=dm, actor=actor, user=other_user, until=timezone.now() + timedelta(hours=1)
        ),
        "member_ban": lambda actor: services.member_ban(room=dm, actor=actor, user=other_user),
        "member_unban": lambda actor: services.member_unban(room=dm, actor=actor, user=other_user),
        "member_leave": lambda actor: services.member_leave(room=dm, user=actor),
        "member_remove": lambda actor: services.member_remove(room=dm, actor=actor, user=other_user),
        "room_update_name": lambda actor: services.room_update(room=dm, actor=actor, name="Renamed"),
        "room_update_private": lambda actor: services.room_update(room=dm, actor=actor, is_private=False),
        "room_archive": lambda actor: services.room_archive(room=dm, actor=actor),
    }
    before_room = Room.objects.filter(pk=dm.pk).values().get()
    before_members = list(Membership.objects.filter(room=dm).order_by("user_id").values())
    for actor in (user, staff):
        with pytest.raises(services.Forbidden) as refused:
            calls[action](actor)
        assert refused.value.code == "forbidden" and "direct message" in refused.value.detail
    assert Room.objects.filter(pk=dm.pk).values().get() == before_room
    assert list(Membership.objects.filter(room=dm).order_by("user_id").values()) == before_members


def test_in_a_dm_only_the_author_and_site_moderators_delete_a_message(user, other_user, dm):
    staff = factories.make_user("staff", is_superuser=True, is_staff=True)
    alices = services.message_post(room=dm, author=user, body="hi", client_msg_id="a1").message
    with pytest.raises(services.Forbidden):
        services.message_delete(message=alices, actor=other_user)
    assert Message.objects.get(pk=alices.pk).deleted_at is None
    services.message_delete(message=alices, actor=staff)
    assert Message.objects.get(pk=alices.pk).deleted_at is not None


def test_dm_created_is_broadcast_to_both_users_after_commit_with_their_own_dm_with(
    user, other_user, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(
        "rooms.events.broadcast_dm_created", lambda *, user_id, room_data: sent.append((user_id, room_data))
    )
    with django_capture_on_commit_callbacks(execute=True):
        room = dms.dm_open(user=user, username="bob").room
    with django_capture_on_commit_callbacks(execute=True) as again:
        dms.dm_open(user=other_user, username="alice")
    assert again == []  # an existing DM broadcasts nothing
    assert {uid: (d["slug"], d["kind"], d["dm_with"]["username"], d["name"]) for uid, d in sent} == {
        user.pk: (room.slug, "dm", "bob", "bob"),
        other_user.pk: (room.slug, "dm", "alice", "alice"),
    }


# --- REST -----------------------------------------------------------------------------------------


def test_post_dms_answers_201_then_200_with_the_same_room_from_either_side(user, other_user):
    first = client_for(user).post("/api/dms/", {"username": "bob"}, format="json")
    assert first.status_code == 201, first.data
    assert first.data["kind"] == "dm" and first.data["is_private"] is True
    assert first.data["dm_with"] == {"id": other_user.pk, "username": "bob"}
    assert first.data["name"] == "bob" and first.data["my_role"] == "member"
    again = client_for(user).post("/api/dms/", {"username": "bob"}, format="json")
    other_side = client_for(other_user).post("/api/dms/", {"username": "alice"}, format="json")
    assert (again.status_code, other_side.status_code) == (200, 200)
    assert first.data["slug"] == again.data["slug"] == other_side.data["slug"]
    assert other_side.data["dm_with"] == {"id": user.pk, "username": "alice"}
    assert other_side.data["name"] == "alice"


@pytest.mark.parametrize(
    "body, status, expected",
    [
        ({"username": "alice"}, 400, {"code": "dm_self"}),
        ({"username": "nobody"}, 404, {"code": "not_found"}),
        ({}, 400, {"username": ["This field is required."]}),
        ({"username": 5}, 400, {"username": ["Not a valid string."]}),
        ({"username": ""}, 400, {"username": ["This field may not be blank."]}),
    ],
)
def test_post_dms_refusals(user, other_user, body, status, expected):
    response = client_for(user).post("/api/dms/", body, format="json")
    assert response.status_code == status, response.data
    assert expected.items() <= response.json().items()
    assert not Room.objects.filter(kind="dm").exists()


def test_post_dms_to_someone_with_dms_off_is_403_dms_off(user, other_user):
    client_for(other_user).patch("/api/me/settings/", {"dms_from": "shared_rooms"}, format="json")
    response = client_for(user).post("/api/dms/", {"username": "bob"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "dms_off"


def test_post_dms_needs_sign_in(other_user):
    assert APIClient().post("/api/dms/", {"username": "bob"}, format="json").status_code == 401


def test_settings_get_and_patch(user):
    api = client_for(user)
    assert api.get("/api/me/settings/").json() == {"dms_from": "anyone"}
    assert api.patch("/api/me/settings/", {"dms_from": "shared_rooms"}, format="json").json() == {
        "dms_from": "shared_rooms"
    }
    assert api.get("/api/me/settings/").json() == {"dms_from": "shared_rooms"}
    bad = api.patch("/api/me/settings/", {"dms_from": "nobody"}, format="json")
    assert bad.status_code == 400 and "dms_from" in bad.json()
    assert UserSettings.objects.get(user=user).dms_from == "shared_rooms"


def test_the_room_list_gives_kind_and_dm_with_from_each_side(user, other_user, dm):
    factories.make_room(created_by=user, slug="lobby", name="Lobby")
    mine = {r["slug"]: r for r in client_for(user).get("/api/rooms/").json()["results"]}
    assert mine["lobby"]["kind"] == "room" and mine["lobby"]["dm_with"] is None
    assert mine[dm.slug]["kind"] == "dm" and mine[dm.slug]["dm_with"]["username"] == "bob"
    assert mine[dm.slug]["name"] == "bob"
    bobs = {r["slug"]: r for r in client_for(other_user).get("/api/rooms/").json()["results"]}
    assert bobs[dm.slug]["dm_with"]["username"] == "alice" and bobs[dm.slug]["name"] == "alice"
    detail = client_for(other_user).get(f"/api/rooms/{dm.slug}/").json()
    assert detail["dm_with"] == {"id": user.pk, "username": "alice"}


def test_a_third_user_gets_404_on_every_route_of_a_dm(user, other_user, carol, dm):
    message = services.message_post(room=dm, author=user, body="private", client_msg_id="p1").message
    api = client_for(carol)
    base = f"/api/rooms/{dm.slug}"
    for method, path, body in [
        ("get", f"{base}/", None),
        ("patch", f"{base}/", {"name": "x"}),
        ("delete", f"{base}/", None),
        ("get", f"{base}/presence/", None),
        ("get", f"{base}/messages/", None),
        ("post", f"{base}/messages/", {"body": "hi", "client_msg_id": "x"}),
        ("get", f"{base}/messages/{message.pk}/", None),
        ("delete", f"{base}/messages/{message.pk}/", None),
        ("get", f"{base}/members/", None),
        ("post", f"{base}/members/", {}),
    ]:
        response = getattr(api, method)(path, body, format="json")
        assert response.status_code == 404, (method, path, response.status_code)
    assert dm.slug not in {r["slug"] for r in api.get("/api/rooms/").json()["results"]}
    assert Message.objects.filter(room=dm).count() == 1


def test_dm_members_are_refused_group_actions_over_rest_with_403_forbidden(user, other_user, carol, dm):
    api = client_for(user)
    base = f"/api/rooms/{dm.slug}"
    for method, path, body in [
        ("patch", f"{base}/", {"name": "x"}),
        ("patch", f"{base}/", {"is_private": False}),
        ("delete", f"{base}/", None),
        ("post", f"{base}/members/", {"username": "carol"}),
        ("delete", f"{base}/members/me/", None),
        ("post", f"{base}/members/bob/ban/", None),
        ("post", f"{base}/members/bob/mute/", {"minutes": 5}),
    ]:
        response = getattr(api, method)(path, body, format="json")
        assert response.status_code == 403, (method, path, response.status_code)
        assert response.json()["code"] == "forbidden", response.json()
    assert Membership.objects.filter(room=dm).count() == 2
    assert not Room.objects.get(pk=dm.pk).is_archived


def test_a_dm_works_as_a_room_over_rest(user, other_user, dm):
    sent = client_for(other_user).post(
        f"/api/rooms/{dm.slug}/messages/", {"body": "hello", "client_msg_id": "b1"}, format="json"
    )
    assert sent.status_code == 201 and sent.data["seq"] == 1
    history = client_for(user).get(f"/api/rooms/{dm.slug}/messages/").json()
    assert [m["body"] for m in history["results"]] == ["hello"]


# --- pages ----------------------------------------------------------------------------------------


def test_the_profile_pages_button_opens_the_dm_and_lands_on_its_room_page(client, user, other_user):
    client.force_login(user)
    page = client.get("/u/bob/")
    assert page.status_code == 200
    assert b'action="/u/bob/message/"' in page.content and b"Send a message" in page.content
    response = client.post("/u/bob/message/")
    room = Room.objects.get(kind="dm")
    assert response.status_code == 302 and response["Location"] == f"/rooms/{room.slug}/"
    room_page = client.get(response["Location"])
    assert room_page.status_code == 200
    assert room_page.context["room"].name == "bob"
    assert room_page.context["room_config"]["dm_with"] == {"id": other_user.pk, "username": "bob"}
    # The other side lands in the same room, named after alice.
    client.force_login(other_user)
    response = client.post("/u/alice/message/")
    assert response["Location"] == f"/rooms/{room.slug}/"
    assert client.get(response["Location"]).context["room"].name == "alice"


def test_the_room_list_page_lists_dms_by_the_other_persons_name_apart_from_rooms(
    client, user, other_user, dm
):
    factories.make_room(created_by=user, slug="lobby", name="Lobby")
    client.force_login(user)
    page = client.get("/")
    assert [r.slug for r in page.context["rooms"]] == ["lobby"]
    assert [(d["room"].slug, d["with"]["username"]) for d in page.context["direct_messages"]] == [
        (dm.slug, "bob")
    ]
    assert b"Direct messages" in page.content


def test_the_room_list_form_opens_a_dm_by_username_and_shows_a_refusal(client, user, other_user):
    client.force_login(user)
    response = client.post("/dms/new/", {"username": "bob"})
    assert response["Location"] == f"/rooms/{Room.objects.get(kind='dm').slug}/"
    refused = client.post("/dms/new/", {"username": "alice"}, follow=True)
    assert b"yourself" in refused.content
    assert Room.objects.filter(kind="dm").count() == 1


def test_the_profile_button_shows_dms_off_and_makes_nothing(client, user, other_user):
    dms.user_settings_update(user=other_user, dms_from="shared_rooms")
    client.force_login(user)
    profile = client.get("/u/bob/")
    assert b'id="dms-closed"' in profile.content and b'id="send-dm"' not in profile.content
    page = client.post("/u/bob/message/", follow=True)
    assert page.request["PATH_INFO"] == "/u/bob/"
    assert b"share a room" in page.content
    assert not Room.objects.filter(kind="dm").exists()


def test_profile_of_an_unknown_or_inactive_user_is_404(client, user, other_user):
    client.force_login(user)
    services.user_set_active(user=other_user, active=False)
    assert client.get("/u/bob/").status_code == 404
    assert client.get("/u/nobody/").status_code == 404


def test_the_settings_page_turns_dms_from_strangers_off_and_on(client, user):
    client.force_login(user)
    assert client.get("/settings/").status_code == 200
    client.post("/settings/", {"only_shared_rooms": "on"})
    assert dms.dms_from(user.pk) == "shared_rooms"
    assert client.get("/settings/").context["form"].initial["only_shared_rooms"] is True
    client.post("/settings/", {})
    assert dms.dms_from(user.pk) == "anyone"


def test_a_third_users_dm_page_is_404(client, carol, dm):
    client.force_login(carol)
    assert client.get(f"/rooms/{dm.slug}/").status_code == 404


# --- socket ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_dm_socket_carries_messages_between_the_two_and_refuses_a_third_with_4404(ws):
    alice, bob, carol = [
        await database_sync_to_async(factories.make_user)(n) for n in ("alice", "bob", "carol")
    ]
    room = (await database_sync_to_async(dms.dm_open)(user=alice, username="bob")).room
    a = await ws(f"/ws/rooms/{room.slug}/", user=alice)
    b = await ws(f"/ws/rooms/{room.slug}/", user=bob)
    c = await ws(f"/ws/rooms/{room.slug}/", user=carol)
    assert await a.connect() and await b.connect()
    await a.receive_type("hello")
    await b.receive_type("hello")
    await a.send({"type": "message.send", "body": "hi bob", "client_msg_id": new_client_msg_id()})
    assert (await a.receive_type("ack"))["seq"] == 1
    got = await b.receive_type("message")
    assert got["message"]["body"] == "hi bob" and got["message"]["room"] == room.slug
    assert await c.connect()
    assert await c.close_code() == 4404
    await a.close()
    await b.close()


@pytest.mark.django_db(transaction=True)
async def test_dm_created_reaches_the_other_users_open_sockets(ws):
    alice, bob = [await database_sync_to_async(factories.make_user)(n) for n in ("alice", "bob")]
    lobby = await database_sync_to_async(factories.make_room)(created_by=bob, slug="lobby")
    b = await ws(f"/ws/rooms/{lobby.slug}/", user=bob)
    assert await b.connect()
    await b.receive_type("hello")
    room = (await database_sync_to_async(dms.dm_open)(user=alice, username="bob")).room
    frame = await b.receive_type("dm.created")
    assert frame["room"]["slug"] == room.slug and frame["room"]["kind"] == "dm"
    assert frame["room"]["dm_with"] == {"id": alice.pk, "username": "alice"}
    await database_sync_to_async(dms.dm_open)(user=bob, username="alice")  # exists: no frame
    assert await b.nothing_more(0.3)
    await b.close()


def test_the_admin_shows_a_dm_read_only_and_lists_rooms_by_kind(client, user, other_user, dm):
    staff = factories.make_user("root", is_superuser=True, is_staff=True)
    client.force_login(staff)
    page = client.get(f"/admin/rooms/room/{dm.pk}/change/")
    assert page.status_code == 200
    assert b'name="is_private"' not in page.content and b'name="slug"' not in page.content
    assert client.get("/admin/rooms/room/?kind__exact=dm").status_code == 200
