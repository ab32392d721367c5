"""The only module that touches the channel layer: group names, event types, broadcasts.

Groups: ``room.<room id>`` (every socket in a room) and ``user.<user id>`` (every socket of a
user, any room). Layer events (msgpack on the wire, JSON primitives only):

- ``room.message``: ``{"type": "room.message", "seq": int, "text": str, "room": slug,
  "author_id": int}``; ``text`` is the ready-encoded ``message`` frame, so the JSON is built once
  per message, not once per member; ``room`` and ``author_id`` are for the user sockets in the
  group (``rooms.user_consumer``), which send a light ``room.activity`` frame instead.
- ``room.message_updated`` / ``room.message_deleted``: ``{"type": …, "seq": int, "text": str}``,
  the ``message.updated`` / ``message.deleted`` frame (``room.message_deleted`` events also carry
  ``"room": slug`` and ``"author_id": int`` when known, for the user sockets' sidebar).
- ``room.reaction_updated``: ``{"type": "room.reaction_updated", "seq": int, "text": str}``, the
  ``reaction.updated`` frame (``rooms.reactions``).
- ``room.thread_updated``: ``{"type": "room.thread_updated", "seq": int, "text": str}``, the
  ``thread.updated`` frame (``rooms.replies``: a parent's reply count changed).
- ``room.archived``: ``{"type": "room.archived", "text": str}``; sockets forward it, close 4410.
- ``room.member_removed``: ``{"type": "room.member_removed", "user_id": int, "reason": "banned" |
  "left" | "removed" | "unbanned", "text": str | None}``; that user's sockets in the room close
  with 4403 (banned), 4000 (left), or for ``removed`` (a membership deleted by a moderator) with
  what a fresh access check says (4404 in a private room), else 4000 (``unbanned`` closes
  nothing: the user had no socket there). ``text``, when set, is the ``member.removed`` frame,
  forwarded to every other socket in the room.
- ``room.member_updated``: ``{"type": "room.member_updated", "text": str}``; the
  ``member.updated`` frame (a member joined or was added, their role, mute or ban changed),
  or a ``members.updated`` frame (several, paced: ``_MemberUpdates``), forwarded to every socket
  in the room.
- ``room.members_joined``: ``{"type": "room.members_joined", "text": str}``; the
  ``members.joined`` frame (more than ``settings.MEMBER_ROWS_MAX`` new members in one pacing window,
  sent as their count), forwarded to every socket in the room.
- ``room.updated``: ``{"type": "room.updated", "text": str}``; the ``room.updated`` frame (the
  room's name, description or privacy changed), forwarded to every socket in the room.
- ``room.access_changed``: ``{"type": "room.access_changed"}`` (the room was made private or
  deleted); every socket in the room checks its access again (``rooms.access``) and closes with
  4404 (4401, 4403) if it has ended.
- ``room.presence``: ``{"type": "room.presence", "text": str}``, a ``presence.diff`` frame.
- ``room.typing``: ``{"type": "room.typing", "user_id": int, "text": str}``; forwarded to every
  socket but that user's own.
- ``user.token_revoked``: ``{"type": "user.token_revoked"}`` to ``user.<id>``; sockets opened
  with a token close with 4401.
- ``user.access_changed``: ``{"type": "user.access_changed"}`` to ``user.<id>`` (the user was
  deactivated or deleted); every socket of the user checks its access again and closes (4401).
- ``user.notice``: ``{"type": "user.notice", "text": str}`` to ``user.<id>``; ``text`` is the
  ``{"type": "notice", "text": …}`` frame, forwarded to every socket of that user.
- ``user.dm_created``: ``{"type": "user.dm_created", "text": str}`` to ``user.<id>`` of each of
  a new direct message's two users; ``text`` is the ``{"type": "dm.created", "room": {...room
  shape as that user sees it...}}`` frame, forwarded to every socket of that user.
- ``user.read_updated``: ``{"type": "user.read_updated", "text": str, "tab": str (optional)}``
  to ``user.<id>``; the ``read.updated`` frame (``rooms.reads``), forwarded to every socket of
  that user but those of ``tab``, the page whose report moved the marker (``?tab=``).
- ``user.mention``: ``{"type": "user.mention", "text": str}`` to ``user.<id>``; the ``mention``
  frame (``rooms.mentions``), one event per mentioned user, forwarded to every socket of theirs.
- ``user.rooms_changed``: ``{"type": "user.rooms_changed"}`` to ``user.<id>``: the user's set of
  rooms grew (joined or added to a room, a room created, a DM opened); their user sockets
  (``rooms.user_consumer``) read it again, join the new rooms' groups and send a fresh
  ``sidebar`` frame. Rooms lost reach user sockets through the room's own events
  (``room.member_removed``, ``room.access_changed``, ``room.archived``), since a user socket is
  in the group of each of its user's rooms. Room sockets ignore it.

The layer is at-most-once (Redis Pub/Sub, InMemoryChannelLayer alike): PostgreSQL and ``seq``
are the truth, and a failed broadcast never undoes a stored change: it is logged and counted in
``broadcast_failures`` (and ``chatsite_layer_errors_total``, ``rooms.metrics``).
"""

