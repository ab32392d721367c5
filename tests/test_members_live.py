"""Member management reaches every socket in the room live (``member.updated``,
``member.removed``, ``room.updated``: rooms.events), whichever way it was made (REST, services as
the pages and admin call them), and a refused action changes nothing and sends nothing. In-process
sockets on the real Redis layer and PostgreSQL; tests/test_browser_members.py drives the same from
the room page on real nodes."""

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone
from rest_framework.test import APIClient

from rooms import events, services
from rooms.models import Membership
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def sync(fn):
    return database_sync_to_async(fn)


def rest(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


async def watch(ws, room, user, **kwargs):
    kwargs.setdefault("keep_members", True)
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user, **kwargs)
    assert await conn.connect()
    await conn.receive_type("hello")
    return conn


async def member_change(conn, who) -> dict:
    """The next state of member ``who`` that ``conn`` is sent: a ``member.updated``, or its entry
    in a ``members.updated`` (changes that came within a pacing window, ``rooms.events``);
    earlier changes of others in between are passed over."""
    while True:
        frame = await conn.receive()
        assert frame["type"] in ("member.updated", "members.updated"), frame
        for member in frame.get("members") or [frame.get("member")]:
            if member["user"]["id"] == who.pk:
                return member


@pytest.fixture
def private_room(db, user):
    return factories.make_room(created_by=user, slug="backstage", name="Backstage", is_private=True)


async def test_a_member_added_through_rest_is_announced_to_the_room_with_the_member_shape(
    ws, private_room, user, other_user
):
    owner = await watch(ws, private_room, user)
    response = await sync(
        lambda: rest(user).post(
            "/api/rooms/backstage/members/", {"username": other_user.username}, format="json"
        )
    )()
    assert response.status_code == 201, response.data
    frame = await owner.receive_type("member.updated")
    assert frame["room"] == "backstage"
    assert frame["member"] == response.data  # the member shape of GET .../members/
    assert frame["member"]["user"] == {
        "id": other_user.pk,
        "username": other_user.username,
        "display_name": "",
    }
    # the same add again changes nothing and says nothing
    again = await sync(
        lambda: rest(user).post(
            "/api/rooms/backstage/members/", {"username": other_user.username}, format="json"
        )
    )()
    assert again.status_code in (200, 201)
    assert await owner.nothing_more(0.3)
    await owner.close()


async def test_a_visitor_joining_a_public_room_is_announced_once(ws, room, user, other_user):
    owner = await watch(ws, room, user)
    visitor = await watch(ws, room, other_user)  # joins on connect
    frame = await owner.receive_type("member.updated")
    assert frame["member"]["user"]["id"] == other_user.pk and frame["member"]["role"] == "member"
    second_tab = await watch(ws, room, other_user)  # already a member: no new announcement
    assert await owner.nothing_more(0.3)
    for conn in (owner, visitor, second_tab):
        await conn.close()


async def test_mute_role_and_unmute_changes_reach_the_member_and_the_room(ws, room, user, other_user):
    await sync(services.member_join)(room=room, user=other_user)
    owner = await watch(ws, room, user)
    member = await watch(ws, room, other_user)
    response = await sync(
        lambda: rest(user).post(
            f"/api/rooms/lobby/members/{other_user.username}/mute/", {"minutes": 10}, format="json"
        )
    )()
    assert response.status_code == 200, response.data
    for conn in (owner, member):
        frame = await conn.receive_type("member.updated")
        assert frame["member"]["muted_until"] == response.data["muted_until"] is not None
    response = await sync(
        lambda: rest(user).patch(
            f"/api/rooms/lobby/members/{other_user.username}/", {"role": "moderator"}, format="json"
        )
    )()
    assert response.status_code == 200
    assert (await member.receive_type("member.updated"))["member"]["role"] == "moderator"
    await owner.receive_type("member.updated")
    response = await sync(
        lambda: rest(user).delete(f"/api/rooms/lobby/members/{other_user.username}/mute/")
    )()
    assert response.status_code == 200
    assert (await member.receive_type("member.updated"))["member"]["muted_until"] is None
    await owner.close()
    await member.close()


