"""The live sidebar (static/rooms/sidebar.js over ``/ws/user/``) in Debian's Chromium, on real
daphne nodes (tests/test_browser.py's ``stack``: nginx in front of 3 nodes), PostgreSQL and
Redis:

- a message sent on node-1 raises the unread badge of a page on node-2 (the room list page, no
  room socket), and a mention raises its mention badge; the user's own message raises nothing;
- the same user's second tab, a room page on node-3, reads the room: the badge clears in the
  first tab (``read.updated`` through the user's group);
- a room joined elsewhere and a DM opened by someone else appear live (a fresh ``sidebar``
  frame), the DM under the other person's name; the current room is highlighted;
- a node stopped under the page: the sidebar reconnects to another node and shows the counts of
  the fresh snapshot.
"""

from tests import factories
from tests.nodes import Http, start_node, wait_healthy
from tests.test_browser import (  # noqa: F401 (fixtures)
    browser,
    connected_to,
    make_people,
    orm,
    post,
    screenshot,
    stack,
)
from tests.test_browser import pytestmark as browser_marks

pytestmark = browser_marks


def sign_in(context, base: str, username: str, path: str = "/"):
    """A page of ``context`` signed in as ``username`` on ``base`` at ``path``, once its sidebar
    is live."""
    page = context.new_page()
    page.goto(f"{base}/accounts/login/?next={path}")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == f"{base}{path}", page.url
    wait_live(page)
    return page


def wait_live(page, timeout: float = 15_000) -> None:
    page.wait_for_function(
        "() => document.getElementById('sidebar').dataset.state === 'live'", timeout=timeout
    )


def badges(page, slug: str) -> tuple[int, int]:
    """``(unread, mentions)`` shown for ``slug`` (0 when a badge is absent); raises if the room
    is not listed."""
    return tuple(
        page.evaluate(
            """(slug) => {
          const li = document.querySelector(`#sidebar li[data-slug="${slug}"]`);
          if (!li) throw new Error("not listed: " + slug);
          const unread = li.querySelector(".sidebar__unread");
          const mentions = li.querySelector(".sidebar__mentions");
          return [unread ? Number(unread.textContent) : 0, mentions ? Number(mentions.textContent.slice(1)) : 0];
        }""",
            slug,
        )
    )


def wait_badges(page, slug: str, expected: tuple[int, int], timeout: float = 10_000) -> None:
    page.wait_for_function(
        """([slug, unread, mentions]) => {
          const li = document.querySelector(`#sidebar li[data-slug="${slug}"]`);
          if (!li) return false;
          const u = li.querySelector(".sidebar__unread"), m = li.querySelector(".sidebar__mentions");
          return (u ? Number(u.textContent) : 0) === unread && (m ? Number(m.textContent.slice(1)) : 0) === mentions;
        }""",
        arg=[slug, *expected],
        timeout=timeout,
    )


def listed(page) -> list[tuple[str, str]]:
    """``(slug, name)`` of every sidebar entry, in order."""
    return [
        tuple(row)
        for row in page.eval_on_selector_all(
            "#sidebar li[data-slug]",
            "items => items.map(li => [li.dataset.slug, li.querySelector('.sidebar__name').textContent])",
        )
    ]


def test_a_message_on_node_1_raises_the_badge_on_node_2_and_reading_on_node_3_clears_it(
    stack, browser, tmp_path
):
    base, nodes = stack
    tokens = orm(make_people, "alice", "bob", rooms={"lobby": "alice", "random": "alice"})
    context = browser.new_context()
    listing = sign_in(context, nodes[1].http, "bob")  # the room list page on node-2
    assert [slug for slug, _ in listed(listing)] == ["lobby", "random"]
    assert badges(listing, "lobby") == (0, 0)

    post(nodes[0], tokens["alice"], "lobby", "hello from node-1")
    wait_badges(listing, "lobby", (1, 0))
    post(nodes[0], tokens["alice"], "lobby", "@bob are you there?")
    wait_badges(listing, "lobby", (2, 1))
    post(nodes[0], tokens["bob"], "random", "bob's own message")  # own: nothing unread
    post(nodes[0], tokens["alice"], "random", "after bob")
    wait_badges(listing, "random", (1, 0))
    assert listing.title().startswith("(3) ")
    screenshot(listing, tmp_path, "sidebar-badges")

    # bob's second tab, the room page on node-3, reads lobby: the first tab's badges clear
    room_page = context.new_page()
    room_page.goto(f"{nodes[2].http}/rooms/lobby/")
    connected_to(room_page)
    wait_live(room_page)
    assert (
        room_page.locator("#sidebar li[data-slug='lobby']")
        .get_attribute("class")
        .count("sidebar__item--current")
        == 1
    )
    wait_badges(room_page, "lobby", (0, 0), timeout=15_000)
    wait_badges(listing, "lobby", (0, 0), timeout=15_000)
    assert badges(listing, "random") == (1, 0)
    # the reading tab's own sockets get no read.updated for its report (?tab=): its sidebar was
    # told by the page itself, so its state (shown again when the tab is hidden) is read too
    room_page.wait_for_function(
        "() => { const r = window.ChatSidebar.room('lobby');"
        " return r && r.last_read_seq === 2 && r.unread_count === 0 && r.mention_count === 0; }",
        timeout=15_000,
    )
    screenshot(room_page, tmp_path, "room-page-with-sidebar")
    context.close()