import asyncio
import logging
import os
import threading
import time
import weakref

import orjson
from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from . import metrics

logger = logging.getLogger(__name__)

ROOM_MESSAGE = "room.message"
ROOM_MESSAGE_UPDATED = "room.message_updated"
ROOM_MESSAGE_DELETED = "room.message_deleted"
ROOM_ARCHIVED = "room.archived"
ROOM_REACTION_UPDATED = "room.reaction_updated"
ROOM_THREAD_UPDATED = "room.thread_updated"
ROOM_MEMBER_REMOVED = "room.member_removed"
ROOM_MEMBER_UPDATED = "room.member_updated"
ROOM_MEMBERS_JOINED = "room.members_joined"
ROOM_UPDATED = "room.updated"
USER_TOKEN_REVOKED = "user.token_revoked"
ROOM_ACCESS_CHANGED = "room.access_changed"
USER_ACCESS_CHANGED = "user.access_changed"
USER_SESSIONS_CHANGED = "user.sessions_changed"
ROOM_PRESENCE = "room.presence"
ROOM_TYPING = "room.typing"
USER_NOTICE = "user.notice"
USER_DM_CREATED = "user.dm_created"
USER_READ_UPDATED = "user.read_updated"
USER_MENTION = "user.mention"
USER_ROOMS_CHANGED = "user.rooms_changed"

_failures_lock = threading.Lock()
broadcast_failures = 0  # layer errors since start, per process


def room_group_name(room_id: int) -> str:
    """The channel-layer group of a room: ``"room.<id>"``. Built from the id, never from user text
    (group names allow only ASCII letters, digits, ``-``, ``_``, ``.``, under 100 characters)."""
    return f"room.{int(room_id)}"


def user_group_name(user_id: int) -> str:
    """The group of every socket of one user: ``"user.<id>"``."""
    return f"user.{int(user_id)}"


def message_frame(message_data: dict) -> dict:
    """The live frame for a stored message: ``{"type": "message", "message": {...}}``."""
    return {"type": "message", "message": message_data}


def _encode(value) -> str:
    """``value`` as compact JSON text by orjson: the same text as ``json.dumps(value,
    ensure_ascii=False, separators=(",", ":"))`` for what frames hold (dicts with string or int
    keys, lists, tuples, strings, ints, bools, None), about 6 times faster (a resume of 1,000
    messages: 11.4 -> 1.9 ms, bench/RESULTS.md). Raises ``TypeError`` for what is not JSON."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def encode_frame(frame: dict) -> str:
    """Frames are compact JSON text; non-ASCII is sent as UTF-8, not as escapes (the text of
    ``json.dumps(frame, ensure_ascii=False, separators=(",", ":"))``)."""
    return _encode(frame)


def encode_message_frame(message_data: dict) -> str:
    """``encode_frame(message_frame(message_data))``, the text of a stored message's live frame
    (a resume encodes up to 1,000 of them)."""
    return '{"type":"message","message":' + _encode(message_data) + "}"


def _calling_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop whose ``sync_to_async`` / ``database_sync_to_async`` thread this is
    (a consumer's database call, a view under ASGI), or None (a management command, a plain
    thread, a test without a loop)."""
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    if loop is None or getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    if loop.is_closed() or not loop.is_running():
        return None
    return loop


