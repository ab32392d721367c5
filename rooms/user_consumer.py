"""The user socket: one WebSocket per page at ``/ws/user/`` that keeps the sidebar live for all
of the user's rooms and direct messages (``rooms.sidebar``), whichever node they are on.

How (measured in bench/RESULTS.md, "Sidebar" and "Room activity hub"): the socket joins the
user's group (``user.<id>``) and follows each of the user's rooms in its node's activity hub
(``rooms.activity``): one channel per node per room in the room's group (``room.<id>``, the group
the room sockets are in), however many user sockets of the node follow it. A message then costs
what it cost before: one PUBLISH to the room's group, received once by each node that has a
member socket (the Pub/Sub layer's group_send is one Redis command per group, not per member:
``channels_redis.pubsub``), recorded once by the node's hub; no database write or Redis command
per member, and no work per user socket per message. Every ``ACTIVITY_BATCH`` seconds the hub
wakes the followers of the rooms that changed, and each sends one ``room.activity`` frame for all
its rooms. The alternative, a per-member event sent to every member's user group, would cost one
PUBLISH per member (1,000 in a room of 1,000).

Frames are JSON text. server → client, on connect and again whenever the set of rooms changes::

    {"type": "sidebar", "server_id": str, "rooms": [
        {"slug", "name", "kind": "room" | "dm", "dm_with": {"id", "username"} | null,
         "last_seq", "last_read_seq", "unread_count", "mention_count"}, ...]}

then live, from any node::

    {"type": "room.activity", "rooms": [{"room": slug, "last_seq": int, "unread_added": int,
     "read_seq": int (only when the user's own message moved their marker)}, ...]}
        messages were stored in the rooms listed: at most one frame every ``ACTIVITY_BATCH``
        seconds (1), one entry per room, counting the messages since the last frame or
        snapshot (never one the snapshot counted; when the node no longer remembers
        every message since, a fresh ``sidebar`` comes instead). For each entry: the client sets ``last_seq``; with
        ``read_seq`` (the user wrote a message there: everything up to it is read) it sets
        ``last_read_seq`` to it and ``unread_count`` to 0 first; then it adds ``unread_added``
        (messages of others, after ``read_seq`` if given). Pending activity is always sent
        before any other frame, so a ``read.updated`` that follows replaces what it counted.
    {"type": "message.deleted", "id": int, "room": slug, "seq": int, "author_id": int}
        (an unread message of someone else deleted: one less unread; a mention it held is
        corrected by the next snapshot)
    {"type": "read.updated", "room": slug, "last_read_seq": int, "unread_count": int,
     "mention_count": int}
    {"type": "mention", "room": slug, "message": {...}}
    {"type": "dm.created", "room": {...}}          (followed by a fresh ``sidebar``)
    {"type": "room.updated", "room": {"slug", "name", "description", "is_private"}}  (renamed)
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

from . import access, activity, events, metrics
from .consumers import (
    _CLOSING_ERRORS,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNAVAILABLE,
    LAYER_JOIN_TIMEOUT,
    UNAVAILABLE_ERRORS,
    FrameError,
    SocketConsumer,
    unavailable_log,
)
from .models import Membership
from .sidebar import Sidebar, sidebar_for

logger = logging.getLogger(__name__)

NO_ROOM = 0  # the room id of the user-only access key: no room has it, so its verdict is "not_found"
ACTIVITY_BATCH = activity.ACTIVITY_BATCH  # seconds: at most one room.activity frame per socket this often
FLUSH = activity.FLUSH  # the hub's tick to a follower: send the activity of your rooms


def _room_ids(*, user, credentials: tuple) -> list[int] | None:
    """Sync, one hop: the ids of ``user``'s rooms (not banned), or None when the socket's
    credentials (``SocketConsumer.credentials``: token, session key, session auth hash) are no
    longer valid: inactive user, revoked token, session ended or its auth hash no longer the
    password's (``rooms.access``, one statement). Checked here from the database because the
    auth middleware may have taken the user from its per-node cache (``rooms.auth``)."""
    if access.verdicts([(NO_ROOM, user.pk, *credentials)])[0] == "unauthenticated":
        return None
    return list(
        Membership.objects.filter(user_id=user.pk, banned_at__isnull=True).values_list("room_id", flat=True)
    )


class UserConsumer(SocketConsumer):
    """A signed-in user's sidebar socket (``/ws/user/``): the frames above."""

    open_gauge = metrics.USER_SOCKETS
    rooms: dict = {}  # room id → slug: the rooms whose events are forwarded (the last sidebar's)
    known_seq: dict = {}  # slug → highest seq counted (the snapshot's last_seq, then activity)
    followed: dict = {}  # room id → None: the rooms this socket follows in the node's hub
    user_id = None  # the hub's follower interface (rooms.activity): whose sockets these are
    quiet = False  # sending a sidebar or activity itself: no activity goes first

    async def connect(self) -> None:
        """Called on the handshake: accepts a signed-in user under their socket cap, joins their
        group and follows their rooms in the node's hub (``rooms.activity``; before reading, so
        every later message is counted), then sends ``sidebar``; otherwise accepts and closes
        with 4401, 4429 or 4503."""
        user = await self.admit()
        if user is None:
            return
        self.followed = {}
        self.user_id = user.pk
        try:
            self.user_group = events.user_group_name(user.pk)
            await asyncio.wait_for(
                self.channel_layer.group_add(self.user_group, self.channel_name), LAYER_JOIN_TIMEOUT
            )
            ids = await self.db(_room_ids, user=user, credentials=self.credentials(), bounded=False)
            if ids is None:
                await self.refuse(CLOSE_UNAUTHENTICATED)
                return
            await asyncio.wait_for(self.join_rooms(ids), LAYER_JOIN_TIMEOUT)
            snapshot = await self.db(sidebar_for, user=user, bounded=False)
            # the rooms followed match the sidebar (an archived room's is left; a room joined
            # meanwhile is followed, and its user.rooms_changed, heard from the start, brings a
            # fresh count)
            await asyncio.wait_for(self.join_rooms(snapshot.room_ids), LAYER_JOIN_TIMEOUT)
        except UNAVAILABLE_ERRORS:
            unavailable_log.warning(
                "connect", "refusing a user socket: database or Redis unreachable", exc_info=True
            )
            await self.refuse(CLOSE_UNAVAILABLE)
            return
        await self.accept_counted()
        await self.send_sidebar(snapshot)

    async def join_rooms(self, room_ids) -> bool:
        """Follow (``rooms.activity``) the rooms of ``room_ids`` this socket does not follow yet,
        and stop following those not among them; returns whether any was followed."""
        hub = activity.hub()
        wanted = set(room_ids)
        joined = False
        for room_id in sorted(wanted - set(self.followed)):
            self.followed[room_id] = None
            try:
                await hub.follow(room_id, self)
            except BaseException:
                self.followed.pop(room_id, None)
                raise
            joined = True
        for room_id in sorted(set(self.followed) - wanted):
            del self.followed[room_id]
            hub.unfollow(room_id, self)
        return joined

    async def send_sidebar(self, snapshot: Sidebar) -> None:
        """Send ``sidebar``: the state from here on (every message the hub received so far was
        committed before the snapshot was read, so it counts it: activity starts after its
        ``last_seq``)."""
        self.rooms = snapshot.room_ids
        self.known_seq = {room["slug"]: room["last_seq"] for room in snapshot.rooms}
        self.quiet = True
        try:
            await self.send_json(
                {"type": "sidebar", "server_id": settings.SERVER_ID, "rooms": snapshot.rooms}
            )
        finally:
            self.quiet = False

    async def refresh(self) -> None:
        """Read the sidebar again, match the rooms followed to it and send it. Nothing of a room
        that left is forwarded from here on (its events queued meanwhile are checked against the
        new rooms). The database or Redis unreachable: the socket closes with 4503 (the client
        reconnects and gets a fresh snapshot)."""
        if self.closing:
            return
        self.rooms, self.known_seq = {}, {}  # until the new sidebar: nothing of any room
        user = self.scope["user"]
        try:
            snapshot = await self.db(sidebar_for, user=user)
            if await asyncio.wait_for(self.join_rooms(snapshot.room_ids), LAYER_JOIN_TIMEOUT):
                # A message committed between the read and the follow would be missing from the
                # counts: read once more now that every new room's events reach the hub.
                snapshot = await self.db(sidebar_for, user=user)
                await asyncio.wait_for(self.join_rooms(snapshot.room_ids), LAYER_JOIN_TIMEOUT)
        except UNAVAILABLE_ERRORS:
            unavailable_log.warning(
                "refresh",
                "could not read a sidebar; closing the user socket with %d",
                CLOSE_UNAVAILABLE,
                exc_info=True,
            )
            await self.end(CLOSE_UNAVAILABLE)
            return
        if not self.closing:
            await self.send_sidebar(snapshot)

    def unfollow_all(self) -> None:
        if self.followed:
            hub = activity.hub()
            for room_id in self.followed:
                hub.unfollow(room_id, self)
            self.followed = {}

    # --- client → server ---------------------------------------------------------------------

    async def receive_json(self, content: dict, **kwargs) -> None:
        frame_type = content.get("type")
        if "type" not in content:
            raise FrameError("missing_field", 'The frame has no "type".', field="type")
        if not isinstance(frame_type, str):
            raise FrameError("invalid_field", '"type" must be a string.', field="type")
        raise FrameError("unknown_type", f"Unknown frame type {frame_type[:50]!r}.")

    # --- channel layer → client ----------------------------------------------------------------

    async def sidebar_flush(self, event: dict) -> None:
        """The hub's tick (``rooms.activity``): a room of this socket changed."""
        await self.flush_activity()

    async def flush_activity(self) -> None:
        """Send the activity of this socket's rooms since what it counted (the hub's state: at
        most one entry per room) as one ``room.activity`` frame, before any other frame. When the
        hub's log no longer reaches back to what a room counted, a fresh ``sidebar`` is sent
        instead (``refresh``)."""
        if self.closing or not self.rooms:
            return
        hub = activity.hub()
        user_id, known = self.user_id, self.known_seq
        rooms = []
        for room_id, slug in self.rooms.items():
            since = known.get(slug)
            if since is None:
                continue
            found = hub.entry(room_id, since, user_id)
            if found is None:
                continue
            if found is activity.GAP:
                self.quiet = True
                try:
                    await self.refresh()
                finally:
                    self.quiet = False
                return
            last_seq, unread_added, read_seq = found
            known[slug] = last_seq
            entry = {"room": slug, "last_seq": last_seq, "unread_added": unread_added}
            if read_seq:
                entry["read_seq"] = read_seq
            rooms.append(entry)
        if not rooms:
            return
        self.quiet = True
        try:
            await super().send_json({"type": "room.activity", "rooms": rooms})
        finally:
            self.quiet = False

    async def send_json(self, content: dict, close: bool = False) -> None:
        """Every frame but ``sidebar`` (and ``room.activity`` itself) goes after the activity not
        sent yet (so that the client applies a ``read.updated`` after the messages it counts)."""
        if not self.quiet:
            await self.flush_activity()
        await super().send_json(content, close=close)

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        """As ``send_json``, for the frames forwarded ready-encoded."""
        if text_data is not None and not self.quiet:
            await self.flush_activity()
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def cleanup(self) -> None:
        self.unfollow_all()
        await super().cleanup()

    async def room_message_deleted(self, event: dict) -> None:
        if event.get("room") in self.known_seq and not self.closing:
            frame = json.loads(event["text"])
            frame["author_id"] = event.get("author_id")
            await self.send_json(frame)

    async def room_message_updated(self, event: dict) -> None:
        """Edits change no count (a mention an edit adds comes as ``mention``)."""

    async def room_member_updated(self, event: dict) -> None:
        """A member joined, was added, muted, promoted or banned: the room page's, not the
        sidebar's (this user's own ban comes as ``room.member_removed``)."""

    async def room_updated(self, event: dict) -> None:
        """The room was renamed, described or its privacy changed: ``room.updated`` forwarded
        (the sidebar shows the new name)."""
        if not self.closing and self.room_slug_known(event):
            await self.send(text_data=event["text"])

    def room_slug_known(self, event: dict) -> bool:
        try:
            return json.loads(event["text"])["room"]["slug"] in self.known_seq
        except (KeyError, TypeError, ValueError):
            return False

    async def dispatch(self, message: dict) -> None:
        """As ``SocketConsumer.dispatch``; an event of a room group this socket has no handler
        for (one a later version of the room socket added) is ignored, not an error."""
        if message.get("type", "").startswith("room.") and not hasattr(
            self, message["type"].replace(".", "_")
        ):
            return
        await super().dispatch(message)

    async def room_presence(self, event: dict) -> None:
        """Presence is the room page's, not the sidebar's."""

    room_typing = room_presence

    async def room_archived(self, event: dict) -> None:
        """A room of the user was archived: it leaves the sidebar."""
        await self.refresh()

    async def room_member_removed(self, event: dict) -> None:
        """Someone left, was removed or banned: when it is this user, the room leaves the
        sidebar (and its group)."""
        if event["user_id"] == self.scope["user"].pk and event["reason"] != "unbanned":
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
        user_id, credentials = self.scope["user"].pk, self.credentials()
        return [(NO_ROOM, user_id, *credentials)] + [
            (room_id, user_id, *credentials) for room_id in self.rooms
        ]

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
        """``user.access_changed``, ``user.sessions_changed``: the user deactivated or deleted, or
        this socket's session ended or no longer matching the password, closes with 4401."""
        try:
            refused = await access.checker().check((NO_ROOM, self.scope["user"].pk, *self.credentials()))
        except UNAVAILABLE_ERRORS:
            await self.end(CLOSE_UNAVAILABLE)
            return
        if refused == "unauthenticated":
            await self.access_lost(refused)

    async def access_lost(self, verdict: str) -> None:
        if not self.closing:
            self.closing = True
            await self.close(code=_CLOSING_ERRORS[verdict])