def test_rooms_joined_and_dms_opened_elsewhere_appear_live(stack, browser):
    base, nodes = stack
    tokens = orm(make_people, "carol", "dave", rooms={"general": "carol"})

    def dave_owns_a_new_room():
        from django.contrib.auth import get_user_model

        factories.make_room(created_by=get_user_model().objects.get(username="dave"), slug="zebra")

    orm(dave_owns_a_new_room)
    context = browser.new_context()
    page = sign_in(context, nodes[0].http, "carol")
    assert listed(page) == [("general", "#\u2009general")]
    # carol joins a room through node-3's API: her page on node-1 lists it
    status, _, answer = Http(nodes[2], tokens["carol"]).request(
        "POST", "/api/rooms/zebra/members/", json_body={}
    )
    assert status in (200, 201, 204), answer
    page.wait_for_function(
        "() => !!document.querySelector('#sidebar li[data-slug=\"zebra\"]')", timeout=10_000
    )
    # dave opens a DM with carol on node-2: listed under dave's name
    status, _, answer = Http(nodes[1], tokens["dave"]).request(
        "POST", "/api/dms/", json_body={"username": "carol"}
    )
    assert status in (200, 201), answer
    page.wait_for_function(
        "() => [...document.querySelectorAll('#sidebar-dms .sidebar__name')].some(e => e.textContent === 'dave')",
        timeout=10_000,
    )
    context.close()


def test_the_sidebar_reconnects_to_another_node_and_shows_the_fresh_counts(stack, browser):
    """The node under the page stops (SIGTERM: close 1012); a message is sent meanwhile; the
    sidebar reconnects through nginx to another node and its fresh snapshot counts it."""
    base, nodes = stack
    tokens = orm(make_people, "erin", "frank", rooms={"ops": "erin"})
    context = browser.new_context()
    page = sign_in(context, base, "frank")  # through the balancer
    post(nodes[0], tokens["erin"], "ops", "one")
    wait_badges(page, "ops", (1, 0))
    server_id = page.locator("#sidebar").get_attribute("data-server-id")
    node = next(n for n in nodes if n.server_id == server_id)
    node.stop()
    try:
        other = next(n for n in nodes if n is not node)
        post(other, tokens["erin"], "ops", "two")
        page.wait_for_function(
            "(gone) => { const s = document.getElementById('sidebar'); return s.dataset.state === 'live' && s.dataset.serverId !== gone; }",
            arg=server_id,
            timeout=20_000,
        )
        wait_badges(page, "ops", (2, 0))
    finally:
        restarted = start_node(node.server_id, env=node.env, log_dir=node.log_path.parent, port=node.port)
        nodes[nodes.index(node)] = restarted
        wait_healthy(restarted)
    context.close()


# A tab that says it is hidden (document.hidden, visibilityState), and a Notification class that
# records what the page shows instead of showing it.
HIDDEN_TAB = """
(() => {
  Object.defineProperty(document, "hidden", { get: () => true });
  Object.defineProperty(document, "visibilityState", { get: () => "hidden" });
})();
"""
RECORD_NOTIFICATIONS = """
(() => {
  window.__notifications = [];
  class Recorded {
    constructor(title, options) { window.__notifications.push({ title, ...(options || {}) }); }
    close() {}
    static get permission() { return "granted"; }
    static requestPermission() { return Promise.resolve("granted"); }
  }
  window.Notification = Recorded;
})();
"""


