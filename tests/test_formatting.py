"""Formatting (``rooms.formatting``): the Markdown subset, the sanitiser's allow-list against the
usual XSS payloads, and ``body_html`` stored at send and edit on every path (REST, the socket's
one-statement send, the step-by-step send) and carried by every shape of a message."""

import re

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from rooms import formatting, services
from rooms.models import Message
from rooms.serializers import MessageSerializer, message_data
from tests.conftest import new_client_msg_id

render = formatting.render

LINK = 'target="_blank" rel="noopener noreferrer"'


@pytest.mark.parametrize(
    ("body", "html"),
    [
        ("**bold**", "<p><strong>bold</strong></p>"),
        ("*it* _it_", "<p><em>it</em> <em>it</em></p>"),
        ("~~gone~~", "<p><s>gone</s></p>"),
        ("`a < b`", "<p><code>a &lt; b</code></p>"),
        ("```py\nx = 1 < 2\n```", "<pre><code>x = 1 &lt; 2\n</code></pre>"),
        (
            "> quote\n> > nested",
            "<blockquote>\n<p>quote</p>\n<blockquote>\n<p>nested</p>\n</blockquote>\n</blockquote>",
        ),
        ("- a\n- b", "<ul>\n<li>a</li>\n<li>b</li>\n</ul>"),
        ("3. c\n4. d", '<ol start="3">\n<li>c</li>\n<li>d</li>\n</ol>'),
        ("[site](https://example.com/x)", f'<p><a href="https://example.com/x" {LINK}>site</a></p>'),
        (
            "see https://example.com/a?b=1&c=2.",
            f'<p>see <a href="https://example.com/a?b=1&amp;c=2" {LINK}>https://example.com/a?b=1&amp;c=2</a>.</p>',
        ),
        ("<https://example.com>", f'<p><a href="https://example.com" {LINK}>https://example.com</a></p>'),
        ("[mail](mailto:a@example.com)", f'<p><a href="mailto:a@example.com" {LINK}>mail</a></p>'),
        ("line one\nline two", "<p>line one<br>\nline two</p>"),
        ("# not a heading", "<p># not a heading</p>"),
        ("    four spaces", "<p>four spaces</p>"),
        ("a@example.com", "<p>a@example.com</p>"),
    ],
)
def test_the_markdown_subset_renders(body, html):
    assert render(body) == html


@pytest.mark.parametrize(
    "body",
    [
        "**unclosed",
        "*x **y",
        "[link](",
        "[a]: https://x.y",
        "```\nunclosed fence",
        "> " * 2000,
        "~~~",
        "<",
        "`",
        "[](",
        "\\",
        "- \n- \n1.",
    ],
)
def test_malformed_markdown_renders_as_text_never_raises(body):
    out = render(body)
    assert isinstance(out, str)
    assert "<script" not in out


# The usual payloads: none may leave a script, an event handler, an image, an iframe, a style,
# or a javascript:/data:/vbscript: URL in the HTML.
XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](  javascript:alert(1)  )",
    "[x](java\tscript:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "![x](https://example.com/x.png)",
    "![x](javascript:alert(1))",
    "<javascript:alert(1)>",
    "```html\n<script>alert(1)</script><img src=x onerror=alert(1)>\n```",
    "`<img src=x onerror=alert(1)>`",
    "> <script>alert(1)</script>\n> > <img src=x onerror=alert(1)>",
    '[x](https://example.com" onmouseover="alert(1))',
    "[x](https://example.com 'title\" onclick=\"alert(1)')",
    "<svg onload=alert(1)>",
    "<iframe src=javascript:alert(1)>",
    "<style>body{display:none}</style>",
    "<a href=x>a</a><!-- comment -->",
    "**<b onmouseover=alert(1)>bold</b>**",
    "[click](https://example.com)<script>alert(1)</script>",
    "@alice<script>alert(1)</script>",
]


def _tags(html: str) -> set[str]:
    return {t.lower() for t in re.findall(r"<\s*([a-zA-Z0-9]+)", html)}