async def test_owner_removes_a_member_of_a_private_room_their_socket_closes_and_the_room_is_told(
    ws, private_room, user, other_user
):
    third = await sync(factories.make_user)("carol")
    for member in (other_user, third):
        await sync(services.member_add)(room=private_room, actor=user, user=member)
    bob = await watch(ws, private_room, other_user, keep_members=False)  # carol's add may come late
    carol = await watch(ws, private_room, third)
    response = await sync(lambda: rest(user).delete(f"/api/rooms/backstage/members/{other_user.username}/"))()
    assert response.status_code == 204
    assert await bob.close_code() == 4404
    frame = await carol.receive()
    while frame["type"] in ("member.updated", "members.updated"):  # the adds, paced
        frame = await carol.receive()
    assert frame == {
        "type": "member.removed",
        "room": "backstage",
        "user": {"id": other_user.pk, "username": other_user.username},
        "reason": "removed",
    }
    assert not await sync(Membership.objects.filter(room=private_room, user=other_user).exists)()
    # removed, bob reads nothing of the room any more
    history = await sync(lambda: rest(other_user).get("/api/rooms/backstage/messages/"))()
    assert history.status_code == 404
    await carol.close()


async def test_a_member_cannot_remove_another_and_nothing_changes(ws, room, user, other_user):
    third = await sync(factories.make_user)("carol")
    for member in (other_user, third):
        await sync(services.member_join)(room=room, user=member)
    owner = await watch(ws, room, user)
    response = await sync(lambda: rest(other_user).delete(f"/api/rooms/lobby/members/{third.username}/"))()
    assert response.status_code == 403
    assert response.data["code"] == "forbidden"
    assert await sync(Membership.objects.filter(room=room, user=third).exists)()
    # nor anyone the owner: not even a moderator removes the owner
    await sync(services.member_set_role)(room=room, actor=user, user=other_user, role="moderator")
    assert (await member_change(owner, other_user))["role"] == "moderator"
    response = await sync(lambda: rest(other_user).delete(f"/api/rooms/lobby/members/{user.username}/"))()
    assert response.status_code == 403
    assert await owner.nothing_more(0.3)
    await owner.close()


async def test_leaving_and_unbanning_are_announced_as_member_removed_and_a_ban_as_member_updated(
    ws, room, user, other_user
):
    third = await sync(factories.make_user)("carol")
    for member in (other_user, third):
        await sync(services.member_join)(room=room, user=member)
    owner = await watch(ws, room, user)
    response = await sync(lambda: rest(third).delete("/api/rooms/lobby/members/me/"))()
    assert response.status_code == 204
    frame = await owner.receive_type("member.removed")
    assert frame["user"]["id"] == third.pk and frame["reason"] == "left"
    await sync(services.member_ban)(room=room, actor=user, user=other_user)
    banned = await owner.receive_type("member.updated")
    assert banned["member"]["user"]["id"] == other_user.pk and banned["member"]["banned"] is True
    await sync(services.member_unban)(room=room, actor=user, user=other_user)
    lifted = await owner.receive_type("member.removed")
    assert lifted["user"]["id"] == other_user.pk and lifted["reason"] == "unbanned"
    await owner.close()


async def test_renaming_the_room_sends_room_updated_to_its_sockets(ws, room, user, other_user):
    await sync(services.member_join)(room=room, user=other_user)
    member = await watch(ws, room, other_user)
    response = await sync(
        lambda: rest(user).patch(
            "/api/rooms/lobby/", {"name": "The Lobby", "description": "say hi"}, format="json"
        )
    )()
    assert response.status_code == 200
    frame = await member.receive_type("room.updated")
    assert frame["room"] == {
        "slug": "lobby",
        "name": "The Lobby",
        "description": "say hi",
        "is_private": False,
    }
    # a member may not rename: refused, nothing sent
    refused = await sync(
        lambda: rest(other_user).patch("/api/rooms/lobby/", {"name": "Mine"}, format="json")
    )()
    assert refused.status_code == 403
    assert await member.nothing_more(0.3)
    await member.close()


