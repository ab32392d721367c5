"""People read names, the slug is the URL's (a new user's test): in Chromium, on real nodes behind
nginx, a direct message's page is headed by the other person's display name and starts "This
is the beginning of your conversation with …", a private room's random suffix shows nowhere
(header, members panel, confirm dialogs, the room list), a rename on one node renames every
text of a page on another; names stay text (a name with markup shows as typed). And a page whose
user is banned or removed (on another node) offers no action the server would refuse: no "☺+",
no "Reply", no Edit or Delete, a reaction chip does nothing, and the composer says why it is
disabled."""

import uuid

import pytest

from tests import factories
from tests.test_browser import (  # noqa: F401 (fixtures)
    browser,
    connected_to,
    make_people,
    open_room,
    orm,
    screenshot,
    stack,
    wait_shown,
)
from tests.test_browser_members import live_nodes, member_row, open_members, set_display_name
from tests.test_cluster import needs_nginx
from tests.tools import CHROMIUM_REASON, HAVE_CHROMIUM

pytestmark = [
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=CHROMIUM_REASON),
    needs_nginx,
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]

# Anything the page could offer a member to act with on a message.
ACTION_SELECTORS = (".reaction--add", ".reply-button", ".message__actions button")


def user(username: str):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


def room_with_members(
    *, slug: str, name: str, owner: str, members: list[str], is_private: bool = False
) -> None:
    from rooms import services

    room = factories.make_room(created_by=user(owner), slug=slug, name=name, is_private=is_private)
    for username in members:
        if is_private:
            services.member_add(room=room, actor=user(owner), user=user(username))
        else:
            services.member_join(room=room, user=user(username))


def say(slug: str, username: str, body: str) -> int:
    from rooms import services
    from rooms.models import Room

    room = Room.objects.get(slug=slug)
    return services.message_post(
        room=room, author=user(username), body=body, client_msg_id=uuid.uuid4().hex
    ).message.seq


def react(slug: str, seq: int, username: str, emoji: str) -> None:
    from rooms import reactions
    from rooms.models import Room

    reactions.reaction_by_seq(
        room=Room.objects.get(slug=slug), seq=seq, user=user(username), emoji=emoji, add=True
    )


def reaction_count(slug: str) -> int:
    from rooms.models import Reaction

    return Reaction.objects.filter(message__room__slug=slug).count()


def open_dm(username: str, other: str) -> str:
    from rooms import dms

    return dms.dm_open(user=user(username), username=other).room.slug


def visible_text(page) -> str:
    return page.inner_text("body")


def history_start(page) -> str:
    page.wait_for_selector("#history-start", state="visible", timeout=10_000)
    return page.text_content("#history-start")


def answer_dialog(page, accept: bool):
    """Answers the next confirm dialog of ``page``; returns a list that gets its message."""
    seen = []

    def on_dialog(dialog):
        seen.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", on_dialog)
    return seen


def offered_actions(page) -> list[str]:
    """The visible action controls on the page's messages (selector of each)."""
    return [
        sel
        for sel in ACTION_SELECTORS
        for el in page.locator(f"#message-list {sel}").all()
        if el.is_visible()
    ]


def test_a_direct_message_is_named_by_the_other_persons_display_name_and_its_slug_shows_nowhere(
    stack, browser, tmp_path
):
    _, nodes = stack
    orm(make_people, "nm-dave", "nm-carol", rooms={})
    orm(set_display_name, "nm-carol", "Carol <i>Ng</i>")  # user text: shown as typed, never as markup
    slug = orm(open_dm, "nm-carol", "nm-dave")
    orm(say, slug, "nm-carol", "hi dave")
    context = browser.new_context()
    try:
        page = open_room(context, live_nodes(nodes)[0].http, slug, username="nm-dave")
        assert page.text_content("#room-name-text") == "Carol <i>Ng</i>"
        assert page.locator("#room-heading i").count() == 0
        assert page.locator("#room-slug").count() == 0 and page.locator("#room-private-badge").is_hidden()
        assert history_start(page) == "This is the beginning of your conversation with Carol <i>Ng</i>."
        assert page.locator("#history-start i").count() == 0
        assert slug not in visible_text(page) and slug not in page.title()
        assert page.title().endswith("Carol <i>Ng</i> · chatsite")  # after the sidebar's "(1) "
        screenshot(page, tmp_path, "dm-named")
        # the room list names the conversation by the person too
        page.goto(f"{live_nodes(nodes)[0].http}/")
        assert slug not in visible_text(page)
    finally:
        context.close()


