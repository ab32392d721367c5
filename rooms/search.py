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
(no term of 2+ characters and none a single Hangul, kana or CJK character: "a", "a b"; one
Latin letter matches nearly every message and no index serves it, while "밥" is a word);
``invalid_text`` (NUL or a lone surrogate).

**The SQL, and why** (EXPLAIN ANALYZE on ``python -m bench search``'s 1,000,000 messages in
1,000 rooms, one user in 20 of them; figures in bench/RESULTS.md). One statement per page
(``page_sql``; then, for ``GET /api/search/`` (``search_results_data``, the message shape of
``rooms.message_shape``), one each loads the page's reactions and attachments, and one the
mentions of found bodies with ``@``; the search page loads the attachments and mentions)::

    SELECT message.*, author.*, room.* FROM rooms_message JOIN auth_user JOIN rooms_room
    WHERE room_id = ANY(ARRAY(SELECT room_id FROM rooms_membership
                              WHERE user_id = :user AND banned_at IS NULL))
      AND deleted_at IS NULL
      [AND message_search_grams(body) @> ARRAY[lower('ok')]]  -- only if no term has 3+ chars
      AND body ILIKE '%term1%' AND body LIKE '%용어%' ...   -- every term, a substring;
                                                            -- LIKE for terms without case
      [AND id < :before]
    ORDER BY id DESC LIMIT :limit + 1

(or, for one term whose gram is common, the per-room walk below, then the page's messages by id).

- A GIN index, ``message_body_trgm_idx`` (``body gin_trgm_ops`` WHERE ``deleted_at IS NULL``:
  only current bodies of live messages; migration ``0006_message_search``). pg_trgm's trigrams
  answer ``ILIKE '%…%'`` in any script (Hangul, kana and kanji are alphanumeric to it under the
  database's UTF-8 locale), for every term of 3 characters or more.
- Both GIN indexes take a new body's keys into their pending lists (``fastupdate``); each node
  merges the lists after its sends, off the send path (``rooms.search_index``), so no send
  merges a full list itself and no search reads a long one.
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
- Terms of 1–2 characters (common in Korean: "회의", "밥"; English "ok") have no trigram.
  Without an index for them the planner walked the primary key backwards over every room,
  filtering (``서버 점검``: 1,000,000 rows, 218 ms), or read all of the user's rooms (20,000
  rows, 30–80 ms). A second GIN index, ``message_body_grams_idx`` (migration
  ``0010_message_search_grams``), indexes ``message_search_grams(body)``: every two-character
  substring of ``lower(body)`` and every character from U+1100 (so a one-character Korean word
  is found inside "밥을", "비빔밥"). When no term has 3 characters, the statement adds
  ``message_search_grams(body) @> ARRAY[lower(term)]`` for one of its terms of 2 characters (or
  a one-character CJK term; ``_index_gram``); ``ILIKE``/``LIKE`` stay as the exact check, so what is found is
  unchanged (a substring, in any script). The planner ANDs the grams bitmap with the rooms'
  (``커피``: 44,649 candidates in all rooms, 923 rows read, 9.6 ms; ``서버 점검``: 1,210
  rows read, 13 ms). A very common gram costs its posting list (``대화``: 195,538 rows in all
  rooms, 11 ms of the 19 ms). So a one-term query whose gram is common (in at least
  ``COMMON_GRAM_SHARE``, 8 %, of live messages by ``pg_stats.most_common_elems`` of the grams
  index, which ANALYZE keeps) walks each of the user's rooms (at most ``WALK_MAX_ROOMS``, 50)
  newest first through ``message_room_live_id_idx`` (``(room_id, id)`` of live messages),
  ``LATERAL``, every room stopping at ``limit + 1`` matches (``_walk_sql``), then loads those
  messages by id: about ``21 / share`` rows per room ("대화": 4–10 ms against 42–108 ms on
  the loaded machine). Costs: 92 MB and about 90 s to build per million messages, and about
  35 µs per send or edit to compute the grams (bench/RESULTS.md, 2026-12-05 "search2"). The
  function is not ``STRICT`` (migration 0012), so PostgreSQL inlines it; as a ``STRICT`` SQL
  function it was parsed and planned again in every statement that stored a message, about
  150 µs more of database CPU per send (bench/RESULTS.md, "Issue 16: session 22 pass"). Tried
  and not kept: walking each of the user's rooms newest first (a ``(room_id, id)`` index,
  ``LATERAL`` per room, a scan budget): 2–3 µs per row read, so a rare term still read the
  rooms' 10,000–20,000 newest rows (19–77 ms); a ``generate_series`` grams function (340 µs
  per body).
