"""Ending a session, as a person sees it (issue 17, F5): Debian's Chromium on real daphne nodes
behind nginx (``tests/test_browser.py``'s cluster helpers). bob has the room page open in two
browsers: one on node-2, one on node-1. In the second he changes his password (Django's page,
node-1): the first page says at once that he is not signed in (its socket closed 4401, no
reconnect), while the second browser's room page reconnects by itself (4001, the renewed
cookie, retrying with backoff until the page that changed it has that cookie) and keeps showing
new messages. Logging out in the second browser then signs that page
out too."""

import os

import pytest

from tests import factories
from tests.nodes import database_url_for_tests, wait_for_quiet_database
from tests.test_browser import (
    CHROMIUM_ARGS,
    RECORD_SOCKETS,
    connected_to,
    make_people,
    open_room,
    orm,
    post,
    screenshot,
    wait_shown,
)
from tests.test_cluster import balanced_cluster, needs_nginx
from tests.tools import CHROMIUM, CHROMIUM_REASON, HAVE_CHROMIUM

pytestmark = [
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=CHROMIUM_REASON),
    needs_nginx,
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]

NEW_PASSWORD = "a new Passphrase 42!"


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    with balanced_cluster(database_url, os.environ["REDIS_URL"]) as (port, nodes, _nginx):
        yield f"http://127.0.0.1:{port}", nodes


@pytest.fixture
def browser(transactional_db):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    wait_for_quiet_database(database_url_for_tests())  # see tests.test_browser.browser


def wait_signed_out(page, timeout: float = 10_000) -> None:
    page.wait_for_function(
        """() => {
          const status = document.getElementById("connection-status");
          return status.classList.contains("status--stopped") && status.textContent.includes("not signed in");
        }""",
        timeout=timeout,
    )


def close_codes(page) -> list:
    return page.evaluate("() => window.__sockets.map((s) => s.code)")


def test_a_password_change_signs_the_other_browser_out_and_the_changing_one_reconnects(
    stack, browser, tmp_path
):
    _, nodes = stack
    tokens = orm(make_people, "alice", "bob", rooms={"r1": "alice"})
    # Two browsers of bob's (two sessions). Cookies do not depend on the port, so each browser
    # keeps its own session for every node.
    other_ctx, mine_ctx = browser.new_context(), browser.new_context()
    try:
        for context in (other_ctx, mine_ctx):
            context.add_init_script(RECORD_SOCKETS)
        other = open_room(other_ctx, nodes[1].http, "r1", username="bob")
        room = open_room(mine_ctx, nodes[0].http, "r1", username="bob")
        assert (connected_to(other), connected_to(room)) == ("node-2", "node-1")

        settings_tab = mine_ctx.new_page()
        settings_tab.goto(f"{nodes[0].http}/accounts/password/")
        settings_tab.fill("#id_old_password", factories.PASSWORD)
        settings_tab.fill("#id_new_password1", NEW_PASSWORD)
        settings_tab.fill("#id_new_password2", NEW_PASSWORD)
        with settings_tab.expect_navigation():
            settings_tab.click("form.form button[type=submit]")
        assert settings_tab.url == f"{nodes[0].http}/accounts/password/done/", settings_tab.url

        wait_signed_out(other)  # the other browser: signed out at once, not retrying
        assert close_codes(other)[-1] == 4401
        screenshot(other, tmp_path, "other-browser-signed-out")
        # This browser's room page reconnected by itself with the renewed cookie and keeps going.
        room.wait_for_function("() => window.__sockets.some((s) => s.code === 4001)")
        room.wait_for_function(
            "() => window.__sockets.at(-1).openedAt !== null && window.__sockets.at(-1).code === null"
        )
        connected_to(room)
        post(nodes[2], tokens["alice"], "r1", "after the password change")
        wait_shown(room, "after the password change")
        assert "not signed in" not in room.locator("#connection-status").inner_text()
        screenshot(room, tmp_path, "changing-browser-still-chatting")

        # Logging out here signs this browser's room page out too.
        with settings_tab.expect_navigation():
            settings_tab.click("form.logout-form button[type=submit]")
        wait_signed_out(room)
        assert close_codes(room)[-1] == 4401
    finally:
        other_ctx.close()
        mine_ctx.close()
