"""Read state: each member's ``Membership.last_read_seq`` in each room (writes and reads).

The watermark design (Mattermost's ``LastViewedAt``, on our gapless ``seq``): one write per
read report, none per delivered message. Zulip's row per recipient per message would cost a
write per member for every message.

- ``last_read_seq`` only moves forward, and never past the room's ``last_seq`` (a report
  beyond it is clamped). Joining a room sets it to the room's ``last_seq`` at that moment
  (``rooms.services.member_join`` / ``member_add``: a new member is not shown the whole backlog
  as unread, as in Slack and Zulip); sending a message moves the sender's to that message's seq
  (your own message is read: ``rooms.services._post_sql``, in the send's own statement; no
  ``read.updated`` is sent for it: a client seeing its own message at seq N knows its marker is
  at least N).
- Unread: the room's messages after ``last_read_seq`` that are not the member's own and not
  deleted. Mention count: those of them that mention the member (``@username``) or ``@room``.
  A visitor of a public room who is not a member (or is banned) has 0, 0, 0.
- ``read_report`` (REST ``POST /api/rooms/<slug>/read/``, the room socket's ``read`` frame)
  moves the marker and, when it moved, sends ``{"type": "read.updated", "room": slug,
  "last_read_seq": int, "unread_count": int, "mention_count": int}`` to every socket of the user
  on every node after commit (``events.broadcast_read_updated``), so their other tabs clear
  their badges. Events from two nodes may arrive out of order: keep the highest
  ``last_read_seq``.
"""

from dataclasses import asdict, dataclass
from functools import lru_cache

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import BigIntegerField, Count, F, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce, Greatest, Least

from . import events
from .models import Membership, Mention, Message, Room


@dataclass(frozen=True)
class ReadState:
    """A member's read state in one room: the REST answer of a read report, and the fields the
    room shape gains."""

    last_read_seq: int
    unread_count: int
    mention_count: int

    def as_dict(self) -> dict:
        return asdict(self)


NONE = ReadState(0, 0, 0)


def _count(qs: QuerySet) -> Subquery:
    return Coalesce(
        Subquery(qs.order_by().values("room_id").annotate(n=Count("pk")).values("n")[:1]),
        Value(0),
        output_field=BigIntegerField(),
    )


def with_read_state(rooms: QuerySet[Room], user: AbstractBaseUser) -> QuerySet[Room]:
    """``rooms`` annotated with ``user``'s ``my_last_read_seq``, ``my_unread_count`` and
    ``my_mention_count`` (subqueries: one query for a whole page of rooms, no N+1). All 0 for a
    room the user is not a (not banned) member of, and for an anonymous user."""
    if not user.is_authenticated:
        zero = Value(0, output_field=BigIntegerField())
        return rooms.annotate(my_last_read_seq=zero, my_unread_count=zero, my_mention_count=zero)
    member = Membership.objects.filter(
        room=OuterRef("pk"), user_id=user.pk, banned_at__isnull=True
    ).order_by()
    marker = Subquery(member.values("last_read_seq")[:1])
    # A non-member counts from the room's last seq: nothing is unread.
    rooms = rooms.annotate(
        my_last_read_seq=Coalesce(marker, Value(0), output_field=BigIntegerField()),
        read_marker=Coalesce(marker, F("last_seq"), output_field=BigIntegerField()),
    )
    unread = Message.objects.filter(
        room=OuterRef("pk"), seq__gt=OuterRef("read_marker"), deleted_at__isnull=True
    ).exclude(author_id=user.pk)
    # Mentions counted from the sparse side: @room messages (a partial index) plus the member's
    # Mention rows in the room whose message is not also an @room one (no message counted twice).
    of_room = unread.filter(mentions_room=True)
    of_me = Mention.objects.filter(
        user_id=user.pk,
        room=OuterRef("pk"),
        message__seq__gt=OuterRef("read_marker"),
        message__deleted_at__isnull=True,
        message__mentions_room=False,
    )
    return rooms.annotate(
        my_unread_count=_count(unread),
        my_mention_count=_count(of_room) + _count(of_me),
    )


def read_state(*, room: Room, user: AbstractBaseUser) -> ReadState:
    """``user``'s read state in ``room`` now (one query); ``NONE`` for a non-member."""
    row = (
        with_read_state(Room.objects.filter(pk=room.pk), user)
        .values_list("my_last_read_seq", "my_unread_count", "my_mention_count")
        .first()
    )
    return NONE if row is None else ReadState(*row)


