"""The room page's scroll-back in real Chromium (Debian's), against real daphne nodes behind nginx
(tests/test_browser.py's ``stack``), PostgreSQL and Redis:

- a room of 250 stored messages opens at its latest 50; scrolling to the top (and the "Load
  older messages" button, from the keyboard) loads older pages until the start, keeping the
  first visible message in place each time, while another user posts live on another node: the
  list ends as seq 1..N, each once, in order, equal to what is stored; the live ones neither
  yank the reader down nor go missing;
- date dividers ("Today", "Yesterday", else the date, in the reader's time zone) between days,
  one author's consecutive messages grouped, "Jump to latest (N new)" while scrolled up;
- a page whose config carries ``last_read_seq`` opens at the first unread message, under a
  "New messages" divider, with the messages before it loaded; without it, at the bottom.

Messages in the past are made directly in the database (``created_at`` set), as a long-lived
room would have them.
"""

import datetime as dt
import uuid

import pytest

from tests.test_browser import (  # noqa: F401 (fixtures)
    WATCH_CSP,
    browser,
    connected_to,
    make_people,
    open_room,
    orm,
    post,
    screenshot,
    shown,
    stack,
    stored,
    wait_shown,
)
from tests.test_browser import pytestmark as browser_marks

pytestmark = [
    *browser_marks[:2],  # Chromium and nginx present
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]

VIEWPORT = {"width": 1000, "height": 640}


def store_history(slug: str, created: list[tuple[str, dt.datetime]], bodies: list[str] = ()) -> None:
    """Messages 1..len(created) of room ``slug`` by ``(username, created_at)`` (bodies from
    ``bodies``, else "message <seq>"), stored in one go with ``Room.last_seq`` moved to the last
    (as ``message_post`` would have left it)."""
    from django.contrib.auth import get_user_model

    from rooms.models import Message, Room

    room = Room.objects.get(slug=slug)
    users = {u.username: u for u in get_user_model().objects.all()}
    Message.objects.bulk_create(
        [
            Message(
                room=room,
                author=users[name],
                seq=seq,
                client_msg_id=uuid.uuid4().hex,
                body=bodies[seq - 1] if seq <= len(bodies) else f"message {seq}",
                server_id="past",
                created_at=at,
            )
            for seq, (name, at) in enumerate(created, start=1)
        ]
    )
    Room.objects.filter(pk=room.pk).update(last_seq=len(created))


def page_seqs(page) -> list[int]:
    return page.eval_on_selector_all(
        "#message-list li[data-seq]", "items => items.map(li => Number(li.dataset.seq))"
    )


def log_state(page) -> dict:
    return page.evaluate("""() => {
      const log = document.getElementById("chat-log");
      return {top: log.scrollTop, height: log.scrollHeight, client: log.clientHeight,
              atBottom: log.scrollHeight - log.scrollTop - log.clientHeight < 80};
    }""")


def offset_in_log(page, seq: int) -> float | None:
    """Where message ``seq``'s top is, in px below the log's top edge (None: not in the list)."""
    return page.evaluate(
        """(seq) => {
      const li = document.getElementById("message-" + seq);
      if (!li) return null;
      return li.getBoundingClientRect().top - document.getElementById("chat-log").getBoundingClientRect().top;
    }""",
        seq,
    )


def in_view(page, seq: int) -> bool:
    return page.evaluate(
        """(seq) => {
      const li = document.getElementById("message-" + seq);
      const log = document.getElementById("chat-log").getBoundingClientRect();
      const r = li && li.getBoundingClientRect();
      return Boolean(r) && r.bottom > log.top && r.top < log.bottom;
    }""",
        seq,
    )


def dividers(page) -> list[tuple[str, int]]:
    """``(label, seq of the message after it)`` of every divider in the list, in page order."""
    rows = page.evaluate("""() => [...document.querySelectorAll("#message-list li.divider")].map((li) => {
      let next = li.nextElementSibling;
      while (next && !next.dataset.seq) next = next.nextElementSibling;
      return [li.textContent, next ? Number(next.dataset.seq) : null];
    })""")
    return [tuple(row) for row in rows]


def day_label(at: dt.datetime, today: dt.date) -> str:
    """The page's label for ``at``'s day in UTC with the en-US locale (as the contexts below)."""
    day = at.astimezone(dt.UTC).date()
    if day == today:
        return "Today"
    if day == today - dt.timedelta(days=1):
        return "Yesterday"
    return f"{day:%A}, {day:%B} {day.day}, {day.year}"


