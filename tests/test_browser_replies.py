"""A reply's quote in real Chromium on real nodes behind nginx (tests/test_browser.py's stack):
the parent's text as readers see it, without its Markdown ("message was edited", a link as its
text, code without backticks, a mention as @name, a line break as a space), on the replier's
page and live on a page connected to another node, the same after a reload (history), and the
composer's "Replying to" bar the same way; the quote's text is text, never markup."""

from tests.test_browser import (  # noqa: F401 (fixtures)
    browser,
    connected_to,
    make_people,
    open_room,
    orm,
    post,
    pytestmark,
    screenshot,
    stack,
    wait_shown,
)

PARENT = "message was *edited*, see [the docs](https://example.com/d)\nand `<b>x</b>` for @q-carol"
PLAIN = "message was edited, see the docs and <b>x</b> for @q-carol"


def test_a_reply_quotes_its_parents_text_without_markdown_live_on_another_node_and_after_reload(
    stack, browser, tmp_path
):
    _, nodes = stack
    tokens = orm(make_people, "q-alice", "q-carol", "q-dave", rooms={"quotes": "q-alice"})
    live = [node for node in nodes if node.process.poll() is None]
    contexts = [browser.new_context() for _ in range(2)]
    errors = []
    for context in contexts:
        context.on("weberror", lambda e: errors.append(str(e.error)))
    try:
        post(live[0], tokens["q-alice"], "quotes", PARENT)
        carol = open_room(contexts[0], live[1].http, "quotes", username="q-carol")
        dave = open_room(contexts[1], live[2].http, "quotes", username="q-dave")
        assert connected_to(carol) != connected_to(dave)  # two nodes: dave sees it through Redis
        parent = carol.locator("#message-list li[data-seq]").last
        assert parent.locator(".message__body em").inner_text() == "edited"
        parent.hover()
        parent.locator(".reply-button").click()
        assert carol.locator(".reply-bar__quote").inner_text() == f"q-alice: {PLAIN}"
        carol.fill("#message-body", "agreed")
        carol.press("#message-body", "Enter")
        for page in (carol, dave):
            wait_shown(page, "agreed")
            reply = page.locator("#message-list li[data-seq]", has_text="agreed")
            assert reply.locator(".reply-quote").inner_text() == f"↪ q-alice: {PLAIN}"
            assert reply.locator(".reply-quote b, .reply-quote code, .reply-quote a").count() == 0
        screenshot(dave, tmp_path, "reply-quote-on-another-node")
        dave.reload()  # the page's first history, then the same from REST history
        connected_to(dave)
        reply = dave.locator("#message-list li[data-seq]", has_text="agreed")
        assert reply.locator(".reply-quote").inner_text() == f"↪ q-alice: {PLAIN}"
        assert errors == []
    finally:
        for context in contexts:
            context.close()
