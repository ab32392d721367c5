"""Rooms run from the room page (static/rooms/room/members.js) in Chromium, on real nodes behind
nginx: an owner adds someone to a private room from the page on node-1 and they open it on
node-2 while a non-member still gets 404; a mute from the page is felt at once by the muted
member's open page on the other node (composer disabled with the time it ends), and an unmute
gives it back; a rename shows in the other page's header; a member leaves from the page and the
owner's member list drops them live. Each action goes through the REST route any client uses."""

import json
import os

import pytest

from tests import factories
from tests.nodes import database_url_for_tests
from tests.test_browser import (  # noqa: F401 (fixtures)
    CHROMIUM,
    CHROMIUM_ARGS,
    browser,
    make_people,
    open_room,
    orm,
    screenshot,
    token_socket,
    wait_shown,
)
from tests.test_cluster import balanced_cluster, needs_nginx
from tests.tools import CHROMIUM_REASON, HAVE_CHROMIUM

pytestmark = [
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=CHROMIUM_REASON),
    needs_nginx,
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]


# New members a pacing window sends as rows on these nodes (100 by default): in the burst test a
# lone held join still comes as a row, a storm's as a count (members.joined).
MEMBER_ROWS_MAX = 1


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker):
    """tests.test_browser's ``stack`` (nginx in front of 3 nodes) with ``MEMBER_ROWS_MAX``."""
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    extra = {"MEMBER_ROWS_MAX": str(MEMBER_ROWS_MAX)}
    with balanced_cluster(database_url, os.environ["REDIS_URL"], extra_env=extra) as (port, nodes, _nginx):
        yield f"http://127.0.0.1:{port}", nodes


def live_nodes(nodes):
    return [node for node in nodes if node.process.poll() is None]


def private_room(slug: str, owner: str) -> None:
    from django.contrib.auth import get_user_model

    factories.make_room(created_by=get_user_model().objects.get(username=owner), slug=slug, is_private=True)


def is_member(slug: str, username: str) -> bool:
    from rooms.models import Membership

    return Membership.objects.filter(
        room__slug=slug, user__username=username, banned_at__isnull=True
    ).exists()


def open_members(page):
    panel = page.locator("#members")
    if panel.get_attribute("open") is None:
        panel.locator("summary").first.click()
    page.wait_for_function("() => document.getElementById('members-count').textContent !== ''")
    return panel


def member_row(page, username: str):
    return page.locator("#members-list li.member", has=page.locator(".member__name", has_text=username))


def test_owner_adds_someone_to_a_private_room_from_the_page_and_they_open_it_on_another_node(
    stack, browser, tmp_path
):
    _, nodes = stack
    orm(make_people, "pm-ann", "pm-bob", "pm-eve", rooms={})
    orm(private_room, "pm-secret", "pm-ann")
    node1, node2 = live_nodes(nodes)[:2]
    ctx = {name: browser.new_context() for name in ("ann", "bob", "eve")}
    try:
        ann = open_room(ctx["ann"], node1.http, "pm-secret", username="pm-ann")
        # before the invite bob is told the room does not exist, like anyone else
        bob = ctx["bob"].new_page()
        bob.goto(f"{node2.http}/accounts/login/?next=/rooms/pm-secret/")
        bob.fill("#id_username", "pm-bob")
        bob.fill("#id_password", factories.PASSWORD)
        with bob.expect_navigation():
            bob.click("button[type=submit]")
        assert "pm-secret" not in bob.title() and bob.locator("#message-list").count() == 0

        panel = open_members(ann)
        panel.locator("#invite-username").fill("pm-bob")
        panel.locator("#invite-form button[type=submit]").click()
        ann.wait_for_function(
            "() => document.getElementById('members-status').textContent.includes('pm-bob is a member')"
        )
        assert member_row(ann, "pm-bob").count() == 1
        assert ann.text_content("#members-count") == " (2)"
        assert orm(is_member, "pm-secret", "pm-bob")

        bob = open_room(ctx["bob"], node2.http, "pm-secret")
        bob.fill("#message-body", "thanks for the invite")
        bob.press("#message-body", "Enter")
        wait_shown(ann, "thanks for the invite")
        # a user nobody invited still gets the not-found page on either node
        eve = ctx["eve"].new_page()
        eve.goto(f"{node2.http}/accounts/login/?next=/rooms/")
        eve.fill("#id_username", "pm-eve")
        eve.fill("#id_password", factories.PASSWORD)
        with eve.expect_navigation():
            eve.click("button[type=submit]")
        response = eve.goto(f"{node2.http}/rooms/pm-secret/")
        assert response.status == 404
        screenshot(ann, tmp_path, "members-invite")
    finally:
        for context in ctx.values():
            context.close()