# Every socket the page opens is kept in window.__ws, so a test can close one (a dropped
# connection: the page reconnects with backoff and resumes).
KEEP_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__ws = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__ws.push(this);
      this.addEventListener("close", (e) => { this.closeCode = e.code; });
    }
  };
})();
"""


# The page's config as room.js parses it, with "last_read_seq" as the test says: the value stored
# in sessionStorage["test.last_read_seq"], else none (as for a visitor, or before read state
# existed; so these tests do not depend on the read marker a membership starts with). The view
# renders it for a member with a read marker (tests/test_room_page_config.py). (A JSON.parse
# wrapper: with a Playwright route serving an amended page, Chromium failed the page's WebSocket
# handshakes before they reached the node.)
INJECT_LAST_READ_SEQ = """
(() => {
  const parse = JSON.parse;
  JSON.parse = function (text, reviver) {
    const value = parse.call(this, text, reviver);
    if (value && typeof value === "object" && "ws_path" in value && "history" in value) {
      const given = sessionStorage.getItem("test.last_read_seq");
      if (given === null) delete value.last_read_seq;
      else value.last_read_seq = Number(given);
    }
    return value;
  };
})();
"""


def new_context(browser):
    context = browser.new_context(viewport=VIEWPORT, timezone_id="UTC", locale="en-US")
    context.add_init_script(WATCH_CSP)
    context.add_init_script(KEEP_SOCKETS)
    context.add_init_script(INJECT_LAST_READ_SEQ)
    return context


def store_unbroadcast(slug: str, username: str, body: str) -> int:
    """A message stored through the service by this test process, whose channel layer has a
    prefix of its own (conftest.py): its broadcast reaches no node, as a lost one would."""
    from django.contrib.auth import get_user_model

    from rooms import services
    from rooms.models import Room

    return services.message_post(
        room=Room.objects.get(slug=slug),
        author=get_user_model().objects.get(username=username),
        body=body,
        client_msg_id=uuid.uuid4().hex,
    ).message.seq


def test_scroll_back_through_250_messages_shows_each_once_in_order_while_live_ones_arrive_from_another_node(
    stack, browser, tmp_path
):
    _base, nodes = stack
    tokens = orm(make_people, "sb-ann", "sb-bob", rooms={"long": "sb-ann"})
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=5)
    orm(
        store_history,
        "long",
        [
            ("sb-ann" if seq % 3 else "sb-bob", start + dt.timedelta(seconds=30 * seq))
            for seq in range(1, 251)
        ],
    )
    context = new_context(browser)
    errors = []
    context.on("weberror", lambda e: errors.append(str(e.error)))
    try:
        page = open_room(context, nodes[0].http, "long", username="sb-ann")
        assert page_seqs(page) == list(range(201, 251))
        assert log_state(page)["atBottom"]
        assert page.locator("#load-older").is_visible()  # shown above the list (scrolled out of view)
        assert page.locator("#history-start").is_hidden()

        # First page from the keyboard: the "Load older messages" button (pages of 50), then
        # scrolling up, each load racing live messages, a dropped socket's resume, a gap repair.
        live = []
        page.focus("#load-older")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#message-list li[data-seq]').length >= 100")
        assert page_seqs(page) == list(range(151, 251))

        for round_ in range(10):
            seqs = page_seqs(page)
            if seqs[0] == 1:
                break
            first = seqs[0]
            before = page.evaluate(
                """(seq) => {
              const log = document.getElementById("chat-log");
              log.scrollTop = 0;  // the scroll event comes after this returns
              const li = document.getElementById("message-" + seq);
              return li.getBoundingClientRect().top - log.getBoundingClientRect().top;
            }""",
                first,
            )
            if round_ == 1:  # the connection drops: the live one comes with the resume
                page.evaluate("() => window.__ws.at(-1).close()")
            if round_ == 2:  # its broadcast is lost: the next live one makes the page fetch it
                live.append(orm(store_unbroadcast, "long", "sb-bob", "never broadcast"))
            # Live messages from another user on another node, while the older page loads.
            live.append(post(nodes[1], tokens["sb-bob"], "long", f"live {round_}")["seq"])
            page.wait_for_function(
                "(first) => Number(document.querySelector('#message-list li[data-seq]').dataset.seq) < first",
                arg=first,
                timeout=10_000,
            )
            # The reader's place is kept: the message that was first in view has not moved.
            page.wait_for_timeout(50)
            after = offset_in_log(page, first)
            assert after is not None and abs(after - before) <= 2, (round_, before, after)
            assert in_view(page, first)
        assert round_ == 3, "three pages of 50 before 151"
        wait_shown(page, "live 2")
        connected_to(page)

        # Everything once, in order, as stored; the live ones did not pull the reader down.
        page.wait_for_selector("#history-start", state="visible", timeout=10_000)
        expected = orm(stored, "long")
        assert [seq for seq, _ in expected] == list(range(1, 251 + len(live)))
        assert shown(page) == expected
        assert not log_state(page)["atBottom"]
        assert page.locator("#load-older").is_hidden()
        jump = page.locator("#jump-latest-button")
        assert jump.is_visible()
        assert f"({len(live)} new)" in jump.inner_text()
        screenshot(page, tmp_path, "scrolled-back")
        assert page.evaluate("() => window.__csp") == [] and errors == []
    finally:
        context.close()


def test_date_dividers_groups_and_jump_to_latest(stack, browser, tmp_path):
    _base, nodes = stack
    tokens = orm(make_people, "dd-ann", "dd-bob", "dd-cat", rooms={"days": "dd-ann"})
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    midday = lambda days_ago: dt.datetime.combine(  # noqa: E731
        today - dt.timedelta(days=days_ago), dt.time(12), tzinfo=dt.UTC
    )
    created = [
        ("dd-bob", midday(9)),
        ("dd-bob", midday(9) + dt.timedelta(minutes=1)),  # 1, 2: one group
        ("dd-cat", midday(9) + dt.timedelta(minutes=2)),  # 3: another author
        ("dd-cat", midday(1)),  # 4: Yesterday
        ("dd-cat", midday(1) + dt.timedelta(minutes=20)),  # 5: 20 min later
        ("dd-ann", midday(1) + dt.timedelta(minutes=21)),  # 6
        ("dd-ann", midday(1) + dt.timedelta(minutes=22)),  # 7: grouped
    ]
    # Today's: a run of dd-bob within the last minutes (grouped) and enough to scroll.
    recent = now - dt.timedelta(minutes=3)
    if recent.date() != today:  # just after midnight: keep them on one day
        recent = dt.datetime.combine(today, dt.time(0, 0, 1), tzinfo=dt.UTC)
    created += [("dd-bob" if i % 10 else "dd-cat", recent + dt.timedelta(seconds=i)) for i in range(40)]
    bodies = [
        "Kick-off notes are in the wiki.",
        "Please add your questions there before Friday.",
        "Thanks! Reading them now.",
        "Deploy of the new balancer config went fine.",
        "Nothing in the error budget either.",
        "Great, closing the ticket.",
        "שלום לכולם, הכל עובד אצלי",
        *[
            "Morning! Standup in 10 minutes." if i % 10 == 0 else f"Checking item {i} of the release list"
            for i in range(40)
        ],
    ]
    orm(store_history, "days", created, bodies)
    context = new_context(browser)
    try:
        page = open_room(context, nodes[0].http, "days", username="dd-ann")
        assert page_seqs(page) == list(range(1, 48))  # all fit in the first 50
        page.wait_for_selector("#history-start", state="visible")
        expected_dividers = [(day_label(midday(9), today), 1), ("Yesterday", 4), ("Today", 8)]
        assert dividers(page) == expected_dividers
        continued = page.eval_on_selector_all(
            "#message-list li.message--continued", "items => items.map(li => Number(li.dataset.seq))"
        )
        expected_continued = [2, 7] + [8 + i for i in range(40) if i % 10 not in (0, 1)]
        assert continued == expected_continued
        # A continued message hides its name line until hovered (still in the DOM for readers).
        assert page.locator("#message-2 .message__meta").bounding_box()["width"] <= 1
        assert page.locator("#message-2 .message__author").text_content() == "dd-bob"
        assert page.locator("#message-1 .message__meta").bounding_box()["width"] > 1
        page.hover("#message-2 .message__body")
        assert page.locator("#message-2 .message__meta").bounding_box()["width"] > 1
        page.mouse.move(0, 0)
        # README's docs/room-page.png: dividers, groups (one hovered), "Jump to latest".
        page.set_viewport_size({"width": 1100, "height": 900})
        page.evaluate("() => document.getElementById('message-4').scrollIntoView()")
        page.hover("#message-11 .message__body")
        screenshot(page, tmp_path, "dividers-and-groups")
        page.mouse.move(0, 0)
        page.set_viewport_size(VIEWPORT)

        # Scrolled up: live messages do not pull the reader down; "Jump to latest (2 new)".
        page.evaluate("() => { document.getElementById('chat-log').scrollTop = 0; }")
        page.wait_for_selector("#jump-latest-button", state="visible", timeout=5_000)
        for body in ("new one", "new two"):
            post(nodes[1], tokens["dd-bob"], "days", body)
            wait_shown(page, body)
        page.wait_for_function(
            "() => document.getElementById('jump-latest-button').textContent.includes('(2 new)')",
            timeout=5_000,
        )
        assert log_state(page)["top"] < 5
        assert not in_view(page, 49)
        page.click("#jump-latest-button")
        assert log_state(page)["atBottom"]
        assert in_view(page, 49)
        page.wait_for_selector("#jump-latest", state="hidden", timeout=5_000)
        # At the bottom, a live message keeps the view at the bottom, with no button.
        post(nodes[2], tokens["dd-bob"], "days", "new three")
        wait_shown(page, "new three")
        page.wait_for_function(
            "() => { const l = document.getElementById('chat-log');"
            " return l.scrollHeight - l.scrollTop - l.clientHeight < 80; }",
            timeout=5_000,
        )
        assert page.locator("#jump-latest").is_hidden()
        assert page_seqs(page) == list(range(1, 51))
        screenshot(page, tmp_path, "at-the-latest")
        assert page.evaluate("() => window.__csp") == []
    finally:
        context.close()


def open_with_last_read_seq(page, last_read_seq: int) -> None:
    """Opens the room page again with ``last_read_seq`` in its config."""
    page.evaluate("(n) => sessionStorage.setItem('test.last_read_seq', String(n))", last_read_seq)
    page.reload()
    connected_to(page)


def test_opening_a_room_with_last_read_seq_lands_at_the_first_unread_under_a_new_messages_divider(
    stack, browser, tmp_path
):
    _base, nodes = stack
    orm(make_people, "lr-ann", "lr-bob", rooms={"unread": "lr-ann"})
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    orm(
        store_history,
        "unread",
        [
            ("lr-bob" if seq % 4 else "lr-ann", start + dt.timedelta(seconds=20 * seq))
            for seq in range(1, 251)
        ],
    )
    context = new_context(browser)
    try:
        # Read up to 120 (the newest 50 on the page are 201..250): the page loads back past it.
        page = open_room(context, nodes[0].http, "unread", username="lr-ann")
        open_with_last_read_seq(page, 120)
        page.wait_for_selector(".divider--new", timeout=10_000)
        page.wait_for_function("() => document.getElementById('jump-latest').hidden === false", timeout=5_000)
        seqs = page_seqs(page)
        assert seqs == list(range(seqs[0], 251)) and seqs[0] <= 115, seqs[:3]
        assert ("New messages", 121) in dividers(page)
        assert in_view(page, 121)
        offset = offset_in_log(page, 121)
        assert 0 <= offset < VIEWPORT["height"] / 2, offset  # near the top of the view
        assert not log_state(page)["atBottom"]
        screenshot(page, tmp_path, "landed-at-first-unread")

        # 124 is the reader's own: read up to 123, the divider goes before 125.
        open_with_last_read_seq(page, 123)
        # While the landing loads pages back to 123, the divider sits for a moment above the
        # oldest message loaded so far: wait for the landing to end (the "Jump to latest" button)
        # and for the divider's final place.
        page.wait_for_function(
            "() => document.getElementById('jump-latest').hidden === false", timeout=10_000
        )
        page.wait_for_function(
            """() => { const d = document.querySelector('#message-list li.divider--new');
            let next = d && d.nextElementSibling; while (next && !next.dataset.seq) next = next.nextElementSibling;
            return Boolean(next) && next.dataset.seq === '125'; }""",
            timeout=10_000,
        )
        assert ("New messages", 125) in dividers(page)
        assert in_view(page, 125)

        # All read: no divider, at the bottom.
        open_with_last_read_seq(page, 250)
        assert page.locator(".divider--new").count() == 0
        assert page_seqs(page) == list(range(201, 251))
        assert log_state(page)["atBottom"]
        assert page.evaluate("() => window.__csp") == []
    finally:
        context.close()


def test_a_room_page_without_last_read_seq_opens_at_the_latest_message(stack, browser):
    _base, nodes = stack
    orm(make_people, "nl-ann", "nl-bob", rooms={"nolr": "nl-ann"})
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    orm(store_history, "nolr", [("nl-bob", start + dt.timedelta(seconds=seq)) for seq in range(1, 121)])
    context = new_context(browser)
    try:
        page = open_room(context, nodes[1].http, "nolr", username="nl-ann")
        assert page_seqs(page) == list(range(71, 121))
        assert log_state(page)["atBottom"] and in_view(page, 120)
        assert page.locator(".divider--new").count() == 0
    finally:
        context.close()
