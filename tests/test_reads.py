"""Read state (``rooms.reads``): the service, the REST route and room fields, the socket's
``read`` frame and ``read.updated`` on the user's group, and across real nodes."""

import asyncio
import json
import os
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from rest_framework.test import APIClient

from rooms import events, reads, services
from rooms.models import Membership, Message
from tests import factories


def post(room, author, body, client_msg_id=None):
    return services.message_post(
        room=room, author=author, body=body, client_msg_id=client_msg_id or body
    ).message


def marker(room, user) -> int:
    return Membership.objects.get(room=room, user=user).last_read_seq


@pytest.fixture
def busy(room, user, other_user):
    """``room`` (lobby) where bob joined first, then alice sent 5 messages (seq 1..5)."""
    services.member_join(room=room, user=other_user)
    for i in range(1, 6):
        post(room, user, f"m{i}")
    return room


# --- the service ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_read_report_moves_the_marker_forward_and_never_backward(busy, other_user):
    assert reads.read_report(room=busy, user=other_user, seq=3) == reads.ReadState(3, 2, 0)
    assert reads.read_report(room=busy, user=other_user, seq=1) == reads.ReadState(3, 2, 0)
    assert reads.read_report(room=busy, user=other_user, seq=0) == reads.ReadState(3, 2, 0)
    assert marker(busy, other_user) == 3
    assert reads.read_report(room=busy, user=other_user, seq=5) == reads.ReadState(5, 0, 0)


@pytest.mark.django_db
def test_a_report_beyond_the_rooms_last_seq_is_clamped(busy, other_user):
    assert reads.read_report(room=busy, user=other_user, seq=2**63 - 1).last_read_seq == 5
    assert marker(busy, other_user) == 5
    post(busy, busy.created_by, "m6")  # the next message is unread, not hidden by the report
    assert reads.read_state(room=busy, user=other_user) == reads.ReadState(5, 1, 0)


@pytest.mark.django_db
def test_a_report_for_a_room_one_is_not_in_is_refused_and_changes_nothing(
    busy, user, other_user, django_capture_on_commit_callbacks
):
    carol = factories.make_user("carol")
    secret = factories.make_room(created_by=user, slug="secret", is_private=True)
    post(secret, user, "hidden")
    services.member_ban(room=busy, actor=user, user=factories.make_user("dave"))
    dave = Membership.objects.get(room=busy, user__username="dave")
    before = list(Membership.objects.order_by("pk").values_list("pk", "last_read_seq"))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        for room, who in ((busy, carol), (secret, other_user), (busy, dave.user)):
            with pytest.raises(services.NotFound):
                reads.read_report(room=room, user=who, seq=3)
    assert callbacks == []
    assert list(Membership.objects.order_by("pk").values_list("pk", "last_read_seq")) == before


