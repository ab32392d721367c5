"""The sidebar: every room and direct message of a user with their unread state (a read).

One shape per sidebar entry, the ``sidebar`` frame's (``rooms.user_consumer``)::

    {"slug": str, "name": str, "kind": "room" | "dm", "dm_with": {"id", "username"} | null,
     "last_seq": int, "last_read_seq": int, "unread_count": int, "mention_count": int}

``name`` of a DM is the other person's username (as ``RoomSerializer`` shows it); ``dm_with``
is null for a group room. Counts are ``rooms.reads``'s (unread: others' messages after
``last_read_seq``, not deleted; mentions: those of them mentioning the user or ``@room``).

The user's rooms are those they are a (not banned) member of, archived rooms left out. Group
rooms come first, then DMs, each by name (case-insensitive).
"""

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, OuterRef

from . import dms, reads
from .models import Membership, Room


@dataclass(frozen=True)
class Sidebar:
    """``rooms``: the entries in sidebar order; ``room_ids``: ``{room id: slug}`` of the same
    rooms (the groups a user socket joins; never sent)."""

    rooms: list[dict]
    room_ids: dict[int, str]


def sidebar_for(user: AbstractBaseUser) -> Sidebar:
    """Sync: ``user``'s sidebar in two SQL statements whatever the number of rooms (the rooms
    with their read state as subqueries, ``reads.with_read_state``; the other member of each
    DM, ``dms.dm_partners``)."""
    member = Membership.objects.filter(room=OuterRef("pk"), user_id=user.pk, banned_at__isnull=True)
    rows = reads.with_read_state(
        Room.objects.filter(Exists(member), archived_at__isnull=True).order_by(), user
    ).values_list(
        "pk", "slug", "name", "kind", "last_seq", "my_last_read_seq", "my_unread_count", "my_mention_count"
    )
    rows = list(rows)
    partners = dms.dm_partners(user) if any(row[3] == Room.Kind.DM for row in rows) else {}
    rooms = []
    for pk, slug, name, kind, last_seq, last_read_seq, unread, mentions in rows:
        dm_with = partners.get(pk) if kind == Room.Kind.DM else None
        rooms.append(
            {
                "slug": slug,
                "name": dm_with["username"] if dm_with else name,
                "kind": kind,
                "dm_with": dm_with,
                "last_seq": last_seq,
                "last_read_seq": last_read_seq,
                "unread_count": unread,
                "mention_count": mentions,
                "_id": pk,
            }
        )
    rooms.sort(key=lambda r: (r["kind"] == Room.Kind.DM, r["name"].casefold(), r["slug"]))
    room_ids = {r.pop("_id"): r["slug"] for r in rooms}
    return Sidebar(rooms=rooms, room_ids=room_ids)