_pending: set = set()  # handed-over publishes not finished yet (strong references)


class _Publisher:
    """A loop's publishes, handed to the layer in the order they were committed (Redis Pub/Sub
    keeps the order of one publisher's publishes, not of concurrent ones): one batch in flight at
    a time, and every event queued while it is in flight goes out in the next batch, as one
    pipeline of PUBLISHes (one Redis round trip) when the layer has ``group_send_many``
    (``chatsite.layers``).

    Why (bench/RESULTS.md, "Publishes pipelined"): a node used to send its publishes one round
    trip at a time behind a lock. When its loop was busy (a burst of read reports and their
    ``read.updated``, the sidebar's tick), each round trip waited for the loop, the publishes
    queued behind one another, and 15 % of the messages reached the layer 0.1-0.5 s after their
    commit (``chatsite_fanout_latency_seconds``, bench.sidebar's page-like clients at 5 msg/s).
    Batched, a queue drains in one round trip however long it grew."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: list = []  # (layer, group, event, started or None, future)
        self.task: asyncio.Task | None = None

    def put(self, layer, items, started: float | None) -> asyncio.Future:
        """Queue ``items`` (``[(group, event), ...]``); returns a future done once the layer
        took them (or refused them: logged and counted by ``_failed``; the future never
        raises)."""
        done = self.loop.create_future()
        for i, (group, event) in enumerate(items):
            self.queue.append((layer, group, event, started, done if i == len(items) - 1 else None))
        if self.task is None:
            self.task = self.loop.create_task(self._drain())
        return done

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch, self.queue = self.queue, []
                start = 0
                while start < len(batch):  # runs of one layer (there is one, but be exact)
                    layer = batch[start][0]
                    end = start
                    while end < len(batch) and batch[end][0] is layer:
                        end += 1
                    await self._send(layer, batch[start:end])
                    start = end
        finally:
            self.task = None

    @staticmethod
    async def _send(layer, run: list) -> None:
        send_many = getattr(layer, "group_send_many", None)
        if send_many is not None and len(run) > 1:
            try:
                await send_many([(group, event) for _, group, event, _, _ in run])
            except Exception:
                for _, group, event, _, _ in run:
                    _failed(group, event)
                run = [item[:3] + (None, item[4]) for item in run]  # nothing to observe
        else:
            sent = []
            for item in run:
                try:
                    await layer.group_send(item[1], item[2])
                except Exception:
                    _failed(item[1], item[2])
                    item = item[:3] + (None, item[4])
                sent.append(item)
            run = sent
        now = time.perf_counter()
        for _, _, event, started, done in run:
            if started is not None:
                metrics.FANOUT_LATENCY.labels(event=event["type"]).observe(now - started)
            if done is not None and not done.done():
                done.set_result(None)


_publishers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Publisher]" = weakref.WeakKeyDictionary()


def _publisher() -> _Publisher:
    loop = asyncio.get_running_loop()
    found = _publishers.get(loop)
    if found is None:
        found = _publishers[loop] = _Publisher(loop)
    return found


def _failed(group: str, event: dict) -> None:
    global broadcast_failures
    with _failures_lock:
        broadcast_failures += 1
    metrics.LAYER_ERRORS.labels(event=event["type"]).inc()
    logger.exception("broadcast of %s to %s failed; the change is stored", event["type"], group)


async def _publish_in_order(layer, group: str, event: dict, started: float | None) -> None:
    """Queue ``event`` on this loop's ``_Publisher``; returns once the layer took it (or refused
    it: logged and counted)."""
    await _publisher().put(layer, [(group, event)], started)


def _group_send(group: str, event: dict, started: float | None = None) -> bool:
    """Hand ``event`` to the layer from sync code (a consumer's database thread, a view's
    thread, a management command, any thread). ``started``: the ``time.perf_counter()`` taken
    when the ``broadcast_*`` helper began (the commit, for an ``on_commit`` callback); the time
    until the layer took the event is observed in ``chatsite_fanout_latency_seconds``.

    Called on an event loop's own thread (``rooms.services.message_post_async``), the publish
    is queued as a task on that loop, in order, and this returns True at once. Called from a
    ``sync_to_async`` thread of a running server (every consumer's
    ``database_sync_to_async`` call shares one such thread per process), the publish is queued
    on the server's event loop in commit order and this returns True at once: the thread is not
    held while the loop gets to it (it used to wait, and every other socket's database call
    waited behind it). A layer error there is logged and counted as below. Elsewhere (management
    commands, plain threads) it waits for the layer and returns False after logging a layer
    error (counted in ``broadcast_failures`` and ``chatsite_layer_errors_total``)."""
    layer = get_channel_layer()  # the caller's (settings may differ on the loop's thread)
    if _on_loop(_queue_publish, layer, group, event, started):
        return True
    try:
        async_to_sync(layer.group_send)(group, event)
    except Exception:
        _failed(group, event)
        return False
    if started is not None:
        metrics.FANOUT_LATENCY.labels(event=event["type"]).observe(time.perf_counter() - started)
    return True


def broadcast_message(*, room_id: int, seq: int, message_data: dict) -> bool:
    """Send a stored message to every member of the room on every node. Called from
    ``transaction.on_commit`` in ``rooms.services.message_post``; returns whether the layer took
    it (on a layer error the message stays stored and clients recover it by ``seq``). Counts the
    message in ``chatsite_messages_stored_total`` (this callback runs once per committed new
    message). From a server's thread it returns once the publish is queued (see ``_group_send``)."""
    started = time.perf_counter()
    metrics.MESSAGES_STORED.inc()
    event = {
        "type": ROOM_MESSAGE,
        "seq": seq,
        "text": encode_frame(message_frame(message_data)),
        "room": message_data["room"],
        "author_id": message_data["author"]["id"],
    }
    return _group_send(room_group_name(room_id), event, started)