@pytest.mark.django_db
def test_read_updated_is_registered_on_commit_only_when_the_marker_moved(
    busy, other_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        reads.read_report(room=busy, user=other_user, seq=4)
        reads.read_report(room=busy, user=other_user, seq=2)  # backward: nothing moved
        reads.read_report(room=busy, user=other_user, seq=4)  # the same: nothing moved
    assert len(callbacks) == 1
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            reads.read_report(room=busy, user=other_user, seq=5)
            raise RuntimeError("the outer transaction fails")
    assert callbacks == [] and marker(busy, other_user) == 4


@pytest.mark.django_db(transaction=True)
def test_read_updated_reaches_the_users_group_after_commit_as_json(busy, other_user):
    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(events.user_group_name(other_user.pk), channel)
        state = await database_sync_to_async(reads.read_report)(room=busy, user=other_user, seq=2)
        event = await asyncio.wait_for(layer.receive(channel), 5)
        await layer.group_discard(events.user_group_name(other_user.pk), channel)
        return state, event

    state, event = async_to_sync(scenario)()
    assert event["type"] == "user.read_updated"
    assert json.loads(event["text"]) == {
        "type": "read.updated",
        "room": "lobby",
        "last_read_seq": 2,
        "unread_count": 3,
        "mention_count": 0,
    } and state == reads.ReadState(2, 3, 0)


@pytest.mark.django_db
def test_unread_counts_others_messages_after_the_marker_not_own_and_not_deleted(busy, user, other_user):
    assert reads.read_state(room=busy, user=other_user) == reads.ReadState(0, 5, 0)
    services.message_delete(message=Message.objects.get(room=busy, seq=5), actor=user)
    post(busy, other_user, "bob's own")  # seq 6: also moves bob's marker to 6
    assert reads.read_state(room=busy, user=other_user) == reads.ReadState(6, 0, 0)
    post(busy, user, "m7")
    assert reads.read_state(room=busy, user=other_user) == reads.ReadState(6, 1, 0)
    assert reads.read_state(room=busy, user=user).unread_count == 0  # alice wrote all the others


@pytest.mark.django_db
def test_sending_moves_the_senders_marker_to_its_message_on_both_send_paths(busy, other_user, monkeypatch):
    assert post(busy, other_user, "via one statement").seq == 6 and marker(busy, other_user) == 6
    monkeypatch.setattr(services, "_post_in_one_statement", lambda **kwargs: None)  # the step-by-step path
    assert post(busy, other_user, "step by step").seq == 7 and marker(busy, other_user) == 7


@pytest.mark.django_db
def test_a_new_member_starts_with_the_backlog_read(busy, user):
    carol, dave, erin = (factories.make_user(n) for n in ("carol", "dave", "erin"))
    services.member_join(room=busy, user=carol)
    assert reads.read_state(room=busy, user=carol) == reads.ReadState(5, 0, 0)
    secret = factories.make_room(created_by=user, slug="secret", is_private=True)
    post(secret, user, "before dave")
    services.member_add(room=secret, actor=user, user=dave)
    assert marker(secret, dave) == 1
    post(busy, erin, "a visitor speaks")  # a public room's visitor becomes a member by speaking
    assert marker(busy, erin) == 6


@pytest.mark.django_db
def test_a_non_member_visitor_of_a_public_room_has_nothing_unread(busy):
    assert reads.read_state(room=busy, user=factories.make_user("carol")) == reads.NONE


# --- REST -----------------------------------------------------------------------------------------


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_the_read_route_answers_the_read_state_after_the_report(busy, other_user):
    api = client_for(other_user)
    response = api.post("/api/rooms/lobby/read/", {"seq": 3}, format="json")
    assert response.status_code == 200
    assert response.json() == {"last_read_seq": 3, "unread_count": 2, "mention_count": 0}
    response = api.post("/api/rooms/lobby/read/", {"seq": 99}, format="json")
    assert response.json() == {"last_read_seq": 5, "unread_count": 0, "mention_count": 0}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body", [{}, {"seq": "x"}, {"seq": -1}, {"seq": True}, {"seq": 1.5}, {"seq": 2**63}, {"seq": None}, [3]]
)
def test_a_bad_read_report_is_400_with_field_errors_and_changes_nothing(busy, other_user, body):
    response = client_for(other_user).post("/api/rooms/lobby/read/", body, format="json")
    assert response.status_code == 400 and response.json()
    assert marker(busy, other_user) == 0


@pytest.mark.django_db
def test_a_read_report_for_a_room_one_is_not_in_is_404(busy, user):
    carol = factories.make_user("carol")
    factories.make_room(created_by=user, slug="secret", is_private=True)
    api = client_for(carol)
    for slug in ("lobby", "secret", "nowhere"):
        response = api.post(f"/api/rooms/{slug}/read/", {"seq": 1}, format="json")
        assert response.status_code == 404 and "detail" in response.json()
    assert not Membership.objects.filter(user=carol).exists()
    assert APIClient().post("/api/rooms/lobby/read/", {"seq": 1}, format="json").status_code == 401


