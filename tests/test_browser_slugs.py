"""A room named only in Korean, made from the room list's form without a slug, works across
nodes in Chromium: its page and socket on node-1 and node-2 at /rooms/일반-대화방/ (the seed's own
example room), a message typed on one shows on the other."""

from urllib.parse import quote, unquote

import pytest

from tests import factories
from tests.test_browser import (  # noqa: F401 (fixtures)
    browser,
    make_people,
    open_room,
    orm,
    screenshot,
    stack,
    wait_shown,
)
from tests.test_cluster import needs_nginx
from tests.tools import CHROMIUM_REASON, HAVE_CHROMIUM

pytestmark = [
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=CHROMIUM_REASON),
    needs_nginx,
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]


def test_a_room_named_in_korean_is_created_from_the_page_without_a_slug_and_works_across_nodes(
    stack, browser, tmp_path
):
    _, nodes = stack
    orm(make_people, "ko-ann", "ko-bob", rooms={})
    node1, node2 = [node for node in nodes if node.process.poll() is None][:2]
    ann_ctx, bob_ctx = browser.new_context(), browser.new_context()
    try:
        ann = ann_ctx.new_page()
        ann.goto(f"{node1.http}/accounts/login/?next=/rooms/new/")
        ann.fill("#id_username", "ko-ann")
        ann.fill("#id_password", factories.PASSWORD)
        with ann.expect_navigation():
            ann.click("main form button[type=submit]")
        ann.fill("#id_name", "일반 대화방")
        with ann.expect_navigation():
            ann.click("button:has-text('Create room')")
        assert unquote(ann.url) == f"{node1.http}/rooms/일반-대화방/", ann.url
        assert ann.inner_text("#room-heading").startswith("일반 대화방")

        bob = open_room(
            bob_ctx, node2.http, quote("일반-대화방"), username="ko-bob"
        )  # as the browser shows it
        ann.wait_for_function(
            "() => document.getElementById('connection-status').classList.contains('status--connected')"
        )
        bob.fill("#message-body", "안녕하세요, 여러분")
        bob.press("#message-body", "Enter")
        wait_shown(ann, "안녕하세요, 여러분")
        ann.fill("#message-body", "반가워요")
        ann.press("#message-body", "Enter")
        wait_shown(bob, "반가워요")
        screenshot(bob, tmp_path, "korean-room")
    finally:
        ann_ctx.close()
        bob_ctx.close()