async def test_a_burst_of_joins_reaches_the_room_as_one_paced_frame_each_member_once(ws, room, user):
    """A room's first member change goes out at once; those that follow within
    ``MEMBER_UPDATES_WINDOW`` go together at its end as one ``members.updated`` (a storm of n
    joins was n^2/2 frames), each member's latest state once; once a window passes with no
    change, the next change goes out at once again."""
    people = [await sync(factories.make_user)(f"burst{i}") for i in range(6)]
    owner = await watch(ws, room, user)
    await sync(services.member_join)(room=room, user=people[0])
    first = await owner.receive_type("member.updated", timeout=1)
    assert first["member"]["user"]["id"] == people[0].pk
    for person in people[1:]:
        await sync(services.member_join)(room=room, user=person)
    # the last one changes again in the window: only its latest state is sent
    await sync(services.member_set_role)(room=room, actor=user, user=people[-1], role="moderator")
    batch = await owner.receive_type("members.updated", timeout=1)
    assert batch["room"] == "lobby"
    assert [m["user"]["id"] for m in batch["members"]] == [p.pk for p in people[1:]]
    assert batch["members"][-1]["role"] == "moderator"
    assert all(m["role"] == "member" for m in batch["members"][:-1])
    listed = await sync(lambda: rest(user).get("/api/rooms/lobby/members/?limit=100").data)()
    rows = {row["user"]["id"]: row for row in (listed["results"] if isinstance(listed, dict) else listed)}
    assert batch["members"] == [rows[p.pk] for p in people[1:]]  # the member shape of GET .../members/
    assert await owner.nothing_more(2 * events.MEMBER_UPDATES_WINDOW + 0.3)  # the next, longer window
    # the window closed with nothing held: the next change is sent at once again, alone
    until = timezone.now() + timedelta(minutes=5)
    await sync(services.member_mute)(room=room, actor=user, user=people[0], until=until)
    frame = await owner.receive_type("member.updated", timeout=events.MEMBER_UPDATES_WINDOW / 2)
    assert frame["member"]["user"]["id"] == people[0].pk and frame["member"]["muted_until"]
    await owner.close()


async def test_more_new_members_in_a_window_than_a_page_come_as_a_count_after_the_other_changes(
    ws, room, user, settings, monkeypatch
):
    """A window holding more than ``MEMBER_ROWS_MAX`` new members (2 here; 100 by default)
    sends them as one ``members.joined`` count, after a ``members.updated`` of the window's other
    changes: a member joined and then made moderator, a member muted. The count is what the
    members list has grown by. (The first window is 3 s here, not 0.2 s, so that the seven
    changes fall in it on a slow machine.)"""
    settings.MEMBER_ROWS_MAX = 2
    monkeypatch.setattr(events, "MEMBER_UPDATES_WINDOW", 3.0)
    people = [await sync(factories.make_user)(f"storm{i}") for i in range(6)]
    owner = await watch(ws, room, user)
    listed = await sync(lambda: rest(user).get("/api/rooms/lobby/members/?limit=100").data["count"])()
    await sync(services.member_join)(room=room, user=people[0])  # opens the window: a row at once
    assert (await owner.receive_type("member.updated", timeout=1))["member"]["user"]["id"] == people[0].pk
    for person in people[1:]:
        await sync(services.member_join)(room=room, user=person)
    await sync(services.member_set_role)(room=room, actor=user, user=people[5], role="moderator")
    until = timezone.now() + timedelta(minutes=5)
    await sync(services.member_mute)(room=room, actor=user, user=people[0], until=until)
    changed = await owner.receive_type("members.updated", timeout=5)
    assert [(m["user"]["id"], m["role"]) for m in changed["members"]] == [
        (people[5].pk, "moderator"),
        (people[0].pk, "member"),
    ]
    assert changed["members"][1]["muted_until"]
    joined = await owner.receive_type("members.joined", timeout=1)
    assert joined == {"type": "members.joined", "room": "lobby", "count": 4}
    now = await sync(lambda: rest(user).get("/api/rooms/lobby/members/?limit=100").data["count"])()
    assert now == listed + 6  # the row at once, the moderator's row, and the 4 counted
    assert await owner.nothing_more(events.MEMBER_UPDATES_WINDOW_MAX + 0.3)  # the next window
    await owner.close()


async def test_a_member_who_joins_and_leaves_within_the_window_is_not_put_back(ws, room, user):
    """The join is held (another change opened the window), the leave is sent at once: the held
    join is dropped, so no page gets the row back after its ``member.removed``."""
    opener, passer = [await sync(factories.make_user)(name) for name in ("opener", "passer")]
    owner = await watch(ws, room, user)
    await sync(services.member_join)(room=room, user=opener)
    await sync(services.member_join)(room=room, user=passer)
    await sync(services.member_leave)(room=room, user=passer)
    assert (await owner.receive_type("member.updated", timeout=1))["member"]["user"]["id"] == opener.pk
    removed = await owner.receive_type("member.removed", timeout=1)
    assert removed["user"]["id"] == passer.pk and removed["reason"] == "left"
    assert await owner.nothing_more(events.MEMBER_UPDATES_WINDOW + 0.3)
    await owner.close()
