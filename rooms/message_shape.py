"""The message shape for a list of messages, built from rows: the read path of REST history,
the socket's resume and fetch, threads, the room page's first history, and the messages of
``GET /api/search/`` (``rooms.search.search_results_data``) and ``GET /api/mentions/``
(``rooms.mentions.mentions_for_data``), which read ``COLUMNS`` in their own statements.

``messages_data(queryset)`` returns exactly ``MessageSerializer(messages, many=True).data``
(the same keys in the same order, the same values, so the same JSON text; see
``rooms.serializers`` for the shape) for the messages the queryset selects, in its order, but
without DRF's per-field machinery and without model instances: one ``values_list`` query (the
message joined to its room, its author, its parent and the parent's author), then one query
each for the mentions (only when a live body has ``@``), the reactions and the attachments of
the whole list (``rooms.mentions.by_message``, ``rooms.reactions.by_message``,
``rooms.attachments.by_message``). A deleted message shows ``"body": ""``, ``"body_html":
""``, no mentions, no reactions, no attachments and ``"mentions_room": false``, as in the
serializer.

``room_list_data`` is the same shape for one room's list (REST history, the socket's resume
and fetch, the room page) in **one** statement on PostgreSQL: the room (by id, or by slug with
the caller's visibility checked in the same statement), its messages, their authors and
parents, and the mentions, reactions and attachments as JSON aggregates per message, with the
timestamps formatted by PostgreSQL when the output is UTC. ``rooms.selectors`` uses it on
PostgreSQL and ``messages_data`` elsewhere.

``MessageSerializer`` stays the shape's definition (the OpenAPI schema, single messages);
``tests/test_message_shape.py`` and ``tests/test_history_route.py`` check this module against
it, field by field and as JSON.

Measured (``python -m bench history``, node CPU): see ``bench/RESULTS.md``.
"""

import functools
import json

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.settings import ISO_8601, api_settings

from . import mentions as mentions_module
from . import reactions as reactions_module
from .replies import excerpt

# The columns one message's shape reads, in this order (the row's indexes below).
COLUMNS = (
    "id",
    "room__slug",
    "seq",
    "author_id",
    "author__username",
    "author__first_name",
    "body",
    "created_at",
    "server_id",
    "edited_at",
    "deleted_at",
    "mentions_room",
    "body_html",
    "reply_to__seq",
    "reply_to__author_id",
    "reply_to__author__username",
    "reply_to__author__first_name",
    "reply_to__body_html",
    "reply_to__deleted_at",
    "reply_count",
)