@pytest.mark.django_db
def test_the_room_list_and_detail_give_each_rooms_read_state(busy, user, other_user):
    secret = factories.make_room(created_by=user, slug="secret", is_private=True)
    services.member_add(room=secret, actor=user, user=other_user)
    post(secret, user, "hi @bob")
    post(secret, user, "and @room")
    reads.read_report(room=busy, user=other_user, seq=2)
    api = client_for(other_user)
    rooms = {r["slug"]: r for r in api.get("/api/rooms/").json()["results"]}
    state = {slug: (r["last_read_seq"], r["unread_count"], r["mention_count"]) for slug, r in rooms.items()}
    assert state == {"lobby": (2, 3, 0), "secret": (0, 2, 2)}
    detail = api.get("/api/rooms/secret/").json()
    assert (detail["last_read_seq"], detail["unread_count"], detail["mention_count"]) == (0, 2, 2)
    visitor = client_for(factories.make_user("carol")).get("/api/rooms/lobby/").json()
    assert (visitor["last_read_seq"], visitor["unread_count"], visitor["mention_count"]) == (0, 0, 0)


@pytest.mark.django_db
def test_the_room_list_reads_its_counts_in_a_fixed_number_of_queries(
    user, other_user, django_assert_max_num_queries
):
    api = client_for(other_user)

    def rooms_with_messages(start, count):
        for i in range(start, start + count):
            room = factories.make_room(created_by=user, slug=f"r{i}")
            services.member_join(room=room, user=other_user)
            post(room, user, f"hello @bob {i}")

    rooms_with_messages(0, 2)
    with django_assert_max_num_queries(
        4
    ):  # count, the page with its read state, the caller's roles, DM partners
        small = api.get("/api/rooms/").json()
    rooms_with_messages(2, 10)
    with django_assert_max_num_queries(4):
        large = api.get("/api/rooms/").json()
    assert len(small["results"]) == 2 and len(large["results"]) == 12
    assert {(r["unread_count"], r["mention_count"]) for r in large["results"]} == {(1, 1)}


# --- the socket -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_read_frame_is_answered_by_nothing_and_every_socket_of_the_user_gets_read_updated(
    ws, room, user, other_user
):
    await database_sync_to_async(
        lambda: (
            services.member_join(room=room, user=other_user),
            [post(room, user, f"m{i}") for i in range(3)],
        )
    )()
    elsewhere = await database_sync_to_async(factories.make_room)(created_by=other_user, slug="elsewhere")
    bob_here = await ws("/ws/rooms/lobby/", user=other_user)
    bob_there = await ws(f"/ws/rooms/{elsewhere.slug}/", user=other_user)
    alice = await ws("/ws/rooms/lobby/", user=user)
    for conn in (bob_here, bob_there, alice):
        assert await conn.connect()
        await conn.receive_type("hello")
    await bob_here.send({"type": "read", "seq": 2})
    expected = {
        "type": "read.updated",
        "room": "lobby",
        "last_read_seq": 2,
        "unread_count": 1,
        "mention_count": 0,
    }
    assert await bob_here.receive() == expected  # the layer's copy: no answer of its own
    assert await bob_there.receive() == expected
    await bob_here.send({"type": "read", "seq": 1})  # backward: nothing moves, nothing is sent
    assert await bob_here.nothing_more(0.3) and await bob_there.nothing_more(0.1)
    assert await alice.nothing_more(0.1)
    assert await database_sync_to_async(marker)(room, other_user) == 2
    for conn in (bob_here, bob_there, alice):
        await conn.close()