@pytest.mark.parametrize("body", XSS)
def test_xss_payloads_leave_no_script_handler_image_or_bad_url(body):
    out = render(body)
    assert _tags(out) <= formatting.ALLOWED_TAGS, out
    assert not re.search(r"<[^>]*\son\w+\s*=", out, re.I), out  # no event handler attribute in a tag
    for href in re.findall(r'<a [^>]*href="([^"]*)"', out):
        assert href.split(":", 1)[0].lower() in formatting.URL_SCHEMES, out
    assert "<script" not in out.lower() and "<img" not in out.lower(), out


def test_sanitize_alone_refuses_what_markdown_would_never_make():
    dirty = (
        '<p onclick="x()"><a href="javascript:alert(1)">a</a><img src=x onerror=y>'
        '<span class="mention evil" data-user="bob" style="color:red">@bob</span><script>z()</script></p>'
    )
    clean = formatting.sanitize(dirty)
    assert clean == (f'<p><a {LINK}>a</a><span class="mention" data-user="bob">@bob</span></p>')


def test_mentions_become_spans_outside_code_and_links():
    out = render(
        "hi @Alice, @room! `@alice` [@alice](https://x.example) mail b@alice.example @nobody_here.", None
    )
    assert '<span class="mention" data-user="alice">@Alice</span>,' in out
    assert '<span class="mention mention-room" data-user="room">@room</span>!' in out
    assert "<code>@alice</code>" in out
    assert f'<a href="https://x.example" {LINK}>@alice</a>' in out
    assert "b@alice.example" in out
    # every parsed @name is marked (the message's "mentions" says which are members)
    assert '<span class="mention" data-user="nobody_here">@nobody_here</span>.' in out


# --- stored with the message ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_rest_send_stores_and_answers_body_html_and_an_edit_renders_again(room, user):
    client = APIClient()
    client.force_authenticate(user)
    url = f"/api/rooms/{room.slug}/messages/"
    sent = client.post(url, {"body": "**hi** <b>x</b>", "client_msg_id": "f-1"}, format="json")
    assert sent.status_code == 201
    assert sent.data["body"] == "**hi** <b>x</b>"
    assert sent.data["body_html"] == "<p><strong>hi</strong> &lt;b&gt;x&lt;/b&gt;</p>"
    assert Message.objects.get(pk=sent.data["id"]).body_html == sent.data["body_html"]
    edited = client.patch(f"{url}{sent.data['id']}/", {"body": "~~hi~~"}, format="json")
    assert edited.data["body_html"] == "<p><s>hi</s></p>"
    history = client.get(url).data["results"]
    assert history[-1]["body_html"] == "<p><s>hi</s></p>"
    client.delete(f"{url}{sent.data['id']}/")
    gone = client.get(url).data["results"][-1]
    assert gone["deleted"] and gone["body"] == "" and gone["body_html"] == ""


@pytest.mark.django_db
def test_the_step_by_step_send_and_the_fast_path_store_the_same_html(room, user, other_user):
    body = "hey @bob see https://example.com"
    # a visitor's first message to a public room goes through the one statement; a retry
    # of the same client_msg_id through the step-by-step path answers the stored one.
    fast = services.message_post(room=room, author=user, body=body, client_msg_id="a").message
    from django.db import connection

    vendor = connection.vendor
    try:
        connection.vendor = "sqlite"  # force the step-by-step branch (message_post checks vendor)
        slow = services.message_post(room=room, author=other_user, body=body, client_msg_id="b").message
    finally:
        connection.vendor = vendor
    assert fast.body_html == slow.body_html == render(body)
    assert Message.objects.get(pk=fast.pk).body_html == Message.objects.get(pk=slow.pk).body_html
    assert message_data(fast)["body_html"] == MessageSerializer(fast).data["body_html"] == render(body)


@pytest.mark.django_db(transaction=True)
async def test_a_socket_send_broadcasts_body_html(joined, room):
    await joined.send(
        {
            "type": "message.send",
            "body": "[x](javascript:alert(1)) *ok*",
            "client_msg_id": new_client_msg_id(),
        }
    )
    frames = [await joined.receive(), await joined.receive()]
    message = next(f for f in frames if f["type"] == "message")["message"]
    assert message["body_html"] == "<p>[x](javascript:alert(1)) <em>ok</em></p>"
    stored = await database_sync_to_async(lambda: Message.objects.get(pk=message["id"]).body_html)()
    assert stored == message["body_html"]


