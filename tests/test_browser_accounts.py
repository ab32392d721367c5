"""Accounts end to end in Chromium on real nodes, with the mail backend a fresh install has
(EMAIL_URL's default, consolemail://: mails go to the node's log): a user sets an e-mail address
and a display name on the settings page, forgets the password, asks for a link on one node,
reads it from that node's log, sets a new password through the link on another node, and logs
in with it; the old password no longer works."""

import re
import time

import pytest

from tests import factories
from tests.test_browser import (  # noqa: F401 (fixtures)
    browser,
    make_people,
    orm,
    screenshot,
    stack,
)
from tests.test_cluster import needs_nginx
from tests.tools import CHROMIUM_REASON, HAVE_CHROMIUM

pytestmark = [
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=CHROMIUM_REASON),
    needs_nginx,
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]

LINK = re.compile(r"http://[^/\s]+(/accounts/password/reset/[^/\s]+/[^/\s]+/)")


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")


def mailed_link(node, since: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = node.log_path.read_text(errors="replace")[since:]
        match = LINK.search(text)
        if match:
            return match.group(1)
        time.sleep(0.2)
    raise AssertionError("no reset link in the node's log")


def test_settings_then_a_forgotten_password_reset_through_the_console_mail_across_nodes(
    stack, browser, tmp_path
):
    _, nodes = stack
    orm(make_people, "acct-ann", rooms={})
    node1, node2 = [node for node in nodes if node.process.poll() is None][:2]
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, node1.http, "acct-ann", factories.PASSWORD)
        page.goto(f"{node1.http}/settings/")
        page.fill("#id_display_name", "Ann Lee")
        page.fill("#id_email", "ann@example.org")
        with page.expect_navigation():
            page.click("main form.form button[type=submit]")  # not the header's "Log out"
        assert "Settings saved." in page.inner_text("body")
        context.clear_cookies()  # signed out: the reset starts from the log-in page

        page.goto(f"{node1.http}/accounts/login/")
        page.click("text=Forgot your password?")
        since = len(node1.log_path.read_text(errors="replace"))
        page.fill("#id_email", "ann@example.org")
        with page.expect_navigation():
            page.click("main form.form button[type=submit]")
        assert "Check your mail" in page.inner_text("h1")
        path = mailed_link(node1, since)

        page.goto(f"{node2.http}{path}")  # the link works on any node
        assert page.inner_text("h1") == "Choose a new password"
        page.fill("#id_new_password1", "a new Passw0rd for ann")
        page.fill("#id_new_password2", "a new Passw0rd for ann")
        with page.expect_navigation():
            page.click("main form.form button[type=submit]")
        assert page.inner_text("h1") == "Password changed"
        screenshot(page, tmp_path, "password-changed")

        log_in(page, node2.http, "acct-ann", factories.PASSWORD)  # the old one
        assert "/accounts/login/" in page.url
        log_in(page, node2.http, "acct-ann", "a new Passw0rd for ann")
        assert page.url == f"{node2.http}/", page.url
    finally:
        context.close()
