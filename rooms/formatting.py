"""Message formatting: a message body (Markdown source, the stored truth) rendered to safe HTML.

Rendered once, when the message is stored and again at each edit (``rooms.services``), into
``Message.body_html``; every shape of a message (REST history, live frames, replay) carries it,
so no client parses Markdown and every client shows the same thing. Measured cost and the
reasons for rendering at store time: docs/protocol.md, "Formatting"; figures in
bench/RESULTS.md (``python -m bench.render``).

The subset (markdown-it-py's CommonMark parser, with most block rules turned off)::

    **bold**  *italic* / _italic_  ~~strikethrough~~  `inline code`
    ```fenced code``` (the info string is dropped)   > quotes (nested)
    - lists / 1. lists   [text](https://link)   <https://autolink>   bare URLs (linkify-it)
    a line break in the source is a line break (<br>)
    @username / @room: <span class="mention" data-user="alice">@alice</span>

A bare URL's or an autolink's text is the URL as typed (a punycode host is never decoded:
``http://xn--80ak6aa92e.com`` is not shown as the lookalike ``http://аррӏе.com``), a host typed
in a script that can pass for Latin letters is shown as the punycode host the link opens
(Korean, Chinese and Japanese hosts are shown as typed), format, control and space characters
are shown escaped (a right-to-left override cannot turn the text around), and escaped letters
beyond ASCII are shown as letters (``/wiki/%ED%95%9C%EA%B5%AD`` as ``/wiki/한국``): ``_link_text``.

Not in it: raw HTML (shown as the text typed), images (``![x](y)`` shows ``!`` and a link),
headings (``# x`` stays a line of text: a chat line starting with ``#`` is far more often a
channel name or a number than a title), horizontal rules, indented code blocks (four spaces of
indentation stay text), tables, reference-style link definitions.

Then the HTML is sanitised by nh3 (ammonia) with an allow-list: the tags above and no others;
attributes ``href`` on links (http, https and mailto only; relative and any other scheme
removed), ``start`` on ordered lists, ``class`` (``mention``, ``mention-room``) and
``data-user`` on spans; every link gets ``rel="noopener noreferrer" target="_blank"``. So even a
bug in the Markdown step cannot put a script, an event handler or an image in a page.

A ``mention`` span is made for each ``@name`` the body mentions by ``rooms.mentions.parse``
(``data-user``: the lower-cased name, ``room`` for ``@room``); the message's ``mentions`` field
says which of them are members (a page highlights those). Not inside code or link text.

Malformed Markdown renders as text: the parser never fails on any input (unclosed ``**``, a
stray ``[``, 4,000 ``>``), and should anything raise, the body is shown escaped as one paragraph.
"""

import html
import logging
import re

import mdurl
import nh3
import regex
from markdown_it import MarkdownIt
from markdown_it.token import Token

from . import mentions

logger = logging.getLogger(__name__)

# Bump when the output for the same source changes; a data migration then renders the stored
# messages again (as 0006 did for every message stored before formatting existed; 0013, for 2:
# a link's text is the URL as typed, its host in punycode when typed in a script that can pass
# for Latin letters).
RENDER_VERSION = 2

ALLOWED_TAGS = frozenset(
    {
        "p",
        "br",
        "strong",
        "em",
        "s",
        "del",
        "code",
        "pre",
        "blockquote",
        "ul",
        "ol",
        "li",
        "a",
        "span",
    }
)
URL_SCHEMES = frozenset({"http", "https", "mailto"})

_md = MarkdownIt("commonmark", {"html": False, "linkify": True, "breaks": True, "typographer": False})
_md.enable(["strikethrough", "linkify"])
_md.disable(["image", "heading", "lheading", "hr", "code", "reference", "html_block", "html_inline"])
_md.linkify.set({"fuzzy_email": False})  # a@b.c stays text (``mailto:`` links by hand work)