def broadcast_message_updated(*, room_id: int, message_data: dict) -> bool:
    """``{"type": "message.updated", "message": {...}}`` to the room, after an edit."""
    started = time.perf_counter()
    frame = {"type": "message.updated", "message": message_data}
    event = {"type": ROOM_MESSAGE_UPDATED, "seq": message_data["seq"], "text": encode_frame(frame)}
    return _group_send(room_group_name(room_id), event, started)


def broadcast_message_deleted(
    *, room_id: int, room_slug: str, message_id: int, seq: int, author_id: int | None = None
) -> bool:
    """``{"type": "message.deleted", "id": int, "room": slug, "seq": int}`` to the room
    (``author_id``, when given, rides on the layer event for the user sockets' sidebar)."""
    started = time.perf_counter()
    frame = {"type": "message.deleted", "id": message_id, "room": room_slug, "seq": seq}
    event = {"type": ROOM_MESSAGE_DELETED, "seq": seq, "text": encode_frame(frame), "room": room_slug}
    if author_id is not None:
        event["author_id"] = author_id
    return _group_send(room_group_name(room_id), event, started)


def broadcast_reaction_updated(*, room_id: int, room_slug: str, seq: int, reactions: list[dict]) -> bool:
    """``{"type": "reaction.updated", "room": slug, "seq": int, "reactions": [...]}`` to the
    room, after a reaction was added or removed (``rooms.reactions``, on commit): the message's
    whole reaction list after the change."""
    started = time.perf_counter()
    frame = {"type": "reaction.updated", "room": room_slug, "seq": seq, "reactions": reactions}
    event = {"type": ROOM_REACTION_UPDATED, "seq": seq, "text": encode_frame(frame)}
    return _group_send(room_group_name(room_id), event, started)


def broadcast_thread_updated(*, room_id: int, room_slug: str, seq: int, reply_count: int) -> bool:
    """``{"type": "thread.updated", "room": slug, "seq": int, "reply_count": int}`` to the room:
    the message ``seq`` got a reply, or one of its replies was deleted (``rooms.replies``; on
    commit, or at once from the event loop's send after its statement committed)."""
    started = time.perf_counter()
    frame = {"type": "thread.updated", "room": room_slug, "seq": seq, "reply_count": reply_count}
    event = {"type": ROOM_THREAD_UPDATED, "seq": seq, "text": encode_frame(frame)}
    return _group_send(room_group_name(room_id), event, started)


