"""The only module that touches the channel layer: group names, event types, broadcasts.

Layer events (msgpack on the wire, JSON primitives only):

- ``room.message``: ``{"type": "room.message", "seq": int, "text": str}`` where ``text`` is the
  ready-encoded ``message`` frame, so the JSON is built once per message, not once per member.

The layer is at-most-once (Redis Pub/Sub, InMemoryChannelLayer alike): PostgreSQL and ``seq``
are the truth, and a failed broadcast never undoes a stored message.
"""

import json
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

ROOM_MESSAGE = "room.message"


def room_group_name(room_id: int) -> str:
    """The channel-layer group of a room: ``"room.<id>"``. Built from the id, never from user text
    (group names allow only ASCII letters, digits, ``-``, ``_``, ``.``, under 100 characters)."""
    return f"room.{int(room_id)}"


def message_frame(message_data: dict) -> dict:
    """The live frame for a stored message: ``{"type": "message", "message": {...}}``."""
    return {"type": "message", "message": message_data}


def encode_frame(frame: dict) -> str:
    """Frames are compact JSON text; non-ASCII is sent as UTF-8, not as escapes."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def broadcast_message(*, room_id: int, seq: int, message_data: dict) -> bool:
    """Hand a stored message to the channel layer for every member of the room on every node.

    Called from sync code after the message's transaction committed (``transaction.on_commit``
    in ``rooms.services.message_post``): a consumer's database thread, a view's thread or a
    management command. Returns True once the layer accepted it; on a layer error (Redis down)
    logs it and returns False: the message stays stored and clients recover it by ``seq``.
    """
    event = {"type": ROOM_MESSAGE, "seq": seq, "text": encode_frame(message_frame(message_data))}
    try:
        async_to_sync(get_channel_layer().group_send)(room_group_name(room_id), event)
    except Exception:
        logger.exception("broadcast of room %s seq %s failed; the message is stored", room_id, seq)
        return False
    return True
