"""Read state: each member's ``Membership.last_read_seq`` in each room (writes and reads).

The watermark design (Mattermost's ``LastViewedAt``, on our gapless ``seq``): one row write per
read report at most, none per delivered message; the room sockets' ``read`` frames a node gets
within ``READ_TICK`` (0.25 s) are one statement (``ReadBatcher``). Zulip's row per recipient per message would cost a
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
  their badges. A socket's ``read`` frame goes through ``read_report_soon``: written with the
  node's other reports of the tick, one ``read.updated`` per user and room per tick. Events from two nodes may arrive out of order: keep the highest
  ``last_read_seq``.
"""

import asyncio
import weakref
from dataclasses import asdict, dataclass
from functools import lru_cache

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import BigIntegerField, Count, F, OuterRef, Q, QuerySet, Subquery, Value
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


def _count(qs: QuerySet, when: Q | None = None) -> Subquery:
    """The rows of ``qs`` (one room's), those matching ``when`` only, as a subquery (0 for none).

    Why ``when`` rather than a filter of ``qs``: ``deleted_at IS NULL`` in the WHERE clause
    matches the search's partial index ``message_room_live_id_idx`` (``(room_id, id)`` of live
    messages), which PostgreSQL then chose, reading every live message of the room to keep
    those after the marker: 1.6 ms per room of 2,700 messages, growing with the room. Counted
    in ``FILTER``, the WHERE clause is the room and ``seq > marker`` only, and the scan is the
    ``(room_id, seq)`` index's range after the marker (bench/RESULTS.md, "Unread counts by the
    seq index")."""
    count = Count("pk") if when is None else Count("pk", filter=when)
    return Coalesce(
        Subquery(qs.order_by().values("room_id").annotate(n=count).values("n")[:1]),
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
    after = Message.objects.filter(room=OuterRef("pk"), seq__gt=OuterRef("read_marker"))
    live_from_others = Q(deleted_at__isnull=True) & ~Q(author_id=user.pk)
    # Mentions counted from the sparse side: @room messages (a partial index) plus the member's
    # Mention rows in the room whose message is not also an @room one (no message counted twice).
    of_room = after.filter(mentions_room=True)
    of_me = Mention.objects.filter(
        user_id=user.pk,
        room=OuterRef("pk"),
        message__seq__gt=OuterRef("read_marker"),
        message__deleted_at__isnull=True,
        message__mentions_room=False,
    )
    return rooms.annotate(
        my_unread_count=_count(after, live_from_others),
        my_mention_count=_count(of_room, live_from_others) + _count(of_me),
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


READ_TICK = 0.25
"""Seconds a node gathers the room sockets' read reports before writing them in one statement
(``ReadBatcher``): at most this, plus the statement, between a ``read`` frame and its
``read.updated``. 0.25 s: a quarter of the page's own 1 s debounce (``static/rooms/room/reads.js``),
so the other tabs' badges still clear within about a second and a half of reading; measured in
bench/RESULTS.md ("Read reports coalesced per tick", 2026-12-05)."""


@lru_cache(maxsize=1)
def _batch_sql() -> str:
    """Every read report a node gathered in one tick, in one statement (PostgreSQL). Parameters:
    three arrays of equal length, ``rooms``, ``users``, ``seqs`` (a pair may repeat: its highest
    seq counts). Each (room, user) pair's marker becomes ``max(last_read_seq, min(seq, room's
    last_seq))``; the rows that move are locked in ``id`` order first, so two nodes writing
    overlapping batches at once wait for each other instead of deadlocking. One row per pair:
    ``(room_id, user_id, moved, last_read_seq, unread_count, mention_count)``, with
    ``last_read_seq`` NULL when the user is not a (not banned) member of the room. The counts
    keep ``deleted_at`` and the author in ``FILTER``, not in WHERE (``_count`` says why)."""
    quote = connection.ops.quote_name
    room_t, member_t = quote(Room._meta.db_table), quote(Membership._meta.db_table)
    message_t, mention_t = quote(Message._meta.db_table), quote(Mention._meta.db_table)
    return f"""
        WITH input AS (
            SELECT i.room_id, i.user_id, max(i.seq) AS seq
            FROM unnest(%(rooms)s::bigint[], %(users)s::bigint[], %(seqs)s::bigint[])
                AS i(room_id, user_id, seq)
            GROUP BY i.room_id, i.user_id
        ), target AS (
            SELECT m.id, LEAST(i.seq, r.last_seq) AS seq
            FROM input i
            JOIN {member_t} m ON m.room_id = i.room_id AND m.user_id = i.user_id AND m.banned_at IS NULL
            JOIN {room_t} r ON r.id = i.room_id
            WHERE m.last_read_seq < LEAST(i.seq, r.last_seq)
            ORDER BY m.id
            FOR UPDATE OF m
        ), moved AS (
            UPDATE {member_t} m SET last_read_seq = GREATEST(m.last_read_seq, t.seq)
            FROM target t WHERE m.id = t.id AND m.last_read_seq < t.seq
            RETURNING m.room_id, m.user_id, m.last_read_seq
        ), marker AS (
            SELECT i.room_id, i.user_id, mv.room_id IS NOT NULL AS moved,
                COALESCE(mv.last_read_seq, m.last_read_seq) AS seq
            FROM input i
            LEFT JOIN {member_t} m
                ON m.room_id = i.room_id AND m.user_id = i.user_id AND m.banned_at IS NULL
            LEFT JOIN moved mv ON mv.room_id = i.room_id AND mv.user_id = i.user_id
        )
        SELECT k.room_id, k.user_id, k.moved, k.seq,
            (SELECT count(*) FILTER (
                WHERE msg.deleted_at IS NULL AND msg.author_id IS DISTINCT FROM k.user_id)
             FROM {message_t} msg WHERE msg.room_id = k.room_id AND msg.seq > k.seq),
            (SELECT count(*) FILTER (
                WHERE msg.deleted_at IS NULL AND msg.author_id IS DISTINCT FROM k.user_id)
             FROM {message_t} msg WHERE msg.room_id = k.room_id AND msg.seq > k.seq AND msg.mentions_room)
          + (SELECT count(*) FROM {mention_t} mn JOIN {message_t} msg ON msg.id = mn.message_id
             WHERE mn.user_id = k.user_id AND mn.room_id = k.room_id AND msg.seq > k.seq
               AND msg.deleted_at IS NULL AND NOT msg.mentions_room)
        FROM marker k
    """


@dataclass
class _Pending:
    room_slug: str
    seq: int
    waiters: list
    tab: str | None  # the tab of every report of the pair in this tick, else None


class ReadBatcher:
    """A node's read reports, gathered per tick and written together (group commit, as the sends'
    in ``rooms.services``): the first report after a quiet spell starts a ``READ_TICK`` timer;
    when it fires, every report gathered is written in one statement (``_batch_sql``) on the
    event loop's pool (``chatsite.async_db``), and reports that arrive while it runs go into the
    next statement, sent as soon as it returns. So a node writes at most one read statement at a
    time, however many reports it gets: N reports of one tick cost one statement instead of N,
    and one user's many reports of one room in a tick one row.

    After the statement (autocommit: it has committed), each pair whose marker moved gets one
    ``read.updated`` to every socket of the user on every node, with the state after the whole
    tick; a pair that did not move sends nothing. The tick's events go to Redis together, one
    pipeline of PUBLISHes (``events.broadcast_read_updates``): one round trip per tick, not one
    per report, so they hold this node's message broadcasts (queued behind them) for one. One per event
    loop (``for_loop``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pending: dict[tuple[int, int], _Pending] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.writing: asyncio.Task | None = None
        self.statements = 0  # batches written (for tests and the bench)

    def add(self, *, room: Room, user_id: int, seq: int, tab: str | None = None) -> asyncio.Future:
        """Queue a report (``tab``: the reporting page's tab id, ``consumers.query_tab``); returns
        a future of ``(moved: bool, ReadState)`` after the tick's commit, or raising
        ``services.NotFound`` (not a member: nothing changed) or the database's error
        (``psycopg.Error``, ``PoolTimeout``: nothing known to be changed)."""
        waiter = self.loop.create_future()
        key = (room.pk, user_id)
        entry = self.pending.get(key)
        if entry is None:
            self.pending[key] = _Pending(room.slug, seq, [waiter], tab)
        else:
            entry.seq = max(entry.seq, seq)
            entry.waiters.append(waiter)
            if entry.tab != tab:  # two tabs reported the pair in one tick: both get the event
                entry.tab = None
        if self.timer is None and self.writing is None:
            self.timer = self.loop.call_later(READ_TICK, self._tick)
        return waiter

    def _tick(self) -> None:
        self.timer = None
        if self.writing is None:
            self.writing = self.loop.create_task(self._write_all())

    async def _write_all(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, {}
                await self._write(batch)
        finally:
            self.writing = None

    async def _write(self, batch: dict[tuple[int, int], _Pending]) -> None:
        from chatsite import async_db

        from .services import NotFound

        keys = list(batch)
        params = {
            "rooms": [room_id for room_id, _ in keys],
            "users": [user_id for _, user_id in keys],
            "seqs": [batch[key].seq for key in keys],
        }
        try:
            self.statements += 1
            with async_db.deadline():
                rows = await async_db.fetchall(_batch_sql(), params)
        except Exception as exc:  # the database's error, for every report of the tick
            for entry in batch.values():
                for waiter in entry.waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
            return
        by_key = {(row[0], row[1]): row for row in rows}
        updates = []
        for key, entry in batch.items():
            row = by_key.get(key)
            if row is None or row[3] is None:
                outcome = NotFound("You are not a member of this room.")
            else:
                state = ReadState(int(row[3]), int(row[4]), int(row[5]))
                outcome = (bool(row[2]), state)
                if row[2]:
                    updates.append((key[1], entry.room_slug, state.as_dict(), entry.tab))
            for waiter in entry.waiters:
                if waiter.done():  # cancelled by its caller
                    continue
                if isinstance(outcome, Exception):
                    waiter.set_exception(outcome)
                else:
                    waiter.set_result(outcome)
        events.broadcast_read_updates(updates)

    @classmethod
    def for_loop(cls) -> "ReadBatcher":
        """The running event loop's batcher (made on first use)."""
        loop = asyncio.get_running_loop()
        batcher = _batchers.get(loop)
        if batcher is None:
            batcher = _batchers[loop] = cls(loop)
        return batcher


_batchers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReadBatcher]" = weakref.WeakKeyDictionary()


def read_report_soon(
    *, room: Room, user: AbstractBaseUser, seq: int, tab: str | None = None
) -> asyncio.Future:
    """``read_report`` for a socket's ``read`` frame, from the event loop, without waiting for
    it: the report joins this node's current tick (``ReadBatcher``, ``READ_TICK``) and the
    returned future gives ``(moved, ReadState)`` once the tick's one statement has committed and
    its ``read.updated`` frames are on their way; or raises ``services.NotFound`` (not a (not
    banned) member: nothing changed, nothing sent) or a database error (``psycopg.Error``,
    ``PoolTimeout``; the statement ends within ``DATABASE_STATEMENT_TIMEOUT`` + 0.25 s,
    ``async_db.deadline``). The same rules as ``read_report`` (never backward, clamped to the
    room's last seq). ``tab``: the reporting page's tab id (``consumers.query_tab``): the
    ``read.updated`` carries it and that tab's sockets skip it (the page updated itself).
    Without PostgreSQL: ``read_report`` on the database thread, one per report (every socket
    gets its ``read.updated``). ``seq``: 0..2**63 - 1 (validated by the caller)."""
    from chatsite import async_db

    if async_db.available():
        return ReadBatcher.for_loop().add(room=room, user_id=user.pk, seq=seq, tab=tab)
    from channels.db import database_sync_to_async

    def on_thread():
        before = read_state(room=room, user=user)
        state = read_report(room=room, user=user, seq=seq)
        return state.last_read_seq != before.last_read_seq, state

    return asyncio.ensure_future(database_sync_to_async(on_thread)())


async def read_report_async(*, room: Room, user: AbstractBaseUser, seq: int) -> ReadState:
    """``read_report_soon``, waited for: the read state after the tick that wrote the report
    (which may include other reports of the same user and room in that tick: it is the marker's
    state, never behind ``seq`` clamped). Raises as ``read_report_soon``."""
    _, state = await read_report_soon(room=room, user=user, seq=seq)
    return state
