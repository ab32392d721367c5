"""The user socket: one WebSocket per page at ``/ws/user/`` that keeps the sidebar live for all
of the user's rooms and direct messages (``rooms.sidebar``), whichever node they are on.

How (measured in bench/RESULTS.md, "Sidebar"): the socket joins the user's group
(``user.<id>``) and the channel-layer group of every room of the user (``room.<id>``, the group
the room sockets are in). A message then costs what it cost before: one PUBLISH to the room's
group, received once by each node that has a member socket, room or user (the Pub/Sub layer's
group_send is one Redis command per group, not per member: ``channels_redis.pubsub``); no
database write or Redis command per member. Each node turns it into a light frame per user
socket. The alternative, a per-member ``room.activity`` sent to every member's user group,
would cost one PUBLISH per member (1,000 in a room of 1,000).

Frames are JSON text. server → client, on connect and again whenever the set of rooms changes::

    {"type": "sidebar", "server_id": str, "rooms": [
        {"slug", "name", "kind": "room" | "dm", "dm_with": {"id", "username"} | null,
         "last_seq", "last_read_seq", "unread_count", "mention_count"}, ...]}

then live, from any node::

    {"type": "room.activity", "room": slug, "seq": int, "author_id": int}
        a message was stored in one of the rooms (the client bumps ``unread_count`` unless
        ``author_id`` is the user, and ``last_seq``; a seq not above the room's ``last_seq`` in
        the snapshot is already counted in it: ignore it)
    {"type": "message.deleted", "id": int, "room": slug, "seq": int, "author_id": int}
        (an unread message of someone else deleted: one less unread; a mention it held is
        corrected by the next snapshot)
    {"type": "read.updated", "room": slug, "last_read_seq": int, "unread_count": int,
     "mention_count": int}
    {"type": "mention", "room": slug, "message": {...}}
    {"type": "dm.created", "room": {...}}          (followed by a fresh ``sidebar``)
    {"type": "notice", "text": str}

Rooms enter the sidebar on ``user.rooms_changed`` (a join, an add, a room made, a DM opened:
``rooms.events``) and leave it when the user's access to them ends (left, removed, banned, the
room made private, archived or deleted: the room group's own events reach this socket): the
socket reads the sidebar again (two statements), joins and leaves room groups to match, and sends
a fresh ``sidebar``. Events of a room no longer in the sidebar are never forwarded (the check is
per event, against the socket's current rooms). The access watch (``rooms.access.Watch``, every
``ACCESS_RECHECK`` s) checks the user and each room too, for changes made behind the services'
back.

Client frames: none are needed; any frame is answered with ``{"type": "error", "code":
"unknown_type" (or invalid_json, binary_frame, not_object, missing_field, invalid_field)}`` and
the socket stays open.

Resume: none. The state is counts, not a log: after a reconnect the first frame is a fresh
``sidebar``.

Close codes: 4401 not signed in (or the session / token no longer valid, the user deactivated),
4429 over ``WS_MAX_SOCKETS_PER_USER`` (the user socket counts like a room socket), 4503 the
database or Redis cannot be reached (at connect or when the sidebar must be read again:
reconnect with backoff), 1011 an unexpected error (logged). Clean-up on every ending is
``SocketConsumer``'s (groups, socket slot, ``chatsite_ws_open_user_sockets``, the access watch).
"""

import asyncio
import json
import logging

from django.conf import settings

from . import access, events, metrics, services
from .consumers import (
    _CLOSING_ERRORS, _PEER_GONE, CLOSE_UNAUTHENTICATED, CLOSE_UNAVAILABLE, LAYER_JOIN_TIMEOUT,
    UNAVAILABLE_ERRORS, FrameError, SocketConsumer, unavailable_log,
)
from .models import Membership
from .sidebar import Sidebar, sidebar_for

logger = logging.getLogger(__name__)

NO_ROOM = 0  # the room id of the user-only access key: no room has it, so its verdict is "not_found"


def _room_ids(*, user, token_key: str | None) -> list[int] | None:
    """Sync, one hop: the ids of ``user``'s rooms (not banned), or None when the socket's
    credentials are no longer valid (inactive user, revoked token)."""
    if not services.credentials_valid(user=user, token_key=token_key):
        return None
    return list(Membership.objects.filter(user_id=user.pk, banned_at__isnull=True).values_list("room_id", flat=True))


