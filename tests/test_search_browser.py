"""Search in real Chromium against real daphne nodes behind nginx (tests/test_browser.py's
``stack``): the header's search box finds a Korean word inside a longer word, shows the match
marked in escaped text (an HTML payload in the body stays text), never shows a private room's
message to a non-member, and its link opens the room at that message, loaded from far back and
marked in the middle of the view, with the history from it down to the newest message."""

import datetime as dt

import pytest

from tests.test_browser import (  # noqa: F401 (fixtures)
    browser,
    connected_to,
    make_people,
    open_room,
    orm,
    screenshot,
    stack,
)
from tests.test_browser import pytestmark as browser_marks
from tests.test_browser_scrollback import in_view, log_state, new_context, page_seqs, store_history

pytestmark = [
    *browser_marks[:2],  # Chromium and nginx present
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]

PAYLOAD = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def private_room_with(slug: str, owner: str, body: str) -> None:
    from django.contrib.auth import get_user_model

    from rooms import services
    from tests import factories

    user = get_user_model().objects.get(username=owner)
    room = factories.make_room(created_by=user, slug=slug, is_private=True)
    services.message_post(room=room, author=user, body=body, client_msg_id="secret-1")


def test_the_header_search_finds_a_korean_word_and_its_link_opens_the_room_at_that_message(
    stack, browser, tmp_path
):
    _base, nodes = stack
    orm(make_people, "sq-ann", "sq-bob", rooms={"archive": "sq-ann"})
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    bodies = [f"message {seq}" for seq in range(1, 401)]
    bodies[36] = f"여기는 일반대화방입니다 {PAYLOAD}"  # seq 37: 363 messages back from the newest
    orm(
        store_history,
        "archive",
        [("sq-ann", start + dt.timedelta(seconds=60 * seq)) for seq in range(1, 401)],
        bodies,
    )
    orm(private_room_with, "secret", "sq-ann", "비밀 일반대화방 secret-words")
    context = new_context(browser)
    try:
        page = open_room(context, nodes[0].http, "archive", username="sq-bob")
        page.fill(".site-search__input", "대화")
        with page.expect_navigation():
            page.press(".site-search__input", "Enter")
        assert page.url.startswith(f"{nodes[0].http}/search/?q=")
        results = page.locator(".search-result")
        assert results.count() == 1  # not the private room's message
        assert "secret-words" not in page.content()
        assert page.locator(".search-result mark").all_text_contents() == ["대화"]
        body = page.locator(".search-result__body").text_content()
        assert body == f"여기는 일반대화방입니다 {PAYLOAD}"  # the payload shown as text
        assert page.locator(".search-result img, .search-result script").count() == 0
        screenshot(page, tmp_path, "search-results")

        with page.expect_navigation():
            results.first.locator("a").click()
        assert page.url == f"{nodes[0].http}/rooms/archive/?seq=37#message-37"
        connected_to(page)
        page.wait_for_selector("#message-37.message--landed", timeout=15_000)
        seqs = page_seqs(page)
        assert seqs == list(range(seqs[0], 401)) and seqs[0] <= 32, seqs[:3]
        assert in_view(page, 37) and not log_state(page)["atBottom"]
        assert (
            page.locator("#message-37 .message__body").text_content() == f"여기는 일반대화방입니다 {PAYLOAD}"
        )
        assert page.evaluate("() => window.__xss") is None
        assert page.evaluate("() => window.__csp") == []
        screenshot(page, tmp_path, "landed-at-search-result")
    finally:
        context.close()


def test_server_printed_times_show_in_the_readers_time_zone_like_the_room_page(stack, browser, tmp_path):
    """The search results page prints its times on the server (UTC); a reader in Seoul (UTC+9)
    sees them in Seoul time, in the room page's format (static/rooms/localtime.js), and the
    same message in the room page shows the same hour and minute."""
    from zoneinfo import ZoneInfo

    _base, nodes = stack
    orm(make_people, "tz-ann", rooms={"tzroom": "tz-ann"})
    stored = dt.datetime(2026, 3, 4, 22, 37, tzinfo=dt.UTC)  # 07:37 on 5 March in Seoul
    orm(store_history, "tzroom", [("tz-ann", stored)], ["quarterly zebra report"])
    seoul = stored.astimezone(ZoneInfo("Asia/Seoul"))
    context = browser.new_context(timezone_id="Asia/Seoul", locale="en-US")
    try:
        page = open_room(context, nodes[1].http, "tzroom", username="tz-ann")
        connected_to(page)
        in_room = page.locator("#message-1 .message__time").text_content().replace("\u202f", " ")
        assert in_room.startswith(f"{seoul:%I:%M}"), in_room  # the room page: 07:37 AM
        page.goto(f"{nodes[1].http}/search/?q=zebra")
        shown = page.locator(".search-result time")
        shown.wait_for()
        page.wait_for_function("() => document.querySelector('.search-result time').title !== ''")
        text = shown.text_content().replace("\u202f", " ")
        assert text == f"Mar 5, 2026, {seoul.hour % 12 or 12}:{seoul:%M} AM", text
        assert "GMT+9" in shown.get_attribute("title") or "Korean" in shown.get_attribute("title")
        screenshot(page, tmp_path, "search-times-in-seoul")
    finally:
        context.close()