def test_a_mute_from_the_page_is_felt_at_once_on_the_members_page_on_another_node_then_a_rename_and_a_leave(
    stack, browser, tmp_path
):
    _, nodes = stack
    orm(make_people, "pm-owner", "pm-member", rooms={"pm-hall": "pm-owner"})
    node1, node2 = live_nodes(nodes)[:2]
    owner_ctx, member_ctx = browser.new_context(), browser.new_context()
    try:
        owner = open_room(owner_ctx, node1.http, "pm-hall", username="pm-owner")
        member = open_room(member_ctx, node2.http, "pm-hall", username="pm-member")
        assert member.locator("#send-fieldset").is_enabled()
        # a public room: no "private" badge; a plain member: no role badge
        assert (
            member.locator("#room-private-badge").is_hidden() and member.locator("#my-role-badge").is_hidden()
        )
        # a plain member sees the list but no moderation controls, and no settings
        open_members(member)
        assert member_row(member, "pm-owner").locator(".member__menu").count() == 0
        assert member.locator("#invite-form").is_hidden() and member.locator("#room-settings").is_hidden()

        open_members(owner)
        row = member_row(owner, "pm-member")
        row.locator(".member__menu summary").click()
        row.locator("select").select_option("60")
        member.wait_for_function("() => document.getElementById('send-fieldset').disabled", timeout=5_000)
        assert member.locator("#message-body").get_attribute("placeholder").startswith("You are muted until")
        owner.wait_for_function(
            "() => [...document.querySelectorAll('#members-list .member__notes')].some(n => n.textContent.startsWith('muted until'))"
        )
        screenshot(member, tmp_path, "muted-member")

        row = member_row(owner, "pm-member")
        if row.locator(".member__menu").get_attribute("open") is None:
            row.locator(".member__menu summary").click()
        row.locator("button", has_text="Unmute").click()
        member.wait_for_function("() => !document.getElementById('send-fieldset').disabled", timeout=5_000)
        member.fill("#message-body", "unmuted and talking")
        member.press("#message-body", "Enter")
        wait_shown(owner, "unmuted and talking")

        # the owner renames the room from the page: the member's header follows live
        owner.locator("#room-settings summary").click()
        owner.fill("#room-name", "The Great Hall")
        owner.locator("#room-settings-form button[type=submit]").click()
        member.wait_for_function(
            "() => document.getElementById('room-name-text').textContent === 'The Great Hall'", timeout=5_000
        )

        # the member leaves from the page; the owner's list drops them at once
        member.once("dialog", lambda dialog: dialog.accept())
        with member.expect_navigation():
            member.locator("#leave-room").click()
        assert member.url == f"{node2.http}/", member.url  # the room list
        owner.wait_for_function(
            "() => ![...document.querySelectorAll('#members-list .member__name')].some(n => n.textContent.includes('pm-member'))",
            timeout=5_000,
        )
        assert not orm(is_member, "pm-hall", "pm-member")
    finally:
        owner_ctx.close()
        member_ctx.close()


def set_display_name(username: str, name: str) -> None:
    from django.contrib.auth import get_user_model

    from rooms import profiles

    profiles.profile_update(user=get_user_model().objects.get(username=username), display_name=name)


def test_display_names_and_generated_avatars_show_on_messages_drawn_by_the_server_and_live(
    stack, browser, tmp_path
):
    """A display name set in the profile shows as the author of messages (with @username as
    the tooltip), on messages the server drew and on a live one from another node, each with
    the avatar made of its initials; the members panel shows it with the @username."""
    _, nodes = stack
    tokens = orm(make_people, "dn-ann", "dn-bob", rooms={"dn-room": "dn-ann"})
    orm(set_display_name, "dn-ann", "Ann Lee")
    node1, node2 = live_nodes(nodes)[:2]
    from tests.test_browser import post

    post(node2, tokens["dn-ann"], "dn-room", "drawn by the server")
    context = browser.new_context()
    try:
        page = open_room(context, node1.http, "dn-room", username="dn-bob")
        post(node2, tokens["dn-ann"], "dn-room", "arrived live")
        wait_shown(page, "arrived live")
        for body in ("drawn by the server", "arrived live"):
            li = page.locator("#message-list li[data-seq]", has_text=body)
            assert li.locator(".message__author").text_content() == "Ann Lee"
            assert li.locator(".message__author").get_attribute("title") == "@dn-ann"
            assert li.locator(".avatar").text_content() == "AL"
        open_members(page)
        row = member_row(page, "Ann Lee")
        assert row.locator(".member__username").text_content() == "@dn-ann"
        assert row.locator(".avatar").text_content() == "AL"
        screenshot(page, tmp_path, "display-names")
    finally:
        context.close()