def broadcast_room_archived(*, room_id: int, room_slug: str) -> bool:
    """``{"type": "room.archived", "room": slug}`` to the room; its sockets then close (4410)."""
    started = time.perf_counter()
    frame = {"type": "room.archived", "room": room_slug}
    return _group_send(
        room_group_name(room_id), {"type": ROOM_ARCHIVED, "text": encode_frame(frame)}, started
    )


def broadcast_member_removed(
    *, room_id: int, user_id: int, reason: str, room_slug: str | None = None, user: dict | None = None
) -> bool:
    """Tell the room's sockets that ``user_id`` was banned, left, was removed or unbanned: theirs
    close (not for ``unbanned``). With ``room_slug`` and ``user`` (``{"id", "username"}``) the
    others get ``{"type": "member.removed", "room": slug, "user": {...}, "reason": reason}``
    (``left``, ``removed``, ``unbanned``: the row is gone from the member list; a ban is a
    ``member.updated`` with ``"banned": true`` instead)."""
    started = time.perf_counter()
    text = None
    if room_slug is not None and user is not None:
        text = encode_frame({"type": "member.removed", "room": room_slug, "user": user, "reason": reason})
        _on_loop(_member_drop, room_id, user_id)  # before the removal is queued (``_MemberUpdates``)
    event = {"type": ROOM_MEMBER_REMOVED, "user_id": user_id, "reason": reason, "text": text}
    return _group_send(room_group_name(room_id), event, started)


def broadcast_member_updated(*, room_id: int, room_slug: str, member: dict, joined: bool = False) -> bool:
    """``{"type": "member.updated", "room": slug, "member": {...}}`` to the room: ``member`` is
    the member shape of ``GET /api/rooms/<slug>/members/`` (``rooms.serializers.MembershipSerializer``),
    after a join or an add, a role change, a mute or unmute, or a ban.

    In a running server the changes of one room are paced (``_MemberUpdates``): the first goes
    out at once; those that follow within ``MEMBER_UPDATES_WINDOW`` seconds go together at its
    end (while they keep coming, after windows twice as long each time, up to 2 s), as one
    ``{"type": "members.updated", "room": slug, "members": [{...}, ...]}`` (or a
    ``member.updated`` when only one is left), each member's latest state once. ``joined``: the
    change made the membership (a join, an add). A window holding more than
    ``settings.MEMBER_ROWS_MAX`` (100) such new members with nothing else changed sends them as a
    count instead,
    ``{"type": "members.joined", "room": slug, "count": n}``, after the other changes' frame.
    Elsewhere (management commands, plain threads) each is sent at once."""
    started = time.perf_counter()
    if _on_loop(_member_update, get_channel_layer(), room_id, room_slug, member, started, joined):
        return True
    return _group_send(room_group_name(room_id), _member_updated_event(room_slug, [member]), started)


# Seconds a room's member changes are held after one went out (``_MemberUpdates``). Each change
# goes to every socket in the room: a storm of n new members was n^2/2 frames, and 3,000 took
# 68.6 s to join (python -m bench join-storm --clients 3000 --memberships none, 2026-12-06),
# most of the nodes' time spent writing member.updated frames. Held, a node sends a room at
# most 1 / 0.2 s = 5 such frames a second; a lone change is not delayed. While changes keep
# coming, each window is twice the last, up to MEMBER_UPDATES_WINDOW_MAX: at 10,000 new members
# the 0.2 s windows still left 65 % of a node's time writing them (py-spy, 5,000 joined).
MEMBER_UPDATES_WINDOW = 0.2
MEMBER_UPDATES_WINDOW_MAX = 2.0


def _member_updated_event(room_slug: str, members: list[dict]) -> dict:
    if len(members) == 1:
        frame = {"type": "member.updated", "room": room_slug, "member": members[0]}
    else:
        frame = {"type": "members.updated", "room": room_slug, "members": members}
    return {"type": ROOM_MEMBER_UPDATED, "text": encode_frame(frame)}