- Newest first by ``id`` with ``id < before`` as the cursor: stable under concurrent sends
  (new messages get larger ids and never shift older pages).
"""

import re
import time
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL
from django.utils.translation import gettext_lazy as _

from . import message_shape
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
    (
        "message_body_grams_idx",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS message_body_grams_idx ON rooms_message "
        "USING gin (message_search_grams(body)) WHERE deleted_at IS NULL",
    ),
    (
        "message_room_live_id_idx",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS message_room_live_id_idx ON rooms_message "
        "USING btree (room_id, id) WHERE deleted_at IS NULL",
    ),
]
TRIGRAM_LENGTH = 3
# A one-term query whose gram is in at least this share of live messages (ANALYZE's
# most_common_elems of message_body_grams_idx) walks each room newest first instead of reading
# the gram's posting list. Measured crossover on the bench (EXPLAIN ANALYZE, loaded machine):
# "대화" (19.9 %) walk 4-10 ms, index 42-108 ms; "배포" (8.5 %) walk 24-35 ms, index 32-47 ms;
# "커피" (4.6 %) walk 41-58 ms, index 19-30 ms. See "The SQL, and why".
COMMON_GRAM_SHARE = 0.08
# The walk reads about 21 / share rows per room: only for users in at most this many rooms.
WALK_MAX_ROOMS = 50
GRAM_SHARES_TTL = 600.0  # seconds a node keeps the gram shares it read from pg_stats
# (read at, shares): never read yet. Not 0.0: time.monotonic() counts from the machine's start,
# so on a machine up less than the TTL a node would not read pg_stats at all.
NEVER_READ: tuple[float, dict[str, float]] = (float("-inf"), {})
_gram_shares = NEVER_READ


def is_cjk(char: str) -> bool:
    """Whether one character is Hangul, kana or a CJK ideograph (and their compatibility and
    half-width forms): a one-character search term of these is a word ("밥", "茶"), and
    ``message_search_grams`` indexes each of them alone (it keeps every character from U+1100)."""
    cp = ord(char)
    return (
        0x1100 <= cp <= 0x11FF  # Hangul Jamo
        or 0x3040 <= cp <= 0x30FF  # hiragana, katakana
        or 0x3130 <= cp <= 0x318F  # Hangul compatibility Jamo
        or 0x3400 <= cp <= 0x9FFF  # CJK ideographs (extension A and unified)
        or 0xAC00 <= cp <= 0xD7AF  # Hangul syllables
        or 0xF900 <= cp <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF66 <= cp <= 0xFFDC  # half-width katakana and Hangul
        or 0x20000 <= cp <= 0x3FFFF  # CJK ideographs, supplementary planes
    )


def _index_gram(terms: list[str]) -> str | None:
    """The term whose gram the statement looks up in ``message_body_grams_idx``, or None when a
    term has 3+ characters (the trigram index serves the query) or none is indexed: the first
    term of 2 characters, else the first one-character CJK term. One term only: with two,
    the planner multiplies their default selectivities (0.5 % each), expects 25 rows of a
    million and skips ANDing the rooms' bitmap ("서버 점검": 7,999 heap blocks, 23–34 ms,
    against 1,005–1,210 blocks, 10–13 ms, with one)."""
    if any(len(t) >= TRIGRAM_LENGTH for t in terms):
        return None
    pairs = [t for t in terms if len(t) == 2]
    singles = [t for t in terms if len(t) == 1 and is_cjk(t)]
    return (pairs or singles or [None])[0]


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
    ``QueryError``: ``query_too_short`` when no term has 2 characters or more and none is one
    CJK character (``is_cjk``): "a", "a b" are refused, "밥", "ok", "a ok" are searched."""
    if q is None or not q.strip():
        raise QueryError(_("Type something to search for."), "query_empty")
    if len(q) > QUERY_MAX_LENGTH:
        raise QueryError(
            _("A search is at most %(max)s characters."), "query_too_long", {"max": QUERY_MAX_LENGTH}
        )
    if "\x00" in q or any(0xD800 <= ord(c) <= 0xDFFF for c in q):
        raise QueryError(_("The search is not valid text."), "invalid_text")
    terms: dict[str, str] = {}
    for term in q.split():
        terms.setdefault(term.casefold(), term)
    if not any(len(t) >= QUERY_MIN_LENGTH or is_cjk(t) for t in terms.values()):
        raise QueryError(
            _(
                "A search needs a word of at least %(min)s characters "
                "(one is enough in Korean, Japanese or Chinese)."
            ),
            "query_too_short",
            {"min": QUERY_MIN_LENGTH},
        )
    return list(terms.values())


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def gram_share(gram: str) -> float:
    """The share (0..1) of live messages whose grams hold ``gram``, from PostgreSQL's statistics
    of ``message_body_grams_idx`` (``pg_stats.most_common_elems``, kept by ANALYZE); 0.0 for a
    gram not among them (rarer than the least common listed one) or before any ANALYZE. Read
    once per node every ``GRAM_SHARES_TTL`` seconds."""
    global _gram_shares
    read_at, shares = _gram_shares
    if time.monotonic() - read_at > GRAM_SHARES_TTL:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT unnest(most_common_elems::text::text[]), unnest(most_common_elem_freqs) "
                "FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'message_body_grams_idx'"
            )
            shares = {gram: share for gram, share in cur.fetchall() if gram is not None}
        _gram_shares = (time.monotonic(), shares)
    return shares.get(gram.lower(), 0.0)