@pytest.mark.django_db
def test_the_data_migration_renders_messages_stored_before_formatting(room, user):
    from importlib import import_module

    from django.apps import apps as global_apps

    migration = import_module("rooms.migrations.0006_message_body_html")
    kept = services.message_post(room=room, author=user, body="**old**", client_msg_id="m1").message
    gone = services.message_post(room=room, author=user, body="secret", client_msg_id="m2").message
    services.message_delete(message=gone, actor=user)
    Message.objects.update(body_html="")
    migration.render_stored_messages(global_apps, None)
    assert Message.objects.get(pk=kept.pk).body_html == "<p><strong>old</strong></p>"
    assert Message.objects.get(pk=gone.pk).body_html == ""


# --- link text: the URL as typed, never a lookalike ----------------------------------------------

APPLE = "http://xn--80ak6aa92e.com"  # "аррӏе.com" in Cyrillic letters: reads as apple.com


@pytest.mark.parametrize(
    ("body", "html"),
    [
        (APPLE, f'<p><a href="{APPLE}" {LINK}>{APPLE}</a></p>'),
        (f"<{APPLE}/x>", f'<p><a href="{APPLE}/x" {LINK}>{APPLE}/x</a></p>'),
        ("see xn--80ak6aa92e.com ok", f'<p>see <a href="{APPLE}" {LINK}>xn--80ak6aa92e.com</a> ok</p>'),
        (
            "mailto:a@xn--80ak6aa92e.com",
            f'<p><a href="mailto:a@xn--80ak6aa92e.com" {LINK}>mailto:a@xn--80ak6aa92e.com</a></p>',
        ),
        # A percent escape stays escaped: %E2%80%AE decoded would be a right-to-left override.
        (
            "https://example.com/%E2%80%AEexe.txt",
            f'<p><a href="https://example.com/%E2%80%AEexe.txt" {LINK}>https://example.com/%E2%80%AEexe.txt</a></p>',
        ),
    ],
)
def test_a_bare_url_or_autolink_is_shown_as_typed_never_decoded_into_a_lookalike(body, html):
    assert render(body) == html


@pytest.mark.parametrize(
    ("body", "html"),
    [
        ("http://аррӏе.com", f'<p><a href="{APPLE}" {LINK}>{APPLE}</a></p>'),
        (
            "<https://аррӏе.com/p?q=1>",
            f'<p><a href="https://xn--80ak6aa92e.com/p?q=1" {LINK}>https://xn--80ak6aa92e.com/p?q=1</a></p>',
        ),
        ("x аррӏе.com/Path y", f'<p>x <a href="{APPLE}/Path" {LINK}>xn--80ak6aa92e.com/Path</a> y</p>'),
    ],
)
def test_a_host_typed_in_another_script_is_shown_as_the_ascii_host_it_opens(body, html):
    """A host with characters that can pass for Latin letters is shown as its punycode, the
    host the link opens (what browsers show for a confusable host); the rest of the URL as
    typed."""
    assert render(body) == html


@pytest.mark.parametrize("url", ["http://한국.kr/뉴스", "https://例え.jp", "http://中文.cn/x"])
def test_a_korean_chinese_or_japanese_host_is_shown_as_typed(url):
    """Hangul, Han and kana cannot pass for Latin letters: such a host is shown as typed, the
    link opening its punycode."""
    out = render(url)
    assert f">{url}</a>" in out, out
    assert 'href="http' in out and "xn--" in out.split('href="', 1)[1].split('"', 1)[0], out


