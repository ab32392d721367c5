"""A room socket's entry at its handshake: may it come in, the room's ``last_seq`` for ``hello``, and
with ``?after_seq=`` the replay up to that seam (``RoomConsumer.connect``).

Two ways, with one rule (``_refusal``):

- ``enter_async`` (PostgreSQL, the usual case: a member coming back, with or without a replay):
  no hop on the node's one database thread. The access row and the room's columns come from one
  statement shared by every handshake queued on the loop meanwhile (``chatsite.db_batch``:
  ``rooms.access.rows_async`` with a list of keys), the replay from one statement of its own
  (``message_shape.room_list_data_async``). It answers None when it cannot decide alone: the
  room under the slug is not the one the socket joined the group of (replaced, renamed,
  deleted), the user is not yet a member of the public room (the join is a write with its
  event: ``services.member_join``), or the session is not a row.
- ``enter`` (sync, one hop on the database thread): everything, those cases included.

Why (issue 16, item 3): when a node stops, its members all reconnect to the others at once.
Measured with ``python -m bench.handshakes`` (one node, 3,000 token sockets resuming with a
replay of 5, 200 in flight): the database thread's hop (Django's connection checkout, the ORM's
room query, two thread switches under the GIL) was about a third of the node's 7-8 ms of CPU per
handshake, and the handshakes queued behind each other on that one thread.

Close codes (the refusals a browser can read): 4401 (credentials no longer valid), 4403
(banned), 4404 (no such room, or a private room one is not in), 4410 (archived).
"""

from __future__ import annotations

import typing

from . import access, events, selectors, services
from .models import Room, normalize_slug
from .services import ServiceError

CLOSE_UNAUTHENTICATED = 4401
CLOSE_BANNED = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_ARCHIVED = 4410

CLOSING_ERRORS = {
    "banned": CLOSE_BANNED,
    "not_found": CLOSE_NOT_FOUND,
    "archived": CLOSE_ARCHIVED,
    "unauthenticated": CLOSE_UNAUTHENTICATED,
}

RESUME_MAX = 1000  # messages a resume replays; more means resync through the history API

# The room's columns read with the access row (``enter_async``), to build its ``Room``.
_ROOM_FIELDS = tuple(Room._meta.concrete_fields)
_ROOM_COLUMNS = tuple(f.column for f in _ROOM_FIELDS)
_ROOM_ATTNAMES = [f.attname for f in _ROOM_FIELDS]
_SLUG_AT = 10 + _ROOM_ATTNAMES.index("slug")  # access rows have 10 columns (``access._sql``)


class Entry(typing.NamedTuple):
    """What an entry found: ``room`` and ``last_seq`` (for ``hello``) and ``replay``
    (``replay_upto``'s ``(frames, latest)``, None without ``after_seq``) when the socket may come
    in; else ``close_code`` (4401, 4403, 4404, 4410), or ``moved_to`` (the slug's room has another
    id than the group joined: join that one's group and enter again)."""

    room: Room | None = None
    last_seq: int = 0
    replay: tuple | None = None
    close_code: int | None = None
    moved_to: int | None = None


def _refusal(row: tuple, key: access.Key) -> int | None:
    """The close code for one ``rooms.access`` row of ``key`` (None: may come in, joining first
    when not a member). The join rules (``services.member_join`` and, for an archived room,
    ``services.room_access``): credentials first (4401); a private room one is not in, or is
    banned from, is no room (4404); a public room's banned member gets 4403; then an archived room
    4410 (only those who may read it learn that it is archived)."""
    verdict = access._judge(row, key, reading=False, memo={})
    if verdict == "unauthenticated":
        return CLOSE_UNAUTHENTICATED
    if not row[2]:  # the room is gone
        return CLOSE_NOT_FOUND
    private, archived, member, banned = row[3], row[4], row[5], row[6]
    if private and (not member or banned):
        return CLOSE_NOT_FOUND
    if banned:
        return CLOSE_BANNED
    if archived:
        return CLOSE_ARCHIVED
    return None if verdict is None else CLOSING_ERRORS[verdict]


def replay_frames(data: list[dict], *, last_seq: int, now_last_seq) -> tuple:
    """``(frames, latest)`` for the messages ``data`` (message shapes, oldest first) read after a
    client's ``after_seq`` up to ``last_seq`` (a seam: every seq up to it is committed):
    ``(seq, encoded message frame)`` each and the seq they reach; over ``RESUME_MAX`` of them,
    ``(None, now_last_seq())`` (the client resyncs through history)."""
    if len(data) > RESUME_MAX:
        return None, now_last_seq()
    frames = [(m["seq"], events.encode_message_frame(m)) for m in data]
    return frames, (data[-1]["seq"] if data else last_seq)