# The characters beyond ASCII a host label may show as typed: Hangul syllables and compatibility
# jamo (no fillers), Han, hiragana and katakana; and only in a label with no ASCII letter, since
# Chrome's IDN checks turn Latin next to such lookalikes as 丨, 口 or ー ("paypa丨.com") into punycode.
_CJK_LABEL = re.compile(
    "[\u3041-\u309f\u30a1-\u30fa\u3131-\u318e\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7a3\uf900-\ufaff0-9-]+"
)
# Characters a link's text shows percent-escaped, as in its href: text-direction and other format
# characters (a right-to-left override turns "fdp.exe" into "exe.pdf"), white space and controls.
_HIDDEN_IN_LINK = regex.compile(r"[\p{Cf}\p{Cc}\p{Z}]")


_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def _readable(url: str) -> str:
    """``url`` with its percent-escaped UTF-8 letters beyond ASCII shown as letters
    (``/wiki/%ED%95%9C%EA%B5%AD`` reads ``/wiki/한국``, as browsers show it); escapes of ASCII
    (``%2F``, ``%20``) and bytes that are not UTF-8 stay as they are."""

    def decode(match: re.Match) -> str:
        escaped = match.group()
        try:
            text = bytes.fromhex(escaped.replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            return escaped
        return "".join(f"%{ord(c):02X}" if c.isascii() else c for c in text)

    return _ESCAPES.sub(decode, url) if "%" in url else url


def _shown_host(host: str) -> bool:
    """Whether a host typed beyond ASCII may be shown as typed: each label all ASCII, or all
    Korean, Chinese or Japanese (``_CJK_LABEL``)."""
    return all(label.isascii() or _CJK_LABEL.fullmatch(label) for label in host.split("."))


def _link_text(url: str) -> str:
    """The text of a bare URL's or an autolink's link: the URL as typed, except (1) a host with
    characters beyond ASCII that could pass for Latin letters (Cyrillic ``аррӏе.com``, Greek, or
    a Han lookalike beside Latin letters), shown as the ASCII (punycode) host the link opens,
    whatever the scheme's case (``HTTP://``); a Korean, Chinese or Japanese host (``한국.kr``)
    is shown as typed; (2) format, control and space characters, shown percent-escaped as in the
    href (``http://example.com/`` U+202E ``fdp.exe`` would read ``.../exe.pdf``), and other
    escaped letters beyond ASCII shown as letters (``_readable``: ``/wiki/한국``).
    markdown-it-py's own ``normalizeLinkText`` decodes instead: ``http://xn--80ak6aa92e.com``
    became the text ``http://аррӏе.com`` (read as apple.com), and ``%E2%80%AE`` a right-to-left
    override. With no confusable tables here, every other script is shown as punycode, so the
    text never impersonates the host."""
    text = _HIDDEN_IN_LINK.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), _readable(url))
    parsed = mdurl.parse(text, slashes_denote_host=True)
    host = parsed.hostname
    if not host or host.isascii() or _shown_host(host):
        return text
    # markdown-it-py punycodes a host only for a lower-case scheme (its RECODE_HOSTNAME_FOR).
    scheme_end = text.find(":") + 1 if parsed.protocol else 0
    shown = mdurl.parse(
        _md.normalizeLink(text[:scheme_end].lower() + text[scheme_end:]), slashes_denote_host=True
    ).hostname
    at = text.find(host, text.find("@") + 1 if parsed.auth else 0)
    if not shown or not shown.isascii() or at < 0:  # pragma: no cover - normalizeLink gives ASCII
        return text
    return text[:at] + shown + text[at + len(host) :]


_md.normalizeLinkText = _link_text


def _fence(renderer, tokens, idx, options, env) -> str:
    """A fenced block without the info string's ``class="language-..."`` (no highlighter)."""
    return f"<pre><code>{html.escape(tokens[idx].content, quote=False)}</code></pre>\n"


def _mention(renderer, tokens, idx, options, env) -> str:
    token = tokens[idx]
    name = token.meta["name"]
    css = "mention mention-room" if name == mentions.ROOM_MENTION else "mention"
    return f'<span class="{css}" data-user="{html.escape(name)}">{html.escape(token.content, quote=False)}</span>'