def _queue_publish(
    loop: asyncio.AbstractEventLoop, layer, group: str, event: dict, started: float | None
) -> None:
    """On ``loop``: queue the publish to ``layer`` (the caller's) as a task, in call order (a
    task's publish waits one turn, so a direct ``_Publisher.put`` would overtake the tasks of
    events committed earlier)."""
    task = loop.create_task(_publish_in_order(layer, group, event, started))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def _on_loop(callback, *args) -> bool:
    """Run ``callback(loop, *args)`` on the running server's event loop: now when called on it,
    else queued from its ``sync_to_async`` thread in call order (the order a thread's
    ``_group_send`` calls keep too). False, and nothing run, without such a loop."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        callback(running, *args)
        return True
    loop = _calling_loop()
    if loop is not None:
        try:
            loop.call_soon_threadsafe(callback, loop, *args)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True
    return False


class _MemberUpdates:
    """One loop's pacing of ``member.updated`` per room. A change to a room with no window open
    is published at once and opens a window of ``MEMBER_UPDATES_WINDOW`` seconds; changes during
    the window are held (a member's later state replaces their earlier one) and published
    together when it ends, which opens the next window, twice as long (at most
    ``MEMBER_UPDATES_WINDOW_MAX``); a window that ends with nothing held closes. A window's new
    members beyond ``settings.MEMBER_ROWS_MAX`` go as their count (``members.joined``), so a join storm
    costs each socket one small frame per window. A removal
    (``member.removed``: left, removed, unbanned) drops the member's held change, published
    after it would have put the row back (``drop``); a ban's own
    ``room.member_removed`` (no frame) does not. Across nodes nothing is ordered, as before: a
    change held on one node may reach a page after a removal sent meanwhile by another (the page
    reads the members again when its socket reconnects)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        # room id -> {"layer", "slug", "held": {user id: (member, joined)}, "span"}
        self.rooms: dict[int, dict] = {}

    def update(
        self, layer, room_id: int, room_slug: str, member: dict, started: float, joined: bool = False
    ) -> None:
        window = self.rooms.get(room_id)
        if window is None:
            self._open(layer, room_id, room_slug)
            self._publish(layer, room_id, room_slug, [member], started)
            return
        held = window["held"]
        user_id = member["user"]["id"]
        # the latest state, in the order of the last changes; "joined" while every held change of
        # the member was a join (joined, then muted: a row)
        earlier = held.pop(user_id, None)
        held[user_id] = (member, joined and (earlier is None or earlier[1]))
        window["slug"], window["layer"] = room_slug, layer

    def drop(self, room_id: int, user_id: int) -> None:
        window = self.rooms.get(room_id)
        if window is not None:
            window["held"].pop(user_id, None)

    def _open(self, layer, room_id: int, room_slug: str, span: float | None = None) -> None:
        if span is None:
            span = MEMBER_UPDATES_WINDOW  # read now: a test may lengthen it
        self.rooms[room_id] = {"layer": layer, "slug": room_slug, "held": {}, "span": span}
        self.loop.call_later(span, self._close, room_id)

    def _close(self, room_id: int) -> None:
        window = self.rooms.pop(room_id, None)
        if window is None or not window["held"]:
            return
        layer = window["layer"]
        self._open(layer, room_id, window["slug"], min(2 * window["span"], MEMBER_UPDATES_WINDOW_MAX))
        # Timed from here: chatsite_fanout_latency_seconds measures the hand-off to the layer,
        # not the pacing (docs/metrics.md).
        started = time.perf_counter()
        held = window["held"].values()
        joined = [member for member, new in held if new]
        if len(joined) <= settings.MEMBER_ROWS_MAX:
            self._publish(layer, room_id, window["slug"], [member for member, _ in held], started)
            return
        changed = [member for member, new in held if not new]
        if changed:
            self._publish(layer, room_id, window["slug"], changed, started)
        frame = {"type": "members.joined", "room": window["slug"], "count": len(joined)}
        event = {"type": ROOM_MEMBERS_JOINED, "text": encode_frame(frame)}
        _queue_publish(self.loop, layer, room_group_name(room_id), event, started)

    def _publish(self, layer, room_id: int, room_slug: str, members: list[dict], started: float) -> None:
        event = _member_updated_event(room_slug, members)
        _queue_publish(self.loop, layer, room_group_name(room_id), event, started)


_member_updates: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _MemberUpdates]" = (
    weakref.WeakKeyDictionary()
)