def _has_case(term: str) -> bool:
    return term.lower() != term or term.upper() != term


def _text_sql(terms: list[str]) -> tuple[str, list[str]]:
    """The exact check: every term a substring of ``"rooms_message"."body"`` (SQL, params)."""
    sql = " AND ".join(
        '"rooms_message"."body" ILIKE %s' if _has_case(t) else '"rooms_message"."body" LIKE %s' for t in terms
    )
    return sql, [_like_pattern(t) for t in terms]


def _match(terms: list[str]) -> Q:
    """Every term a substring of the body: ``body ILIKE %s``, or ``body LIKE %s`` for a term
    with no cased letter (Hangul, kana, kanji, digits: case-folding them changes nothing, and
    PostgreSQL's ILIKE lower-cases each multibyte body first: 150 ms against 67 ms over the
    bench user's 20,000 messages). pg_trgm's index serves both. SQLite (``make run``), whose
    ``LIKE`` and ``lower()`` fold ASCII letters only, compares the body lower-cased by Python
    (``chatsite_lower``, registered on each SQLite connection by ``rooms.apps``), so "ünïcö"
    finds "Ünïcödé" there too, as PostgreSQL's ``ILIKE`` does."""
    if connection.vendor == "sqlite":
        q = Q()
        for term in terms:
            q &= Q(
                RawSQL(
                    'instr(chatsite_lower("rooms_message"."body"), %s) > 0',
                    [term.lower()],
                    output_field=BooleanField(),
                )
            )
        return q
    if connection.vendor != "postgresql":
        q = Q()
        for term in terms:
            q &= Q(body__icontains=term)
        return q
    sql, params = _text_sql(terms)
    gram = _index_gram(terms)
    if gram is not None:
        # No term has a trigram: the grams index finds the candidates of one term (see "The
        # SQL, and why"); lower() in SQL, as message_search_grams lower-cases the body.
        sql = f'message_search_grams("rooms_message"."body") @> ARRAY[lower(%s)]::text[] AND {sql}'
        params = [gram, *params]
    return Q(RawSQL(f"({sql})", params, output_field=BooleanField()))


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


def _walk_rooms(*, user: AbstractBaseUser, terms: list[str], room: Room | None) -> list[int] | None:
    """The rooms to walk newest first (``_walk_sql``), or None for the one statement: a walk
    only for one term whose gram is common (``COMMON_GRAM_SHARE``) and at most
    ``WALK_MAX_ROOMS`` rooms (the user's, not banned; or the one ``room``)."""
    if connection.vendor != "postgresql" or len(terms) != 1:
        return None
    gram = _index_gram(terms)
    if gram is None or gram_share(gram) < COMMON_GRAM_SHARE:
        return None
    if room is not None:
        return [room.pk]
    rooms = list(
        Membership.objects.filter(user_id=user.pk, banned_at__isnull=True).values_list("room_id", flat=True)
    )
    return rooms if len(rooms) <= WALK_MAX_ROOMS else None


def _walk_sql(*, rooms: list[int], terms: list[str], before: int | None, limit: int) -> tuple[str, list]:
    """The ids of a page, newest first, by walking each room's ``message_room_live_id_idx``
    backwards (``LATERAL``), each stopping at ``limit + 1`` matches; the merged top
    ``limit + 1`` are the page's (every message a room's walk skipped is older than its own
    ``limit + 1`` matches)."""
    text, params = _text_sql(terms)
    cursor = 'AND "rooms_message"."id" < %s' if before is not None else ""
    sql = (
        'SELECT x.id FROM unnest(%s::bigint[]) AS r(room_id) CROSS JOIN LATERAL (SELECT "rooms_message"."id" '
        'FROM "rooms_message" WHERE "rooms_message"."room_id" = r.room_id AND "rooms_message"."deleted_at" IS NULL '
        f'AND {text} {cursor} ORDER BY "rooms_message"."id" DESC LIMIT %s) x ORDER BY x.id DESC LIMIT %s'
    )
    return sql, [rooms, *params, *([before] if before is not None else []), limit + 1, limit + 1]