def public_room(slug: str, owner: str) -> None:
    from django.contrib.auth import get_user_model

    factories.make_room(created_by=get_user_model().objects.get(username=owner), slug=slug)


def test_a_visitor_who_joins_by_opening_a_public_room_can_leave_it_without_a_reload(stack, browser):
    """Opening a public room's page makes the visitor a member as the socket connects, before
    that socket could hear its own member.updated: the page reads the membership and offers
    "Leave room" at once."""
    _, nodes = stack
    orm(make_people, "lv-ann", "lv-bob", rooms={})
    orm(public_room, "lv-hall", "lv-ann")
    context = browser.new_context()
    try:
        page = open_room(context, live_nodes(nodes)[0].http, "lv-hall", username="lv-bob")
        page.wait_for_selector("#leave-room", state="visible", timeout=5_000)
        assert orm(is_member, "lv-hall", "lv-bob")
    finally:
        context.close()


def test_bursts_of_new_members_on_another_node_show_in_the_owners_members_panel(stack, browser, tmp_path):
    """Two people open a public room's socket on node-3, each joining it: node-3 sends the first
    join at once and holds the second for its pacing window (rooms.events); the owner's members
    panel on node-1 lists and counts both without a reload. Then six more at once: more new
    members in a window than ``MEMBER_ROWS_MAX`` come as their count (``members.joined``): the
    panel counts them at once, offers "Show more members", and that lists every one."""
    import time
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import ExitStack

    from websockets.sync.client import connect

    _, nodes = stack
    first = ["mb-new0", "mb-new1"]
    storm = [f"mb-storm{i}" for i in range(6)]
    tokens = orm(make_people, "mb-owner", *first, *storm, rooms={})
    orm(public_room, "mb-hall", "mb-owner")
    node1, node3 = live_nodes(nodes)[0], live_nodes(nodes)[-1]
    url = f"{node3.ws}/ws/rooms/mb-hall/"
    context = browser.new_context()

    def count_is(n):
        owner.wait_for_function(
            f"() => document.getElementById('members-count').textContent === ' ({n})'", timeout=5_000
        )

    def join(name):
        return connect(url, additional_headers={"Authorization": f"Token {tokens[name]}"}, open_timeout=10)

    try:
        owner = open_room(context, node1.http, "mb-hall", username="mb-owner")
        open_members(owner)
        count_is(1)
        with ExitStack() as opened:
            for name in first:
                token_socket(opened, url, tokens[name])
            count_is(3)
            shown = owner.locator("#members-list .member__name").all_inner_texts()
            assert all(any(name in text for text in shown) for name in first), shown
            assert owner.locator("#members-more").is_hidden()
            time.sleep(1.0)  # node-3's pacing windows (0.2 s, then 0.4 s) close empty
            with ThreadPoolExecutor(len(storm)) as pool:  # the storm: every handshake at once
                for ws in pool.map(join, storm):
                    assert json.loads(opened.enter_context(ws).recv(timeout=10))["type"] == "hello"
            count_is(9)
            more = owner.locator("#members-more")
            more.wait_for(state="visible", timeout=5_000)
            shown = owner.locator("#members-list .member__name").all_inner_texts()
            assert sum(any(name in text for text in shown) for name in storm) < len(storm), shown
            screenshot(owner, tmp_path, "storm-of-members-counted")
            more.click()
            owner.wait_for_function(
                "names => names.every(n => document.getElementById('members-list').textContent.includes(n))",
                arg=storm,
                timeout=5_000,
            )
            count_is(9)
            assert owner.locator("#members-more").is_hidden()
            screenshot(owner, tmp_path, "storm-of-members-listed")
        assert all(orm(is_member, "mb-hall", name) for name in first + storm)
    finally:
        context.close()
