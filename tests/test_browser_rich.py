"""Rich messages in real Chromium on real nodes behind nginx (tests/test_browser.py's stack):
XSS payloads in bodies and link targets neither run nor inject elements, whether the page drew
the message or it came live; a reaction clicked on node-1's page shows on node-2's page (and
back); a reply's quote jumps to an old parent, loading older history down to it, and the
parent's reply count opens its thread."""

from tests.test_browser import (  # noqa: F401 (fixtures)
    browser,
    make_people,
    open_room,
    orm,
    post,
    pytestmark,
    screenshot,
    stack,
    wait_shown,
)

# Each payload would set window.__xss (or open a dialog) if it ran.
XSS_BODIES = [
    "<script>window.__xss = 1; alert(1)</script>",
    '<img src=x onerror="window.__xss = 2; alert(2)">',
    "[click me](javascript:window.__xss=3)",
    "[data](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9NDwvc2NyaXB0Pg==)",
    '<a href="javascript:window.__xss=5">a link</a>',
    "```\n<script>window.__xss = 6</script><img src=x onerror=window.__xss=6>\n```",
    "> <svg onload=window.__xss=7>\n> > <iframe src=javascript:window.__xss=8>",
    "![img](https://127.0.0.1:1/x.png)",
    '[ok](https://example.com/" onmouseover="window.__xss=9)',
    "**bold** and https://example.com/safe",
]

# Inside the message list: no element beyond the rendered subset, no event handler, and
# every link http(s)/mailto with rel=noopener noreferrer.
INSPECT = """() => {
  const list = document.getElementById("message-list");
  const allowed = new Set(["LI","DIV","SPAN","TIME","P","BR","STRONG","EM","S","DEL","CODE","PRE","BLOCKQUOTE",
                           "UL","OL","A","BUTTON","FORM","INPUT","TEXTAREA"]);
  const bad = [];
  for (const el of list.querySelectorAll("*")) {
    if (!allowed.has(el.tagName)) bad.push("tag " + el.tagName);
    for (const attr of el.attributes) if (/^on/i.test(attr.name)) bad.push("handler " + attr.name);
  }
  for (const a of list.querySelectorAll(".message__body a")) {
    const href = a.getAttribute("href");
    if (href !== null && !/^(https?:|mailto:)/i.test(href)) bad.push("href " + href);
    if (a.rel !== "noopener noreferrer") bad.push("rel " + a.rel);
  }
  return {bad, xss: window.__xss || null,
          scripts: list.querySelectorAll("script, img, iframe, svg, object, embed").length};
}"""


def _checked(page, dialogs):
    found = page.evaluate(INSPECT)
    assert found == {"bad": [], "xss": None, "scripts": 0}, found
    assert dialogs == []


def test_xss_payloads_in_bodies_and_links_neither_run_nor_inject_elements(stack, browser, tmp_path):
    _, nodes = stack
    tokens = orm(make_people, "x-ann", "x-bob", rooms={"xss": "x-ann"})
    live = [node for node in nodes if node.process.poll() is None]
    for body in XSS_BODIES[:5]:  # drawn by the server with the page
        post(live[0], tokens["x-ann"], "xss", body)
    context = browser.new_context()
    dialogs, errors = [], []
    context.on("weberror", lambda e: errors.append(str(e.error)))
    try:
        page = open_room(context, live[1].http, "xss", username="x-bob")
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        _checked(page, dialogs)
        for body in XSS_BODIES[5:]:  # live, through another node
            post(live[0], tokens["x-ann"], "xss", body)
        page.wait_for_function(
            f"() => document.querySelectorAll('#message-list li[data-seq]').length >= {len(XSS_BODIES)}",
            timeout=10_000,
        )
        # the payloads show as text; Markdown as formatting; the one real link is a link
        text = page.locator("#message-list").inner_text()
        assert "<script>window.__xss = 1; alert(1)</script>" in text
        assert page.locator("#message-list .message__body strong", has_text="bold").count() == 1
        safe = page.locator("#message-list .message__body a[href='https://example.com/safe']")
        assert safe.get_attribute("target") == "_blank" and safe.get_attribute("rel") == "noopener noreferrer"
        for link in page.locator("#message-list .message__body a").all():  # clicking runs nothing either
            if link.get_attribute("href") is None:
                link.click()
        page.wait_for_timeout(300)
        _checked(page, dialogs)
        assert errors == []
        screenshot(page, tmp_path, "xss-as-text")
    finally:
        context.close()


