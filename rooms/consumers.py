"""The room consumer: one WebSocket per member per room, at ``/ws/rooms/<slug>/``.

Frames are JSON text. The contract (also in README.md):

server → client, on connect::

    {"type": "hello", "server_id": str, "room": slug, "last_seq": int}

client → server::

    {"type": "message.send", "body": str, "client_msg_id": str}

server → sender, once the message is committed (a retry of the same ``client_msg_id`` gets the
same ack and stores nothing)::

    {"type": "ack", "client_msg_id": str, "id": int, "seq": int}

server → every member of the room on every node (``rooms.serializers.MessageSerializer``)::

    {"type": "message", "message": {"id", "room", "seq", "author": {"id", "username"},
                                    "body", "created_at", "server_id"}}

server → client on bad input; the socket stays open (``client_msg_id`` when known, ``field``
when one field is at fault)::

    {"type": "error", "code": str, "detail": str}

Error codes: ``invalid_json`` (text that is not JSON, or empty), ``binary_frame``, ``not_object``
(JSON that is not an object), ``missing_field``, ``invalid_field`` (wrong type, or a too-long
``client_msg_id``), ``unknown_type``, ``empty_body`` (empty or only whitespace),
``body_too_long`` (over 4,000 characters), ``invalid_text`` (a lone surrogate or NUL),
``unavailable`` (the message could not be stored: nothing was broadcast, send it again with the
same ``client_msg_id``), ``internal_error``.

Close codes: 4401 not signed in (no session, an expired one, an inactive user, a wrong token);
4404 no such room (or a path that is not a room). Both are sent right after accept, so browsers
see the code.
"""

import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from psycopg_pool import PoolTimeout

from . import events, selectors, services
from .logutil import RateLimitedLogger
from .serializers import MessageSendFrame

logger = logging.getLogger(__name__)
bad_frame_log = RateLimitedLogger(logger, interval=10.0)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404

# DRF validation codes → our error codes, per field.
_FIELD_CODES = {
    "required": "missing_field",
    "null": "invalid_field",
    "invalid": "invalid_field",
    "invalid_text": "invalid_text",
}
_BODY_CODES = {"blank": "empty_body", "max_length": "body_too_long"}


class FrameError(Exception):
    """A client frame that cannot be processed; answered with an error frame, socket kept."""

    def __init__(self, code: str, detail: str, **extra):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra


class RoomConsumer(AsyncJsonWebsocketConsumer):
    """A member's socket in one room. Joins the room's channel-layer group on connect and leaves
    it on disconnect; sends are stored through ``services.message_post`` (one database hop per
    frame) and reach every node through the layer after commit."""

    room = None
    group = None

    async def connect(self) -> None:
        """Called on the handshake. Accepts signed-in users into an existing room and sends
        ``hello``; otherwise accepts and closes at once with 4401 or 4404."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        room = await database_sync_to_async(selectors.room_get)(slug=slug)
        if room is None:
            await self.accept()
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.room = room
        self.group = events.room_group_name(room.pk)
        # Join the group before reading last_seq: every message with a higher seq then arrives live.
        await self.channel_layer.group_add(self.group, self.channel_name)
        last_seq = await database_sync_to_async(selectors.room_last_seq)(room_id=room.pk)
        await self.accept()
        await self.send_json(
            {"type": "hello", "server_id": settings.SERVER_ID, "room": room.slug, "last_seq": last_seq}
        )

    async def disconnect(self, code) -> None:
        """Called when the socket closes for any reason, also after a refused handshake.
        Idempotent: leaves the group at most once."""
        group, self.group = self.group, None
        if group is not None:
            await self.channel_layer.group_discard(group, self.channel_name)

    # --- client → server ---------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        """Called for every frame. Decodes and dispatches it; any bad frame is answered with an
        error frame and the socket stays open."""
        if self.group is None:  # closing: refused at connect
            return
        try:
            if text_data is None:
                raise FrameError("binary_frame", "Binary frames are not supported; send JSON text.")
            try:
                content = json.loads(text_data)
            except (ValueError, RecursionError):
                raise FrameError("invalid_json", "The frame is not valid JSON.") from None
            if not isinstance(content, dict):
                raise FrameError("not_object", "A frame must be a JSON object with a \"type\".")
            await self.receive_json(content)
        except FrameError as exc:
            bad_frame_log.warning(exc.code, "bad frame from user %s: %s", self.scope["user"].pk, exc.code)
            await self.send_json({"type": "error", "code": exc.code, "detail": exc.detail, **exc.extra})

    async def receive_json(self, content: dict, **kwargs) -> None:
        frame_type = content.get("type")
        if "type" not in content:
            raise FrameError("missing_field", "The frame has no \"type\".", field="type")
        if not isinstance(frame_type, str):
            raise FrameError("invalid_field", "\"type\" must be a string.", field="type")
        if frame_type == "message.send":
            await self.message_send(content)
        else:
            raise FrameError("unknown_type", f"Unknown frame type {frame_type[:50]!r}.")

    async def message_send(self, content: dict) -> None:
        """``message.send``: validate, store (assigns ``seq``), then ack. The broadcast to the
        room is fired by the service after commit, so a message that was not stored is never
        sent to anyone."""
        client_msg_id = content.get("client_msg_id")
        extra = {"client_msg_id": client_msg_id} if isinstance(client_msg_id, str) else {}
        frame = MessageSendFrame(data=content)
        if not frame.is_valid():
            field, errors = next(iter(frame.errors.items()))
            error = errors[0]
            codes = dict(_FIELD_CODES, **_BODY_CODES) if field == "body" else _FIELD_CODES
            code = codes.get(error.code, "invalid_field")
            raise FrameError(code, f"{field}: {error}", field=field, **extra)
        try:
            result = await database_sync_to_async(services.message_post)(
                room=self.room,
                author=self.scope["user"],
                body=frame.validated_data["body"],
                client_msg_id=frame.validated_data["client_msg_id"],
            )
        except (DatabaseError, PoolTimeout):
            logger.exception("could not store a message in room %s", self.room.pk)
            raise FrameError(
                "unavailable", "The message could not be stored; send it again.", **extra
            ) from None
        except Exception:
            logger.exception("unexpected error storing a message in room %s", self.room.pk)
            raise FrameError("internal_error", "The message could not be stored.", **extra) from None
        message = result.message
        await self.send_json(
            {"type": "ack", "client_msg_id": message.client_msg_id, "id": message.pk, "seq": message.seq}
        )

    # --- channel layer → client ----------------------------------------------------------------

    async def room_message(self, event: dict) -> None:
        """Called for each ``room.message`` layer event: forwards the ready-encoded frame."""
        await self.send(text_data=event["text"])

    @classmethod
    async def encode_json(cls, content) -> str:
        return events.encode_frame(content)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any WebSocket path that is not a room: accepted and closed with 4404, never an error."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
