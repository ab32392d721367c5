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

``MessageSerializer`` stays the shape's definition (the OpenAPI schema, single messages);
``tests/test_message_shape.py`` checks this module against it, field by field and as JSON.

Measured (``python -m bench history``, node CPU): see ``bench/RESULTS.md``.
"""

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.settings import ISO_8601, api_settings

from . import mentions as mentions_module
from . import reactions as reactions_module
from .replies import EXCERPT_LENGTH

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
    "reply_to__body",
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
    files = attachments_by_message(live)
    iso = _datetime_formatter()
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
        parent_body,
        parent_deleted_at,
        reply_count,
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
                "excerpt": "" if parent_deleted else parent_body[:EXCERPT_LENGTH],
                "deleted": parent_deleted,
            }
        attached = files.get(pk) if not deleted else None
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
                "attachments": [attachment_data(a) for a in attached] if attached else [],
            }
        )
    return out
