"""Reads. Each function is sync; async callers wrap it with ``database_sync_to_async``."""

import re

from django.db.models import QuerySet

from .models import SLUG_MAX_LENGTH, Message, Room

_SLUG_RE = re.compile(rf"[-a-zA-Z0-9_]{{1,{SLUG_MAX_LENGTH}}}")


def room_get(*, slug: str) -> Room | None:
    """The room with this slug, or None when there is none or ``slug`` cannot be a slug (so text
    such as non-ASCII or a NUL character from a URL never reaches the database)."""
    if not isinstance(slug, str) or not _SLUG_RE.fullmatch(slug):
        return None
    return Room.objects.filter(slug=slug).first()


def room_last_seq(*, room_id: int) -> int:
    """The room's highest stored ``seq`` (0 when it has no message)."""
    return Room.objects.filter(pk=room_id).values_list("last_seq", flat=True).first() or 0


def rooms_list() -> QuerySet[Room]:
    """Every room, by name."""
    return Room.objects.select_related("created_by").order_by("name")


def room_history(*, room: Room, before_seq: int | None = None, limit: int = 50) -> list[Message]:
    """Up to ``limit`` messages of ``room`` with ``seq < before_seq`` (all when None), the newest
    ones, returned oldest first. Author and room are loaded for ``MessageSerializer``."""
    qs = Message.objects.filter(room=room).select_related("author", "room")
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    return list(reversed(qs.order_by("-seq")[:limit]))


def room_messages_after(*, room: Room, after_seq: int, limit: int) -> list[Message]:
    """Up to ``limit`` messages of ``room`` with ``seq > after_seq``, oldest first."""
    qs = Message.objects.filter(room=room, seq__gt=after_seq).select_related("author", "room")
    return list(qs.order_by("seq")[:limit])