def _member_updates_of(loop: asyncio.AbstractEventLoop) -> _MemberUpdates:
    found = _member_updates.get(loop)
    if found is None:
        found = _member_updates[loop] = _MemberUpdates(loop)
    return found


def _member_update(
    loop, layer, room_id: int, room_slug: str, member: dict, started: float, joined: bool
) -> None:
    _member_updates_of(loop).update(layer, room_id, room_slug, member, started, joined)


def _member_drop(loop, room_id: int, user_id: int) -> None:
    updates = _member_updates.get(loop)
    if updates is not None:
        updates.drop(room_id, user_id)


def broadcast_room_updated(*, room_id: int, room: dict) -> bool:
    """``{"type": "room.updated", "room": {"slug", "name", "description", "is_private"}}`` to the
    room, after ``rooms.services.room_update`` changed any of them."""
    started = time.perf_counter()
    frame = {"type": "room.updated", "room": room}
    return _group_send(room_group_name(room_id), {"type": ROOM_UPDATED, "text": encode_frame(frame)}, started)


def broadcast_room_access_changed(*, room_id: int) -> bool:
    """Tell every socket in the room that access to it may have ended (made private, deleted):
    each checks again (``rooms.access``) and closes if it has."""
    return _group_send(room_group_name(room_id), {"type": ROOM_ACCESS_CHANGED}, time.perf_counter())


def broadcast_user_access_changed(*, user_id: int) -> bool:
    """Tell every socket of ``user_id`` that their access may have ended (deactivated, deleted)."""
    return _group_send(user_group_name(user_id), {"type": USER_ACCESS_CHANGED}, time.perf_counter())


def broadcast_user_sessions_changed(*, user_id: int, renewed: str | None = None) -> bool:
    """Tell every socket of ``user_id`` that one of their sessions ended (log-out) or their
    password changed: each session socket checks its session again (``rooms.access``) and
    closes with 4401 if it has ended or its auth hash no longer matches. ``renewed``: the
    ``rooms.access.session_digest`` of the session that changed the password (Django gave it a
    new key, ``update_session_auth_hash``): its sockets close with 4001 and reconnect with the
    new cookie. Session keys themselves never travel through the layer."""
    event = {"type": USER_SESSIONS_CHANGED, "renewed": renewed}
    return _group_send(user_group_name(user_id), event, time.perf_counter())


async def presence_changed(
    *,
    room_id: int,
    joins: list[dict],
    leaves: list[dict],
    count: int | None = None,
    partial: bool = False,
    v: int | None = None,
) -> None:
    """From async code (the consumer, the presence heartbeat): tell the room's sockets who came
    online and who went offline: ``{"type": "presence.diff", "joins": [{"id", "username"}],
    "leaves": [{"id", "username"}], "count": int, "partial": bool}`` (one batch of
    ``rooms.presence.announce``; ``count``: users online in the room when it went out; ``partial``:
    some changes were left unnamed, see ``rooms.presence.Announcer``; ``v``: the room's presence
    version when the state was read, ``rooms.presence.Page``). Layer errors propagate (presence
    is best effort)."""
    frame = {"type": "presence.diff", "joins": joins, "leaves": leaves}
    if count is not None:
        frame["count"] = count
        frame["partial"] = partial
    if v is not None:
        frame["v"] = v
    await get_channel_layer().group_send(
        room_group_name(room_id), {"type": ROOM_PRESENCE, "text": encode_frame(frame)}
    )


async def typing(*, room_id: int, user: dict) -> None:
    """From the consumer: ``{"type": "typing", "user": {"id", "username"}}`` to the room's other
    members' sockets (never stored)."""
    frame = {"type": "typing", "user": user}
    await get_channel_layer().group_send(
        room_group_name(room_id), {"type": ROOM_TYPING, "user_id": user["id"], "text": encode_frame(frame)}
    )


