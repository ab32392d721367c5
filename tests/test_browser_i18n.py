"""The room page in Korean, in Debian's Chromium on real daphne nodes (tests/test_browser.py's
``stack``: nginx in front of 3 nodes), PostgreSQL and Redis:

- a browser whose language is Korean (``locale="ko-KR"``: its Accept-Language and
  navigator.language) gets the room page on node-2 in Korean: ``<html lang="ko">``, the
  template's strings, and the page scripts' own strings (the status line, the composer's
  placeholder after the socket is up, the sidebar, a date divider, the Edit/Delete buttons of
  its own message), with no CSP violation from the catalog script;
- a message sent on node-1 arrives live in that Korean page on node-2;
- the footer's switch (Django's set_language) turns the same page and the next ones to English
  although the browser still asks for Korean, and back.
"""

from tests import factories
from tests.test_browser import (  # noqa: F401 (fixtures)
    WATCH_CSP,
    browser,
    connected_to,
    make_people,
    orm,
    post,
    screenshot,
    stack,
    wait_shown,
)
from tests.test_browser import pytestmark as browser_marks

pytestmark = browser_marks


def sign_in_to_room(context, base: str, username: str, slug: str):
    page = context.new_page()
    page.goto(f"{base}/accounts/login/?next=/rooms/{slug}/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    with page.expect_navigation():
        page.click("form.form button[type=submit]")
    assert page.url == f"{base}/rooms/{slug}/", page.url
    connected_to(page)
    return page


def texts(page) -> dict:
    """The strings under test, as the page shows them now."""
    return page.evaluate(
        """() => ({
          lang: document.documentElement.lang,
          status: document.querySelector("#connection-status .status__text").textContent,
          placeholder: document.getElementById("message-body").placeholder,
          jump: document.getElementById("jump-latest-button").firstChild.textContent,
          send: document.querySelector("#send-form button[type=submit]").textContent,
          sidebarTitle: document.querySelector(".sidebar__title").textContent,
          sidebarDms: document.getElementById("sidebar-dms").textContent,
          dividers: [...document.querySelectorAll(".divider--day .divider__label")].map((el) => el.textContent),
          actions: [...document.querySelectorAll(".message--mine .link-button")].map((el) => el.textContent),
          time: (document.querySelector(".message__time") || {}).title || "",
        })"""
    )


def wait_sidebar_live(page):
    page.wait_for_function(
        "() => document.getElementById('sidebar').dataset.state === 'live'", timeout=15_000
    )


def send_from_page(page, body: str):
    page.fill("#message-body", body)
    page.press("#message-body", "Enter")
    wait_shown(page, body)


def test_room_page_in_korean_on_node2_gets_a_node1_message_live_and_the_switch_turns_it_english(
    stack, browser, tmp_path
):
    _, nodes = stack
    tokens = orm(make_people, "minsu", "jiwoo", rooms={"daehwa": "minsu"})
    context = browser.new_context(locale="ko-KR")
    context.add_init_script(WATCH_CSP)
    try:
        page = sign_in_to_room(context, nodes[1].http, "minsu", "daehwa")
        wait_sidebar_live(page)
        send_from_page(page, "안녕하세요, 제 메시지입니다")
        post(nodes[0], tokens["jiwoo"], "daehwa", "node-1에서 보낸 메시지")  # node-1 → Redis → node-2
        wait_shown(page, "node-1에서 보낸 메시지")
        shown = texts(page)
        assert shown["lang"] == "ko"
        assert shown["status"] == "연결됨"  # connection.js
        assert shown["placeholder"] == "메시지 입력…"
        assert shown["jump"] == "최신 메시지로 이동" and shown["send"] == "보내기"
        assert shown["sidebarTitle"] == "방"
        assert shown["sidebarDms"] == "아직 다이렉트 메시지가 없습니다"  # sidebar.js
        assert shown["dividers"] == ["오늘"]  # timeline.js
        assert {"답장", "수정", "삭제"} <= set(shown["actions"])  # replies.js, actions.js
        assert "년" in shown["time"] and "월" in shown["time"], shown["time"]  # Intl in the page's language
        assert page.evaluate("() => window.__csp") == []
        screenshot(page, tmp_path, "room-page-korean")

        # the switch in the footer: English for this page and the next, though the browser asks ko
        with page.expect_navigation():
            page.click(".language-switch button[value=en]")
        connected_to(page)
        wait_sidebar_live(page)
        shown = texts(page)
        assert shown["lang"] == "en"
        assert shown["status"] == "connected" and shown["placeholder"] == "Write a message…"
        assert shown["jump"] == "Jump to latest" and shown["sidebarTitle"] == "Rooms"
        assert shown["sidebarDms"] == "No direct messages yet" and shown["dividers"] == ["Today"]
        assert set(shown["actions"]) >= {"Edit", "Delete"}
        post(nodes[0], tokens["jiwoo"], "daehwa", "and now in English")
        wait_shown(page, "and now in English")
        listing = context.new_page()
        listing.goto(f"{nodes[2].http}/")  # another node reads the same cookie
        assert listing.evaluate("() => document.documentElement.lang") == "en"
        assert listing.locator("#create-heading").inner_text() == "New room"

        # and back to Korean
        with listing.expect_navigation():
            listing.click(".language-switch button[value=ko]")
        assert listing.evaluate("() => document.documentElement.lang") == "ko"
        assert listing.locator("#create-heading").inner_text() == "새 방"
        assert page.evaluate("() => window.__csp") == [] and listing.evaluate("() => window.__csp") == []
    finally:
        context.close()