def _split_mentions(text: str, names: frozenset[str], room: bool) -> list[tuple[str, str | None]]:
    """``text`` cut into ``(text, None)`` and ``(text "@alice", name "alice")`` pieces."""
    pieces: list[tuple[str, str | None]] = []
    at = 0
    for match in mentions.MENTION_RE.finditer(text):
        token = match.group(1)
        lowered = token.lower()
        name, shown = None, token
        stripped = lowered.rstrip(mentions._TRAILING)
        if room and mentions.ROOM_MENTION in (lowered, stripped):
            name, shown = mentions.ROOM_MENTION, token[: len(stripped)]
        elif stripped and stripped != lowered and stripped in names:  # "@alice." ends a sentence
            name, shown = stripped, token[: len(stripped)]
        elif lowered in names:
            name = lowered
        if name is None:
            continue
        start = match.start()
        if start > at:
            pieces.append((text[at:start], None))
        pieces.append(("@" + shown, name))
        at = start + 1 + len(shown)
    if at < len(text):
        pieces.append((text[at:], None))
    return pieces


def _mentions_rule(state) -> None:
    """Core rule, after linkify: ``@name`` in plain text (not code, not a link's text) becomes a
    ``mention`` token, for the names ``rooms.mentions.parse`` found (``env["mentions"]``)."""
    parsed = state.env.get("mentions")
    if not parsed or parsed is mentions.NOTHING:
        return
    names = frozenset(parsed.names)
    for block in state.tokens:
        if block.type != "inline" or not block.children or "@" not in block.content:
            continue
        children, in_link = [], 0
        for child in block.children:
            if child.type == "link_open":
                in_link += 1
            elif child.type == "link_close":
                in_link -= 1
            if child.type != "text" or in_link or "@" not in child.content:
                children.append(child)
                continue
            for text, name in _split_mentions(child.content, names, parsed.room):
                if name is None:
                    piece = Token("text", "", 0)
                else:
                    piece = Token("mention", "span", 0, meta={"name": name})
                piece.content = text
                children.append(piece)
        block.children = children


_md.add_render_rule("fence", _fence)
_md.add_render_rule("mention", _mention)
_md.core.ruler.push("mentions", _mentions_rule)

_cleaner = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags={"script", "style"},
    attributes={"*": set(), "a": {"href"}, "ol": {"start"}, "span": {"data-user"}},  # "*": no title, lang
    allowed_classes={"span": {"mention", "mention-room"}},
    url_schemes=set(URL_SCHEMES),
    url_relative="deny",
    link_rel="noopener noreferrer",
    set_tag_attribute_values={"a": {"target": "_blank"}},
    strip_comments=True,
)


def sanitize(fragment: str) -> str:
    """``fragment`` with only the allow-listed tags, attributes and URL schemes (nh3)."""
    return _cleaner.clean(fragment)


# A body none of these find is one line of plain text for the renderer: no character that can
# open a Markdown construct of the subset (emphasis, code, strikethrough, links, autolinks,
# entities, escapes, mentions), no control character (``_MARKUP_CHARS``), no leading or trailing
# white space (a paragraph is trimmed: ``str.isspace``, the ``\s`` of ``re``), and no list or
# quote marker at its start (``_LIST_OR_QUOTE``). Kept apart, not one alternation: ``\s$`` tried
# at every position made one search 4 µs for a 100-character line, the class alone 0.8.
_MARKUP_CHARS = re.compile(r"[\\`*_~\[\]<>&@\x00-\x1f\x7f-\x9f]")
_LIST_OR_QUOTE = re.compile(r"(?:[-+*>]|\d{1,9}[.)])(?:\s|$)")
# What any link linkify-it can find contains: a dot before a letter (a host name's top-level
# domain, any script), a scheme's ``:/`` or ``mailto:``, or a scheme-less ``//``. A body without
# them has no link; one with them goes to the parser. (Asking linkify-it's own ``test`` first is
# not exact: it said no link in ``ahttp://http://a``, where the parser's linkify rule finds one.)
# Written to start with one character class, which ``re`` scans for quickly, the rest checked
# around it: the same matches as ``[.\uff0e\u3002\uff61](?=[^\W\d_])|:/|//|mailto:``.
_MAY_BE_LINK = re.compile(
    r"[.\uff0e\u3002\uff61:/]"
    r"(?:(?<=[.\uff0e\u3002\uff61])(?=[^\W\d_])|(?<=:)(?=/)|(?<=/)(?=/)|(?<=mailto:))",
    re.IGNORECASE,
)