def _datetime_formatter():
    """A function giving DRF's ``DateTimeField.to_representation`` of a datetime (None for
    None): with ``USE_TZ`` and the ISO 8601 output format, ``astimezone`` of the current time
    zone, ``isoformat()`` and a trailing ``+00:00`` written ``Z``, done here without the field's
    per-call lookups; otherwise (or for a naive datetime) the field itself."""
    from rest_framework.fields import DateTimeField

    field = DateTimeField(read_only=True)
    if not settings.USE_TZ or not isinstance(api_settings.DATETIME_FORMAT, str):
        return lambda value: None if value is None else field.to_representation(value)
    if api_settings.DATETIME_FORMAT.lower() != ISO_8601:
        return lambda value: None if value is None else field.to_representation(value)
    zone = timezone.get_current_timezone()

    def iso(value):
        if value is None:
            return None
        if value.tzinfo is None:
            return field.to_representation(value)
        text = value.astimezone(zone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return iso


def messages_data(queryset: QuerySet) -> list[dict]:
    """The message shape (``MessageSerializer(..., many=True).data``, as plain dicts) of each
    message ``queryset`` selects, in its order. ``queryset``: a ``Message`` queryset, filtered,
    ordered and sliced by the caller (a slice is kept); its ``select_related`` is not needed
    (the row query joins what it reads). Queries: one for the rows, then for a non-empty list
    one for reactions, one for attachments and one for mentions when a live body has ``@``
    (so 0 to 4 in all, whatever the length). Raises nothing of its own (database errors pass
    through)."""
    return rows_data(list(queryset.values_list(*COLUMNS)))


def rows_data(rows: list[tuple]) -> list[dict]:
    """The message shapes of ``rows``, tuples of ``COLUMNS`` in that order (``messages_data``'s
    second half: the mentions, reactions and attachments of the live ones read in one query
    each)."""
    if not rows:
        return []
    from .attachments import attachment_data
    from .attachments import by_message as attachments_by_message

    live = [row[0] for row in rows if row[10] is None]
    mentioned = mentions_module.by_message([row[0] for row in rows if row[10] is None and "@" in row[6]])
    reactions = reactions_module.by_message(live)
    files = {pk: [attachment_data(a) for a in found] for pk, found in attachments_by_message(live).items()}
    return _shapes(rows, _datetime_formatter(), mentioned, reactions, files)


def _shapes(
    rows: list[tuple],
    iso,
    mentioned: dict[int, list[dict]],
    reactions: dict[int, list[dict]],
    files: dict[int, list[dict]],
) -> list[dict]:
    """The message shapes of ``rows`` (tuples starting with ``COLUMNS``, in that order; further
    items are ignored), ``iso`` formatting ``created_at`` and ``edited_at`` as they come, with
    the mentions, reactions and attachments (``attachment_data`` shapes) of the live messages
    by message id."""
    out = []
    for (
        pk,
        room_slug,
        seq,
        author_id,
        username,
        display_name,
        body,
        created_at,
        server_id,
        edited_at,
        deleted_at,
        mentions_room,
        body_html,
        parent_seq,
        parent_author_id,
        parent_username,
        parent_display_name,
        parent_body_html,
        parent_deleted_at,
        reply_count,
        *_,
    ) in rows:
        deleted = deleted_at is not None
        if parent_seq is None:  # answers none (or the parent's row is gone)
            parent = None
        else:
            parent_deleted = parent_deleted_at is not None
            parent = {
                "seq": parent_seq,
                "author": {
                    "id": parent_author_id,
                    "username": parent_username,
                    "display_name": parent_display_name,
                },
                "excerpt": "" if parent_deleted else excerpt(parent_body_html),
                "deleted": parent_deleted,
            }
        out.append(
            {
                "id": pk,
                "room": room_slug,
                "seq": seq,
                "author": {"id": author_id, "username": username, "display_name": display_name},
                "body": "" if deleted else body,
                "created_at": iso(created_at),
                "server_id": server_id,
                "edited_at": iso(edited_at),
                "deleted": deleted,
                "mentions": [] if deleted else mentioned.get(pk, []),
                "mentions_room": mentions_room and not deleted,
                "body_html": "" if deleted else body_html,
                "reactions": [] if deleted else reactions.get(pk, []),
                "reply_to": parent_seq,
                "parent": parent,
                "reply_count": reply_count,
                "attachments": (files.get(pk) or []) if not deleted else [],
            }
        )
    return out


# --- One statement for a room's list (PostgreSQL) -------------------------------------------------


def _utc_text(text: str | None) -> str | None:
    """DRF's ISO 8601 text of a UTC timestamp from ``to_char(ts AT TIME ZONE 'UTC',
    'YYYY-MM-DD"T"HH24:MI:SS.US')``: ``Z`` for the zone, and no fraction when the microseconds
    are 0 (as ``datetime.isoformat``)."""
    if text is None:
        return None
    return text[:-7] + "Z" if text.endswith(".000000") else text + "Z"


def _utc_output() -> bool:
    """Whether ``_datetime_formatter`` would write UTC timestamps as ``...Z`` (``USE_TZ``, DRF's
    ISO 8601 output, the current time zone UTC): then PostgreSQL formats them (``_utc_text``)."""
    return (
        settings.USE_TZ
        and isinstance(api_settings.DATETIME_FORMAT, str)
        and api_settings.DATETIME_FORMAT.lower() == ISO_8601
        and timezone.get_current_timezone_name() == "UTC"
    )


@functools.cache
def _list_sql(
    *, by_slug: bool, after: bool, before: bool, through: bool, upto_last: bool, newest: bool, utc_text: bool
) -> str:
    """The one statement of ``room_list_data`` for this combination of its arguments."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from .models import Attachment, Membership, Mention, Message, Reaction, Room

    def table(model) -> str:
        return connection.ops.quote_name(model._meta.db_table)

    def ts(column: str) -> str:
        if not utc_text:
            return column
        return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')"""

    user = table(get_user_model())
    scan = ["s.room_id = r.id"]
    scan += ["s.seq > %(after)s"] if after else []
    scan += ["s.seq < %(before)s"] if before else []
    scan += ["s.seq <= %(through)s"] if through else []
    scan += ["s.seq <= r.last_seq"] if upto_last else []
    if by_slug:
        room = (
            "r.slug = %(slug)s AND (NOT r.is_private OR EXISTS (SELECT 1 FROM "
            f"{table(Membership)} ms WHERE ms.room_id = r.id AND ms.user_id = %(user)s "
            "AND ms.banned_at IS NULL))"
        )
    else:
        room = "r.id = %(room)s"
    return f"""SELECT m.id, r.slug, m.seq, m.author_id, a.username, a.first_name, m.body,
 {ts("m.created_at")}, m.server_id, {ts("m.edited_at")}, m.deleted_at, m.mentions_room, m.body_html,
 p.seq, p.author_id, pa.username, pa.first_name, p.body_html, p.deleted_at, m.reply_count,
 CASE WHEN m.deleted_at IS NULL AND strpos(m.body, '@') > 0 THEN (
  SELECT json_agg(json_build_array(x.user_id, u.username) ORDER BY x.user_id)::text
  FROM {table(Mention)} x JOIN {user} u ON u.id = x.user_id WHERE x.message_id = m.id) END,
 CASE WHEN m.deleted_at IS NULL THEN (
  SELECT json_agg(json_build_array(x.emoji, x.user_id, u.username) ORDER BY x.id)::text
  FROM {table(Reaction)} x JOIN {user} u ON u.id = x.user_id WHERE x.message_id = m.id) END,
 CASE WHEN m.deleted_at IS NULL THEN (
  SELECT json_agg(json_build_array(x.id, x.name, x.size, x.content_type, x.thumbnail, x.width,
   x.height) ORDER BY x.id)::text
  FROM {table(Attachment)} x WHERE x.message_id = m.id) END,
 r.last_seq
FROM {table(Room)} r
LEFT JOIN LATERAL (
 SELECT s.id, s.seq, s.author_id, s.body, s.created_at, s.server_id, s.edited_at, s.deleted_at,
  s.mentions_room, s.body_html, s.reply_to_id, s.reply_count
 FROM {table(Message)} s WHERE {" AND ".join(scan)}
 ORDER BY s.seq {"DESC" if newest else "ASC"} LIMIT %(limit)s
) m ON TRUE
LEFT JOIN {user} a ON a.id = m.author_id
LEFT JOIN {table(Message)} p ON p.id = m.reply_to_id
LEFT JOIN {user} pa ON pa.id = p.author_id
WHERE {room}
ORDER BY m.seq"""


def room_list_data(
    *,
    limit: int,
    room_id: int | None = None,
    slug: str | None = None,
    user_id: int | None = None,
    after_seq: int | None = None,
    before_seq: int | None = None,
    through_seq: int | None = None,
    upto_last_seq: bool = False,
) -> tuple[int, list[dict]] | None:
    """A room's messages in their shape (exactly ``messages_data``'s, so
    ``MessageSerializer``'s) and the room's ``last_seq``, in **one** statement on PostgreSQL
    (the room, its messages, their authors and parents, and the mentions, reactions and
    attachments as JSON aggregates); the callers (``rooms.selectors``) use ``messages_data``
    on other databases.

    The room: ``room_id``, or ``slug`` (as stored: NFKC-normalised by the caller) when the user
    ``user_id`` may see it (a public room, or a private one they are a member of and not banned
    from: ``selectors.room_visible``'s rule). The messages: up to ``limit`` with ``seq >
    after_seq`` (the oldest ones) when given, else the newest ones; with ``seq < before_seq``
    and ``seq <= through_seq`` when given, and with ``upto_last_seq`` only up to the room's
    ``last_seq`` read by the same statement. Always returned oldest first.

    Returns ``(last_seq, shapes)``, or None when there is no such room (or the user may not
    see it). Raises nothing of its own (database errors pass through)."""
    from django.db import connection

    sql, params, utc_text = _list_query(
        limit=limit,
        room_id=room_id,
        slug=slug,
        user_id=user_id,
        after_seq=after_seq,
        before_seq=before_seq,
        through_seq=through_seq,
        upto_last_seq=upto_last_seq,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return _list_result(rows, utc_text)


async def room_list_data_async(**kwargs) -> tuple[int, list[dict]] | None:
    """``room_list_data`` (the same arguments, the same result) as one statement sent from the
    event loop (``chatsite.async_db``: PostgreSQL only). Raises ``psycopg.Error`` /
    ``psycopg_pool.PoolTimeout``."""
    from chatsite import async_db

    sql, params, utc_text = _list_query(**kwargs)
    return _list_result(await async_db.fetchall(sql, params), utc_text)


def _list_query(
    *,
    limit: int,
    room_id: int | None = None,
    slug: str | None = None,
    user_id: int | None = None,
    after_seq: int | None = None,
    before_seq: int | None = None,
    through_seq: int | None = None,
    upto_last_seq: bool = False,
) -> tuple[str, dict, bool]:
    utc_text = _utc_output()
    sql = _list_sql(
        by_slug=slug is not None,
        after=after_seq is not None,
        before=before_seq is not None,
        through=through_seq is not None,
        upto_last=upto_last_seq,
        newest=after_seq is None,
        utc_text=utc_text,
    )
    params = {
        "limit": limit,
        "room": room_id,
        "slug": slug,
        "user": user_id,
        "after": after_seq,
        "before": before_seq,
        "through": through_seq,
    }
    return sql, params, utc_text


def _list_result(rows: list[tuple], utc_text: bool) -> tuple[int, list[dict]] | None:
    if not rows:
        return None
    last_seq = rows[0][-1]
    if rows[0][0] is None:  # the room, without a message in the range
        return last_seq, []
    mentioned: dict[int, list[dict]] = {}
    reacted: list[tuple] = []
    files: dict[int, list[dict]] = {}
    if any(row[20] is not None or row[21] is not None or row[22] is not None for row in rows):
        from .attachments import attachment_shape

        for row in rows:
            pk = row[0]
            if row[20] is not None:
                mentioned[pk] = [{"id": user, "username": name} for user, name in json.loads(row[20])]
            if row[21] is not None:
                reacted += [(pk, emoji, user, name) for emoji, user, name in json.loads(row[21])]
            if row[22] is not None:
                files[pk] = [attachment_shape(*fields) for fields in json.loads(row[22])]
    reactions = reactions_module.group_rows(reacted) if reacted else {}
    return last_seq, _shapes(
        rows, _utc_text if utc_text else _datetime_formatter(), mentioned, reactions, files
    )