def test_a_private_room_shows_its_name_everywhere_and_a_rename_on_one_node_renames_the_page_on_another(
    stack, browser, tmp_path
):
    _, nodes = stack
    slug, suffix = "nm-plans-k3tlt7vmam9i", "k3tlt7vmam9i"
    orm(make_people, "nm-ann", "nm-bob", rooms={})
    orm(
        room_with_members, slug=slug, name="Secret plans", owner="nm-ann", members=["nm-bob"], is_private=True
    )
    orm(say, slug, "nm-ann", "the plan")
    node1, node2 = live_nodes(nodes)[:2]
    ann_ctx, bob_ctx = browser.new_context(), browser.new_context()
    try:
        ann = open_room(ann_ctx, node1.http, slug, username="nm-ann")
        bob = open_room(bob_ctx, node2.http, slug, username="nm-bob")
        connected_to(bob, other_than=connected_to(ann))
        for page in (ann, bob):
            assert page.text_content("#room-name-text") == "Secret plans"
            assert page.locator("#room-slug").is_hidden() and page.locator("#room-private-badge").is_visible()
            assert history_start(page) == "This is the start of Secret plans."
        panel = open_members(ann)
        assert panel.locator("#invite-label").text_content() == "Add someone to Secret plans"
        row = member_row(ann, "nm-bob")
        row.locator(".member__menu summary").click()
        asked = answer_dialog(ann, accept=False)
        row.locator("button", has_text="Ban").click()
        assert asked == [
            "Ban nm-bob from Secret plans? They are removed and cannot come back until unbanned."
        ]
        for page in (ann, bob):
            assert suffix not in visible_text(page), visible_text(page)

        # renamed on node-1: every text naming the room follows on node-2 (and on node-1)
        ann.locator("#room-settings summary").click()
        ann.fill("#room-name", "Plans <b>B</b>")
        ann.locator("#room-settings-form button[type=submit]").click()
        bob.wait_for_function(
            "() => document.getElementById('room-name-text').textContent === 'Plans <b>B</b>'", timeout=5_000
        )
        assert bob.text_content("#history-start") == "This is the start of Plans <b>B</b>."
        assert bob.locator("#room-heading b, #history-start b").count() == 0
        # The tab's title follows too, and keeps the new name when the sidebar next counts unread
        # messages (a message in the room: its room.activity re-renders the sidebar).
        bob.wait_for_function("() => document.title.endsWith('Plans <b>B</b> · chatsite')", timeout=5_000)
        ann.fill("#message-body", "after the rename")
        ann.press("#message-body", "Enter")
        bob.wait_for_function("() => document.body.innerText.includes('after the rename')", timeout=5_000)
        bob.wait_for_timeout(500)  # the sidebar's render after the activity frame
        assert bob.title().endswith("Plans <b>B</b> · chatsite"), bob.title()
        ann.wait_for_function(
            "() => document.getElementById('invite-label').textContent === 'Add someone to Plans <b>B</b>'",
            timeout=5_000,
        )
        assert bob.locator("#room-slug").is_hidden()
        screenshot(bob, tmp_path, "private-room-renamed")

        # removed from the private room on node-1: bob's page on node-2 offers nothing that would be refused
        row = member_row(ann, "nm-bob")
        if row.locator(".member__menu").get_attribute("open") is None:
            row.locator(".member__menu summary").click()
        asked = answer_dialog(ann, accept=True)
        row.locator("button", has_text="Remove").click()
        assert asked == ["Remove nm-bob from Plans <b>B</b>?"]
        bob.wait_for_function("() => document.getElementById('send-fieldset').disabled", timeout=5_000)
        bob.wait_for_function(
            "() => document.getElementById('message-body').placeholder === 'This room is no longer open to you'",
            timeout=5_000,
        )
        assert offered_actions(bob) == []

        # the room list: the private room by its name, its slug nowhere
        ann.goto(f"{node1.http}/")
        card = ann.locator(".room-card", has_text="Plans <b>B</b>")
        assert card.count() == 1 and card.locator(".room-card__slug").count() == 0
        assert suffix not in visible_text(ann)
    finally:
        ann_ctx.close()
        bob_ctx.close()


def test_a_user_banned_on_another_node_gets_a_page_without_actions_and_a_composer_that_says_why(
    stack, browser, tmp_path
):
    _, nodes = stack
    slug = "nb-general"
    orm(make_people, "nb-owner", "nb-dave", rooms={})
    orm(room_with_members, slug=slug, name="General", owner="nb-owner", members=["nb-dave"])
    owners = orm(say, slug, "nb-owner", "welcome")
    orm(say, slug, "nb-dave", "thanks")
    orm(react, slug, owners, "nb-owner", "👍")
    node1, node2 = live_nodes(nodes)[:2]
    owner_ctx, dave_ctx = browser.new_context(), browser.new_context()
    try:
        owner = open_room(owner_ctx, node1.http, slug, username="nb-owner")
        dave = open_room(dave_ctx, node2.http, slug, username="nb-dave")
        connected_to(dave, other_than=connected_to(owner))
        # a public room keeps its #slug small in the header; its texts use its name
        assert dave.text_content(".chat__slug") == "#nb-general" and dave.locator(".chat__slug").is_visible()
        assert history_start(dave) == "This is the start of General."
        assert set(offered_actions(dave)) == set(ACTION_SELECTORS)  # reaction, reply, edit/delete

        open_members(owner)
        row = member_row(owner, "nb-dave")
        row.locator(".member__menu summary").click()
        asked = answer_dialog(owner, accept=True)
        row.locator("button", has_text="Ban").click()

        dave.wait_for_function(
            "() => document.querySelector('#connection-status .status__text').textContent.startsWith('You are banned')",
            timeout=5_000,
        )
        assert offered_actions(dave) == []
        assert dave.evaluate("() => document.getElementById('send-fieldset').disabled")
        assert dave.get_attribute("#message-body", "placeholder") == "You are banned from this room"
        # the existing reaction still shows as a count, and a click on it sends nothing
        chip = dave.locator("#message-list .reaction:not(.reaction--add)")
        assert chip.count() == 1 and chip.text_content() == "👍1"
        chip.click()
        dave.wait_for_timeout(500)
        assert dave.locator("#form-error").is_hidden(), dave.text_content("#form-error")
        assert orm(reaction_count, slug) == 1
        screenshot(dave, tmp_path, "banned-read-only")
        assert asked == ["Ban nb-dave from General? They are removed and cannot come back until unbanned."]

        # the room list shows a public room's slug (its name first)
        owner.goto(f"{node1.http}/")
        card = owner.locator(".room-card", has_text="General")
        assert card.locator(".room-card__slug").text_content() == "#nb-general"
    finally:
        owner_ctx.close()
        dave_ctx.close()
