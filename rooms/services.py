"""Writes. Every change to rooms and messages goes through a function here, so each way in
(WebSocket consumer, pages, later REST and admin) stores and broadcasts the same way: inside one
transaction, with the broadcast registered by ``transaction.on_commit`` (no row, no broadcast).
"""

from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils.text import slugify

from . import events
from .models import Message, Room
from .serializers import MessageSerializer


@dataclass(frozen=True)
class PostResult:
    """What ``message_post`` did: the stored ``message`` and whether this call ``created`` it
    (False: an earlier send with the same ``client_msg_id`` stored it, nothing new broadcast)."""

    message: Message
    created: bool


def _next_seq(room_id: int) -> int:
    """Increment and return the room's ``last_seq`` in the caller's transaction.

    The UPDATE takes the room row's lock until commit, so concurrent senders to one room, on any
    node, get consecutive numbers; a rolled-back send also rolls back its number (no gap).
    Raises ``Room.DoesNotExist`` when the room is gone.
    """
    table = connection.ops.quote_name(Room._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq",
            [room_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Room.DoesNotExist(f"room {room_id} does not exist")
    return row[0]


def _find_sent(*, room: Room, author: AbstractBaseUser, client_msg_id: str) -> Message | None:
    return (
        Message.objects.select_related("author", "room")
        .filter(room=room, author=author, client_msg_id=client_msg_id)
        .first()
    )


def message_post(
    *, room: Room, author: AbstractBaseUser, body: str, client_msg_id: str
) -> PostResult:
    """Store a message in ``room`` and broadcast it to every member on every node after commit.

    ``body`` and ``client_msg_id`` must already be validated (``MessageSendFrame``). The message
    gets the room's next ``seq`` and this node's ``SERVER_ID``. Idempotent: when ``author`` already
    sent ``client_msg_id`` to ``room``, returns that message with ``created=False`` and stores and
    broadcasts nothing. Database errors (``django.db.DatabaseError``, ``psycopg_pool.PoolTimeout``)
    propagate: then nothing was stored and nothing is broadcast.
    """
    try:
        with transaction.atomic():
            seq = _next_seq(room.pk)
            message = Message.objects.create(
                room=room,
                author=author,
                body=body,
                client_msg_id=client_msg_id,
                seq=seq,
                server_id=settings.SERVER_ID,
            )
            data = MessageSerializer(message).data
            transaction.on_commit(
                partial(events.broadcast_message, room_id=room.pk, seq=seq, message_data=data)
            )
    except IntegrityError:
        # The same client_msg_id was stored before (a retry), or by a concurrent send that
        # committed first: the unique constraint refused the row and the rollback took back the
        # seq. Answer with the stored message. (Trying the insert first saves a query per send.)
        sent = _find_sent(room=room, author=author, client_msg_id=client_msg_id)
        if sent is None:
            raise
        return PostResult(message=sent, created=False)
    return PostResult(message=message, created=True)


def room_create(
    *, name: str, created_by: AbstractBaseUser, slug: str = "", description: str = ""
) -> Room:
    """Create a room. ``slug`` defaults to ``slugify(name)``. Raises
    ``django.core.exceptions.ValidationError`` (with field errors) when a field is invalid or
    the slug is taken."""
    room = Room(
        name=name,
        slug=slug or slugify(name)[:64],
        description=description,
        created_by=created_by,
    )
    room.full_clean(exclude=["created_by"])
    room.save()
    return room