def test_mentions_are_highlighted_notified_in_a_hidden_tab_and_another_tab_moves_the_divider(
    stack, browser, tmp_path
):
    """bob's tab A (hidden, node-1) shows the room with a "New messages" divider and reports no
    read; a mention of bob is highlighted there and, opted in, notified; his tab B (visible,
    node-3) reads the room: tab A's divider goes and its sidebar badge clears."""
    base, nodes = stack
    tokens = orm(make_people, "gina", "hank", rooms={"team": "gina"})
    for body in ("one", "two"):
        post(nodes[1], tokens["gina"], "team", body)
    context = browser.new_context()
    sign_in(context, nodes[0].http, "hank").close()  # the session cookie for both tabs
    tab_a = context.new_page()
    tab_a.add_init_script(HIDDEN_TAB)
    tab_a.add_init_script(RECORD_NOTIFICATIONS)
    tab_a.goto(f"{nodes[0].http}/rooms/team/")
    connected_to(tab_a)
    wait_live(tab_a)
    assert tab_a.locator("li.divider--new").count() == 1
    tab_a.click("#notify-optin")
    tab_a.wait_for_function(
        "() => document.getElementById('notify-optin').getAttribute('aria-pressed') === 'true'"
    )

    post(nodes[1], tokens["gina"], "team", "@hank please look")
    tab_a.wait_for_function(
        "() => !!document.querySelector('#message-list li[data-seq=\"3\"].message--mention')"
    )
    assert tab_a.locator("#message-list li[data-seq='2'].message--mention").count() == 0
    wait_badges(tab_a, "team", (3, 1))
    tab_a.wait_for_function("() => window.__notifications.length === 1")
    note = tab_a.evaluate("() => window.__notifications[0]")
    assert note["title"] == "gina mentioned you in #team" and note["body"] == "@hank please look", note
    screenshot(tab_a, tmp_path, "mention-highlighted")

    tab_b = context.new_page()  # visible, on node-3: it reads the room
    tab_b.goto(f"{nodes[2].http}/rooms/team/")
    connected_to(tab_b)
    tab_a.wait_for_function("() => document.querySelectorAll('li.divider--new').length === 0", timeout=15_000)
    wait_badges(tab_a, "team", (0, 0), timeout=15_000)
    context.close()


def until(predicate, page, timeout_s: float = 30.0) -> None:
    """Wait (polling every 0.2 s) until ``predicate()``; fails after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.2)):
        if predicate():
            return
        page.wait_for_timeout(200)
    assert predicate()


# A tab the test hides and shows (window.__hidden, then a visibilitychange).
HIDDEN_WHEN_TOLD = """
(() => {
  window.__hidden = false;
  Object.defineProperty(document, "hidden", { get: () => window.__hidden });
  Object.defineProperty(document, "visibilityState", { get: () => (window.__hidden ? "hidden" : "visible") });
})();
"""
SET_HIDDEN = (
    "(hidden) => { window.__hidden = hidden; document.dispatchEvent(new Event('visibilitychange')); }"
)


def test_a_read_report_refused_while_postgresql_is_silent_is_sent_again_and_stored(stack, browser):
    """kate's room page is on a node whose PostgreSQL connections go through a proxy. It reads
    message 1 (the node's pool connection is open), is hidden, message 2 comes; the proxy then
    swallows everything on the open connections (``TcpProxy.blackhole``) and the tab is shown
    again: its read report is answered ``unavailable`` ("frame": "read"), and the page sends it
    again, over a fresh connection, until the marker is stored (before, the refused report was
    never sent again)."""
    from urllib.parse import urlsplit

    from rooms.models import Membership
    from tests.nodes import TcpProxy

    base, nodes = stack
    tokens = orm(make_people, "ivan", "kate", rooms={"desk": "ivan"})
    post(nodes[1], tokens["ivan"], "desk", "one")

    def marker():
        return Membership.objects.get(room__slug="desk", user__username="kate").last_read_seq

    node = nodes[0]
    db = urlsplit(node.env["DATABASE_URL"])
    proxy = TcpProxy((db.hostname, db.port or 5432))
    userinfo = db.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    node.stop()
    env = {**node.env, "DATABASE_URL": db._replace(netloc=netloc).geturl()}
    proxied = start_node(node.server_id, env=env, log_dir=node.log_path.parent, port=node.port)
    nodes[0] = proxied
    context = browser.new_context()
    try:
        wait_healthy(proxied)
        sign_in(context, proxied.http, "kate").close()
        page = context.new_page()
        page.add_init_script(HIDDEN_WHEN_TOLD)
        page.goto(f"{proxied.http}/rooms/desk/")
        connected_to(page)
        wait_live(page)
        until(lambda: orm(marker) == 1, page)
        page.evaluate(SET_HIDDEN, True)
        post(nodes[1], tokens["ivan"], "desk", "two")
        page.wait_for_function("() => !!document.querySelector('#message-list li[data-seq=\"2\"]')")
        page.wait_for_timeout(1500)  # hidden: no report
        assert orm(marker) == 1
        proxy.blackhole()
        page.evaluate(SET_HIDDEN, False)
        until(lambda: orm(marker) == 2, page)  # the refusal takes ~2 s, the backoff ~1 s
        assert "read: database unavailable" in proxied.log_path.read_text()  # it was refused once
    finally:
        context.close()
        proxied.stop()
        restarted = start_node(node.server_id, env=node.env, log_dir=node.log_path.parent, port=node.port)
        nodes[0] = restarted
        wait_healthy(restarted)
        proxy.close()