@pytest.mark.django_db
def test_the_link_text_migration_renders_stored_links_again(room, user):
    from importlib import import_module

    from django.apps import apps as global_apps

    migration = import_module("rooms.migrations.0013_message_body_html_link_text")
    link = services.message_post(room=room, author=user, body=APPLE, client_msg_id="m1").message
    plain = services.message_post(room=room, author=user, body="**old**", client_msg_id="m2").message
    Message.objects.filter(pk=link.pk).update(body_html=f'<p><a href="{APPLE}">http://аррӏе.com</a></p>')
    migration.render_links_again(global_apps, None)
    assert Message.objects.get(pk=link.pk).body_html == f'<p><a href="{APPLE}" {LINK}>{APPLE}</a></p>'
    assert Message.objects.get(pk=plain.pk).body_html == "<p><strong>old</strong></p>"
    assert formatting.RENDER_VERSION == 2


# --- the plain-line fast path (``formatting.is_plain``): the same HTML as the parser's ---------

PLAIN_LINES = [
    "hello world!",
    "Sure, I can look at it after lunch; the build broke on the migration step again.",
    '{"b": "ab12cd", "p": "ramp-6", "s": 12, "k": 3, "t": 12345.6789, "x": "xxxx"}',
    "오늘 회의는 3시에 대화방에서 해요.",
    "well-known (c) 2026 -- 50% off? #general | a = b",
    "emoji 😀👩‍👩‍👧 and RTL שלום and\u00a0a no-break space",
    "ok.3 and 12.5 and end.",
]
NOT_PLAIN_LINES = [
    "see example.com",
    "http://x.org/a",
    "//localhost/x",
    "mailto:a@b.c",
    "- item",
    "+ item",
    "1. item",
    "12) item",
    "> quote",
    "**bold**",
    "a_b_",
    "`code`",
    "~~x~~",
    "[x](y)",
    "<b>",
    "a &amp; b",
    "@alice hi",
    "two\nlines",
    " leading",
    "trailing ",
    "tab\there",
    "docs.python.org",
    "ahttp://http://a",  # linkify-it's test() says no link; the parser's linkify rule finds one
    "readme.md is long",
]


@pytest.mark.parametrize("body", PLAIN_LINES)
def test_a_plain_line_skips_the_parser_with_the_parsers_html(body):
    assert formatting.is_plain(body)
    assert render(body) == formatting.render_markdown(body, formatting.mentions.parse(body))


@pytest.mark.parametrize("body", NOT_PLAIN_LINES)
def test_markup_links_mentions_markers_and_breaks_take_the_parser(body):
    assert not formatting.is_plain(body)


# Pieces that open, close or trick every construct of the subset and linkify-it's link finder.
_PIECES = [
    "a",
    "Z",
    "1",
    "12",
    "123456789",
    " ",
    "  ",
    ".",
    ",",
    ":",
    ";",
    "/",
    "//",
    "-",
    "--",
    "+",
    "*",
    "_",
    "~",
    "~~",
    "`",
    "```",
    "[",
    "]",
    "(",
    ")",
    "<",
    ">",
    "&",
    "#",
    "!",
    "@",
    "\n",
    "\n\n",
    "\t",
    "\r",
    "\x00",
    "\x7f",
    "\u00a0",
    "\u3000",
    "\u200b",
    '"',
    "'",
    "=",
    "|",
    "{",
    "}",
    "\\",
    "1.",
    "1)",
    "😀",
    "한국",
    "대화",
    ".com",
    ".org",
    ".한국",
    ".io",
    "www",
    "www.",
    "http",
    "https",
    "http://",
    "ftp:",
    "mailto:",
    "example",
    "localhost",
    "xn--p1ai",
    "\u3002",
    "\uff0e",
    "\uff61",
    "&amp;",
    "&nbsp;",
    "&#65;",
    "room",
    "alice",
    "192.168.0.1",
    "a@b",
    ":8000",
]