@pytest.mark.django_db(transaction=True)
async def test_the_reporting_tabs_own_sockets_get_no_read_updated_and_the_users_other_sockets_do(
    ws, room, user, other_user
):
    """A page opens its room socket and its user socket with one ``?tab=``: the read.updated its
    own report causes is not sent back to either (the page updated itself); another tab's sockets
    and a socket without a tab get it. A malformed tab is ignored (that socket gets everything)."""
    await database_sync_to_async(
        lambda: (
            services.member_join(room=room, user=other_user),
            [post(room, user, f"m{i}") for i in range(3)],
        )
    )()
    tab_a_room = await ws("/ws/rooms/lobby/?tab=tabA12345", user=other_user)
    tab_a_user = await ws("/ws/user/?tab=tabA12345", user=other_user)
    tab_b_user = await ws("/ws/user/?tab=tabB12345", user=other_user)
    no_tab_room = await ws("/ws/rooms/lobby/", user=other_user)
    bad_tab_room = await ws("/ws/rooms/lobby/?tab=tab%21A123", user=other_user)
    for conn, first in (
        (tab_a_room, "hello"),
        (tab_a_user, "sidebar"),
        (tab_b_user, "sidebar"),
        (no_tab_room, "hello"),
        (bad_tab_room, "hello"),
    ):
        assert await conn.connect()
        await conn.receive_type(first)
    await tab_a_room.send({"type": "read", "seq": 2})
    expected = {
        "type": "read.updated",
        "room": "lobby",
        "last_read_seq": 2,
        "unread_count": 1,
        "mention_count": 0,
    }
    assert await tab_b_user.receive() == expected
    assert await no_tab_room.receive() == expected
    assert await bad_tab_room.receive() == expected
    assert await tab_a_room.nothing_more(0.3) and await tab_a_user.nothing_more(0.1)
    await bad_tab_room.send({"type": "read", "seq": 3})  # its tab was ignored: everyone hears it
    for conn in (tab_a_room, tab_a_user, bad_tab_room):
        assert (await conn.receive_type("read.updated"))["last_read_seq"] == 3
    assert await database_sync_to_async(marker)(room, other_user) == 3
    for conn in (tab_a_room, tab_a_user, tab_b_user, no_tab_room, bad_tab_room):
        await conn.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "read"}, "missing_field"),
        ({"type": "read", "seq": "3"}, "invalid_field"),
        ({"type": "read", "seq": True}, "invalid_field"),
        ({"type": "read", "seq": -1}, "invalid_field"),
        ({"type": "read", "seq": 2**63}, "invalid_field"),
    ],
)
async def test_a_bad_read_frame_gets_an_error_code_and_the_socket_stays_open(joined, frame, code):
    await joined.send(frame)
    error = await joined.receive_type("error")
    assert error["code"] == code and error["field"] == "seq"
    await joined.send({"type": "read", "seq": 0})
    assert await joined.nothing_more(0.2)


@pytest.mark.django_db(transaction=True)
async def test_a_read_frame_without_a_membership_is_not_found_and_changes_nothing(ws, room, other_user):
    bob = await ws("/ws/rooms/lobby/", user=other_user)
    assert await bob.connect()
    await bob.receive_type("hello")
    # The membership gone behind the socket's back (no event): the report itself is refused.
    await database_sync_to_async(lambda: Membership.objects.filter(user=other_user).delete())()
    await bob.send({"type": "read", "seq": 0})
    assert (await bob.receive_type("error"))["code"] == "not_found"
    assert not await database_sync_to_async(Membership.objects.filter(user=other_user).exists)()
    await bob.close()


@pytest.mark.django_db(transaction=True)
async def test_a_message_sent_over_the_socket_is_read_by_its_sender(joined, room, user, other_user):
    await database_sync_to_async(
        lambda: (services.member_join(room=room, user=other_user), post(room, other_user, "unread by alice"))
    )()
    assert await database_sync_to_async(reads.read_state)(room=room, user=user) == reads.ReadState(0, 1, 0)
    await joined.send({"type": "message.send", "body": "mine", "client_msg_id": "c-1"})
    frames = {(await joined.receive())["type"] for _ in range(2)}
    assert frames == {"ack", "message"}
    assert await database_sync_to_async(reads.read_state)(room=room, user=user) == reads.ReadState(2, 0, 0)


