"""Direct messages on real daphne nodes sharing PostgreSQL and Redis: one conversation whichever
node and side opens it (also at the same moment), messages and ``dm.created`` cross nodes, a
third user's socket is refused; and in Debian's Chromium, a DM opened from a profile page on one
node and answered from another."""

import asyncio
import json
import os
import uuid

import pytest
import websockets

from rooms.models import Room
from tests import factories
from tests.nodes import Client, Http, cluster, database_url_for_tests
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, connected_to, orm, wait_shown

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.multinode]


@pytest.fixture(scope="module")
def nodes(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with cluster(2, redis_url=os.environ["REDIS_URL"], database_url=database_url, prefix=prefix) as started:
        yield started
        for node in started:
            assert "Traceback" not in node.log(), node.log()


def people(*names: str) -> dict:
    """Users ``names`` whose passwords the nodes verify (PBKDF2 with few iterations: tests hash
    with MD5, nodes with the production hashers), and their API tokens."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    tokens = {}
    for name in names:
        user = factories.make_user(name)
        user.password = hasher.encode(factories.PASSWORD, hasher.salt(), iterations=1000)
        user.save(update_fields=["password"])
        tokens[name] = factories.token_for(user)
    return tokens


def open_dm(node, token: str, username: str) -> tuple[int, dict]:
    status, _, body = Http(node, token).request("POST", "/api/dms/", json_body={"username": username})
    return status, json.loads(body)


async def test_a_dm_opened_on_node1_by_alice_and_on_node2_by_bob_is_one_conversation_across_nodes(nodes):
    node1, node2 = nodes
    tokens = await asyncio.to_thread(orm_call, people, "alice", "bob", "carol")
    await asyncio.to_thread(
        orm_call, lambda: factories.make_room(created_by=factories.make_user("owner"), slug="lobby")
    )

    # bob's socket in another room, on node-2, hears of the new DM opened on node-1.
    lobby = await Client(node2, "lobby", tokens["bob"]).connect()
    status, alices = await asyncio.to_thread(open_dm, node1, tokens["alice"], "bob")
    assert status == 201, alices
    status, bobs = await asyncio.to_thread(open_dm, node2, tokens["bob"], "alice")
    assert status == 200, bobs
    assert alices["slug"] == bobs["slug"] and alices["kind"] == bobs["kind"] == "dm"
    assert (alices["dm_with"]["username"], bobs["dm_with"]["username"]) == ("bob", "alice")
    slug = alices["slug"]
    assert await lobby.wait_for(lambda c: any(f["type"] == "dm.created" for f in c.frames))
    created = next(f for f in lobby.frames if f["type"] == "dm.created")
    assert created["room"]["slug"] == slug and created["room"]["dm_with"]["username"] == "alice"
    await lobby.close()

    # A message sent on node-1 by alice reaches bob's socket on node-2; his answer comes back.
    alice = await Client(node1, slug, tokens["alice"]).connect()
    bob = await Client(node2, slug, tokens["bob"]).connect()
    await alice.send("hello from node-1", "a-1")
    assert await bob.wait_for(lambda c: any(m["body"] == "hello from node-1" for m in c.messages))
    assert bob.messages[0]["server_id"] == "node-1" and bob.messages[0]["seq"] == 1
    await bob.send("hi back from node-2", "b-1")
    assert await alice.wait_for(lambda c: any(m["body"] == "hi back from node-2" for m in c.messages))

    # carol is refused the DM's socket (4404) and its REST routes (404) on either node.
    async with websockets.connect(
        f"{node1.ws}/ws/rooms/{slug}/",
        open_timeout=10,
        additional_headers={"Authorization": f"Token {tokens['carol']}"},
    ) as sock:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(sock.recv(), 10)
        assert closed.value.rcvd.code == 4404
    for path in (
        f"/api/rooms/{slug}/messages/",
        f"/api/rooms/{slug}/members/",
        f"/api/rooms/{slug}/presence/",
    ):
        status, _, _ = await asyncio.to_thread(Http(node2, tokens["carol"]).request, "GET", path)
        assert status == 404, path
    await alice.close()
    await bob.close()


async def test_opens_of_one_pair_at_once_on_two_nodes_give_one_room(nodes):
    node1, node2 = nodes
    names = [f"p{i}" for i in range(12)]
    tokens = await asyncio.to_thread(orm_call, people, *names)
    answers = []
    for i in range(0, 12, 2):
        a, b = names[i], names[i + 1]
        answers.append(
            await asyncio.gather(
                asyncio.to_thread(open_dm, node1, tokens[a], b),
                asyncio.to_thread(open_dm, node2, tokens[b], a),
            )
        )
    for (status_a, room_a), (status_b, room_b) in answers:
        assert sorted((status_a, status_b)) == [200, 201], (room_a, room_b)
        assert room_a["slug"] == room_b["slug"]
    assert await asyncio.to_thread(orm_call, lambda: Room.objects.filter(kind="dm").count()) == 6


def orm_call(fn, *args):
    return orm(fn, *args)


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is missing")
def test_in_chromium_a_dm_opened_from_the_profile_page_on_node1_is_answered_on_node2(nodes, tmp_path):
    from playwright.sync_api import sync_playwright

    node1, node2 = nodes
    orm(people, "alice", "bob")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = {}
            for name, node in (("alice", node1), ("bob", node2)):
                context = chromium.new_context()
                page = context.new_page()
                page.goto(f"{node.http}/accounts/login/?next=/u/{'bob' if name == 'alice' else 'alice'}/")
                page.fill("#id_username", name)
                page.fill("#id_password", factories.PASSWORD)
                with page.expect_navigation():
                    page.click("button[type=submit]")
                pages[name] = page
            alice, bob = pages["alice"], pages["bob"]
            assert alice.locator("#send-dm").inner_text() == "Send a message"
            with alice.expect_navigation():
                alice.click("#send-dm")
            slug = orm(lambda: Room.objects.get(kind="dm").slug)
            assert alice.url == f"{node1.http}/rooms/{slug}/"
            assert alice.locator("#room-heading").inner_text().startswith("bob")
            assert connected_to(alice) == "node-1"

            # bob's profile page of alice now offers the conversation: the same room.
            bob.reload()
            assert bob.locator("#send-dm").inner_text() == "Open your conversation"
            with bob.expect_navigation():
                bob.click("#send-dm")
            assert bob.url == f"{node2.http}/rooms/{slug}/"
            assert bob.locator("#room-heading").inner_text().startswith("alice")
            assert connected_to(bob) == "node-2"

            alice.fill("#message-body", "hello bob, from node-1")
            alice.press("#message-body", "Enter")
            wait_shown(bob, "hello bob, from node-1")
            bob.fill("#message-body", "hello alice, from node-2")
            bob.press("#message-body", "Enter")
            wait_shown(alice, "hello alice, from node-2")
            alice.screenshot(path=str(tmp_path / "dm-alice.png"), full_page=True)

            # The room list shows the DM under the other person's name.
            alice.goto(f"{node1.http}/")
            assert alice.locator(".dm-list__link").all_inner_texts() == ["bob"]
        finally:
            chromium.close()
    assert orm(
        lambda: list(Room.objects.get(kind="dm").messages.order_by("seq").values_list("body", flat=True))
    ) == ["hello bob, from node-1", "hello alice, from node-2"]
