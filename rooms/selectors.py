"""Reads. Each function is sync; async callers wrap it with ``database_sync_to_async``."""

import re

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet

from . import message_shape
from .mentions import attach as attach_mentions
from .models import SLUG_MAX_LENGTH, Membership, Message, Room, normalize_slug
from .reactions import attach as attach_reactions

# What the message shape reads beyond the row, joined in one query (``MessageSerializer``).
MESSAGE_RELATED = ("author", "room", "reply_to__author")

# Letters and digits of any script, "-" and "_" (Django's Unicode slug): nothing else from a URL
# (a NUL, a slash, a control character) reaches the database.
_SLUG_RE = re.compile(rf"[-\w]{{1,{SLUG_MAX_LENGTH}}}")


def room_get(*, slug: str) -> Room | None:
    """The room with this slug (NFKC-normalised first, as stored: a URL with the decomposed
    form of a Korean slug finds the room), or None when there is none or ``slug`` cannot be a
    slug."""
    if not isinstance(slug, str):
        return None
    slug = normalize_slug(slug)
    if not _SLUG_RE.fullmatch(slug):
        return None
    return Room.objects.filter(slug=slug).first()


def room_last_seq(*, room_id: int) -> int:
    """The room's highest stored ``seq`` (0 when it has no message)."""
    return Room.objects.filter(pk=room_id).values_list("last_seq", flat=True).first() or 0


def rooms_visible_to(user) -> QuerySet[Room]:
    """The rooms ``user`` may see, by name: every public room, and the private rooms they are a
    (not banned) member of. Archived rooms included (their history stays readable)."""
    member = Membership.objects.filter(room=OuterRef("pk"), user_id=user.pk, banned_at__isnull=True)
    return (
        Room.objects.filter(Q(is_private=False) | Q(Exists(member)))
        .select_related("created_by")
        .order_by("name")
    )


def room_visible(*, slug: str, user) -> Room | None:
    """The room with this slug if ``user`` may see it, else None: a private room they are not
    a member of (or are banned from) answers exactly as a room that does not exist."""
    room = room_get(slug=slug)
    if room is None or not room.is_private:
        return room
    if Membership.objects.filter(room=room, user_id=user.pk, banned_at__isnull=True).exists():
        return room
    return None


def room_members(*, room: Room) -> QuerySet[Membership]:
    """The room's members (banned ones included, flagged), owner first, then by join time."""
    return Membership.objects.filter(room=room).select_related("user").order_by("joined_at")


def attach(messages: list[Message]) -> list[Message]:
    """Load what the message shape needs beyond the row for a whole list of messages, in a
    fixed number of queries whatever its length: mentions (none without ``@``), reactions and
    attachments."""
    from .attachments import attach as attach_attachments

    return attach_attachments(attach_reactions(attach_mentions(messages)))


def room_history(*, room: Room, before_seq: int | None = None, limit: int = 50) -> list[Message]:
    """Up to ``limit`` messages of ``room`` with ``seq < before_seq`` (all when None), the newest
    ones, returned oldest first. Author, room, mentions and reactions are loaded for ``MessageSerializer``."""
    qs = Message.objects.filter(room=room).select_related(*MESSAGE_RELATED)
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    return attach(list(reversed(qs.order_by("-seq")[:limit])))


def room_messages_after(
    *, room: Room, after_seq: int, limit: int, before_seq: int | None = None
) -> list[Message]:
    """Up to ``limit`` messages of ``room`` with ``seq > after_seq`` (and ``< before_seq`` when
    given), oldest first, with author, room, mentions and reactions loaded."""
    qs = Message.objects.filter(room=room, seq__gt=after_seq).select_related(*MESSAGE_RELATED)
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    return attach(list(qs.order_by("seq")[:limit]))


def _one_statement() -> bool:
    """Whether the lists below are read in one statement (``message_shape.room_list_data``:
    PostgreSQL), rather than through the ORM and ``message_shape.messages_data`` (SQLite)."""
    return connection.vendor == "postgresql"