@pytest.mark.django_db(transaction=True)
async def test_many_reports_of_one_tick_are_one_statement_one_marker_and_one_read_updated(
    room, user, other_user
):
    """Reports a node gets within ``READ_TICK`` are written together (``reads.ReadBatcher``): one
    statement for all of them; one user's reports of one room end at their highest seq, clamped
    to the room's last seq, never backward; one ``read.updated`` for that user and room, with the
    state after the tick; a non-member's report in the same tick is refused alone."""
    from chatsite import async_db

    carol, dave = [await database_sync_to_async(factories.make_user)(name) for name in ("carol", "dave")]

    def world():
        services.member_join(room=room, user=other_user)
        services.member_join(room=room, user=carol)
        for i in range(6):
            post(room, user, f"m{i}")

    await database_sync_to_async(world)()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.user_group_name(other_user.pk), channel)
    batcher = reads.ReadBatcher.for_loop()
    try:
        before = batcher.statements
        reports = [
            reads.read_report_soon(room=room, user=other_user, seq=seq) for seq in (2, 5, 3, 1, 4, 2**63 - 1)
        ] + [
            reads.read_report_soon(room=room, user=carol, seq=3),
            reads.read_report_soon(room=room, user=dave, seq=3),
        ]
        outcomes = await asyncio.gather(*reports, return_exceptions=True)
        assert batcher.statements == before + 1
        bobs = outcomes[:6]
        assert all(o == (True, reads.ReadState(6, 0, 0)) for o in bobs), bobs  # clamped to seq 6
        assert outcomes[6] == (True, reads.ReadState(3, 3, 0))
        assert isinstance(outcomes[7], services.NotFound)
        event = await asyncio.wait_for(layer.receive(channel), 5)
        assert json.loads(event["text"]) == {
            "type": "read.updated",
            "room": "lobby",
            "last_read_seq": 6,
            "unread_count": 0,
            "mention_count": 0,
        }
        with pytest.raises(TimeoutError):  # one event for the tick, not one per report
            await asyncio.wait_for(layer.receive(channel), 0.5)
        # Backward in a later tick: nothing moves, nothing is sent.
        assert await reads.read_report_soon(room=room, user=other_user, seq=2) == (
            False,
            reads.ReadState(6, 0, 0),
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.5)
        assert await database_sync_to_async(marker)(room, other_user) == 6
        assert await database_sync_to_async(Membership.objects.filter(user=dave).exists)() is False
    finally:
        await layer.group_discard(events.user_group_name(other_user.pk), channel)
        await async_db.aclose()


# --- real nodes -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_nodes(django_db_setup, django_db_blocker):
    from tests.nodes import cluster, database_url_for_tests

    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with cluster(2, redis_url=os.environ["REDIS_URL"], database_url=database_url, prefix=prefix) as nodes:
        yield nodes
        for node in nodes:
            assert "Traceback" not in node.log(), node.log()


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
async def test_a_read_report_on_node1_reaches_the_users_socket_on_node2_as_read_updated(two_nodes):
    from tests.nodes import Client, Http

    def setup():
        alice, bob = factories.make_user("alice"), factories.make_user("bob")
        room = factories.make_room(created_by=alice, slug="r0")
        services.member_join(room=room, user=bob)
        for i in range(4):
            post(room, alice, f"m{i}")
        return factories.token_for(bob)

    token = await database_sync_to_async(setup)()
    node1, node2 = two_nodes
    socket = await Client(node2, "r0", token).connect()
    status, _, body = await asyncio.to_thread(
        Http(node1, token).request, "POST", "/api/rooms/r0/read/", json_body={"seq": 3}
    )
    assert status == 200 and json.loads(body)["last_read_seq"] == 3
    expected = {
        "type": "read.updated",
        "room": "r0",
        "last_read_seq": 3,
        "unread_count": 1,
        "mention_count": 0,
    }
    assert await socket.wait_for(lambda c: expected in c.frames), socket.frames
    await socket.close()


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
async def test_a_tabs_report_skips_its_own_sockets_and_reaches_another_tab_on_another_node(two_nodes):
    """Tab A (room socket and user socket on node 1, one ``?tab=``) reads: tab A hears nothing
    back, bob's tab B on node 2 gets ``read.updated`` on its user socket."""
    import websockets

    from tests.nodes import Client

    def setup():
        alice, bob = factories.make_user("alice"), factories.make_user("bob")
        room = factories.make_room(created_by=alice, slug="r0")
        services.member_join(room=room, user=bob)
        for i in range(4):
            post(room, alice, f"m{i}")
        return factories.token_for(bob)

    token = await database_sync_to_async(setup)()
    node1, node2 = two_nodes
    headers = {"Authorization": f"Token {token}"}
    tab_a = await Client(node1, "r0", token, query="?tab=tabA12345").connect()
    users = {}
    for name, node in (("tabA12345", node1), ("tabB12345", node2)):
        users[name] = await websockets.connect(
            f"{node.ws}/ws/user/?tab={name}", additional_headers=headers, open_timeout=10
        )
        assert json.loads(await asyncio.wait_for(users[name].recv(), 10))["type"] == "sidebar"
    await tab_a.send_frame({"type": "read", "seq": 3})
    frame = json.loads(await asyncio.wait_for(users["tabB12345"].recv(), 10))
    assert frame == {
        "type": "read.updated",
        "room": "r0",
        "last_read_seq": 3,
        "unread_count": 1,
        "mention_count": 0,
    }
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(users["tabA12345"].recv(), 1.0)
    assert not [f for f in tab_a.frames if f["type"] == "read.updated"], tab_a.frames
    await tab_a.close()
    for socket in users.values():
        await socket.close()


