"""Reads. Each function is sync; async callers wrap it with ``database_sync_to_async``."""

import re

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


def room_history_data(*, room: Room, before_seq: int | None = None, limit: int = 50) -> list[dict]:
    """``room_history``'s messages in their wire shape (``rooms.message_shape``: exactly
    ``MessageSerializer(..., many=True).data``, without model instances): up to ``limit``
    messages with ``seq < before_seq`` (all when None), the newest ones, oldest first. At most
    4 queries whatever ``limit``."""
    qs = Message.objects.filter(room=room)
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    return message_shape.messages_data(qs.order_by("-seq")[:limit])[::-1]


def room_messages_after_data(
    *, room: Room, after_seq: int, limit: int, before_seq: int | None = None
) -> list[dict]:
    """``room_messages_after``'s messages in their wire shape (``rooms.message_shape``): up to
    ``limit`` messages with ``seq > after_seq`` (and ``< before_seq`` when given), oldest
    first. At most 4 queries whatever ``limit``."""
    qs = Message.objects.filter(room=room, seq__gt=after_seq)
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    return message_shape.messages_data(qs.order_by("seq")[:limit])