def is_plain(body: str) -> bool:
    """Whether ``body`` renders as exactly one paragraph of its own text (escaped), so that
    ``render`` can skip the Markdown parser: true for most chat lines ("ok, see you at 3pm."),
    false for anything with markup, a mention, a link, a line break or a list marker. Exactness
    is tested against the parser on generated bodies (tests/test_formatting.py)."""
    if body and (body[0].isspace() or body[-1].isspace()):
        return False
    if _MARKUP_CHARS.search(body) or _LIST_OR_QUOTE.match(body):
        return False
    return not _MAY_BE_LINK.search(body)


def render(body: str, parsed: "mentions.Parsed | None" = None) -> str:
    """The safe HTML of a message ``body`` (``parsed``: ``mentions.parse(body)`` when the caller
    has it already). Pure (no database). A plain line (``is_plain``) skips the Markdown parser:
    about 3-5 µs against 30-70 µs for the same line through markdown-it-py, and 100-300 µs for a
    formatted body (``python -m bench.render``, bench/RESULTS.md); both go through the sanitiser,
    except a plain line without a no-break space, which the sanitiser gives back unchanged (it
    writes U+00A0 as ``&nbsp;``, and a plain line has no ``&``, ``<`` or ``>`` to escape; tested
    over every code point): 1-2 µs against 17 with it.
    Never raises: should the renderer fail, the body is escaped into one paragraph."""
    if body and is_plain(body):
        if "\u00a0" not in body:
            return f"<p>{body}</p>"
        return sanitize(f"<p>{html.escape(body, quote=False)}</p>")
    return render_markdown(body, mentions.parse(body) if parsed is None else parsed)


def render_markdown(body: str, parsed: "mentions.Parsed") -> str:
    """``render`` through the Markdown parser whatever the body (``render`` skips it for a plain
    line, with the same result)."""
    try:
        rendered = _md.render(body, {"mentions": parsed})
    except Exception:  # pragma: no cover - markdown-it-py renders any text; belt and braces
        logger.exception("rendering a message body failed; shown as text")
        rendered = "<p>" + html.escape(body).replace("\n", "<br>\n") + "</p>\n"
    return sanitize(rendered).strip()


# A tag of ``render``'s output. That HTML is the sanitiser's serialisation, so every ``<`` and
# ``>`` in text is escaped, and no attribute value holds a ``>`` (hrefs are percent-encoded by
# the parser's normalizeLink, ``data-user`` is a username, the others are fixed words): each
# ``<`` starts a tag and the next ``>`` ends it. Checked against nh3's own text extraction
# (every tag removed, the text kept) on generated bodies: tests/test_replies.py.
_TAG = re.compile(r"<[^>]*>")


def plain_text(body_html: str) -> str:
    """The text a reader sees in ``body_html`` (``render``'s output, as stored), without the
    markup: a link is its text, code its content (no backticks), a mention ``@name``, entities
    decoded (``&lt;`` is ``<``), and each run of white space, line and paragraph breaks
    included, one space; trimmed. For previews that clients insert as text, never as HTML (a
    reply's quote: ``rooms.replies``). Pure and cheap: 1-4 µs for a chat message, where nh3's
    parser takes 5-25 µs for the same text (so ``_TAG``, not a parse: it is called for every
    reply of every history page)."""
    if "<" in body_html:
        body_html = _TAG.sub("", body_html)
    if "&" in body_html:
        body_html = html.unescape(body_html)
    return " ".join(body_html.split())