@pytest.mark.django_db
def test_the_room_page_tells_its_script_where_the_reader_left_off(busy, other_user, client):
    reads.read_report(room=busy, user=other_user, seq=3)
    client.force_login(other_user)
    assert client.get("/rooms/lobby/").context["room_config"]["last_read_seq"] == 3
    client.force_login(factories.make_user("carol"))  # not a member yet: opens at the latest
    assert "last_read_seq" not in client.get("/rooms/lobby/").context["room_config"]


@pytest.mark.django_db(transaction=True)
async def test_the_sockets_one_statement_report_answers_as_the_service(room, user, other_user):
    """``reads.read_report_async`` (the ``read`` frame's one statement from the event loop) gives
    the service's state in every case: unread others' messages, own ones, deleted ones, @room
    and @username mentions counted once, a report beyond the last seq clamped, backward
    refused, a non-member refused."""
    from chatsite import async_db

    carol = await database_sync_to_async(factories.make_user)("carol")

    def world():
        services.member_join(room=room, user=other_user)
        services.member_join(room=room, user=carol)
        for body in ("one", "@bob hi", "@room all", "@bob @room both", "two"):
            post(room, user, body)
        post(room, other_user, "bob's own")  # seq 6: bob's marker moves there
        post(room, user, "three @bob")
        post(room, user, "@room again")
        services.message_delete(message=Message.objects.get(room=room, seq=8), actor=user)
        post(room, carol, "four")

    await database_sync_to_async(world)()
    try:
        for who, seq in ((carol, 2), (carol, 4), (carol, 2**63 - 1), (other_user, 3), (other_user, 7)):
            state = await reads.read_report_async(room=room, user=who, seq=seq)
            assert state == await database_sync_to_async(reads.read_state)(room=room, user=who), (who, seq)
        assert await database_sync_to_async(marker)(room, carol) == 9
        assert (await reads.read_report_async(room=room, user=other_user, seq=1)).last_read_seq == 7
        dave = await database_sync_to_async(factories.make_user)("dave")
        with pytest.raises(services.NotFound):
            await reads.read_report_async(room=room, user=dave, seq=3)
    finally:
        await async_db.aclose()


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
async def test_two_tabs_on_two_nodes_reporting_at_once_end_at_the_highest_marker_each_tick_coalesced(
    two_nodes,
):
    """Bob's two tabs, one room socket on each node, report at the same moment: tab 1 five
    reports in one burst (one tick on node 1), tab 2 one lower report (node 2). The marker ends
    at the highest seq, never moves back, and each tab hears of the other's reading: tab 2 gets
    ``read.updated`` with 5. Node 1 wrote its burst as one tick: no tab ever gets a
    ``read.updated`` for 1, 3 or 4, the burst's intermediate seqs."""
    from tests.nodes import Client

    def setup():
        alice, bob = factories.make_user("alice"), factories.make_user("bob")
        room = factories.make_room(created_by=alice, slug="r1")
        services.member_join(room=room, user=bob)
        for i in range(6):
            post(room, alice, f"m{i}")
        return room, bob, factories.token_for(bob)

    room, bob, token = await database_sync_to_async(setup)()
    node1, node2 = two_nodes
    tab1 = await Client(node1, "r1", token).connect()
    tab2 = await Client(node2, "r1", token).connect()

    async def burst():
        for seq in (1, 3, 5, 4, 3):
            await tab1._socket.send(json.dumps({"type": "read", "seq": seq}))

    await asyncio.gather(burst(), tab2._socket.send(json.dumps({"type": "read", "seq": 2})))

    def read_updates(client):
        return [f["last_read_seq"] for f in client.frames if f["type"] == "read.updated"]

    assert await tab2.wait_for(lambda c: 5 in read_updates(c)), tab2.frames
    assert await tab1.wait_for(lambda c: 5 in read_updates(c)), tab1.frames
    await asyncio.sleep(1)  # any late frame of either node's tick
    assert await database_sync_to_async(marker)(room, bob) == 5
    for tab in (tab1, tab2):
        seen = read_updates(tab)
        assert not {1, 3, 4} & set(seen), seen
        assert set(seen) <= {2, 5} and seen.count(5) == 1, seen
        assert not [f for f in tab.frames if f["type"] == "error"], tab.frames
    await tab1.close()
    await tab2.close()