def test_the_fast_path_gives_the_parsers_html_for_generated_bodies():
    """Fails if ``is_plain`` lets through any body whose parser output differs (checked over
    thousands of bodies built from the pieces above and arbitrary text)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    bodies = st.one_of(
        st.lists(st.sampled_from(_PIECES), max_size=12).map("".join),
        st.text(max_size=40),
    )

    @settings(max_examples=4000, deadline=None, database=None)
    @given(bodies)
    def check(body):
        assert render(body) == formatting.render_markdown(body, formatting.mentions.parse(body))

    check()


def test_a_plain_line_without_a_no_break_space_is_what_the_sanitiser_gives_back():
    """``render`` returns a plain line without the sanitiser (``<p>`` + the body + ``</p>``)
    unless it holds U+00A0: checked for every code point of the Basic Multilingual Plane and
    every 97th beyond, inside a line, so that a character the sanitiser would write otherwise
    (as it writes U+00A0 as ``&nbsp;``) fails here."""
    import html

    points = [*range(0x20, 0x10000), *range(0x10000, 0x110000, 97)]
    for point in points:
        if 0xD800 <= point <= 0xDFFF:
            continue
        body = f"a{chr(point)}b"
        if formatting.is_plain(body):
            assert render(body) == formatting.sanitize(f"<p>{html.escape(body, quote=False)}</p>"), hex(point)


def test_the_plain_checks_find_what_their_one_pattern_forms_found():
    """``is_plain``'s three checks and its link pattern, written for speed, against the single
    patterns they replaced, over generated bodies."""
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    markup = re.compile(r"[\\`*_~\[\]<>&@\x00-\x1f\x7f-\x9f]|^\s|\s$|^(?:[-+*>]|\d{1,9}[.)])(?:\s|$)")
    link = re.compile(r"[.\uff0e\u3002\uff61](?=[^\W\d_])|:/|//|mailto:", re.IGNORECASE)
    bodies = st.one_of(
        st.lists(st.sampled_from(_PIECES + ["MAILTO:", "mailto", "Mailto:x", ":", "/"]), max_size=12).map(
            "".join
        ),
        st.text(max_size=40),
    )

    @settings(max_examples=4000, deadline=None, database=None)
    @given(bodies)
    def check(body):
        assert bool(formatting._MAY_BE_LINK.search(body)) == bool(link.search(body))
        assert formatting.is_plain(body) == (not markup.search(body) and not link.search(body))

    check()


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ("HTTP://аррӏе.com", "HTTP://xn--80ak6aa92e.com"),  # the scheme's case changed nothing
        ("Http://аррӏе.com/x", "Http://xn--80ak6aa92e.com/x"),
        ("<HTTPS://аррӏе.com>", "HTTPS://xn--80ak6aa92e.com"),
        ("http://paypa丨.com", "http://xn--paypa-fn1h.com"),  # a Han lookalike beside Latin letters
        ("http://g口口gle.com", "http://xn--ggle-ve1ga.com"),
        ("http://apple.comーsecure.jp", "http://apple.xn--comsecure-nl5h.jp"),
        ("http://example.com/\u202efdp.exe", "http://example.com/%E2%80%AEfdp.exe"),  # not "exe.pdf"
        ("http://example.com/a\u200bb", "http://example.com/a%E2%80%8Bb"),
    ],
)
def test_a_link_text_cannot_impersonate_its_target_by_case_lookalikes_or_direction(body, text):
    """Found by a review of the first fix: an upper-case scheme skipped the punycode (markdown-it-py
    punycodes only for a lower-case one), a Han or kana lookalike beside Latin letters passed
    as a Korean, Chinese or Japanese host, and a right-to-left override inside the path turned
    the text around."""
    out = render(body)
    assert f">{text}</a>" in out, out


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("https://ko.wikipedia.org/wiki/%ED%95%9C%EA%B5%AD", "https://ko.wikipedia.org/wiki/한국"),
        ("http://x.com/a%20b%2Fc%3F", "http://x.com/a%20b%2Fc%3F"),  # escaped ASCII stays escaped
        ("http://x.com/%FF%FE", "http://x.com/%FF%FE"),  # not UTF-8: as typed
        ("http://x.com/%E2%80%AEfdp.exe", "http://x.com/%E2%80%AEfdp.exe"),  # a format character
    ],
)
def test_escaped_letters_in_a_link_are_shown_as_letters_and_nothing_else_is(url, text):
    """A Korean article's address, as a browser copies it, reads as Korean; escaped ASCII,
    bytes that are not UTF-8 and format characters stay escaped."""
    out = render(url)
    assert f">{text}</a>" in out and f'href="{url}"' in out, out