def room_history_data(*, room: Room, before_seq: int | None = None, limit: int = 50) -> list[dict]:
    """``room_history``'s messages in their wire shape (``rooms.message_shape``: exactly
    ``MessageSerializer(..., many=True).data``, without model instances): up to ``limit``
    messages with ``seq < before_seq`` (all when None), the newest ones, oldest first. One
    statement on PostgreSQL (``message_shape.room_list_data``), else at most 4 queries
    whatever ``limit``."""
    if _one_statement():
        found = message_shape.room_list_data(room_id=room.pk, before_seq=before_seq, limit=limit)
        return found[1] if found is not None else []
    qs = Message.objects.filter(room=room)
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    return message_shape.messages_data(qs.order_by("-seq")[:limit])[::-1]


def room_messages_after_data(
    *, room: Room, after_seq: int, limit: int, before_seq: int | None = None
) -> list[dict]:
    """``room_messages_after``'s messages in their wire shape (``rooms.message_shape``): up to
    ``limit`` messages with ``seq > after_seq`` (and ``< before_seq`` when given), oldest
    first. One statement on PostgreSQL, else at most 4 queries whatever ``limit``."""
    if _one_statement():
        found = message_shape.room_list_data(
            room_id=room.pk, after_seq=after_seq, before_seq=before_seq, limit=limit
        )
        return found[1] if found is not None else []
    qs = Message.objects.filter(room=room, seq__gt=after_seq)
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    return message_shape.messages_data(qs.order_by("seq")[:limit])


def room_replay_data(
    *, room_id: int, after_seq: int, limit: int, upto: int | None = None
) -> tuple[int, list[dict]]:
    """A resume's read: ``(last_seq, messages)``, the room's highest stored ``seq`` (0 when
    there is no such room) and up to ``limit`` messages after ``after_seq`` up to it (and up to
    ``upto`` when given), oldest first, in their wire shape. On PostgreSQL one statement (one
    snapshot: every seq up to ``last_seq`` is there); elsewhere ``room_last_seq`` first, then the
    messages."""
    if _one_statement():
        found = message_shape.room_list_data(
            room_id=room_id,
            after_seq=after_seq,
            through_seq=upto,
            upto_last_seq=True,
            limit=limit,
        )
        return found if found is not None else (0, [])
    last_seq = room_last_seq(room_id=room_id)
    bound = last_seq if upto is None else min(last_seq, upto)
    qs = Message.objects.filter(room_id=room_id, seq__gt=after_seq, seq__lte=bound)
    return last_seq, message_shape.messages_data(qs.order_by("seq")[:limit])


def room_history_page_data(
    *, slug: str, user, limit: int, after_seq: int | None = None, before_seq: int | None = None
) -> list[dict] | None:
    """A page of REST history for ``user``, checking where the data leaves: None when the room
    with this slug does not exist or ``user`` may not see it (``room_visible``'s rule; the caller
    answers 404), else up to ``limit`` messages in their wire shape, oldest first: the oldest
    ones with ``seq > after_seq`` when given, else the newest ones (``seq < before_seq`` when
    given). On PostgreSQL the room's visibility and the page are one statement
    (``message_shape.room_list_data``)."""
    if not isinstance(slug, str):
        return None
    slug = normalize_slug(slug)
    if not _SLUG_RE.fullmatch(slug):
        return None
    if _one_statement():
        found = message_shape.room_list_data(
            slug=slug, user_id=user.pk, after_seq=after_seq, before_seq=before_seq, limit=limit
        )
        return found[1] if found is not None else None
    room = room_visible(slug=slug, user=user)
    if room is None:
        return None
    if after_seq is not None:
        return room_messages_after_data(room=room, after_seq=after_seq, limit=limit)
    return room_history_data(room=room, before_seq=before_seq, limit=limit)