def enter(*, slug: str, room_id: int, user, credentials: tuple, after_seq: int | None) -> Entry:
    """Sync, ONE database hop for a socket already in the group of room ``room_id``: the room
    read by ``slug`` (and checked to be ``room_id``), the socket's access (``rooms.access``, one
    statement: user active, token or session still valid, room, membership, ban, archive, and
    the room's ``last_seq``), the join of a public room by a non-member
    (``services.member_join``, only then), and with ``after_seq`` the replay of the messages
    ``after_seq < seq <= last_seq`` (the frames a ``resume`` sends).

    Called by ``RoomConsumer.connect`` after the group join, so ``last_seq`` is a seam: every
    message up to it is replayed and every later one arrives live. ``credentials``: the socket's
    ``(token, session key, session auth hash)`` (``SocketConsumer.credentials``); they are checked
    first, so a credential revoked since the auth middleware looked it up (even in its per-node
    cache) gets 4401, before the room is told or joined. Database errors propagate."""
    room = selectors.room_get(slug=slug)
    if room is None:
        return Entry(close_code=CLOSE_NOT_FOUND)
    if room.pk != room_id:
        return Entry(moved_to=room.pk)
    key = access._full((room.pk, user.pk, *credentials))
    row = access._rows([key])[0]
    refusal = _refusal(row, key)
    if refusal is not None:
        return Entry(close_code=refusal)
    if not row[5]:  # a public room's new member: joined now (a row, an event on commit)
        try:
            services.member_join(room=room, user=user)
        except ServiceError as exc:
            return Entry(close_code=CLOSING_ERRORS.get(exc.code, CLOSE_NOT_FOUND))
    last_seq = row[7]
    replay = None
    if after_seq is not None:
        data = selectors.room_messages_after_data(
            room=room, after_seq=after_seq, limit=RESUME_MAX + 1, before_seq=last_seq + 1
        )
        replay = replay_frames(
            data, last_seq=last_seq, now_last_seq=lambda: selectors.room_last_seq(room_id=room.pk)
        )
    return Entry(room=room, last_seq=last_seq, replay=replay)


async def _access_rows(keys: list[access.Key]) -> list[tuple]:
    return await access.rows_async(keys, _ROOM_COLUMNS)


async def enter_async(
    *, slug: str, room_id: int, user, credentials: tuple, after_seq: int | None, timeout: float
) -> Entry | None:
    """``enter``'s answer without the database thread, or None when it cannot decide alone (see
    the module's docstring; the caller then runs ``enter``). Statements from the event loop: the
    access row with the room's columns (batched with the other handshakes of this loop; waits at
    most ``timeout`` seconds for it), then with ``after_seq`` below ``last_seq`` the replay (one
    statement). Raises ``psycopg.Error``, ``psycopg_pool.PoolTimeout``, ``TimeoutError``."""
    from chatsite import async_db, db_batch

    key = access._full((room_id, user.pk, *credentials))
    if not access.async_ready(key):
        return None
    row = await db_batch.batcher("rooms.entry", _access_rows).call(key, timeout=timeout)
    if not row[2] or row[_SLUG_AT] != normalize_slug(slug):
        return None  # the room went or another took the slug: ``enter`` follows it
    refusal = _refusal(row, key)
    if refusal is not None:
        return Entry(close_code=refusal)
    if not row[5]:
        return None  # a new member: ``enter`` joins them (a write, with its event)
    room = Room.from_db("default", _ROOM_ATTNAMES, row[10:])
    last_seq = row[7]
    if after_seq is None:
        return Entry(room=room, last_seq=last_seq)
    if after_seq >= last_seq:
        return Entry(room=room, last_seq=last_seq, replay=([], last_seq))
    from . import message_shape

    with async_db.deadline():
        found = await message_shape.room_list_data_async(
            room_id=room_id, after_seq=after_seq, before_seq=last_seq + 1, limit=RESUME_MAX + 1
        )
    data = [] if found is None else found[1]
    now = None if found is None else found[0]
    return Entry(
        room=room,
        last_seq=last_seq,
        replay=replay_frames(data, last_seq=last_seq, now_last_seq=lambda: now),
    )
