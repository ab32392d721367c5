"""Search over messages (reads only): ``GET /api/search/`` and the search page (``/search/``).

**What is found.** The query ``q`` is split on whitespace into terms; a message matches when its
*current* body contains every term, case-insensitively, anywhere (a substring, not only a whole
word), so a Korean or Japanese word is found inside a longer word written without spaces ("대화"
in "일반대화방입니다") and "deploy" finds "deployed". Edits replace ``Message.body`` in place
(``rooms.services.message_edit``): no earlier version is stored, so text that an edit removed
is never found. Deleted messages are never found (``deleted_at IS NULL``, also the index's
predicate).

**Where.** Without ``room``: the rooms the user is a member of and not banned from (group rooms
and direct messages), as Slack searches the channels you have joined: a public room you have
never joined is left out (its history is readable, but it would flood results with rooms you do
not follow); search it by naming it. With ``room=<slug>``: that one room if the user may read
it: a member (not banned) or, for a public room, anyone not banned from it. A private room the
user is not in, or a room they are banned from, answers exactly as a room that does not exist
(404 ``not_found``). Authorization is in the one SQL statement that reads the page.

**Order and paging.** Newest first by message id (ids follow storage order across rooms; a
room's seq does not compare across rooms). ``before``: the cursor, a message id; the next page
is ``before=`` the ``next_before`` of the page (``null``: no more).

**Highlights.** ``highlights``: ``[[start, end], ...]``, sorted, non-overlapping ranges of the
body (Unicode code points, end exclusive) where a term occurs, case-insensitive: the page marks
them with ``<mark>`` around escaped text; an API client does the same. No HTML comes from here.

**Errors** (``QueryError``, REST 400 ``{"detail", "code"}``): ``query_empty`` (``q`` missing or
only whitespace), ``query_too_long`` (over ``QUERY_MAX_LENGTH``, 200 characters), ``query_too_short``
(one character: a single character matches nearly every message and no index serves it);
``invalid_text`` (NUL or a lone surrogate).

**The SQL, and why** (EXPLAIN ANALYZE on ``python -m bench search``'s 1,000,000 messages in
1,000 rooms, one user in 20 of them; figures in bench/RESULTS.md). One statement per page
(``page_sql``; then one loads the page's attachments, and one the mentions of found bodies
with ``@``)::

    SELECT message.*, author.*, room.* FROM rooms_message JOIN auth_user JOIN rooms_room
    WHERE room_id = ANY(ARRAY(SELECT room_id FROM rooms_membership
                              WHERE user_id = :user AND banned_at IS NULL))
      AND deleted_at IS NULL
      AND body ILIKE '%term1%' AND body LIKE '%용어%' ...   -- every term, a substring;
                                                            -- LIKE for terms without case
      [AND id < :before]
    ORDER BY id DESC LIMIT :limit + 1

- One GIN index, ``message_body_trgm_idx`` (``body gin_trgm_ops`` WHERE ``deleted_at IS NULL``:
  only current bodies of live messages; migration ``0006_message_search``). pg_trgm's trigrams
  answer ``ILIKE '%…%'`` in any script (Hangul, kana and kanji are alphanumeric to it under the
  database's UTF-8 locale), for every term of 3 characters or more.
- The room filter is ``= ANY(ARRAY(subquery))``, not ``IN (subquery)``: with ``IN`` the planner
  hash-joins *after* fetching every match of the term in all 1,000 rooms ("deploy": 7,103
  rows, 6,000 heap blocks, 48 ms); with the array it ANDs the trigram bitmap with the
  ``room_id`` index's bitmap before touching the table (141 heap blocks, 4 ms).
- No ``to_tsvector('simple', body)`` index, though one was planned: whole-word matching cannot
  find "대화" inside "일반대화방입니다" (Korean attaches particles: "회의는", "대화방에서"), so
  it could only be OR-ed beside the trigram condition, and the planner then ORs both bitmaps:
  "deploy" took 17.5 ms against 3.9 ms with the trigram condition alone, which already finds
  every whole word. Not keeping it also spares a second GIN update on every send (28 MB per
  million messages).
- Terms of 1–2 characters (common in Korean: "대화", "회의") have no trigram. The planner then
  either walks the primary key backwards from the newest message, filtering (fast when the
  term is common: "대화" 1.6 ms), or reads the user's rooms through the ``room_id`` index and
  filters (when it expects few matches: about 20,000 rows here, 33–80 ms on the loaded 2-core
  machine). The cost is bounded by the size of the user's rooms, not the table's; a user in
  rooms of millions of messages searching two-character words is the known slow case (a bigram
  index would serve it: measured at 75 MB and 97 s to build per million messages, and not
  faster here, because rechecking the table's rows dominated).
- Newest first by ``id`` with ``id < before`` as the cursor: stable under concurrent sends
  (new messages get larger ids and never shift older pages).
"""