def test_a_reaction_clicked_on_node1_shows_on_node2_and_back(stack, browser, tmp_path):
    _, nodes = stack
    tokens = orm(make_people, "r-ann", "r-bob", rooms={"reacts": "r-ann"})
    live = [node for node in nodes if node.process.poll() is None]
    message = post(live[0], tokens["r-ann"], "reacts", "react to me")
    ann_ctx, bob_ctx = browser.new_context(), browser.new_context()
    errors = []
    for context in (ann_ctx, bob_ctx):
        context.on("weberror", lambda e: errors.append(str(e.error)))
    try:
        ann = open_room(ann_ctx, live[0].http, "reacts", username="r-ann")
        bob = open_room(bob_ctx, live[1].http, "reacts", username="r-bob")
        item = f"#message-{message['seq']}"
        ann.locator(f"{item} .reaction--add").click()
        ann.locator(f"{item} .reaction-picker__choice", has_text="👍").click()
        chip = bob.locator(f"{item} .reaction[data-emoji='👍']")
        chip.wait_for(timeout=10_000)
        assert chip.locator(".reaction__count").inner_text() == "1"
        assert "r-ann" in chip.get_attribute("title")
        assert chip.get_attribute("aria-pressed") == "false"
        chip.click()  # bob adds his
        mine = ann.locator(f"{item} .reaction[data-emoji='👍'] .reaction__count")
        ann.wait_for_function(
            "(sel) => document.querySelector(sel)?.textContent === '2'",
            arg=f"{item} .reaction[data-emoji='👍'] .reaction__count",
            timeout=10_000,
        )
        assert mine.inner_text() == "2"
        # any typed emoji through the picker's field
        bob.locator(f"{item} .reaction--add").click()
        bob.locator(f"{item} .reaction-picker__input").fill("🦀")
        bob.locator(f"{item} .reaction-picker__input").press("Enter")
        ann.locator(f"{item} .reaction[data-emoji='🦀']").wait_for(timeout=10_000)
        # and it is stored: a reload shows it from history
        ann.reload()
        ann.locator(f"{item} .reaction[data-emoji='👍'] .reaction__count").wait_for(timeout=10_000)
        assert ann.locator(f"{item} .reaction[data-emoji='👍'] .reaction__count").inner_text() == "2"
        assert errors == []
        screenshot(ann, tmp_path, "reactions")
    finally:
        ann_ctx.close()
        bob_ctx.close()


