"""Rooms and their messages. Writes go through ``rooms.services``; reads through ``rooms.selectors``."""

from django.conf import settings
from django.db import models
from django.utils import timezone

SLUG_MAX_LENGTH = 64
BODY_MAX_LENGTH = 4000  # characters (code points), the same limit for every way of sending
CLIENT_MSG_ID_MAX_LENGTH = 64


class Room(models.Model):
    """A chat room. ``last_seq`` is the highest ``Message.seq`` stored in it (0: none yet).

    ``last_seq`` is only changed by ``rooms.services.message_post``, which increments it in the
    same transaction that inserts the message, so the row lock on the room serialises senders
    of one room across every node.
    """

    slug = models.SlugField(max_length=SLUG_MAX_LENGTH, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, max_length=1000)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rooms_created",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_seq = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    """One stored chat message.

    ``seq`` is the room's sequence number: 1 for the first message of a room, then strictly
    increasing without gaps; unique per room by a database constraint, whose index also serves
    reads by ``(room, seq)``. ``client_msg_id`` is chosen by the sender; the same author sending
    the same ``client_msg_id`` to the same room again gets the stored message back instead of a
    second row. ``server_id`` names the node the message was sent through.
    """

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveBigIntegerField(editable=False)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="messages"
    )
    body = models.TextField(max_length=BODY_MAX_LENGTH)
    client_msg_id = models.CharField(max_length=CLIENT_MSG_ID_MAX_LENGTH)
    server_id = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        # room_id, not room: "room" would follow Room.Meta.ordering and join rooms_room by name.
        ordering = ["room_id", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="message_room_seq_unique"),
            models.UniqueConstraint(
                fields=["room", "author", "client_msg_id"], name="message_client_msg_id_unique"
            ),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="message_seq_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.room.slug}#{self.seq}"