def read_report(*, room: Room, user: AbstractBaseUser, seq: int) -> ReadState:
    """``user`` has read ``room`` up to ``seq``: their ``last_read_seq`` becomes
    ``max(last_read_seq, min(seq, room.last_seq))`` in one UPDATE (it never moves backward; a
    report beyond the room's last seq is clamped), and when it moved, ``read.updated`` is sent
    to all of the user's sockets on every node after commit. Returns the read state after the
    report. Raises ``services.NotFound`` when the user is not a (not banned) member of the room:
    nothing is changed or sent. ``seq``: 0..2**63 - 1 (validated by the caller)."""
    from .services import NotFound

    room_last_seq = Subquery(Room.objects.filter(pk=room.pk).values("last_seq")[:1])
    target = Least(Value(seq, output_field=BigIntegerField()), room_last_seq)
    with transaction.atomic():
        moved = Membership.objects.filter(
            room_id=room.pk, user_id=user.pk, banned_at__isnull=True, last_read_seq__lt=target
        ).update(last_read_seq=Greatest(F("last_read_seq"), target))
        if (
            not moved
            and not Membership.objects.filter(
                room_id=room.pk, user_id=user.pk, banned_at__isnull=True
            ).exists()
        ):
            raise NotFound("You are not a member of this room.")
        state = read_state(room=room, user=user)
        if moved:
            transaction.on_commit(
                lambda: events.broadcast_read_updated(
                    user_id=user.pk, room_slug=room.slug, state=state.as_dict()
                )
            )
    return state


@lru_cache(maxsize=1)
def _report_sql() -> str:
    """``read_report`` in one statement (PostgreSQL): the marker moved forward (clamped to the
    room's last seq) and the read state after it, as ``(moved, last_read_seq, unread_count,
    mention_count)``; ``last_read_seq`` NULL when the user is not a (not banned) member."""
    quote = connection.ops.quote_name
    room_t, member_t = quote(Room._meta.db_table), quote(Membership._meta.db_table)
    message_t, mention_t = quote(Message._meta.db_table), quote(Mention._meta.db_table)
    return f"""
        WITH target AS (
            SELECT LEAST(%(seq)s::bigint, r.last_seq) AS seq FROM {room_t} r WHERE r.id = %(room)s
        ), moved AS (
            UPDATE {member_t} m SET last_read_seq = (SELECT seq FROM target)
            WHERE m.room_id = %(room)s AND m.user_id = %(user)s AND m.banned_at IS NULL
              AND m.last_read_seq < (SELECT seq FROM target)
            RETURNING m.last_read_seq
        ), marker AS (
            SELECT COALESCE(
                (SELECT last_read_seq FROM moved),
                (SELECT m.last_read_seq FROM {member_t} m
                 WHERE m.room_id = %(room)s AND m.user_id = %(user)s AND m.banned_at IS NULL)
            ) AS seq
        )
        SELECT EXISTS (SELECT 1 FROM moved), (SELECT seq FROM marker),
            (SELECT count(*) FROM {message_t} msg
             WHERE msg.room_id = %(room)s AND msg.seq > (SELECT seq FROM marker)
               AND msg.deleted_at IS NULL AND msg.author_id IS DISTINCT FROM %(user)s),
            (SELECT count(*) FROM {message_t} msg
             WHERE msg.room_id = %(room)s AND msg.seq > (SELECT seq FROM marker) AND msg.mentions_room
               AND msg.deleted_at IS NULL AND msg.author_id IS DISTINCT FROM %(user)s)
          + (SELECT count(*) FROM {mention_t} mn JOIN {message_t} msg ON msg.id = mn.message_id
             WHERE mn.user_id = %(user)s AND mn.room_id = %(room)s AND msg.seq > (SELECT seq FROM marker)
               AND msg.deleted_at IS NULL AND NOT msg.mentions_room)
    """


async def read_report_async(*, room: Room, user: AbstractBaseUser, seq: int) -> ReadState:
    """``read_report`` for a socket's ``read`` frame, from the event loop: one statement on the
    loop's own pool (``chatsite.async_db``, no hop to the node's database thread; measured in
    bench/RESULTS.md, "Sidebar"), then ``read.updated`` broadcast when the marker moved. The same
    rules and answers; ``services.NotFound`` for a non-member. Without PostgreSQL: ``read_report``
    on the database thread. Database errors propagate (``psycopg.Error``, ``PoolTimeout``);
    the whole step ends within ``DATABASE_STATEMENT_TIMEOUT`` + 0.25 s (``async_db.deadline``)."""
    from channels.db import database_sync_to_async

    from chatsite import async_db

    from .services import NotFound

    if not async_db.available():
        return await database_sync_to_async(read_report)(room=room, user=user, seq=seq)
    with async_db.deadline():
        row = await async_db.fetchone(_report_sql(), {"room": room.pk, "user": user.pk, "seq": seq})
    if row is None or row[1] is None:
        raise NotFound("You are not a member of this room.")
    state = ReadState(int(row[1]), int(row[2]), int(row[3]))
    if row[0]:
        events.broadcast_read_updated(user_id=user.pk, room_slug=room.slug, state=state.as_dict())
    return state
