"""The room page (static/rooms/room/, ES modules) in a real browser: Debian's Chromium driven by Playwright
for Python, against real daphne nodes behind the real nginx balancer (tests/test_cluster.py's
``balanced_cluster``), PostgreSQL and Redis.

- Two users in two browser contexts, each on a different node, then both through the balancer:
  a message typed by one shows for the other within 1 s; one in another room shows for no one.
  Both pages list both users as online (a second tab of one user, on a narrow screen, lists
  them once); typing in one page shows "… is typing…" on the other within 1 s, and their
  message ends it; a closed tab drops its user from the other page's list (a leave diff).
- Outbox and resume: the page's node is SIGKILLed, a message typed meanwhile stays "sending…",
  others post over REST on another node; the node comes back on its port and the page resumes
  (``?after_seq=``), shows every message once in seq order and delivers its own once. Then
  through the balancer, SIGTERM (close 1012): the page reconnects within 2 s to another node.
- Gap repair: a message stored whose broadcast reached no node, then a live one: the page reads
  the gap from the history API and shows both in order.
- Rate limit: a burst over ``WS_SEND_RATE`` is answered ``rate_limited``; the page keeps those
  sends in its outbox and resends them after ``retry_after``: each stored once.

Playwright's sync API keeps an asyncio loop running in this thread while a browser is open, and
Django refuses ORM calls from such a thread, so every database call here goes through ``orm()``
(a worker thread), and each test opens and closes its own browser (about 1 s) before pytest-django
flushes the database. Screenshots are saved under each test's ``tmp_path``.
"""

import json
import os
import re
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from tests import factories
from tests.nodes import Http, database_url_for_tests, start_node, wait_for_quiet_database, wait_healthy
from tests.test_cluster import balanced_cluster, needs_nginx
from tests.tools import CHROMIUM, CHROMIUM_REASON, HAVE_CHROMIUM

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LATENCY_LIMIT_MS = 1000

pytestmark = [
    pytest.mark.skipif(not HAVE_CHROMIUM, reason=CHROMIUM_REASON),  # CHROMIUM=/path; tests/tools.py
    needs_nginx,
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]

# Every WebSocket the page opens records its opens and close codes (the page's own code is not
# changed: the class only listens).
RECORD_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      const entry = { url: String(args[0]), openedAt: null, closedAt: null, code: null };
      window.__sockets.push(entry);
      this.addEventListener("open", () => { entry.openedAt = Date.now(); });
      this.addEventListener("close", (e) => { entry.closedAt = Date.now(); entry.code = e.code; });
    }
  };
})();
"""


def orm(fn, *args, **kwargs):
    """Run ``fn`` (ORM work) in a worker thread and return its result (see the module doc)."""

    def call():
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result(timeout=30)


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker):
    """nginx in front of 3 nodes: ``(balancer base URL, nodes)``. A test may replace a node in
    ``nodes`` (same port); the list's nodes are the ones stopped at the end."""
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    with balanced_cluster(database_url, os.environ["REDIS_URL"]) as (port, nodes, _nginx):
        yield f"http://127.0.0.1:{port}", nodes


@pytest.fixture
def browser(transactional_db):
    """Debian's Chromium, headless; closed before the database is flushed, and the flush waits
    for the nodes' clean-up of its pages' sockets (``wait_for_quiet_database``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    wait_for_quiet_database(database_url_for_tests())


def make_people(*names: str, rooms: dict[str, str]) -> dict:
    """Users ``names`` (PBKDF2 hashes with few iterations: nodes verify with the production
    hashers) and public rooms ``{slug: owner}`` that every user joined; their API tokens."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from rooms import services

    hasher = PBKDF2PasswordHasher()
    users = {}
    for name in names:
        user = factories.make_user(name)
        user.password = hasher.encode(factories.PASSWORD, hasher.salt(), iterations=1000)
        user.save(update_fields=["password"])
        users[name] = user
    for slug, owner in rooms.items():
        room = factories.make_room(created_by=users[owner], slug=slug)
        for user in users.values():
            services.member_join(room=room, user=user)
    return {name: factories.token_for(user) for name, user in users.items()}