class UserConsumer(SocketConsumer):
    """A signed-in user's sidebar socket (``/ws/user/``): the frames above."""

    open_gauge = metrics.USER_SOCKETS
    rooms: dict = {}  # room id → slug: the rooms whose events are forwarded (the last sidebar's)
    slugs: frozenset = frozenset()
    room_groups: dict = {}  # room id → group name, joined

    async def connect(self) -> None:
        """Called on the handshake: accepts a signed-in user under their socket cap, joins their
        group and their rooms' groups (before reading, so every later message arrives live),
        then sends ``sidebar``; otherwise accepts and closes with 4401, 4429 or 4503."""
        user = await self.admit()
        if user is None:
            return
        self.room_groups = {}
        try:
            self.user_group = events.user_group_name(user.pk)
            await asyncio.wait_for(self.channel_layer.group_add(self.user_group, self.channel_name),
                                   LAYER_JOIN_TIMEOUT)
            ids = await self.db(_room_ids, user=user, token_key=self.scope.get("auth_token"), bounded=False)
            if ids is None:
                await self.refuse(CLOSE_UNAUTHENTICATED)
                return
            await asyncio.wait_for(self.join_rooms(ids), LAYER_JOIN_TIMEOUT)
            snapshot = await self.db(sidebar_for, user=user, bounded=False)
        except UNAVAILABLE_ERRORS:
            unavailable_log.warning("connect", "refusing a user socket: database or Redis unreachable", exc_info=True)
            await self.refuse(CLOSE_UNAVAILABLE)
            return
        await self.accept_counted()
        await self.send_sidebar(snapshot)

    async def join_rooms(self, room_ids) -> bool:
        """Join the groups of ``room_ids`` this socket is not in yet, and leave those of rooms
        not among them; returns whether any was joined."""
        wanted = set(room_ids)
        joined = False
        for room_id in sorted(wanted - set(self.room_groups)):
            group = events.room_group_name(room_id)
            await self.channel_layer.group_add(group, self.channel_name)
            self.room_groups[room_id] = group
            joined = True
        for room_id in sorted(set(self.room_groups) - wanted):
            group = self.room_groups.pop(room_id)
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except UNAVAILABLE_ERRORS:
                pass
        return joined

    async def send_sidebar(self, snapshot: Sidebar) -> None:
        self.rooms = snapshot.room_ids
        self.slugs = frozenset(snapshot.room_ids.values())
        await self.send_json({"type": "sidebar", "server_id": settings.SERVER_ID, "rooms": snapshot.rooms})

    async def refresh(self) -> None:
        """Read the sidebar again, match the room groups to it and send it. Nothing of a room
        that left is forwarded from here on (its events queued meanwhile are checked against the
        new rooms). The database or Redis unreachable: the socket closes with 4503 (the client
        reconnects and gets a fresh snapshot)."""
        if self.closing:
            return
        self.rooms, self.slugs = {}, frozenset()  # until the new sidebar: forward nothing of any room
        user = self.scope["user"]
        try:
            snapshot = await self.db(sidebar_for, user=user)
            if await asyncio.wait_for(self.join_rooms(snapshot.room_ids), LAYER_JOIN_TIMEOUT):
                # A message committed between the read and the join would be missing from the
                # counts: read once more now that every new room's events arrive live.
                snapshot = await self.db(sidebar_for, user=user)
                await asyncio.wait_for(self.join_rooms(snapshot.room_ids), LAYER_JOIN_TIMEOUT)
        except UNAVAILABLE_ERRORS:
            unavailable_log.warning("refresh", "could not read a sidebar; closing the user socket with %d",
                                    CLOSE_UNAVAILABLE, exc_info=True)
            await self.end(CLOSE_UNAVAILABLE)
            return
        if not self.closing:
            await self.send_sidebar(snapshot)

    def pop_groups(self) -> list[str]:
        groups = super().pop_groups() + list(self.room_groups.values())
        self.room_groups = {}
        return groups

    # --- client → server ---------------------------------------------------------------------

    async def receive_json(self, content: dict, **kwargs) -> None:
        frame_type = content.get("type")
        if "type" not in content:
            raise FrameError("missing_field", "The frame has no \"type\".", field="type")
        if not isinstance(frame_type, str):
            raise FrameError("invalid_field", "\"type\" must be a string.", field="type")
        raise FrameError("unknown_type", f"Unknown frame type {frame_type[:50]!r}.")

    # --- channel layer → client ----------------------------------------------------------------

    def _activity(self, event: dict) -> str | None:
        """The ``room.activity`` frame for a ``room.message`` event of one of this socket's
        rooms, or None (not one of them now, or an event without the sidebar's fields)."""
        slug = event.get("room")
        if slug not in self.slugs or self.closing:
            return None
        return events.encode_frame({"type": "room.activity", "room": slug, "seq": event["seq"],
                                    "author_id": event.get("author_id")})

    async def room_message(self, event: dict) -> None:
        text = self._activity(event)
        if text is not None:
            await self.send(text_data=text)
            metrics.SENT_BY_EVENT["room.activity"].inc()

    def deliver_now(self, event: dict) -> bool:
        """The fast path of ``dispatch_in_order`` (under ``chatsite.serve``, while this socket is
        idle): a room's typing and presence events are dropped here without waking the socket's
        loop, and a ``room.message`` becomes its ``room.activity`` frame written at once."""
        kind = event.get("type")
        if kind in (events.ROOM_TYPING, events.ROOM_PRESENCE, events.ROOM_MESSAGE_UPDATED):
            return True
        if kind != events.ROOM_MESSAGE:
            return False
        text = self._activity(event)
        if text is None:
            return True
        try:
            if not self.send_text_now(text):
                return False
        except _PEER_GONE:
            self.closing = True
            return True
        except Exception:  # never into the node's Pub/Sub reader
            logger.exception("could not send a room.activity frame")
            return False
        metrics.SENT_BY_EVENT["room.activity"].inc()
        return True

    async def room_message_deleted(self, event: dict) -> None:
        if event.get("room") in self.slugs and not self.closing:
            frame = json.loads(event["text"])
            frame["author_id"] = event.get("author_id")
            await self.send_json(frame)

    async def room_message_updated(self, event: dict) -> None:
        """Edits change no count (a mention an edit adds comes as ``mention``)."""

    async def room_presence(self, event: dict) -> None:
        """Presence is the room page's, not the sidebar's."""

    room_typing = room_presence

    async def room_archived(self, event: dict) -> None:
        """A room of the user was archived: it leaves the sidebar."""
        await self.refresh()

    async def room_member_removed(self, event: dict) -> None:
        """Someone left, was removed or banned: when it is this user, the room leaves the
        sidebar (and its group)."""
        if event["user_id"] == self.scope["user"].pk:
            await self.refresh()

    async def room_access_changed(self, event: dict) -> None:
        """A room was made private or deleted: read the sidebar again (it lists only rooms the
        user may still read)."""
        await self.refresh()

    async def user_rooms_changed(self, event: dict) -> None:
        await self.refresh()

    # --- access ----------------------------------------------------------------------------------

    def access_keys(self) -> list[access.Key]:
        """One key for the user alone, then one per room in the sidebar (``rooms.access``)."""
        user_id, token = self.scope["user"].pk, self.scope.get("auth_token")
        return [(NO_ROOM, user_id, token)] + [(room_id, user_id, token) for room_id in self.rooms]

    async def access_checked(self, verdicts: list) -> bool:
        """The watch's verdicts: the user's credentials gone closes with 4401; a room refused
        (left, banned, made private, archived or deleted behind the services' back) makes the
        sidebar read again without it. Returns whether the socket was closed."""
        if "unauthenticated" in verdicts:
            await self.access_lost("unauthenticated")
            return True
        if any(v is not None for v in verdicts[1:]):
            await self.refresh()
        return self.closing

    async def recheck_access(self) -> None:
        """``user.access_changed``: the user deactivated or deleted closes with 4401."""
        try:
            refused = await access.checker().check((NO_ROOM, self.scope["user"].pk, self.scope.get("auth_token")))
        except UNAVAILABLE_ERRORS:
            await self.end(CLOSE_UNAVAILABLE)
            return
        if refused == "unauthenticated":
            await self.access_lost(refused)

    async def access_lost(self, verdict: str) -> None:
        if not self.closing:
            self.closing = True
            await self.close(code=_CLOSING_ERRORS[verdict])