def broadcast_token_revoked(*, user_id: int) -> bool:
    """Tell every socket of ``user_id`` that their API token was revoked."""
    started = time.perf_counter()
    return _group_send(user_group_name(user_id), {"type": USER_TOKEN_REVOKED}, started)


def broadcast_user_notice(user_id: int, text: str) -> bool:
    """``{"type": "notice", "text": text}`` to every socket of ``user_id`` on every node (a direct
    notice; not stored, so a user with no open socket never sees it)."""
    frame = encode_frame({"type": "notice", "text": text})
    return _group_send(user_group_name(user_id), {"type": USER_NOTICE, "text": frame}, time.perf_counter())


def broadcast_dm_created(*, user_id: int, room_data: dict) -> bool:
    """``{"type": "dm.created", "room": {...}}`` to every socket of ``user_id`` on every node: a
    direct message with them was just made (``rooms.dms.dm_open``, after commit). ``room_data``
    is the room shape as that user sees it (``dm_with`` the other person)."""
    frame = encode_frame({"type": "dm.created", "room": room_data})
    return _group_send(
        user_group_name(user_id), {"type": USER_DM_CREATED, "text": frame}, time.perf_counter()
    )


def broadcast_read_updated(*, user_id: int, room_slug: str, state: dict) -> bool:
    """``{"type": "read.updated", "room": slug, "last_read_seq": int, "unread_count": int,
    "mention_count": int}`` to every socket of ``user_id`` on every node, after a read report
    moved their marker (``rooms.reads.read_report``, on commit)."""
    frame = encode_frame({"type": "read.updated", "room": room_slug, **state})
    return _group_send(
        user_group_name(user_id), {"type": USER_READ_UPDATED, "text": frame}, time.perf_counter()
    )


def broadcast_read_updates(updates: list[tuple[int, str, dict, str | None]]) -> None:
    """``broadcast_read_updated`` for each ``(user_id, room_slug, state, tab)`` of one tick of
    read reports (``rooms.reads.ReadBatcher``); with a ``tab`` (the page whose report moved the
    marker) the layer event carries ``"tab": str`` and that tab's sockets skip it. Called on the
    event loop after the tick's commit: the
    events are queued in order with this loop's other publishes and handed to the layer at once,
    as one pipeline of PUBLISHes (one Redis round trip, one command per user and room) when the
    layer has ``group_send_many`` (``chatsite.layers``), else one ``group_send`` each."""
    if not updates:
        return
    started = time.perf_counter()
    items = []
    for user_id, slug, state, tab in updates:
        event = {
            "type": USER_READ_UPDATED,
            "text": encode_frame({"type": "read.updated", "room": slug, **state}),
        }
        if tab is not None:
            event["tab"] = tab
        items.append((user_group_name(user_id), event))
    task = asyncio.get_running_loop().create_task(_publish_many_in_order(get_channel_layer(), items, started))
    _pending.add(task)
    task.add_done_callback(_pending.discard)


async def _publish_many_in_order(layer, items: list[tuple[str, dict]], started: float) -> None:
    await _publisher().put(layer, items, started)


def broadcast_mention(*, user_ids: list[int], room_slug: str, message_data: dict) -> None:
    """``{"type": "mention", "room": slug, "message": {...}}`` to every socket of each of
    ``user_ids`` (members newly mentioned by ``@username``), one layer event per user; the frame
    is encoded once. Called after the message's commit (``rooms.services``)."""
    if not user_ids:
        return
    frame = encode_frame({"type": "mention", "room": room_slug, "message": message_data})
    started = time.perf_counter()
    for user_id in user_ids:
        _group_send(user_group_name(user_id), {"type": USER_MENTION, "text": frame}, started)


def broadcast_rooms_changed(*, user_ids) -> None:
    """``user.rooms_changed`` to the group of each of ``user_ids``: their set of rooms grew (a
    join, an add, a room created, a DM opened); their user sockets send a fresh ``sidebar``.
    Called after commit by ``rooms.services`` and ``rooms.dms``."""
    started = time.perf_counter()
    for user_id in dict.fromkeys(user_ids):
        _group_send(user_group_name(user_id), {"type": USER_ROOMS_CHANGED}, started)