def test_unread_counts_read_the_seq_index_after_the_marker_not_every_live_message(busy, other_user):
    """The counts behind a read report and a room list (``reads._batch_sql``,
    ``reads.with_read_state``) scan the room's ``(room_id, seq)`` range after the marker. With
    ``deleted_at IS NULL`` in their WHERE clause PostgreSQL took the search's partial index
    ``message_room_live_id_idx`` (``(room_id, id)`` of live messages) and read every live
    message of the room for each count."""
    from django.db import connection

    from rooms.models import Room

    room = busy
    author = Message.objects.filter(room=room).first().author
    Message.objects.bulk_create(  # a room of 3,005 messages, its statistics known to the planner
        Message(room=room, seq=seq, author=author, body="x", client_msg_id=f"bulk-{seq}", server_id="t")
        for seq in range(6, 3006)
    )
    for n in range(40):  # and 40 rooms of 100 beside it, as a real table holds many rooms
        other = factories.make_room(created_by=author, slug=f"side-{n}")
        Message.objects.bulk_create(
            Message(room=other, seq=seq, author=author, body="x", client_msg_id=f"s-{seq}", server_id="t")
            for seq in range(1, 101)
        )
    Room.objects.filter(pk=room.pk).update(last_seq=3005)
    room.refresh_from_db()
    with connection.cursor() as cur:
        cur.execute("ANALYZE rooms_message")
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")  # one room in the table: it would be read whole
        cur.execute(
            "EXPLAIN " + reads._batch_sql(),
            {"rooms": [room.pk], "users": [other_user.pk], "seqs": [room.last_seq - 1]},
        )
        batch_plan = "\n".join(row[0] for row in cur.fetchall())
        listing = reads.with_read_state(Room.objects.filter(pk=room.pk), other_user).values_list(
            "my_unread_count", "my_mention_count"
        )
        list_plan = listing.explain()
    for plan in (batch_plan, list_plan):
        assert "Index Cond: (room_id = i.room_id)\n" not in plan + "\n", plan  # a whole room's scan
        assert "message_room_seq_unique" in plan, plan