import re
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL
from django.utils.translation import gettext_lazy as _

from .mentions import attach as attach_mentions
from .models import Membership, Message, Room
from .services import NotFound, ServiceError

QUERY_MIN_LENGTH = 2
QUERY_MAX_LENGTH = 200
DEFAULT_LIMIT = 20
MAX_LIMIT = 50
ID_MAX = 2**63 - 1

# (name, CREATE statement): the migration's index, word for word (a test compares it with
# pg_indexes; the bench drops and builds it around its COPY).
INDEXES = [
    (
        "message_body_trgm_idx",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS message_body_trgm_idx ON rooms_message "
        "USING gin (body gin_trgm_ops) WHERE deleted_at IS NULL",
    ),
]


class QueryError(ServiceError):
    """A query that cannot be searched: 400 with ``code`` one of ``query_empty``,
    ``query_too_long``, ``query_too_short``, ``invalid_text``."""

    status = 400

    def __init__(self, detail, code: str, params: dict | None = None):
        super().__init__(detail, params=params)
        self.code = code


@dataclass
class SearchPage:
    """One page: ``results`` (messages, newest first, with author, room and mentions loaded, and
    ``highlights`` set on each), ``next_before`` (the cursor of the next page, or None)."""

    results: list[Message]
    next_before: int | None


def parse_query(q: str | None) -> list[str]:
    """The terms of ``q`` (split on whitespace, duplicates dropped, case-insensitively), or
    ``QueryError``."""
    if q is None or not q.strip():
        raise QueryError(_("Type something to search for."), "query_empty")
    if len(q) > QUERY_MAX_LENGTH:
        raise QueryError(
            _("A search is at most %(max)s characters."), "query_too_long", {"max": QUERY_MAX_LENGTH}
        )
    if "\x00" in q or any(0xD800 <= ord(c) <= 0xDFFF for c in q):
        raise QueryError(_("The search is not valid text."), "invalid_text")
    if len(q.strip()) < QUERY_MIN_LENGTH:
        raise QueryError(
            _("A search is at least %(min)s characters."), "query_too_short", {"min": QUERY_MIN_LENGTH}
        )
    terms: dict[str, str] = {}
    for term in q.split():
        terms.setdefault(term.casefold(), term)
    return list(terms.values())


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _has_case(term: str) -> bool:
    return term.lower() != term or term.upper() != term


def _match(terms: list[str]) -> Q:
    """Every term a substring of the body: ``body ILIKE %s``, or ``body LIKE %s`` for a term
    with no cased letter (Hangul, kana, kanji, digits: case-folding them changes nothing, and
    PostgreSQL's ILIKE lower-cases each multibyte body first: 150 ms against 67 ms over the
    bench user's 20,000 messages). pg_trgm's index serves both. SQLite, which has no ILIKE,
    gets Django's ``icontains``."""
    if connection.vendor != "postgresql":
        q = Q()
        for term in terms:
            q &= Q(body__icontains=term)
        return q
    sql = " AND ".join(
        '"rooms_message"."body" ILIKE %s' if _has_case(t) else '"rooms_message"."body" LIKE %s' for t in terms
    )
    return Q(RawSQL(f"({sql})", [_like_pattern(t) for t in terms], output_field=BooleanField()))


