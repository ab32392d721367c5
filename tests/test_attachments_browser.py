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


def gradient_png() -> bytes:
    """A picture big enough that the server takes a while over it (checked, re-encoded without
    EXIF, thumbnailed): a small file sent after it would be stored first if they went up side
    by side."""
    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((1600, 1600), 60).convert("RGB").save(out, "PNG")
    return out.getvalue()


# In the message's <li>, the parts in page order: the body, the files, the reactions row.
PARTS = """(li) => [...li.children].map((el) => el.className.split(" ")[0])
  .filter((name) => ["message__body", "message__attachments", "reactions"].includes(name))"""


def test_files_keep_the_order_attached_under_the_body_with_reactions_below_and_a_refusal_shows_once(
    stack, browser, tmp_path
):
    _base, nodes = stack
    orm(make_people, "ao-ann", "ao-bob", rooms={"ordered": "ao-ann"})
    sender_context, reader_context = new_context(browser), new_context(browser)
    try:
        ann = open_room(sender_context, nodes[0].http, "ordered", username="ao-ann")
        bob = open_room(reader_context, nodes[1].http, "ordered", username="ao-bob")

        # A refused file: its reason once, on its chip (not again under the composer).
        ann.set_input_files(
            "#attachment-input",
            files=[
                {"name": "evil.html", "mimeType": "text/html", "buffer": b"<html><script>x</script></html>"}
            ],
        )
        ann.wait_for_selector('.attachment-chip[data-status="failed"]', timeout=10_000)
        reason = "Files of this kind cannot be shared (HTML, SVG, scripts)."
        assert ann.locator('.attachment-chip[data-status="failed"]').inner_text().count(reason) == 1
        assert ann.evaluate("() => document.body.innerText").count(reason) == 1
        assert ann.locator('.attachment-chip[data-status="failed"] [role="alert"]').inner_text() == reason
        ann.locator('.attachment-chip[data-status="failed"] button').click()

        ann.set_input_files(
            "#attachment-input",
            files=[
                {"name": "gradient.png", "mimeType": "image/png", "buffer": gradient_png()},
                {"name": "report.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4\n% a report\n"},
                {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"plain notes\n"},
            ],
        )
        ann.wait_for_function(
            "() => document.querySelectorAll('.attachment-chip[data-status=\"ready\"]').length === 3",
            timeout=20_000,
        )
        chips = ann.locator(".attachment-chip__name").all_text_contents()
        assert chips == ["gradient.png", "report.pdf", "notes.txt"]
        ann.fill("#message-body", "three files")
        ann.press("#message-body", "Enter")

        expected = ["gradient.png", "report.pdf", "notes.txt"]
        names = """(li) => [...li.querySelectorAll('.message__attachments > li')].map((item) =>
          item.querySelector('img') ? item.querySelector('img').alt : item.querySelector('.attachment__name').textContent)"""
        for page in (bob, ann):  # live on another node, and on the sender's page
            page.wait_for_selector(".message__attachments .attachment__thumbnail", timeout=10_000)
            li = page.locator("#message-list li[data-seq]", has_text="three files")
            assert li.evaluate(names) == expected
            assert li.evaluate(PARTS) == ["message__body", "message__attachments", "reactions"]
        screenshot(bob, tmp_path, "attachments-in-order")
        bob.reload()  # drawn by the server, then its parts: the same order
        li = bob.locator("#message-list li[data-seq]", has_text="three files")
        li.locator(".message__attachments").wait_for(timeout=10_000)
        assert li.evaluate(names) == expected
        assert li.evaluate(PARTS) == ["message__body", "message__attachments", "reactions"]
    finally:
        for context in (sender_context, reader_context):
            context.close()