def token_socket(opened, url: str, token: str):
    """A room socket at ``url`` (``ws://…/ws/rooms/<slug>/``) with API ``token``, entered into the
    ``ExitStack`` ``opened`` (closed with it), its ``hello`` already read."""
    from websockets.sync.client import connect

    ws = opened.enter_context(
        connect(url, additional_headers={"Authorization": f"Token {token}"}, open_timeout=10)
    )
    assert json.loads(ws.recv(timeout=10))["type"] == "hello"
    return ws


def stored(slug: str) -> list[tuple[int, str]]:
    from rooms.models import Message

    return list(Message.objects.filter(room__slug=slug).order_by("seq").values_list("seq", "body"))


def post(node, token: str, slug: str, body: str) -> dict:
    status, _, answer = Http(node, token).request(
        "POST", f"/api/rooms/{slug}/messages/", json_body={"body": body, "client_msg_id": uuid.uuid4().hex}
    )
    assert status == 201, answer
    return json.loads(answer)


def open_room(context, base: str, slug: str, username: str | None = None):
    """A page of ``context`` on ``base``'s room ``slug``, through the login page when
    ``username`` is given; returns it once its socket said hello."""
    page = context.new_page()
    if username is None:
        page.goto(f"{base}/rooms/{slug}/")
    else:
        page.goto(f"{base}/accounts/login/?next=/rooms/{slug}/")
        page.fill("#id_username", username)
        page.fill("#id_password", factories.PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
    assert page.url == f"{base}/rooms/{slug}/", page.url
    connected_to(page)
    return page


def connected_to(page, *, other_than: str | None = None, timeout: float = 15_000) -> str:
    """The node the page's socket is connected to, once its status line says "connected" (and,
    with ``other_than``, to another node). Users who are not staff are not shown the node's
    name: the status element keeps it in ``data-server-id``."""
    page.wait_for_function(
        """(other) => {
          const status = document.getElementById("connection-status");
          return status.classList.contains("status--connected") && status.dataset.serverId !== other;
        }""",
        arg=other_than or "",
        timeout=timeout,
    )
    return page.locator("#connection-status").get_attribute("data-server-id")


def shown(page) -> list[tuple[int, str]]:
    """``(seq, body)`` of every message in the page's list, in page order."""
    rows = page.eval_on_selector_all(
        "#message-list li[data-seq]",
        "items => items.map(li => [Number(li.dataset.seq), li.querySelector('.message__body').textContent])",
    )
    return [tuple(row) for row in rows]


def wait_shown(page, body: str, timeout: float = 10_000) -> None:
    page.wait_for_function(
        """(body) => [...document.querySelectorAll("#message-list .message__body")]
                       .some((el) => el.textContent === body)""",
        arg=body,
        timeout=timeout,
    )


def typed_latency_ms(sender, receiver, body: str) -> int:
    """Types ``body`` into ``sender`` (Enter) and returns the milliseconds from the key press to
    the message showing in ``receiver``'s list, both read from the browser's clock."""
    receiver.evaluate(
        """(body) => {
          window.__seenAt = null;
          const list = document.getElementById("message-list");
          const seen = () => [...list.querySelectorAll(".message__body")].some((el) => el.textContent === body);
          const observer = new MutationObserver(() => {
            if (seen()) { window.__seenAt = Date.now(); observer.disconnect(); }
          });
          observer.observe(list, { childList: true, subtree: true, characterData: true });
        }""",
        body,
    )
    sender.evaluate(
        """() => document.getElementById("message-body").addEventListener("keydown", (e) => {
          if (e.key === "Enter") window.__sentAt = Date.now();
        }, { capture: true, once: true })"""
    )
    sender.fill("#message-body", body)
    sender.press("#message-body", "Enter")
    receiver.wait_for_function("() => window.__seenAt !== null", timeout=10_000)
    return receiver.evaluate("() => window.__seenAt") - sender.evaluate("() => window.__sentAt")


def online(page) -> list[str]:
    """The page's "Online" list: usernames in page order, yours as "name (you)"."""
    return page.eval_on_selector_all(
        "#presence-list .presence__member",
        """items => items.map(li => li.querySelector(".presence__name").textContent
                                   + (li.querySelector(".presence__you") ? " (you)" : ""))""",
    )


def wait_online(page, expected: list[str], timeout: float = 5_000) -> float:
    """Waits until the page's live (not greyed) online list is ``expected`` and its heading says
    "Online (N)"; returns the seconds waited."""
    started = time.monotonic()
    page.wait_for_function(
        """(expected) => {
          const names = [...document.querySelectorAll("#presence-list .presence__member")].map(
            (li) => li.querySelector(".presence__name").textContent + (li.querySelector(".presence__you") ? " (you)" : ""));
          return !document.getElementById("presence").classList.contains("presence--stale")
            && JSON.stringify(names) === JSON.stringify(expected);
        }""",
        arg=expected,
        timeout=timeout,
    )
    waited = time.monotonic() - started
    summary = page.locator("#presence-details summary").inner_text()
    assert summary.startswith(f"Online ({len(expected)})"), (summary, online(page))
    return waited


def typing_latency_ms(typist, watcher, hint: str) -> int:
    """Presses a key in ``typist``'s composer and returns the milliseconds from the key press to
    ``watcher``'s typing line reading ``hint``, both read from the browser's clock."""
    watcher.evaluate(
        """(hint) => {
          window.__hintAt = null;
          const line = document.getElementById("typing-hint");
          const check = () => { if (line.textContent === hint) { window.__hintAt = Date.now(); observer.disconnect(); } };
          const observer = new MutationObserver(check);
          observer.observe(line, { childList: true, subtree: true, characterData: true });
          check();
        }""",
        hint,
    )
    typist.evaluate(
        """() => document.getElementById("message-body").addEventListener("keydown", () => {
          window.__keyAt = Date.now();
        }, { capture: true, once: true })"""
    )
    typist.press("#message-body", "h")
    watcher.wait_for_function("() => window.__hintAt !== null", timeout=5_000)
    return watcher.evaluate("() => window.__hintAt") - typist.evaluate("() => window.__keyAt")


def screenshot(page, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_two_users_on_two_nodes_then_through_the_balancer_see_each_other_within_a_second(
    stack, browser, tmp_path
):
    balancer, nodes = stack
    tokens = orm(make_people, "alice", "bob", "carol", rooms={"r1": "alice", "r2": "carol"})
    alice_ctx, bob_ctx = browser.new_context(), browser.new_context()
    try:
        # Straight to two nodes, each user through that node's login page.
        alice = open_room(alice_ctx, nodes[0].http, "r1", username="alice")
        bob = open_room(bob_ctx, nodes[1].http, "r1", username="bob")
        assert (connected_to(alice), connected_to(bob)) == ("node-1", "node-2")

        # Presence: each page lists both (from its presence frame or a join diff from the other
        # node), and itself as "(you)".
        wait_online(alice, ["alice (you)", "bob"])
        wait_online(bob, ["alice", "bob (you)"])
        # Typing on node-1 shows on node-2 (never on the typist's own page); her message ends it.
        typing_ms = typing_latency_ms(alice, bob, "alice is typing…")
        typing_back_ms = typing_latency_ms(bob, alice, "bob is typing…")
        print(f"\ntyping hint node-1 → node-2: {typing_ms} ms; node-2 → node-1: {typing_back_ms} ms")
        assert typing_ms < LATENCY_LIMIT_MS and typing_back_ms < LATENCY_LIMIT_MS
        assert alice.inner_text("#typing-hint") == "bob is typing…"
        assert bob.inner_text("#typing-hint") == "alice is typing…"
        screenshot(bob, tmp_path, "node2-bob-sees-alice-typing")
        alice.fill("#message-body", "")  # her "h": the message below replaces it
        bob.fill("#message-body", "")
        bob.evaluate(
            """() => {
              window.__hintEndedAt = null;
              const line = document.getElementById("typing-hint");
              new MutationObserver((_, observer) => {
                if (line.textContent === "") { window.__hintEndedAt = Date.now(); observer.disconnect(); }
              }).observe(line, { childList: true, subtree: true, characterData: true });
            }"""
        )
        there = typed_latency_ms(alice, bob, "hello bob, from node-1")
        # The hint ended with her message (same frame), not 4 s after her last typing frame.
        assert bob.inner_text("#typing-hint") == ""
        ended_at, seen_at = bob.evaluate("() => [window.__hintEndedAt, window.__seenAt]")
        assert ended_at is not None and abs(seen_at - ended_at) < 100, (ended_at, seen_at)
        back = typed_latency_ms(bob, alice, "hello alice, from node-2")
        print(f"\nlatency node-1 → node-2: {there} ms; node-2 → node-1: {back} ms")
        assert there < LATENCY_LIMIT_MS and back < LATENCY_LIMIT_MS

        # A message in another room (sent on the third node) shows for no one here; a message
        # in this room sent after it shows for both, so the other would have come by then.
        post(nodes[2], tokens["carol"], "r2", "only for r2")
        post(nodes[2], tokens["carol"], "r1", "carol in r1, after r2")
        for page in (alice, bob):
            wait_shown(page, "carol in r1, after r2")
            assert [b for _, b in shown(page)] == [
                "hello bob, from node-1",
                "hello alice, from node-2",
                "carol in r1, after r2",
            ]
            assert "only for r2" not in page.content()
        screenshot(alice, tmp_path, "node1-alice")
        screenshot(bob, tmp_path, "node2-bob")

        # Both through the balancer (the session cookie is per host, so no new log-in); bob's
        # page is reloaded until its socket is on another node than alice's.
        alice.goto(f"{balancer}/rooms/r1/")
        bob.goto(f"{balancer}/rooms/r1/")
        alice_node, bob_node = connected_to(alice), connected_to(bob)
        for _ in range(15):  # round-robin: a reload lands elsewhere after a few tries
            if bob_node != alice_node:
                break
            # a page load is a fixed number of requests: one more shifts the round-robin
            bob.evaluate("() => fetch('/healthz').then(r => r.status)")
            bob.reload()
            bob_node = connected_to(bob)
        assert bob_node != alice_node
        there = typed_latency_ms(alice, bob, "through nginx, from alice")
        back = typed_latency_ms(bob, alice, "through nginx, from bob")
        print(f"latency through the balancer {alice_node} → {bob_node}: {there} ms; back: {back} ms")
        assert there < LATENCY_LIMIT_MS and back < LATENCY_LIMIT_MS
        expected = orm(stored, "r1")
        assert [b for _, b in expected][-2:] == ["through nginx, from alice", "through nginx, from bob"]
        for page in (alice, bob):
            assert shown(page) == expected
        wait_online(alice, ["alice (you)", "bob"])
        wait_online(bob, ["alice", "bob (you)"])
        screenshot(alice, tmp_path, f"balancer-alice-{alice_node}")
        screenshot(bob, tmp_path, f"balancer-bob-{bob_node}")

        # A second tab of alice's, phone-sized: she is still listed once, everywhere.
        phone = alice_ctx.new_page()
        phone.set_viewport_size({"width": 390, "height": 760})
        phone.goto(f"{balancer}/rooms/r1/")
        connected_to(phone)
        wait_online(phone, ["alice (you)", "bob"])
        wait_online(bob, ["alice", "bob (you)"])
        assert phone.locator("#presence-list").is_hidden()  # collapsed to "Online (2)" there
        screenshot(phone, tmp_path, "narrow-alice-second-tab")
        phone.click("#presence-details summary")
        assert phone.locator("#presence-list").is_visible()
        screenshot(phone, tmp_path, "narrow-alice-second-tab-list-open")
        phone.close()

        # Bob closes his tab: his socket's close is a leave, so alice's page drops him at once
        # (her own second tab's close above did not drop her: she still has this one).
        bob.close()
        dropped_s = wait_online(alice, ["alice (you)"])
        print(f"bob's tab closed: gone from alice's list (on {alice_node}) after {dropped_s * 1000:.0f} ms")
        assert dropped_s < 2
        screenshot(alice, tmp_path, "alice-after-bob-closed-his-tab")
    finally:
        alice_ctx.close()
        bob_ctx.close()


def test_gap_repair_fetches_a_message_whose_broadcast_was_lost(stack, browser, tmp_path):
    _, nodes = stack
    tokens = orm(make_people, "alice", "bob", rooms={"gap": "alice"})
    context = browser.new_context()
    history_reads = []
    context.on("request", lambda r: history_reads.append(r.url) if "/messages/?after_seq=" in r.url else None)
    try:
        page = open_room(context, nodes[0].http, "gap", username="alice")
        post(nodes[1], tokens["bob"], "gap", "before the gap")
        wait_shown(page, "before the gap")

        # Stored through the service by this test process, whose channel layer has a prefix of
        # its own (conftest.py): its broadcast reaches no node, as a lost Pub/Sub message would.
        def store_unbroadcast():
            from django.contrib.auth import get_user_model

            from rooms import services
            from rooms.models import Room

            return services.message_post(
                room=Room.objects.get(slug="gap"),
                author=get_user_model().objects.get(username="bob"),
                body="stored, never broadcast",
                client_msg_id=uuid.uuid4().hex,
            ).message.seq

        assert orm(store_unbroadcast) == 2
        time.sleep(0.5)
        assert [b for _, b in shown(page)] == ["before the gap"]  # nothing came live
        assert history_reads == []

        post(nodes[1], tokens["bob"], "gap", "live, after the gap")
        wait_shown(page, "live, after the gap")
        assert (
            shown(page)
            == orm(stored, "gap")
            == [(1, "before the gap"), (2, "stored, never broadcast"), (3, "live, after the gap")]
        )
        assert any("after_seq=1" in url for url in history_reads), history_reads
        screenshot(page, tmp_path, "gap-repaired")
    finally:
        context.close()


def test_outbox_and_resume_across_a_killed_node_then_1012_through_the_balancer(stack, browser, tmp_path):
    balancer, nodes = stack
    tokens = orm(make_people, "alice", "bob", rooms={"out": "alice"})
    context = browser.new_context()
    context.add_init_script(RECORD_SOCKETS)
    history_reads = []
    context.on("request", lambda r: history_reads.append(r.url) if "/messages/?after_seq=" in r.url else None)
    try:
        # --- SIGKILL: the page's node dies; it comes back on the same port. ---
        node_a, node_b = nodes[0], nodes[1]
        page = open_room(context, node_a.http, "out", username="alice")
        post(node_b, tokens["bob"], "out", "bob 1")
        wait_shown(page, "bob 1")
        node_a.process.kill()
        node_a.process.wait(10)
        killed_at = time.time()
        page.wait_for_selector("#connection-status.status--waiting", timeout=5_000)
        page.fill("#message-body", "typed while node-1 is down")
        page.press("#message-body", "Enter")
        pending = page.locator("#outbox li[data-status=sending]")
        assert pending.count() == 1 and "sending…" in pending.inner_text()
        for n in (2, 3, 4):
            post(node_b, tokens["bob"], "out", f"bob {n}")  # stored while the page is away
        time.sleep(0.3)
        assert page.locator("#outbox li[data-status=sending]").count() == 1
        screenshot(page, tmp_path, "outbox-while-node-down")

        node_a.log_path.rename(node_a.log_path.with_suffix(".killed.log"))
        restarted = start_node(
            node_a.server_id, env=node_a.env, log_dir=node_a.log_path.parent, port=node_a.port
        )
        nodes[nodes.index(node_a)] = restarted
        wait_healthy(restarted)
        healthy_at = time.time()
        assert connected_to(page) == "node-1"
        connected_at = time.time()
        page.wait_for_selector("#outbox li", state="detached", timeout=10_000)
        wait_shown(page, "typed while node-1 is down")
        expected = orm(stored, "out")
        assert [b for _, b in expected] == ["bob 1", "bob 2", "bob 3", "bob 4", "typed while node-1 is down"]
        assert shown(page) == expected  # each once, in seq order; its own send stored once
        assert history_reads == []  # the missed messages came by the resume, not the REST API
        sockets = page.evaluate("() => window.__sockets")
        # The room socket's last reconnect resumes after seq 1 (the sidebar's /ws/user/ socket
        # reconnects on its own backoff and may come last).
        room_sockets = [s for s in sockets if "/ws/rooms/" in s["url"]]
        assert re.search(r"/ws/rooms/out/\?after_seq=1&tab=[0-9a-f]{24}$", room_sockets[-1]["url"]), sockets
        print(
            f"\nSIGKILL: node-1 back (healthy) {healthy_at - killed_at:.2f} s after the kill; page connected"
            f" {connected_at - healthy_at:.2f} s later (backoff), {connected_at - killed_at:.2f} s in all;"
            f" {len(sockets) - 1} reconnect attempts"
        )
        screenshot(page, tmp_path, "resumed-after-node-restart")

        # --- SIGTERM through the balancer: close 1012, reconnect within 0-2 s to another node. ---
        page.goto(f"{balancer}/rooms/out/")
        before = connected_to(page)
        doomed = next(n for n in nodes if n.server_id == before)
        # The room's sockets only: the sidebar's /ws/user/ socket, if it was on the same node, also
        # reconnects (after 100-500 ms), and with the room's 0-2 s draw it may open first.
        room_sockets = "() => window.__sockets.filter((s) => s.url.includes('/ws/rooms/'))"
        opened_before = len(page.evaluate(room_sockets))
        stop_at = time.time()
        doomed.process.send_signal(signal.SIGTERM)
        now_on = connected_to(page, other_than=before, timeout=10_000)
        reconnect_s = time.time() - stop_at
        sockets = page.evaluate(room_sockets)[opened_before - 1 :]
        assert sockets[0]["code"] == 1012, sockets
        assert len(sockets) == 2, sockets  # one new socket, opened without a backoff wait
        in_browser_ms = sockets[1]["openedAt"] - sockets[0]["closedAt"]
        print(
            f"SIGTERM {before}: page on {now_on} {reconnect_s:.2f} s after the signal"
            f" (close 1012 → new socket open: {in_browser_ms} ms in the browser)"
        )
        assert in_browser_ms < 2500  # seq.js restartDelay: drawn from 0 to 2 s, no backoff
        doomed.process.wait(10)
        post(nodes[(nodes.index(doomed) + 1) % 3], tokens["bob"], "out", "bob after 1012")
        wait_shown(page, "bob after 1012")
        expected = orm(stored, "out")
        assert len(expected) == 6 and shown(page) == expected
        screenshot(page, tmp_path, f"after-1012-on-{now_on}")
    finally:
        context.close()


def test_rate_limited_sends_stay_in_the_outbox_and_go_out_after_retry_after(stack, browser, tmp_path):
    _, nodes = stack
    orm(make_people, "alice", rooms={"busy": "alice"})
    strict = start_node(
        "node-strict", env={**nodes[0].env, "WS_SEND_RATE": "2/s"}, log_dir=nodes[0].log_path.parent
    )
    context = browser.new_context()
    try:
        wait_healthy(strict)
        page = open_room(context, strict.http, "busy", username="alice")
        page.evaluate(
            """() => {
              window.__labels = new Set();
              new MutationObserver(() => {
                for (const el of document.querySelectorAll("#outbox .message__state")) window.__labels.add(el.textContent);
              }).observe(document.getElementById("outbox"), { childList: true, subtree: true, characterData: true });
              const input = document.getElementById("message-body");
              for (let i = 1; i <= 5; i++) {  // five sends in one go: over 2 per second
                input.value = `burst ${i}`;
                document.getElementById("send-form").requestSubmit();
              }
            }"""
        )
        page.wait_for_selector("#outbox li", state="detached", timeout=10_000)
        labels = page.evaluate("() => [...window.__labels]")
        assert "not stored yet, retrying… (rate limited)" in labels, labels
        expected = orm(stored, "busy")
        assert sorted(b for _, b in expected) == [f"burst {i}" for i in range(1, 6)]  # each once
        wait_shown(page, expected[-1][1])
        assert shown(page) == expected
        screenshot(page, tmp_path, "rate-limited-burst-delivered")
    finally:
        context.close()
        strict.stop()


# Every Content-Security-Policy violation of a document, kept on the window (an init script runs
# before the page's own scripts, in each new document).
WATCH_CSP = """
(() => {
  window.__csp = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__csp.push(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} in ${e.sourceFile}:${e.lineNumber}`);
  });
})();
"""


def test_pages_run_under_their_content_security_policy_without_a_violation_and_chat_works(
    stack, browser, tmp_path
):
    """The sign-in page, the room page (two users chatting), the admin's log-in page and the API
    docs (Swagger UI) in Chromium under the policy the nodes send: no violation event and no
    "Refused to …" console error on any of them, and a message typed in one page shows in the
    other. Then an inline script injected into the room page is refused (the policy is in force
    and the watcher sees violations)."""
    base, _nodes = stack
    orm(make_people, "csp-ann", "csp-bob", rooms={"csp-room": "csp-ann"})
    console_errors, page_errors, failed = [], [], []
    contexts = [browser.new_context(), browser.new_context()]
    for context in contexts:
        context.add_init_script(WATCH_CSP)
        context.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
        context.on("weberror", lambda e: page_errors.append(str(e.error)))
        context.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))

    def violations(page) -> list[str]:
        return page.evaluate("() => window.__csp")

    pages = []
    for context, name in zip(contexts, ("csp-ann", "csp-bob")):
        page = context.new_page()
        response = page.goto(f"{base}/accounts/login/?next=/rooms/csp-room/")
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy, policy
        page.wait_for_load_state("load")
        assert violations(page) == [], "sign-in page"
        page.fill("#id_username", name)
        page.fill("#id_password", factories.PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url == f"{base}/rooms/csp-room/", page.url
        connected_to(page)
        pages.append(page)
    ann, bob = pages
    ann.fill("#message-body", "under a strict policy")
    ann.press("#message-body", "Enter")
    wait_shown(bob, "under a strict policy")
    wait_shown(ann, "under a strict policy")
    assert violations(ann) == [] and violations(bob) == [], "room page"
    screenshot(ann, tmp_path, "csp-room")

    docs = contexts[0].new_page()  # signed in: the schema is readable
    docs.goto(f"{base}/api/docs/")
    docs.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "chatsite API" in docs.locator(".swagger-ui .info .title").inner_text()
    docs.wait_for_selector(".opblock", timeout=15_000)  # the operations rendered from the schema
    assert violations(docs) == [], "API docs"
    admin = contexts[1].new_page()
    admin.goto(f"{base}/admin/login/")
    admin.wait_for_load_state("load")
    assert violations(admin) == [], "admin log-in page"
    # Every page, the admin's too, names an icon, and /favicon.ico leads to the site's.
    for page in (ann, docs, admin):
        icon = page.evaluate("() => document.querySelector('link[rel=icon]')?.href")
        assert icon and icon.startswith(f"{base}/static/"), (page.url, icon)
        got = page.request.get(icon)  # the API docs keep Swagger UI's own (PNG)
        assert got.status == 200 and got.headers["content-type"].startswith("image/"), icon
    got = admin.request.get(f"{base}/favicon.ico")
    assert got.status == 200 and got.headers["content-type"].startswith("image/svg+xml"), got.url

    refused = [e for e in console_errors if "Content Security Policy" in e or "Refused to" in e]
    assert refused == [] and page_errors == [], (refused, page_errors)
    assert failed == [], failed  # no page asked for anything it could not have

    # The control: an inline script added to the room page does not run, and is reported.
    ran = ann.evaluate("""() => {
      const s = document.createElement("script");
      s.textContent = "window.__inlineRan = true";
      document.body.append(s);
      return window.__inlineRan === true;
    }""")
    assert ran is False
    ann.wait_for_function("() => window.__csp.length > 0", timeout=5_000)
    assert violations(ann)[0].startswith("script-src-elem blocked inline"), violations(ann)
    for context in contexts:
        context.close()


def test_node_names_show_to_staff_and_not_to_other_users_in_the_live_page(stack, browser, tmp_path):
    """A staff user's page names its node ("connected to node-1", the footer, "via node-2" under a
    message that came live); an ordinary user's page in the same room says "connected" and names
    no node anywhere."""
    _, nodes = stack
    tokens = orm(make_people, "opsstaff", "plainuser", rooms={"names": "opsstaff"})

    def make_staff():
        from django.contrib.auth import get_user_model

        get_user_model().objects.filter(username="opsstaff").update(is_staff=True)

    orm(make_staff)
    staff_ctx, user_ctx = browser.new_context(), browser.new_context()
    try:
        # nodes still running: the 1012 test leaves the node it SIGTERMed stopped (which one
        # depends on nginx's rotation, so node-1 too)
        running = [node for node in nodes if node.process.poll() is None]
        first, second = running[0], running[1]
        staff = open_room(staff_ctx, first.http, "names", username="opsstaff")
        user = open_room(user_ctx, first.http, "names", username="plainuser")
        assert connected_to(staff) == connected_to(user) == first.server_id
        post(second, tokens["plainuser"], "names", "sent on the second node")
        wait_shown(staff, "sent on the second node")
        wait_shown(user, "sent on the second node")
        assert staff.inner_text("#connection-status .status__text") == f"connected to {first.server_id}"
        assert staff.inner_text(".site-footer") == f"page served by {first.server_id}"
        assert staff.inner_text("#message-list .message__via") == f"via {second.server_id}"
        assert user.inner_text("#connection-status .status__text") == "connected"
        assert user.locator(".site-footer").count() == 0 and user.locator(".message__via").count() == 0
        assert "node-" not in user.inner_text("body")
        screenshot(staff, tmp_path, "staff-sees-node-names")
        screenshot(user, tmp_path, "user-sees-no-node-names")
    finally:
        staff_ctx.close()
        user_ctx.close()


def test_edit_and_delete_from_the_page_on_node1_show_live_on_node2_with_controls_per_role(
    stack, browser, tmp_path
):
    """The room page's Edit and Delete controls (static/rooms/room/actions.js, drawn through
    hooks.js's message parts): the author edits her message on node-1 and the other member's
    page on node-2 shows the new text and "(edited)"; he sees neither control on her message,
    and both on his own; her delete shows "message deleted" on both pages, without controls.
    A message already on the page when it loads (drawn by the server) gets its controls too."""
    _, nodes = stack
    tokens = orm(make_people, "ed-ann", "ed-bob", rooms={"edits": "ed-ann"})
    live = [node for node in nodes if node.process.poll() is None]
    post(live[0], tokens["ed-ann"], "edits", "drawn by the server")
    ann_ctx, bob_ctx = browser.new_context(), browser.new_context()
    errors = []
    for context in (ann_ctx, bob_ctx):
        context.on("weberror", lambda e: errors.append(str(e.error)))
    try:
        ann = open_room(ann_ctx, live[0].http, "edits", username="ed-ann")
        bob = open_room(bob_ctx, live[1].http, "edits", username="ed-bob")
        first = ann.locator("#message-list li[data-seq]", has_text="drawn by the server")
        assert first.locator(".message__actions button").all_inner_texts() == ["Edit", "Delete"]

        ann.fill("#message-body", "typo hree")
        ann.press("#message-body", "Enter")
        wait_shown(bob, "typo hree")
        bob.fill("#message-body", "bob's own")
        bob.press("#message-body", "Enter")
        wait_shown(bob, "bob's own")
        on_bob = bob.locator("#message-list li[data-seq]", has_text="typo hree")
        assert on_bob.locator(".message__actions button").count() == 0
        own = bob.locator("#message-list li[data-seq]", has_text="bob's own")
        assert own.locator(".message__actions button").all_inner_texts() == ["Edit", "Delete"]

        mine = ann.locator("#message-list li[data-seq]", has_text="typo hree")
        mine.hover()  # a continued message shows its time and controls on hover or focus
        mine.locator("button", has_text="Edit").click()
        mine.locator("textarea.message__edit-input").fill("typo here")
        mine.locator("textarea.message__edit-input").press("Enter")
        wait_shown(bob, "typo here")
        on_bob = bob.locator("#message-list li[data-seq]", has_text="typo here")
        on_bob.locator(".message__edited").wait_for(timeout=5_000)
        assert mine.locator(".message__editor").count() == 0

        ann.once("dialog", lambda dialog: dialog.accept())
        edited = ann.locator("#message-list li[data-seq]", has_text="typo here")
        edited.hover()
        edited.locator("button", has_text="Delete").click()
        bob.wait_for_selector("#message-list li.message--deleted", timeout=10_000)
        ann.wait_for_selector("#message-list li.message--deleted", timeout=10_000)
        for page in (ann, bob):
            gone = page.locator("#message-list li.message--deleted")
            assert gone.locator(".message__body").inner_text() == "message deleted"
            assert gone.locator(".message__actions button").count() == 0
        assert errors == []
        screenshot(bob, tmp_path, "edit-delete-on-node2")
    finally:
        ann_ctx.close()
        bob_ctx.close()