def page_sql(
    *,
    user: AbstractBaseUser,
    terms: list[str],
    limit: int = DEFAULT_LIMIT,
    room: Room | None = None,
    before: int | None = None,
) -> tuple[str, tuple]:
    """The page's first SQL statement and its parameters (for EXPLAIN: the bench, the tests):
    the walk's (``_walk_sql``) when it applies, else the one statement that reads the page."""
    rooms = _walk_rooms(user=user, terms=terms, room=room)
    if rooms is not None:
        return _walk_sql(rooms=rooms, terms=terms, before=before, limit=limit)
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


def _found(*, user: AbstractBaseUser, terms: list[str], room: Room | None, before: int | None, limit: int):
    """The page's messages (up to ``limit + 1``, newest first) as a ``Message`` queryset, not yet
    run: the one statement (``_queryset``), or, for a walk, the walk's ids (its statement runs
    here, after ``_walk_rooms``' membership read) and then their messages by id."""
    rooms = _walk_rooms(user=user, terms=terms, room=room)
    if rooms is None:
        return _queryset(user=user, terms=terms, room=room, before=before, limit=limit)
    with connection.cursor() as cur:
        cur.execute(*_walk_sql(rooms=rooms, terms=terms, before=before, limit=limit))
        ids = [row[0] for row in cur.fetchall()]
    return Message.objects.filter(pk__in=ids).select_related("author", "room").order_by("-pk")


def search_messages(
    *,
    user: AbstractBaseUser,
    q: str | None,
    room: Room | None = None,
    before: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> SearchPage:
    """A page of ``user``'s search for ``q`` (see the module docstring) as ``Message``
    instances, for the search page: one SQL statement finds the page (two for a walk: the ids,
    then their messages); one more loads the page's attachments, and one its mentions when a
    found body has ``@`` (reactions and parents are not loaded: the API's shape comes from
    ``search_results_data``). Raises ``QueryError``. ``room``: from ``readable_room`` (the
    caller checks it); ``before``: a message id; ``limit``: 1..50."""
    terms = parse_query(q)
    limit = max(1, min(int(limit), MAX_LIMIT))
    found = list(_found(user=user, terms=terms, room=room, before=before, limit=limit))
    from .attachments import attach as attach_attachments

    page = attach_attachments(attach_mentions(found[:limit]))
    for message in page:
        message.highlights = highlights(message.body, terms)
    return SearchPage(results=page, next_before=page[-1].pk if len(found) > limit else None)


def search_results_data(
    *,
    user: AbstractBaseUser,
    q: str | None,
    room: Room | None = None,
    before: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> tuple[list[dict], int | None]:
    """``search_messages``' page in the wire shape of ``GET /api/search/``: ``(results,
    next_before)``, ``results`` exactly ``SearchResultSerializer(page.results, many=True).data``
    (``[{"room": slug, "message": {...the message shape...}, "highlights": [[start, end],
    ...]}, ...]``, newest first; the message shapes from ``rooms.message_shape``), ``next_before``
    the cursor of the next page or None. The same messages, found by the same statement (the
    same authorization). Queries, whatever ``limit``: the page's statement reading the shape's
    columns (a walk: the user's rooms, the walk's ids, then the page by id), then one each for
    reactions and attachments and one for mentions when a found body has ``@``: 3 or 4 (5 or 6
    for a walk; a query without a trigram may add one read of ``pg_stats``, once per node every
    ``GRAM_SHARES_TTL``). Raises ``QueryError``; arguments as ``search_messages``."""
    terms = parse_query(q)
    limit = max(1, min(int(limit), MAX_LIMIT))
    found = _found(user=user, terms=terms, room=room, before=before, limit=limit)
    rows = list(found.values_list(*message_shape.COLUMNS))
    page = rows[:limit]
    # Highlights from the shape's body: a message deleted between a walk's two statements
    # shows as deleted, with nothing of its text, not even where the terms were.
    results = [
        {"room": shape["room"], "message": shape, "highlights": highlights(shape["body"], terms)}
        for shape in message_shape.rows_data(page)
    ]
    return results, page[-1][0] if len(rows) > limit else None


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