def test_a_reply_quote_jumps_to_an_old_parent_and_the_count_opens_the_thread(stack, browser, tmp_path):
    _, nodes = stack
    tokens = orm(make_people, "t-ann", "t-bob", rooms={"threads": "t-ann"})

    def backlog():
        from django.contrib.auth import get_user_model

        from rooms import services
        from rooms.models import Room

        room = Room.objects.get(slug="threads")
        ann = get_user_model().objects.get(username="t-ann")
        parent = services.message_post(
            room=room, author=ann, body="the *old* question", client_msg_id="p"
        ).message
        for i in range(120):
            services.message_post(room=room, author=ann, body=f"filler {i}", client_msg_id=f"f{i}")
        return parent.seq

    parent_seq = orm(backlog)
    live = [node for node in nodes if node.process.poll() is None]
    ann_ctx, bob_ctx = browser.new_context(), browser.new_context()
    errors = []
    for context in (ann_ctx, bob_ctx):
        context.on("weberror", lambda e: errors.append(str(e.error)))
    try:
        ann = open_room(ann_ctx, live[0].http, "threads", username="t-ann")
        bob = open_room(bob_ctx, live[1].http, "threads", username="t-bob")
        assert ann.locator(f"#message-{parent_seq}").count() == 0  # too old for the first page
        # bob replies to the newest message through the Reply button
        last = bob.locator("#message-list li[data-seq]").last
        last.hover()
        last.locator(".reply-button").click()
        assert "filler 119" in bob.locator(".reply-bar").inner_text()
        bob.fill("#message-body", "a reply")
        bob.press("#message-body", "Enter")
        wait_shown(ann, "a reply")
        reply = ann.locator("#message-list li[data-seq]", has_text="a reply")
        assert reply.locator(".reply-quote").inner_text() == "↪ t-ann: filler 119"
        ann.locator(".reply-count", has_text="1 reply").wait_for(timeout=10_000)
        # a reply to the old parent, sent over REST from node 2: its quote loads the parent
        from tests.nodes import Http

        status, _, _ = Http(live[1], tokens["t-bob"]).request(
            "POST",
            "/api/rooms/threads/messages/",
            json_body={"body": "answering the old one", "client_msg_id": "old-1", "reply_to": parent_seq},
        )
        assert status == 201
        wait_shown(ann, "answering the old one")
        old_reply = ann.locator("#message-list li[data-seq]", has_text="answering the old one")
        assert (
            old_reply.locator(".reply-quote").inner_text() == "↪ t-ann: the old question"
        )  # as read, no Markdown
        old_reply.locator(".reply-quote").click()
        parent = ann.locator(f"#message-{parent_seq}")
        parent.wait_for(timeout=15_000)
        assert parent.locator(".message__body em").inner_text() == "old"
        assert parent.locator(".reply-count").inner_text() == "1 reply"
        parent.locator(".reply-count").click()
        ann.locator(
            ".thread .thread__list:not(.thread__parent) .message__body", has_text="answering the old one"
        ).wait_for(timeout=10_000)
        assert errors == []
        screenshot(ann, tmp_path, "thread")
    finally:
        ann_ctx.close()
        bob_ctx.close()


# Where each character of a text shows: the left edge of its box, by its index in the element's
# text (a Range over one character of the text node holding it).
CHAR_LEFTS = """(sel) => {
  const el = document.querySelector(sel);
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  const lefts = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      lefts.push([node.data[i], range.getBoundingClientRect().left]);
    }
  }
  return lefts;
}"""


def test_a_text_direction_override_neither_turns_a_link_around_nor_leaks_past_it(browser):
    """A right-to-left override typed before a bare URL does not show the URL backwards, and one
    inside a link's text stops at the link's end: the page's style sheet isolates each link of a
    rendered body (``unicode-bidi: isolate``), and the body as a whole (``plaintext``)."""
    from pathlib import Path

    from rooms.formatting import render

    css = (Path(__file__).resolve().parent.parent / "static" / "rooms" / "style.css").read_text()
    bodies = {
        "before": "\u202eread https://good.example/ab",
        "inside": "see https://good.example/\u202eab then after",
    }
    html = "".join(
        f'<div id="{name}" class="message__body message__body--html">{render(body)}</div><p id="{name}-after">page text</p>'
        for name, body in bodies.items()
    )
    page = browser.new_page()
    try:
        page.set_content(
            f"<!doctype html><html lang='en'><head><style>{css}</style></head><body>{html}</body></html>"
        )

        def lefts(selector: str, text: str) -> list[float]:
            shown = page.evaluate(CHAR_LEFTS, selector)
            at = "".join(c for c, _ in shown).index(text)
            return [x for _, x in shown[at : at + len(text)]]

        for selector, text in [
            ("#before a", "https://good.example/ab"),
            ("#inside", "then after"),
            ("#inside-after", "page text"),
            ("#before-after", "page text"),
        ]:
            xs = lefts(selector, text)
            assert xs == sorted(xs), (selector, text, xs)
    finally:
        page.close()