def readable_room(*, user: AbstractBaseUser, slug: str) -> Room:
    """The room of ``room=<slug>`` if ``user`` may search it (see the module's "Where"), else
    ``NotFound`` (a private room they are not in, a room they are banned from, no such room)."""
    from .selectors import room_get

    room = room_get(slug=slug)
    if room is None:
        raise NotFound("No such room.")
    membership = Membership.objects.filter(room=room, user_id=user.pk).first()
    if membership is not None and membership.is_banned:
        raise NotFound("No such room.")
    if room.is_private and membership is None:
        raise NotFound("No such room.")
    return room


def _queryset(*, user: AbstractBaseUser, terms: list[str], room: Room | None, before: int | None, limit: int):
    if room is not None:
        qs = Message.objects.filter(room_id=room.pk)
    elif connection.vendor == "postgresql":  # = ANY(ARRAY(...)): see "The SQL, and why"
        member_t, message_t = Membership._meta.db_table, Message._meta.db_table
        qs = Message.objects.filter(
            RawSQL(
                f'"{message_t}"."room_id" = ANY(ARRAY(SELECT room_id FROM "{member_t}" '
                f"WHERE user_id = %s AND banned_at IS NULL))",
                [user.pk],
                output_field=BooleanField(),
            )
        )
    else:
        mine = Membership.objects.filter(user_id=user.pk, banned_at__isnull=True).values("room_id")
        qs = Message.objects.filter(room_id__in=mine)
    qs = qs.filter(deleted_at__isnull=True).filter(_match(terms))
    if before is not None:
        qs = qs.filter(pk__lt=before)
    return qs.select_related("author", "room").order_by("-pk")[: limit + 1]


def page_sql(
    *,
    user: AbstractBaseUser,
    terms: list[str],
    limit: int = DEFAULT_LIMIT,
    room: Room | None = None,
    before: int | None = None,
) -> tuple[str, tuple]:
    """The page's one SQL statement and its parameters (for EXPLAIN: the bench, the tests)."""
    qs = _queryset(user=user, terms=terms, room=room, before=before, limit=limit)
    return qs.query.get_compiler(using=qs.db).as_sql()


def highlights(body: str, terms: list[str]) -> list[list[int]]:
    """``[[start, end], ...]``: where the terms occur in ``body`` (code points, end exclusive,
    case-insensitive), sorted, overlapping or touching ranges merged."""
    spans = []
    for term in terms:
        for found in re.finditer(re.escape(term), body, re.IGNORECASE):
            spans.append((found.start(), found.end()))
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def search_messages(
    *,
    user: AbstractBaseUser,
    q: str | None,
    room: Room | None = None,
    before: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> SearchPage:
    """A page of ``user``'s search for ``q`` (see the module docstring): one SQL statement finds
    the page; one more loads the page's attachments, and one its mentions when a found body has
    ``@``. Raises ``QueryError``. ``room``: from ``readable_room`` (the caller checks it);
    ``before``: a message id; ``limit``: 1..50."""
    terms = parse_query(q)
    limit = max(1, min(int(limit), MAX_LIMIT))
    found = list(_queryset(user=user, terms=terms, room=room, before=before, limit=limit))
    from .attachments import attach as attach_attachments

    page = attach_attachments(attach_mentions(found[:limit]))
    for message in page:
        message.highlights = highlights(message.body, terms)
    return SearchPage(results=page, next_before=page[-1].pk if len(found) > limit else None)


def marked(body: str, spans: list[list[int]]) -> list[tuple[str, bool]]:
    """``body`` cut into ``(text, highlighted)`` pieces by ``spans`` (for the page's template,
    which escapes each piece and wraps the highlighted ones in ``<mark>``)."""
    pieces, at = [], 0
    for start, end in spans:
        if start > at:
            pieces.append((body[at:start], False))
        pieces.append((body[start:end], True))
        at = end
    if at < len(body):
        pieces.append((body[at:], False))
    return pieces
