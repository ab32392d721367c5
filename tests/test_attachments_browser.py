"""Attachments in real Chromium against real daphne nodes behind nginx (tests/test_browser.py's
``stack``): a file picked with the composer's "Attach" button and a picture pasted into the text
area are uploaded, sent with the message and shown live on another node to another member: the
image as its thumbnail, the file as a download link whose XSS-laden name stays text; the
thumbnail and the download answer the member, and 404 to a non-member."""

import io

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
from tests.test_browser_scrollback import new_context

pytestmark = [
    *browser_marks[:2],  # Chromium and nginx present
    pytest.mark.multinode,
    pytest.mark.django_db(transaction=True),
]

XSS_NAME = "<img src=x onerror=window.__xss=1>.txt"  # (Chromium sends a " in a file name as %22)


def png_bytes() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (300, 200), (20, 120, 220)).save(out, "PNG")
    return out.getvalue()


def private_room(slug: str, owner: str, member: str) -> None:
    from django.contrib.auth import get_user_model

    from rooms import services
    from tests import factories

    users = get_user_model().objects
    room = factories.make_room(created_by=users.get(username=owner), slug=slug, is_private=True)
    services.member_add(
        room=room, actor=users.get(username=owner), user=users.get(username=member), role="member"
    )


def test_files_picked_and_pasted_are_sent_and_shown_on_another_node_with_names_as_text(
    stack, browser, tmp_path
):
    _base, nodes = stack
    orm(make_people, "at-ann", "at-bob", "at-eve", rooms={"scratch-files": "at-ann"})
    orm(private_room, "files", "at-ann", "at-bob")
    sender_context, reader_context, stranger_context = (
        new_context(browser),
        new_context(browser),
        new_context(browser),
    )
    try:
        ann = open_room(sender_context, nodes[0].http, "files", username="at-ann")
        bob = open_room(reader_context, nodes[1].http, "files", username="at-bob")
        assert ann.locator("#attach-button").is_visible()

        ann.set_input_files(
            "#attachment-input",
            files=[{"name": XSS_NAME, "mimeType": "text/plain", "buffer": b"plain notes\n"}],
        )
        ann.wait_for_selector('.attachment-chip[data-status="ready"]', timeout=10_000)
        # A picture pasted into the text area (a clipboard event carrying a file).
        ann.evaluate(
            """(bytes) => {
          const data = new DataTransfer();
          data.items.add(new File([new Uint8Array(bytes)], "pasted.png", {type: "image/png"}));
          const event = new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true});
          document.getElementById("message-body").dispatchEvent(event);
        }""",
            list(png_bytes()),
        )
        ann.wait_for_function(
            "() => document.querySelectorAll('.attachment-chip[data-status=\"ready\"]').length === 2",
            timeout=10_000,
        )
        ann.fill("#message-body", "two files")
        ann.press("#message-body", "Enter")

        bob.wait_for_selector(".message__attachments .attachment__thumbnail", timeout=10_000)
        bob.wait_for_function(
            "() => [...document.querySelectorAll('.attachment__thumbnail')].every((img) => img.complete && img.naturalWidth > 0)",
            timeout=10_000,
        )
        names = bob.locator(".attachment__name").all_text_contents()
        assert names == [XSS_NAME]
        assert bob.locator(".message__attachments img").count() == 1  # the thumbnail only, no injected <img>
        assert bob.locator(".attachment__thumbnail").get_attribute("alt") == "pasted.png"
        assert bob.evaluate("() => window.__xss") is None and ann.evaluate("() => window.__xss") is None
        assert ann.locator(".attachment-chip").count() == 0  # cleared after sending
        link = bob.locator(".attachment:not(.attachment--image) a").get_attribute("href")
        thumb = bob.locator(".attachment__thumbnail").get_attribute("src")
        for url in (link, thumb):
            assert bob.request.get(f"{nodes[1].http}{url}").status == 200
        screenshot(bob, tmp_path, "attachments-on-another-node")

        eve = stranger_context.new_page()
        eve.goto(f"{nodes[2].http}/accounts/login/")
        eve.fill("#id_username", "at-eve")
        from tests import factories

        eve.fill("#id_password", factories.PASSWORD)
        with eve.expect_navigation():
            eve.click("button[type=submit]")
        for url in (link, thumb):
            assert eve.request.get(f"{nodes[2].http}{url}").status == 404
        assert bob.evaluate("() => window.__csp") == []
    finally:
        for context in (sender_context, reader_context, stranger_context):
            context.close()
