"""Text rules shared by every way in: what counts as visible, and what PostgreSQL and UTF-8 can
store. ``rooms.serializers`` applies them to message bodies (DRF errors, frame codes);
``Room.clean`` to room names and descriptions (Django field errors, so REST, the create-room
page and admin all refuse with the same texts)."""

import re

import regex
from django.utils.translation import gettext, gettext_lazy

# Characters that show nothing on their own. From Unicode's character properties (the ``regex``
# module's tables): White_Space; Default_Ignorable_Code_Point (DerivedCoreProperties.txt: zero
# width and joiner characters, soft hyphen, the Hangul fillers U+115F, U+1160, U+3164 and
# U+FFA0, the combining grapheme joiner U+034F, variation selectors, tags); format (Cf) and
# control (Cc) characters, except the format characters that do show a sign
# (Prepended_Concatenation_Mark: U+0600-0605, U+06DD ARABIC END OF AYAH, U+070F, U+08E2, U+110BD,
# U+110CD). Plus two graphic characters fonts draw blank and that are used as "invisible text"
# for that reason: U+2800 BRAILLE PATTERN BLANK and U+1D159 MUSICAL SYMBOL NULL NOTEHEAD.
NOTHING_VISIBLE = regex.compile(
    r"[[\p{White_Space}\p{Default_Ignorable_Code_Point}\p{Cf}\p{Cc}\u2800\U0001D159]"
    r"--\p{Prepended_Concatenation_Mark}]*",
    regex.V1,
)

# Control characters (Cc: C0, DEL, C1), and the same without line feed, carriage return (a
# browser's textarea sends CR LF) and tab, which a multi-line description may hold.
_CONTROL = regex.compile(r"\p{Cc}")
_CONTROL_BUT_LINES = regex.compile(r"[\p{Cc}--[\n\r\t]]", regex.V1)
# The controls a message body refuses (``rooms.serializers``), in ``re`` (faster, on every send):
# C0, DEL and C1, but the ones that break lines or indent: tab, line feed, carriage return, and
# the vertical tab, form feed and next line that text pasted from office programs or source
# code holds (Unicode counts all three as line breaks).
CONTROL_BUT_LINES_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
# Bidirectional embedding, override and isolate controls (U+202A-202E, U+2066-2069): in a name
# they reverse or reorder the text after them ("alice" shown as "ecila"), a spoofing tool.
_BIDI_CONTROLS = regex.compile(r"[\u202A-\u202E\u2066-\u2069]")

# A default-ignorable character in a name (zero-width space and joiners, word joiner, soft
# hyphen, LRM/RLM, the Hangul fillers, variation selectors, tags...): "a\u200bb" shows as "ab",
# a second room or person that looks like the first. Except where a script or an emoji needs
# one (the contexts of IDNA's ContextJ rules, RFC 5892, and of Unicode's emoji sequences): ZWJ
# or ZWNJ after a virama; ZWNJ between joining letters (Persian "می‌خواهم"); ZWJ in an emoji ZWJ
# sequence; VS15/VS16 after an emoji character, after a digit, # or * only in a keycap
# ("1\ufe0f\u20e3"; "1\ufe0f" alone shows as "1"); other variation selectors after a Han
# ideograph or a Mongolian letter (with the Mongolian vowel separator); tag characters in a
# whole emoji tag sequence, U+1F3F4 then tags then CANCEL TAG U+E007F (the flags of Scotland,
# Wales, England; without its end it shows as a black flag with hidden text after it).
_INVISIBLE_IN_NAME = regex.compile(
    r"""(?!
        (?<=\p{ccc=9}) [\u200C\u200D]
      | (?<=[\p{jt=D}\p{jt=L}]\p{jt=T}*) \u200C (?=\p{jt=T}*[\p{jt=D}\p{jt=R}])
      | (?<=[\p{Extended_Pictographic}\p{Emoji_Modifier}\uFE0F]) \u200D (?=\p{Extended_Pictographic})
      | (?<=\p{Emoji}) (?<![0-9\#*]) [\uFE0E\uFE0F]
      | (?<=[0-9\#*]) [\uFE0E\uFE0F] (?=\u20E3)
      | (?<=\p{Han}) [\uFE00-\uFE0F\U000E0100-\U000E01EF]
      | (?<=\p{Mongolian}) [\u180B-\u180F]
      | (?<=[\U0001F3F4\U000E0020-\U000E007E]) [\U000E0020-\U000E007E] (?=[\U000E0020-\U000E007E]*\U000E007F)
      | (?<=\U0001F3F4[\U000E0020-\U000E007E]+) \U000E007F
    )\p{Default_Ignorable_Code_Point}""",
    regex.VERBOSE,
)


# Any default-ignorable character (Unicode's property, as in NOTHING_VISIBLE). A username is an
# @mention and a URL: no script needs a joiner there, and Django's validator (``\w``) lets
# through the ones that are letters, the Hangul fillers U+115F, U+1160, U+3164 and U+FFA0
# ("alice" + U+3164 shows as "alice").
_INVISIBLE = regex.compile(r"\p{Default_Ignorable_Code_Point}")


def username_errors(value: str) -> list[str]:
    """The errors of a username under the site's rule beside Django's validator: no invisible
    (default-ignorable) character at all. Empty list: fine."""
    if isinstance(value, str) and _INVISIBLE.search(value):
        return [
            gettext("The %(what)s may not contain invisible characters such as a zero-width space (U+200B).")
            % {"what": LABEL_NAMES["username"]}
        ]
    return []


def has_visible(value: str) -> bool:
    """Whether ``value`` has at least one character that shows something (``NOTHING_VISIBLE``)."""
    return not NOTHING_VISIBLE.fullmatch(value)


def is_valid_text(value) -> bool:
    """True for a str that UTF-8 can encode and PostgreSQL can store (no lone surrogate, no NUL)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ``what`` of label_errors, in the active language (the sentences are translated whole around it).
LABEL_NAMES = {
    "name": gettext_lazy("name"),
    "description": gettext_lazy("description"),
    "display name": gettext_lazy("display name"),
    "username": gettext_lazy("username"),
}


def label_errors(value: str, *, what: str, lines: bool = False) -> list[str]:
    """The errors of a name-like text (a room's name, a display name; with ``lines``, a room's
    description, where line breaks and tabs are allowed): NUL or a lone surrogate, a control
    character, a text-direction control, nothing visible, and in a name (not with ``lines``) an
    invisible character among visible ones (``_INVISIBLE_IN_NAME``: "a\u200bb"). Empty list:
    fine. An empty ``value`` is left to the field's own ``blank`` rule."""
    if not isinstance(value, str):
        return []
    params = {"what": LABEL_NAMES.get(what, what)}
    if not is_valid_text(value):
        return [gettext("The %(what)s may not contain NUL characters or lone surrogates.") % params]
    if (_CONTROL_BUT_LINES if lines else _CONTROL).search(value):
        return [gettext("The %(what)s may not contain control characters.") % params]
    if _BIDI_CONTROLS.search(value):
        return [
            gettext("The %(what)s may not contain text-direction controls (U+202A-202E, U+2066-2069).")
            % params
        ]
    if value and not has_visible(value):
        return [gettext("The %(what)s has nothing visible (only spaces or invisible characters).") % params]
    if not lines and _INVISIBLE_IN_NAME.search(value):
        return [
            gettext("The %(what)s may not contain invisible characters such as a zero-width space (U+200B).")
            % params
        ]
    return []
